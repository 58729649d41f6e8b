"""The run's configuration, resolved once at start-up: every setting typed, where each came from, and the mode.

`plugin.pytest_configure` builds it from the options, `KVMIO_*` and the ini file (`RunConfig.from_pytest`) and keeps
it in `config.stash[RUN_CONFIG]`; the target loader, the perf glue, the fixtures and the reporters read it
(`run_config(config)`) instead of raw option values. `kvmio ab` and `kvmio fix` build theirs from their arguments and
the ini file pytest would read (`RunConfig.for_command`), so `KVMIO_HOSTS`, `ini kvmio_libvirt_uri` and the others
mean the same in a command as in pytest. The mode (live hosts, domain XML files, fio results) is decided here, once,
and with it whether the run is offline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pytest

from pytest_kvmio.errors import InputError
from pytest_kvmio.facts.connection import HostSpec
from pytest_kvmio.facts.host import Assumptions
from pytest_kvmio.facts.saved import SavedFacts
from pytest_kvmio.files.inifile import IniFile, find_inifile
from pytest_kvmio.settings import DEFAULTS, SETTINGS, resolve, setting

#: live hosts (`--host`, KVMIO_HOSTS, ini kvmio_hosts, else local), domain XML files (`--domain-xml`), or fio
#: results read from files (`--fio-results`); the last two are offline.
Mode = Literal["hosts", "domain_xml", "fio_results"]


@dataclass(frozen=True)
class RunConfig:
    """Every setting and option of a run, resolved and typed; `sources` says where each setting came from."""

    mode: Mode = "hosts"
    #: The hosts named by --host, KVMIO_HOSTS or ini kvmio_hosts; none: local (or every inventory host).
    hosts: tuple[HostSpec, ...] = ()
    libvirt_uri: str | None = None
    guest: str | None = None
    thresholds: str | None = None
    waivers: str | None = None
    fio_repeat: int | None = None
    fio_runtime: int | None = None
    fio_ramp_time: int | None = None
    scratch_serial: str = DEFAULTS["scratch_serial"]
    fail_inconclusive: bool = False
    #: The results history's URL (--kvmio-history, KVMIO_HISTORY, ini kvmio_history): every perf measurement goes there.
    history: str | None = None
    domains: tuple[str, ...] = ()
    domain_xml: tuple[str, ...] = ()
    assume: Assumptions = Assumptions()
    #: Saved host facts (`--host-facts FILE`, repeatable) that offline lint judges the files against.
    host_facts: tuple[SavedFacts, ...] = ()
    fio_results: str | None = None
    rules: tuple[str, ...] = ()
    perf_results: str | None = None
    json_path: str | None = None
    #: The --kvmio-ab experiments (absuite.AbSpec) and what they must show.
    ab: tuple[Any, ...] = ()
    ab_expect: str | None = None
    #: pytest-testinfra's --ansible-inventory, reused.
    ansible_inventory: str | None = None
    #: Per setting: `--host`, `KVMIO_HOSTS`, `ini kvmio_hosts in tox.ini` or `default`.
    sources: Mapping[str, str] = field(default_factory=dict)
    #: pytest's rootdir (the ini file's directory): where a relative thresholds directory is looked for first.
    rootpath: Path = Path(".")

    @property
    def offline(self) -> bool:
        """Return True when no live host is read: domain XML files or fio result files."""
        return self.mode != "hosts"

    @property
    def names_targets(self) -> bool:
        """Return True when the command line names kvmio targets or output (the run "uses kvmio": the gate applies)."""
        from_cli = self.sources.get("hosts") == SETTINGS["hosts"].option
        return bool(self.domain_xml or from_cli or self.domains or self.json_path)

    @property
    def reads_targets_early(self) -> bool:
        """Return True when targets are named at all (options, KVMIO_HOSTS, ini, an inventory): read them before
        collecting, so bad input is a usage error."""
        return bool(self.domain_xml or self.hosts or self.domains or self.fio_results or self.ansible_inventory)

    def one_host(self, command: str) -> HostSpec | None:
        """Return the one host a command works on (None when none is named); refuse a setting that names several."""
        unique = list({spec.name: spec for spec in self.hosts}.values())
        if len(unique) > 1:
            source = self.sources["hosts"]
            names = ", ".join(s.name for s in unique)
            hint = "pass one --host" if source == SETTINGS["hosts"].option else "pass --host"
            raise InputError(f"{source} lists {len(unique)} hosts ({names}); {command} takes one: {hint}")
        return unique[0] if unique else None

    def thresholds_directory(self) -> tuple[Path, str]:
        """Return the thresholds directory and what named it: the setting, else `thresholds/` in rootdir or here."""
        if self.thresholds is None:
            candidates = [self.rootpath / "thresholds", Path.cwd() / "thresholds"]
            return next((c for c in candidates if c.is_dir()), candidates[0]), "default thresholds/"
        directory = Path(self.thresholds)
        if not directory.is_absolute() and not directory.exists():
            directory = self.rootpath / directory
        return directory, self.sources.get("thresholds", "--thresholds")

    @classmethod
    def from_pytest(cls, config: pytest.Config) -> RunConfig:
        """Resolve a pytest run's configuration (options > KVMIO_* > ini > default); conflicts and bad values are
        usage errors naming their source."""
        def option(dest: str) -> Any:
            return config.getoption(dest, None)

        try:
            mode = _mode(option)
        except InputError as exc:
            raise pytest.UsageError(str(exc)) from None
        return cls.build(option, lambda name: setting(config, name), Path(config.rootpath), mode)

    @classmethod
    def for_command(cls, args: argparse.Namespace, mode: Mode = "hosts", inifile: IniFile | None = None) -> RunConfig:
        """Resolve a kvmio command's configuration from its arguments (pytest's dests), KVMIO_* and the ini file
        pytest would read from here. Only the settings the command has options for are read (the others keep their
        defaults), so a variable meant for another command can't stop this one."""
        ini = inifile if inifile is not None else find_inifile()
        given = vars(args)

        def resolved(name: str) -> tuple[Any, str]:
            if f"kvmio_{name}" not in given:
                return DEFAULTS.get(name), "default"
            kind = SETTINGS[name].ini
            return resolve(name, given[f"kvmio_{name}"], lambda key: ini.get(key, kind), ini.path)

        return cls.build(given.get, resolved, ini.rootpath, mode)

    @classmethod
    def build(cls, option: Callable[[str], Any], setting_of: Callable[[str], tuple[Any, str]], rootpath: Path,
              mode: Mode) -> RunConfig:
        """Build the configuration from an option reader (by dest) and a setting resolver (by name)."""
        resolved = {name: setting_of(name) for name in SETTINGS}
        value = {name: v for name, (v, _) in resolved.items()}
        return cls(
            mode=mode,
            hosts=_flat(value["hosts"]),
            libvirt_uri=value["libvirt_uri"],
            guest=value["guest"],
            thresholds=value["thresholds"],
            waivers=value["waivers"],
            fio_repeat=value["fio_repeat"],
            fio_runtime=value["fio_runtime"],
            fio_ramp_time=value["fio_ramp_time"],
            scratch_serial=str(value["scratch_serial"] or DEFAULTS["scratch_serial"]),
            fail_inconclusive=bool(value["fail_inconclusive"]),
            history=value["history"],
            domains=tuple(option("kvmio_domains") or ()),
            domain_xml=tuple(option("kvmio_domain_xml") or ()),
            assume=option("kvmio_assume") or Assumptions(),
            host_facts=distinct_hosts(option("kvmio_host_facts") or ()),
            fio_results=option("kvmio_fio_results"),
            rules=tuple(option("kvmio_rules") or ()),
            perf_results=option("kvmio_perf_results"),
            json_path=option("kvmio_json"),
            ab=tuple(option("kvmio_ab") or ()),
            ab_expect=option("kvmio_ab_expect"),
            ansible_inventory=option("ansible_inventory"),
            sources=MappingProxyType({name: source for name, (_, source) in resolved.items()}),
            rootpath=rootpath,
        )


