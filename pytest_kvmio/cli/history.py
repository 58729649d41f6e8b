"""`kvmio history`: the results history's series with their change points, plots, and imports of earlier results.

    kvmio history show [--history URL] [--target GLOB] [--profile P] [--metric M] [--json]
    kvmio history plot [--history URL] [...] --out DIR
    kvmio history import [--history URL] [--thresholds DIR] PATH...   (--fio-results directories, perf results files)

The URL comes from --history (or --kvmio-history), else KVMIO_HISTORY, else ini kvmio_history of the ini file pytest
would read here, else sqlite:///kvmio-history.db. Exit status: 0, 4 for a bad URL, option or input (nothing changed),
1 when the store can't be used (unreachable server).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.files.yamldoc import schema_errors
from pytest_kvmio.history.measurements import ImportProblem, ci_metadata, points_of_fio_results, points_of_perf_results
from pytest_kvmio.history.plot import write_plots
from pytest_kvmio.history.series import Series, document, group, select
from pytest_kvmio.history.store import HistoryError, Store, open_store, sqlite_path
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.thresholds import ThresholdsError
from pytest_kvmio.plugin.options import SHARED, add_shared
from pytest_kvmio.runconfig import RunConfig

DEFAULT_URL = "sqlite:///kvmio-history.db"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `history` subcommand (show, plot, import) to the `kvmio` subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "history", help="the results history: series, change points, plots, imports",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument("--history", "--kvmio-history", **{k: v for k, v in SHARED["--kvmio-history"].items()})

    def filters(action: argparse.ArgumentParser) -> None:
        action.add_argument("--target", default=None, metavar="GLOB", help="only targets matching GLOB (host/domain/disk)")
        action.add_argument("--profile", default=None, metavar="P", help="only this fio profile")
        action.add_argument("--metric", default=None, metavar="M", help="only this metric (iops, clat_p99_us, ...)")

    show = actions.add_parser("show", help="print each series with its change points")
    common(show)
    filters(show)
    show.add_argument("--json", action="store_true", help="print the series as JSON")
    show.set_defaults(func=run_show)

    plot = actions.add_parser("plot", help="draw each series (PNG) with its change points and environment changes")
    common(plot)
    filters(plot)
    plot.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files (created)")
    plot.set_defaults(func=run_plot)

    load = actions.add_parser("import", help="add earlier --fio-results directories or --kvmio-perf-results files")
    common(load)
    add_shared(load.add_argument, ("--thresholds",))
    load.add_argument("paths", nargs="+", metavar="PATH", help="a --fio-results directory or a perf results file")
    load.set_defaults(func=run_import)
    return parser


def _url(args: argparse.Namespace) -> tuple[str, str]:
    run = RunConfig.for_command(args)
    if run.history:
        return run.history, run.sources.get("history", "--history")
    return DEFAULT_URL, "default"


def _open(args: argparse.Namespace, *, existing: bool) -> tuple[Store, str]:
    url, source = _url(args)
    if existing and url.startswith("sqlite:") and not Path(sqlite_path(url)).is_file():
        raise InputError(f"{source} {url}: no such history file; pass --history URL, set KVMIO_HISTORY, or add "
                         "results with `kvmio history import` or `pytest --kvmio-history URL`")
    try:
        return open_store(url), url
    except HistoryError as exc:
        raise CommandError(f"{source}: {exc}") from None


def _series(args: argparse.Namespace) -> list[Series]:
    store, _ = _open(args, existing=True)
    try:
        points = store.points()
    except HistoryError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    found = select(group(points), target=args.target, profile=args.profile, metric=args.metric)
    return [s.analyse() for s in found]


def run_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print each series and its change points (text, or the JSON document with --json)."""
    out = out or sys.stdout
    series = _series(args)
    if args.json:
        print(json.dumps(document(series), indent=2), file=out)
        return 0
    if not series:
        print("kvmio history: no series matches", file=out)
    for one in series:
        for line in one.lines():
            print(line, file=out)
    return 0


def run_plot(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Write one PNG per series into --out."""
    out = out or sys.stdout
    target = Path(args.out)
    if target.exists() and not target.is_dir():
        raise InputError(f"--out {args.out}: is a file; name a directory")
    series = _series(args)
    written = write_plots(series, target)
    if series and not written:
        raise CommandError("plots need matplotlib: pip install 'pytest-kvmio[charts]'")
    print(f"kvmio history: {len(written)} plot(s) written to {target}", file=out)
    return 0


def run_import(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Add the points of earlier results; say how many were new (the same results twice add nothing)."""
    out = out or sys.stdout
    run = RunConfig.for_command(args)
    ci = ci_metadata()
    batches: list[tuple[str, list[Any], list[str]]] = []
    thresholds = None
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir():
            if thresholds is None:
                directory, source = run.thresholds_directory()
                try:
                    thresholds = load_thresholds(directory)
                except ThresholdsError as exc:
                    raise InputError(f"{source}: {exc} (import reads the profiles of --fio-results files there)") from None
            try:
                points, skipped = points_of_fio_results(path, thresholds, ci=ci)
            except ImportProblem as exc:
                raise InputError(f"{raw}: {exc}") from None
            batches.append((raw, points, skipped))
        elif path.is_file():
            batches.append((raw, _perf_results(path, ci), []))
        else:
            raise InputError(f"{raw}: no such file or directory (expected a --fio-results directory or a "
                             "--kvmio-perf-results file)")
    store, url = _open(args, existing=False)
    try:
        for raw, points, skipped in batches:
            added = store.add(points)
            print(f"kvmio history: {raw}: {added} of {len(points)} point(s) added to {redact_uri(url)}"
                  + (f" ({len(points) - added} already there)" if added < len(points) else ""), file=out)
            for line in skipped:
                print(f"  left out: {line}", file=out)
    except HistoryError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    return 0


def _perf_results(path: Path, ci: dict[str, str]) -> list[Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError) as exc:
        raise InputError(f"{path}: not a perf results file (JSON): {exc}") from None
    errors = schema_errors("perf-results", doc)
    if errors:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in errors[0].absolute_path) or "(top level)"
        raise InputError(f"{path}: {where}: {errors[0].message} (expected a --kvmio-perf-results file)")
    return points_of_perf_results(path, doc, ci=ci)
