"""Command-line options and ini settings of the `kvmio` group, validated as they are parsed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from pytest_kvmio.collect.connection import parse_host_spec

ASSUMABLE = ("kernel", "qemu", "libvirt", "io_uring_disabled")


def _host_list(value: str) -> list[str]:
    """Split `hv01,hv02` and check each spec; an unusable spec fails the parse."""
    hosts = [v.strip() for v in value.split(",") if v.strip()]
    if not hosts:
        raise argparse.ArgumentTypeError("expected a host name such as hv01, local or ssh://root@hv01")
    for host in hosts:
        try:
            parse_host_spec(host)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return hosts


def _assumptions(value: str) -> dict[str, str]:
    """Parse `kernel=6.1,qemu=7.2,libvirt=9.0`."""
    from pytest_kvmio.model.versions import Version

    out: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or key not in ASSUMABLE or not val:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(ASSUMABLE)}"
            )
        try:
            int(val) if key == "io_uring_disabled" else Version.parse(val)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {val!r} is not a version number") from None
        out[key] = val
    return out


def _existing_path(value: str) -> str:
    if not Path(value).exists():
        raise argparse.ArgumentTypeError(f"{value}: no such file or directory")
    return value


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number of at least 1")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number of at least 0")
    return number


def add_options(parser: pytest.Parser) -> None:
    """Register the kvmio options (dests prefixed `kvmio_` so testinfra's never clash)."""
    group = parser.getgroup("kvmio", "KVM/QEMU/libvirt storage acceptance (pytest-kvmio)")
    group.addoption(
        "--host", dest="kvmio_hosts", action="append", type=_host_list, default=None,
        metavar="HOST",
        help="hypervisor to test: local (this machine, the default), hv01 (ssh://hv01), or any "
        "testinfra spec; repeatable or comma-separated",
    )
    group.addoption(
        "--libvirt-uri", dest="kvmio_libvirt_uri", default=None, metavar="URI",
        help="libvirt URI or template with {host} {hostname} {user} {port} {keyfile} {query}; "
        "default qemu:///system for local, qemu+ssh://{host}/system{query} otherwise",
    )
    group.addoption(
        "--domain", dest="kvmio_domains", action="append", default=None, metavar="GLOB",
        help="only domains whose name matches GLOB (repeatable)",
    )
    group.addoption(
        "--domain-xml", dest="kvmio_domain_xml", action="append", default=None, metavar="PATH",
        type=_existing_path,
        help="lint domain XML files or directories of *.xml offline, without a host (repeatable)",
    )
    group.addoption(
        "--assume", dest="kvmio_assume", type=_assumptions, default=None, metavar="FACTS",
        help="host facts for offline linting, e.g. kernel=6.1,qemu=7.2,libvirt=9.0",
    )
    group.addoption(
        "--guest", dest="kvmio_guest", default=None, metavar="SPEC",
        help="reach guests over SSH, e.g. ssh://root@{address}; default: the QEMU guest agent",
    )
    group.addoption(
        "--thresholds", dest="kvmio_thresholds", default=None, metavar="DIR",
        help="fio profiles, storage classes and baselines (default: thresholds/)",
    )
    group.addoption(
        "--fio-results", dest="kvmio_fio_results", default=None, metavar="DIR", type=_existing_path,
        help="evaluate existing fio JSON files against the thresholds instead of running fio",
    )
    group.addoption(
        "--fio-repeat", dest="kvmio_fio_repeat", type=_positive_int, default=None, metavar="N",
        help="fio runs per profile and disk; verdicts use the median (default 3)",
    )
    group.addoption(
        "--fio-runtime", dest="kvmio_fio_runtime", type=_positive_int, default=None, metavar="SECONDS",
        help="override the measured runtime of every fio profile (profiles.yaml sets it otherwise)",
    )
    group.addoption(
        "--fio-ramp-time", dest="kvmio_fio_ramp_time", type=_non_negative_int, default=None, metavar="SECONDS",
        help="override the unmeasured warm-up of every fio profile",
    )
    group.addoption(
        "--kvmio-perf-results", dest="kvmio_perf_results", default=None, metavar="PATH",
        help="write the run's fio samples as perf results JSON (input of `kvmio baseline record --results`)",
    )
    group.addoption(
        "--waivers", dest="kvmio_waivers", default=None, metavar="FILE", type=_existing_path,
        help="YAML file of accepted deviations (rule, target glob, justification, expiry)",
    )
    group.addoption(
        "--kvmio-json", dest="kvmio_json", default=None, metavar="PATH",
        help="write the verdicts as a JSON document to PATH",
    )
    group.addoption(
        "--kvmio-fail-inconclusive", dest="kvmio_fail_inconclusive", action="store_true",
        default=None, help="let inconclusive performance measurements fail the run",
    )
    parser.addini("kvmio_hosts", "hypervisors to test when --host is not given", type="args", default=[])
    parser.addini("kvmio_libvirt_uri", "libvirt URI template (see --libvirt-uri)", default="")
    parser.addini("kvmio_thresholds", "thresholds directory (see --thresholds)", default="")
    parser.addini("kvmio_scratch_serial", "serial glob of disks fio may write to", default="kvmio-scratch*")
    parser.addini("kvmio_fio_repeat", "fio runs per profile (see --fio-repeat)", default="")


def setting(config: pytest.Config, name: str) -> tuple[object, str]:
    """Resolve a setting CLI > environment (KVMIO_<NAME>) > ini; return (value, where it came from)."""
    cli = config.getoption(f"kvmio_{name}", None)
    if cli not in (None, [], ""):
        return cli, f"--{name.replace('_', '-')}"
    env = os.environ.get(f"KVMIO_{name.upper()}")
    if env:
        return env, f"KVMIO_{name.upper()}"
    try:
        ini = config.getini(f"kvmio_{name}")
    except ValueError:
        ini = None
    if ini not in (None, [], ""):
        return ini, f"ini kvmio_{name} in {config.inipath}"
    return None, "default"
