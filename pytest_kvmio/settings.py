"""Every kvmio setting with its one validator, used for the command line, the environment and ini alike.

A setting resolves CLI > environment (`KVMIO_<NAME>`) > ini (`kvmio_<name>`) > default (`resolve`), in pytest and
in the `kvmio` commands alike. The same validator checks the value wherever it came from and returns it typed, and a
bad one is a usage error that names its source (`--fio-repeat`, `KVMIO_FIO_REPEAT`, `ini kvmio_fio_repeat in
tox.ini`), pytest-timeout's pattern. `runconfig.RunConfig` holds the resolved settings of a run, and decides the mode
(refusing option combinations that contradict each other).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.errors import InputError
from pytest_kvmio.facts.connection import HostSpec, parse_host_spec
from pytest_kvmio.facts.host import ASSUMABLE, Assumptions
from pytest_kvmio.facts.saved import SavedFacts, load_facts
from pytest_kvmio.model.versions import Version

_TRUE, _FALSE = ("1", "yes", "true", "on"), ("", "0", "no", "false", "off")


# --- validators: text in, value out, ValueError with the reason ------------------------------------


def host_list(value: str | list[str]) -> tuple[HostSpec, ...]:
    """Split `hv01,hv02` (or take an ini list) and parse each spec."""
    items = value if isinstance(value, list) else [value]
    hosts = [h.strip() for item in items for h in str(item).replace(",", " ").split() if h.strip()]
    if not hosts:
        raise ValueError("expected a host name such as hv01, local or ssh://root@hv01")
    return tuple(parse_host_spec(host) for host in hosts)  # ValueError naming what is wrong with a spec


def key_values(text: str, keys: Sequence[str], convert: Callable[[str, str], Any] | None = None) -> dict[str, Any]:
    """Read `KEY=VALUE,KEY=VALUE` (`--assume`, `--kvmio-ab`): each KEY one of `keys`, each VALUE not empty.

    `convert(key, value)` types a value; its ValueError, like a malformed item, names the item. A key given twice
    keeps its last value.
    """
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in keys or not value:
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(keys)}")
        try:
            out[key] = convert(key, value) if convert is not None else value
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
    return out


def _assumed(key: str, value: str) -> Version | int:
    try:
        return int(value) if key in ("io_uring_disabled", "cpus") else Version.parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a version number") from None


def assumptions(value: str) -> Assumptions:
    """Parse `kernel=6.1,qemu=7.2,libvirt=9.0` (and io_uring_disabled, cpus) into typed facts."""
    return Assumptions(**key_values(value, ASSUMABLE, _assumed))


def host_facts_file(value: str) -> SavedFacts:
    """Read a host facts file written by `kvmio facts save` (`--host-facts`), checked against its schema."""
    try:
        return load_facts(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


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


def history_url(value: str) -> str:
    """Check a results history URL: sqlite:///PATH (a file, not a directory) or postgresql://... (psycopg 3)."""
    text = str(value).strip()
    scheme = text.partition("://")[0] if "://" in text else ""
    if scheme not in ("sqlite", "postgresql", "postgres"):
        shown = re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", text)
        raise ValueError(
            f"{shown!r}: unknown scheme {scheme or '(none)'!r}; expected sqlite:///PATH (e.g. sqlite:///kvmio-history.db) "
            "or postgresql://USER@HOST/DB"
        )
    if scheme == "sqlite":
        path = text.removeprefix("sqlite:///")
        if not text.startswith("sqlite:///") or not path:
            raise ValueError(f"{text!r}: expected sqlite:///PATH (three slashes, then the file: sqlite:///h.db is "
                             "relative, sqlite:////abs/h.db absolute)")
        if Path(path).is_dir():
            raise ValueError(f"{text!r}: {path} is a directory; name a file such as {path.rstrip('/')}/kvmio-history.db")
    return text


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
    flag: str | None = None  # the option, when it is not --<name>

    @property
    def option(self) -> str:
        return self.flag or f"--{self.name.replace('_', '-')}"

    @property
    def env_var(self) -> str:
        return f"KVMIO_{self.name.upper()}"


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("hosts", host_list, ini="args", ini_help="hypervisors to test when --host is not given", flag="--host"),
        Setting("libvirt_uri", uri_template, ini="string", ini_help="libvirt URI template (see --libvirt-uri)"),
        Setting("guest", text, ini="string", ini_help="reach guests over SSH, e.g. ssh://root@{address} (see --guest)"),
        Setting("thresholds", text, ini="string", ini_help="thresholds directory (see --thresholds)"),
        Setting("waivers", existing_path),
        Setting("fio_repeat", whole_number(1), ini="string", ini_help="fio runs per profile (see --fio-repeat)"),
        Setting("fio_runtime", whole_number(1)),
        Setting("fio_ramp_time", whole_number(0)),
        Setting("scratch_serial", text, ini="string", ini_help="serial glob of disks fio may write to"),
        Setting("fail_inconclusive", flag),
        Setting("history", history_url, ini="string", ini_help="results history URL: sqlite:///PATH or postgresql://... "
                "(see --kvmio-history)", flag="--kvmio-history"),
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


def resolve(name: str, cli: Any, ini: Callable[[str], Any], inifile: object) -> tuple[Any, str]:
    """Resolve a setting CLI > KVMIO_<NAME> > ini kvmio_<name> > default; return (value, where it came from).

    `cli` is the command line's value, already checked by its option's type; `ini(key)` reads a key of the ini file
    `inifile` (None or empty when unset). Environment and ini values go through the same validator here, and a bad
    one is a usage error (InputError; pytest's UsageError in `setting`) naming its source.
    """
    spec = SETTINGS[name]
    if cli not in (None, [], ""):
        return cli, spec.option
    sources: list[tuple[str, Any]] = []
    if spec.env:
        sources.append((spec.env_var, os.environ.get(spec.env_var)))
    if spec.ini is not None:
        sources.append((f"ini kvmio_{name} in {inifile}", ini(f"kvmio_{name}")))
    for source, raw in sources:
        if raw in (None, [], ""):
            continue
        try:
            return spec.parse(raw), source
        except ValueError as exc:
            raise InputError(f"{source}={raw!r}: {exc}") from None
    return DEFAULTS.get(name), "default"


#: Per pytest run: the settings resolved so far, (value, source) by name.
_RESOLVED = pytest.StashKey[dict[str, tuple[Any, str]]]()


def setting(config: pytest.Config, name: str) -> tuple[Any, str]:
    """Return (value, source) of a setting in a pytest run, resolved once (`resolve`) and kept.

    Read `runconfig.run_config(config)` instead where you can: it holds every setting, typed.
    """
    resolved = config.stash.setdefault(_RESOLVED, {})
    if name not in resolved:
        try:
            resolved[name] = resolve(name, config.getoption(f"kvmio_{name}", None), lambda key: _getini(config, key),
                                     config.inipath)
        except InputError as exc:
            raise pytest.UsageError(str(exc)) from None
    return resolved[name]


def _getini(config: pytest.Config, key: str) -> Any:
    try:
        return config.getini(key)
    except ValueError:  # not a registered ini key
        return None
