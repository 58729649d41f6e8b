"""Command-line options and ini keys of the `kvmio` group; their validators live in `settings`.

The options of settings that `kvmio ab` and `kvmio fix` take too are declared once, in `SHARED`, with pytest's dests,
so a command resolves them like pytest does (`runconfig.RunConfig.for_command`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from pytest_kvmio import settings
from pytest_kvmio.plugin import absuite
from pytest_kvmio.settings import SETTINGS, cli_type

#: Options of settings shared with the kvmio commands: flag -> argparse keywords (pytest's addoption takes the same).
SHARED: dict[str, dict[str, Any]] = {
    "--host": dict(
        dest="kvmio_hosts", action="append", type=cli_type(settings.host_list), default=None, metavar="HOST",
        help="hypervisor to test: local (this machine, the default), hv01 (ssh://hv01), or any testinfra spec; "
        "repeatable or comma-separated; env KVMIO_HOSTS, ini kvmio_hosts",
    ),
    "--libvirt-uri": dict(
        dest="kvmio_libvirt_uri", default=None, metavar="URI", type=cli_type(settings.uri_template),
        help="libvirt URI or template with {host} {hostname} {user} {port} {keyfile} {query}; "
        "default qemu:///system for local, qemu+ssh://{host}/system{query} otherwise; env KVMIO_LIBVIRT_URI",
    ),
    "--guest": dict(
        dest="kvmio_guest", default=None, metavar="SPEC",
        help="reach guests over SSH, e.g. ssh://root@{address}; default: the QEMU guest agent; env KVMIO_GUEST",
    ),
    "--thresholds": dict(
        dest="kvmio_thresholds", default=None, metavar="DIR",
        help="fio profiles, storage classes and baselines (default: thresholds/); env KVMIO_THRESHOLDS",
    ),
    "--fio-runtime": dict(
        dest="kvmio_fio_runtime", type=cli_type(settings.whole_number(1)), default=None, metavar="SECONDS",
        help="override the measured runtime of every fio profile (profiles.yaml sets it otherwise)",
    ),
    "--fio-ramp-time": dict(
        dest="kvmio_fio_ramp_time", type=cli_type(settings.whole_number(0)), default=None, metavar="SECONDS",
        help="override the unmeasured warm-up of every fio profile",
    ),
    "--host-facts": dict(
        dest="kvmio_host_facts", action="append", type=cli_type(settings.host_facts_file), default=None, metavar="FILE",
        help="judge domain XML offline against a host's saved facts (`kvmio facts save`) instead of --assume; "
        "repeatable: each file's host judges every file",
    ),
    "--scratch-serial": dict(  # a command option only: pytest reads KVMIO_SCRATCH_SERIAL and ini kvmio_scratch_serial
        dest="kvmio_scratch_serial", default=None, metavar="GLOB",
        help="serial glob of disks fio may write to (default kvmio-scratch*); env KVMIO_SCRATCH_SERIAL",
    ),
    "--kvmio-history": dict(
        dest="kvmio_history", default=None, metavar="URL", type=cli_type(settings.history_url),
        help="results history: append every perf measurement (sqlite:///PATH, postgresql://USER@HOST/DB); "
        "env KVMIO_HISTORY, ini kvmio_history",
    ),
}


def add_shared(add: Callable[..., Any], flags: Iterable[str]) -> None:
    """Declare shared options with `add` (an argparse parser's `add_argument`, or pytest's `addoption`)."""
    for flag in flags:
        add(flag, **SHARED[flag])


def add_options(parser: pytest.Parser) -> None:
    """Register the kvmio options (dests prefixed `kvmio_` so testinfra's never clash)."""
    group = parser.getgroup("kvmio", "KVM/QEMU/libvirt storage acceptance (pytest-kvmio)")
    add_shared(group.addoption, ("--host", "--libvirt-uri"))
    group.addoption(
        "--domain", dest="kvmio_domains", action="append", default=None, metavar="GLOB",
        help="only domains whose name matches GLOB (repeatable)",
    )
    group.addoption(
        "--domain-xml", dest="kvmio_domain_xml", action="append", default=None, metavar="PATH",
        type=cli_type(settings.existing_paths),
        help="lint domain XML offline, without a host: files, folders (their *.xml, recursively) or globs (repeatable)",
    )
    group.addoption(
        "--kvmio-rule", dest="kvmio_rules", action="append", default=None, metavar="ID",
        help="run only the rules with this id or glob (repeatable), e.g. disk-cache-safe or 'disk-*'",
    )
    group.addoption(
        "--assume", dest="kvmio_assume", type=cli_type(settings.assumptions), default=None, metavar="FACTS",
        help="host facts for offline linting, e.g. kernel=6.1,qemu=7.2,libvirt=9.0 (with --host-facts: overrides "
        "the facts it names)",
    )
    add_shared(group.addoption, ("--host-facts",))
    add_shared(group.addoption, ("--guest", "--thresholds"))
    group.addoption(
        "--fio-results", dest="kvmio_fio_results", default=None, metavar="DIR", type=cli_type(settings.existing_path),
        help="evaluate existing fio JSON files against the thresholds instead of running fio",
    )
    group.addoption(
        "--fio-repeat", dest="kvmio_fio_repeat", type=cli_type(settings.whole_number(1)), default=None, metavar="N",
        help="fio runs per profile and disk; verdicts use the median (default 3)",
    )
    add_shared(group.addoption, ("--fio-runtime", "--fio-ramp-time"))
    group.addoption(
        "--kvmio-perf-results", dest="kvmio_perf_results", default=None, metavar="PATH", type=cli_type(settings.output_file),
        help="write the run's fio samples as perf results JSON (input of `kvmio baseline record --results`)",
    )
    add_shared(group.addoption, ("--kvmio-history",))
    group.addoption(
        "--waivers", dest="kvmio_waivers", default=None, metavar="FILE", type=cli_type(settings.existing_path),
        help="YAML file of accepted deviations (rule, target glob, justification, expiry)",
    )
    group.addoption(
        "--kvmio-json", dest="kvmio_json", default=None, metavar="PATH", type=cli_type(settings.output_file),
        help="write the verdicts as a JSON document to PATH",
    )
    group.addoption(
        "--kvmio-ab", dest="kvmio_ab", action="append", type=cli_type(absuite.parse_spec), default=None,
        metavar="a=ARM,b=ARM,profile=P", help="A/B experiment run as rule ab-expect (ARM: DOMAIN/DISK or "
        "DOMAIN/DISK@host; optional rounds=6, margin=5%%, metric=iops); repeatable",
    )
    group.addoption(
        "--kvmio-ab-expect", dest="kvmio_ab_expect", type=cli_type(absuite.expectation), default=absuite.DEFAULT_EXPECT,
        metavar="better|not-worse", help="what --kvmio-ab must show of B against A (default not-worse)",
    )
    group.addoption(
        "--kvmio-fail-inconclusive", dest="kvmio_fail_inconclusive", action="store_true",
        default=None, help="let inconclusive performance measurements fail the run",
    )
    for spec in SETTINGS.values():
        if spec.ini is not None:
            parser.addini(f"kvmio_{spec.name}", spec.ini_help, type=spec.ini,  # type: ignore[arg-type]
                          default=[] if spec.ini == "args" else settings.DEFAULTS.get(spec.name, ""))


