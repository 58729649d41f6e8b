"""`kvmio ab`: is this storage change better? Two arms, one fio profile, rounds in a balanced order, B/A with a 95 % interval.

    kvmio ab --a kvmio-lab-ab/vdb --b kvmio-lab-ab/vdc --profile randread-4k-qd32x4 --rounds 6 --fio-runtime 3
    kvmio ab --a kvmio-lab-ab/vdb@host --b kvmio-lab-ab/vdb --profile randread-4k-qd32x4   # the virtualization tax

Exit status: 0 when the experiment ran (whatever the verdicts), 1 when a run failed, 4 for a bad arm or
option (`ERROR: ...`, nothing run).

--host, --libvirt-uri, --guest, --thresholds, --scratch-serial, --fio-runtime, --fio-ramp-time and --kvmio-history
are pytest's settings: unset, they come from KVMIO_<NAME> or the ini key kvmio_<name> of the ini file pytest would
read here. With a results history (--kvmio-history URL), both arms' measurements are appended to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.facts.connection import parse_host_spec
from pytest_kvmio.facts.targets import load_host
from pytest_kvmio.history.measurements import ci_metadata, new_run_id, points_of_ab
from pytest_kvmio.history.store import HistoryError, open_store
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.perf.ab import (
    DEFAULT_ROUNDS,
    AbResult,
    AbRunError,
    attach_runners,
    parse_arm,
    parse_margin,
    plan,
    run_experiment,
)
from pytest_kvmio.perf.abstats import DEFAULT_MARGIN
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.thresholds import ThresholdsError
from pytest_kvmio.plugin.options import add_shared
from pytest_kvmio.report import abreport
from pytest_kvmio.runconfig import RunConfig
from pytest_kvmio.settings import whole_number


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `ab` subcommand to the `kvmio` subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "ab", help="A/B experiment: is B better than A, by how much, and are we sure?",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_shared(parser.add_argument, ("--host", "--libvirt-uri", "--guest"))
    parser.add_argument("--a", required=True, metavar="ARM", help="the reference: DOMAIN/DISK or DOMAIN/DISK@host")
    parser.add_argument("--b", required=True, metavar="ARM", help="the change: DOMAIN/DISK or DOMAIN/DISK@host")
    parser.add_argument("--profile", required=True, metavar="NAME", help="a fio profile of the thresholds directory")
    parser.add_argument("--rounds", default=str(DEFAULT_ROUNDS), metavar="N",
                        help=f"rounds, each one run of A and one of B (default {DEFAULT_ROUNDS})")
    add_shared(parser.add_argument, ("--fio-runtime", "--fio-ramp-time"))
    parser.add_argument("--margin", default=f"{DEFAULT_MARGIN:.0%}", metavar="PCT",
                        help="differences within ±margin count as the same (default 5%%)")
    add_shared(parser.add_argument, ("--thresholds", "--scratch-serial", "--kvmio-history"))
    parser.add_argument("--json", default=None, metavar="PATH", help="write the experiment as JSON")
    parser.add_argument("--alluredir", default=None, metavar="DIR", help="write one Allure result per comparison")
    parser.add_argument("--chart", default=None, metavar="PNG", help="write the chart (matplotlib) to PNG")
    parser.set_defaults(func=run_ab)
    return parser


def _whole(text: str, option: str, least: int) -> int:
    try:
        return whole_number(least)(text)
    except ValueError as exc:
        raise InputError(f"{option} {text!r}: {exc}") from None


def run_ab(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `kvmio ab`; a usage error (InputError, exit 4) is raised before anything runs."""
    out = out or sys.stdout
    try:
        return _run(args, out)
    except AbRunError as exc:
        raise CommandError(str(exc)) from None


def _progress(out: TextIO) -> Any:
    def write(line: str) -> None:
        print(line, file=out, flush=True)

    return write


def _run(args: argparse.Namespace, out: TextIO) -> int:
    a, b = parse_arm(args.a, "--a"), parse_arm(args.b, "--b")
    rounds = _whole(args.rounds, "--rounds", 1)
    try:
        margin = parse_margin(args.margin)
    except ValueError as exc:
        raise InputError(f"--margin {exc}") from None
    run = RunConfig.for_command(args)
    spec = run.one_host("kvmio ab") or parse_host_spec("local")
    try:
        profile = load_thresholds(run.thresholds_directory()[0]).profile(args.profile).with_timing(
            runtime=run.fio_runtime, ramp_time=run.fio_ramp_time)
    except ThresholdsError as exc:
        raise InputError(f"--profile {args.profile}: {exc}") from None
    for option in ("json", "chart"):
        path = getattr(args, option)
        if path and not Path(path).resolve().parent.is_dir():
            raise InputError(f"--{option} {path}: the directory {Path(path).parent} does not exist")
    progress = _progress(out)
    host = load_host(spec, run.libvirt_uri, lambda line: progress(redact_uri(line)))
    arm_a, arm_b = plan(host, a, b, profile, run.scratch_serial)
    attach_runners(arm_a, arm_b, host, guest_spec=run.guest, scratch_pattern=run.scratch_serial, progress=progress)
    result = run_experiment(arm_a, arm_b, profile, rounds=rounds, margin=margin, progress=progress)
    _report(result, args, out, host.name)
    if run.history:
        _record(result, host, run.history, run.sources.get("history", "--kvmio-history"), out)
    return 0


def _report(result: AbResult, args: argparse.Namespace, out: TextIO, host: str) -> None:
    for line in abreport.format_table(result):
        print(line, file=out)
    overhead = result.wall_seconds - result.fio_seconds
    print(f"  took {result.wall_seconds:.1f}s: fio was asked for {result.fio_seconds:.0f}s "
          f"(pre-fill and checks {result.prepare_seconds:.1f}s)", file=out)
    if overhead < 0:
        print("  note: fio ran shorter than asked", file=out)
    if args.json:
        Path(args.json).write_text(json.dumps(result.document(), indent=2) + "\n", encoding="utf-8")
        print(f"kvmio ab: JSON written to {args.json}", file=out)
    if args.chart:
        why = abreport.write_chart(result, args.chart)
        print(f"kvmio ab: {why}" if why else f"kvmio ab: chart written to {args.chart}", file=out)
    if args.alluredir:
        written = abreport.allure_results(result, args.alluredir, host=host)
        print(f"kvmio ab: {len(written)} Allure result(s) written to {args.alluredir}", file=out)


def _record(result: AbResult, host: Any, url: str, source: str, out: TextIO) -> None:
    """Append both arms' measurements to the results history (--kvmio-history, KVMIO_HISTORY, ini kvmio_history)."""
    try:
        store = open_store(url)
        try:
            added = store.add(points_of_ab(result, host, run=new_run_id(), ci=ci_metadata()))
        finally:
            store.close()
    except HistoryError as exc:
        raise CommandError(f"{source}: {exc}") from None
    print(f"kvmio ab: {added} point(s) added to the results history {redact_uri(url)}", file=out)