def _flat(value: Any) -> tuple[HostSpec, ...]:
    """Return the host specs of the hosts setting: --host is repeatable (a list of tuples), KVMIO_HOSTS and ini a tuple."""
    if value is None:
        return ()
    return tuple(spec for item in value for spec in (item if isinstance(item, (list, tuple)) else [item]))


def _mode(option: Callable[[str], Any]) -> Mode:
    """Decide the mode from the command line; refuse options that contradict each other, naming the fix."""
    given = {name: option(dest) for name, dest in (
        ("--domain-xml", "kvmio_domain_xml"), ("--host", "kvmio_hosts"), ("--assume", "kvmio_assume"),
        ("--fio-results", "kvmio_fio_results"), ("--host-facts", "kvmio_host_facts"),
    )}
    if given["--domain-xml"] and given["--host"]:
        raise InputError("--domain-xml lints files offline and --host checks live hosts; pass one of them")
    if given["--assume"] and not given["--domain-xml"]:
        raise InputError("--assume supplies host facts for offline linting; use it with --domain-xml")
    if given["--host-facts"] and not given["--domain-xml"]:
        raise InputError("--host-facts judges domain XML files against saved host facts; use it with --domain-xml "
                         "(a live host is checked with --host)")
    distinct_hosts(given["--host-facts"] or ())
    if given["--fio-results"]:
        for option_name, does in (("--host", "runs fio on live hosts"), ("--domain-xml", "lints XML files")):
            if given[option_name]:
                raise InputError(f"--fio-results evaluates fio files offline and {option_name} {does}; pass one of them")
        return "fio_results"
    return "domain_xml" if given["--domain-xml"] else "hosts"


def distinct_hosts(saved: Any) -> tuple[SavedFacts, ...]:
    """Return the --host-facts files, each file once; refuse two files of one host name (their verdicts' targets,
    `offline@HOST/...`, would be the same)."""
    files: dict[str, SavedFacts] = {}
    for facts in saved:
        files.setdefault(str(Path(facts.path).resolve()), facts)
    by_host: dict[str, SavedFacts] = {}
    for facts in files.values():
        other = by_host.setdefault(facts.host, facts)
        if other is not facts:
            raise InputError(f"--host-facts {other.path} and {facts.path}: both hold the facts of host {facts.host!r}; "
                             f"pass one of them, or save one under another name (kvmio facts save --host HOST "
                             f"--name NAME)")
    return tuple(files.values())


RUN_CONFIG = pytest.StashKey[RunConfig]()


def run_config(config: pytest.Config) -> RunConfig:
    """Return the run's configuration: the one pytest_configure built (built here on first use otherwise)."""
    found = config.stash.get(RUN_CONFIG, None)
    if found is None:
        found = config.stash[RUN_CONFIG] = RunConfig.from_pytest(config)
    return found
