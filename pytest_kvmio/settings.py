"""Every kvmio setting with its one validator, used for the command line, the environment and ini alike.

A setting resolves CLI > environment (`KVMIO_<NAME>`) > ini (`kvmio_<name>`) > default. The same
validator checks the value wherever it came from, and a bad one is a usage error that names its source
(`--fio-repeat`, `KVMIO_FIO_REPEAT`, `ini kvmio_fio_repeat in tox.ini`), pytest-timeout's pattern.
Option combinations are checked once, in `check_conflicts`, from `pytest_configure`.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.collect.connection import parse_host_spec
from pytest_kvmio.model.versions import Version

ASSUMABLE = ("kernel", "qemu", "libvirt", "io_uring_disabled", "cpus")
_TRUE, _FALSE = ("1", "yes", "true", "on"), ("", "0", "no", "false", "off")


# --- validators: text in, value out, ValueError with the reason ------------------------------------


def host_list(value: str | list[str]) -> list[str]:
    """Split `hv01,hv02` (or take an ini list) and check each spec."""
    items = value if isinstance(value, list) else [value]
    hosts = [h.strip() for item in items for h in str(item).replace(",", " ").split() if h.strip()]
    if not hosts:
        raise ValueError("expected a host name such as hv01, local or ssh://root@hv01")
    for host in hosts:
        parse_host_spec(host)  # raises ValueError naming what is wrong with the spec
    return hosts


def assumptions(value: str) -> dict[str, str]:
    """Parse `kernel=6.1,qemu=7.2,libvirt=9.0`."""
    out: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or key not in ASSUMABLE or not val:
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(ASSUMABLE)}")
        try:
            int(val) if key in ("io_uring_disabled", "cpus") else Version.parse(val)
        except ValueError:
            raise ValueError(f"{item!r}: {val!r} is not a version number") from None
        out[key] = val
    return out


def existing_path(value: str) -> str:
    if not Path(value).exists():
        raise ValueError(f"{value}: no such file or directory")
    return value


def existing_paths(value: str) -> str:
    """Accept a path that exists, or a glob (quoted, so the shell left it) that matches something."""
    if any(c in value for c in "*?[") and not Path(value).exists():
        if not glob.glob(value, recursive=True):
            raise ValueError(f"{value}: the pattern matches no file or directory")
        return value
    return existing_path(value)


def whole_number(least: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            number = least - 1
        if number < least:
            raise ValueError(f"expected a whole number of at least {least}")
        return number

    return parse


def flag(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError("expected 1/0, yes/no, true/false or on/off")


def text(value: str) -> str:
    return str(value)


#: The fields a --libvirt-uri template may use (HostSpec.libvirt_uri fills them).
URI_FIELDS = ("host", "hostname", "user", "port", "keyfile", "query", "name")


def uri_template(value: str) -> str:
    """Check a libvirt URI template: only known {fields}, balanced braces, no spaces or control characters."""
    raw = str(value)
    if not raw.isprintable() or " " in raw:
        raise ValueError("spaces and control characters are not allowed in a libvirt URI")
    try:
        raw.format(**{name: "x" for name in URI_FIELDS})
    except KeyError as exc:
        raise ValueError(f"unknown field {{{exc.args[0]}}}; use {' '.join('{' + f + '}' for f in URI_FIELDS)}") from None
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not a template ({exc}); write literal braces as {{{{ and }}}}") from None
    return raw


def output_file(value: str) -> str:
    """Check a path kvmio will write: not a directory (its parent is created when missing)."""
    if Path(value).is_dir():
        raise ValueError(f"{value}: is a directory; pass a file path such as kvmio-out/verdicts.json")
    return value


@dataclass(frozen=True)
class Setting:
    """One setting: its validator and where else than the command line it may come from."""

    name: str
    parse: Callable[[Any], Any]
    env: bool = True
    ini: str | None = None  # pytest ini type ("string", "args") when an ini key exists
    ini_help: str = ""

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    @property
    def env_var(self) -> str:
        return f"KVMIO_{self.name.upper()}"


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("hosts", host_list, ini="args", ini_help="hypervisors to test when --host is not given"),
        Setting("libvirt_uri", uri_template, ini="string", ini_help="libvirt URI template (see --libvirt-uri)"),
        Setting("thresholds", text, ini="string", ini_help="thresholds directory (see --thresholds)"),
        Setting("waivers", existing_path),
        Setting("fio_repeat", whole_number(1), ini="string", ini_help="fio runs per profile (see --fio-repeat)"),
        Setting("fio_runtime", whole_number(1)),
        Setting("fio_ramp_time", whole_number(0)),
        Setting("scratch_serial", text, ini="string", ini_help="serial glob of disks fio may write to"),
        Setting("fail_inconclusive", flag),
    )
}
DEFAULTS: dict[str, Any] = {"scratch_serial": "kvmio-scratch*", "fail_inconclusive": False}


def cli_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Return an argparse `type=` that runs `parse` (ValueError becomes argparse's own error, with the value)."""

    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            reason = str(exc)
            raise argparse.ArgumentTypeError(reason if reason.startswith(("'", value)) else f"{value!r}: {reason}") from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def setting(config: pytest.Config, name: str) -> tuple[Any, str]:
    """Resolve a setting CLI > KVMIO_<NAME> > ini kvmio_<name> > default; return (value, where it came from).

    The command line was validated by its option's type; environment and ini values go through the same
    validator here, and a bad one is a usage error naming its source.
    """
    spec = SETTINGS[name]
    cli = config.getoption(f"kvmio_{name}", None)
    if cli not in (None, [], ""):
        return cli, spec.option
    sources: list[tuple[str, Any]] = []
    if spec.env:
        sources.append((spec.env_var, os.environ.get(spec.env_var)))
    if spec.ini is not None:
        try:
            ini = config.getini(f"kvmio_{name}")
        except ValueError:
            ini = None
        sources.append((f"ini kvmio_{name} in {config.inipath}", ini))
    for source, raw in sources:
        if raw in (None, [], ""):
            continue
        try:
            return spec.parse(raw), source
        except ValueError as exc:
            raise pytest.UsageError(f"{source}={raw!r}: {exc}") from None
    return DEFAULTS.get(name), "default"


def validate_all(config: pytest.Config) -> None:
    """Resolve every setting once at start-up, so a bad value stops the run before anything is collected."""
    for name in SETTINGS:
        setting(config, name)


def check_conflicts(config: pytest.Config) -> None:
    """Refuse option combinations that contradict each other, naming the fix (once, in pytest_configure)."""
    given = {name: config.getoption(dest, None) for name, dest in (
        ("--domain-xml", "kvmio_domain_xml"), ("--host", "kvmio_hosts"), ("--assume", "kvmio_assume"),
        ("--fio-results", "kvmio_fio_results"),
    )}
    if given["--domain-xml"] and given["--host"]:
        raise pytest.UsageError("--domain-xml lints files offline and --host checks live hosts; pass one of them")
    if given["--assume"] and not given["--domain-xml"]:
        raise pytest.UsageError("--assume supplies host facts for offline linting; use it with --domain-xml")
    if given["--fio-results"]:
        for option, does in (("--host", "runs fio on live hosts"), ("--domain-xml", "lints XML files")):
            if given[option]:
                raise pytest.UsageError(
                    f"--fio-results evaluates fio files offline and {option} {does}; pass one of them"
                )
