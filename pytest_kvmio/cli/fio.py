"""`kvmio fio show FILE... [--json]`: print normalized fio metrics; exit 1 when a fio job reported an error."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from pytest_kvmio.errors import InputError
from pytest_kvmio.perf.fio import (
    FioError,
    FioMetrics,
    FioReport,
    check_plausibility,
    read_fio,
)

MIB = 1024 * 1024
PREAMBLE_LINES = 3
COLUMNS = (
    "job", "dir", "IOPS", "MiB/s", "clat mean µs", "clat p99 µs", "clat p99.9 µs", "tlat mean µs", "tlat p99 µs",
    "runtime s",
)
#: Shown instead of a host on fio's "All clients" sum of client/server output.
ALL_HOSTS = "(all)"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `fio` subcommand to the `kvmio` subparsers `sub`."""
    parser = sub.add_parser("fio", help="inspect fio JSON results", description=__doc__)
    fio_sub = parser.add_subparsers(dest="fio_command", required=True, metavar="ACTION")
    show = fio_sub.add_parser(
        "show",
        help="print normalized metrics of fio JSON files",
        description="Print IOPS, bandwidth, completion (clat) and total (tlat) latency and plausibility "
        "warnings of fio JSON output files (fio 2.x or 3.x, json or json+, local or client/server). "
        "Exits 1, after printing, when a fio job reported an error (as fio itself does).",
    )
    show.add_argument("files", nargs="+", metavar="FILE", help="fio JSON output file")
    show.add_argument("--json", action="store_true", help="print the metrics as JSON")
    show.set_defaults(func=run_show)
    return parser


def run_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the metrics of every file in `args.files`; return the exit code."""
    out = out or sys.stdout
    try:
        reports = [read_fio(path) for path in args.files]
    except FioError as exc:
        raise InputError(str(exc)) from exc
    if args.json:
        json.dump([report_dict(r) for r in reports], out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write("\n".join(format_report(r) for r in reports))
    failed = [f"{r.source}: {error}" for r in reports for error in r.job_errors()]
    for line in failed:
        print(f"kvmio fio: error: {line}", file=sys.stderr)
    return 1 if failed else 0


def report_dict(report: FioReport) -> dict[str, Any]:
    """Return a report as JSON-ready data: source, version, snapshots, metrics, problems."""
    return {
        "source": report.source,
        "fio_version": report.version,
        "snapshots": len(report.snapshots),
        "metrics": [m.as_dict() for m in report.metrics],
        "all_clients": [m.as_dict() for m in report.all_clients],
        "job_errors": report.job_errors(),
        "problems": report.problems(),
    }


def format_report(report: FioReport) -> str:
    """Return a human-readable table of one report, with its warnings."""
    count = len(report.snapshots)
    snapshots = f", {count} snapshots, the last shown" if count > 1 else ""
    lines = [f"{report.source} ({report.version}{snapshots})"]
    said = [line for line in report.preamble.splitlines() if line.strip()]
    lines.extend(f"  fio said: {line}" for line in said[:PREAMBLE_LINES])
    if len(said) > PREAMBLE_LINES:
        lines.append(f"  fio said: ... ({len(said) - PREAMBLE_LINES} more lines)")
    entries = [*report.metrics, *report.all_clients]
    # Client/server output gets a host column; fio's "All clients" sum has no host.
    clients = report.all_clients or any(m.client for m in report.metrics)
    header = ("host", *COLUMNS) if clients else COLUMNS
    rows = [header] + [
        ((m.client or ALL_HOSTS,) if clients else ()) + _row(m) for m in entries
    ]
    texts = 3 if clients else 2  # left-aligned text columns, numbers right-aligned
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [
            cell.ljust(width) if i < texts else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    for m in entries:
        lines.extend(f"  note: {m.label}: {note}" for note in m.notes)
        if m.errors:
            lines.append(f"  error: {m.label}: {m.errors} error(s), fio error code {m.error_code}")
        lines.extend(f"  warning: {problem}" for problem in check_plausibility(m))
    lines.extend(f"  error: {error}" for error in report.job_errors())
    return "\n".join(lines) + "\n"


def _row(m: FioMetrics) -> tuple[str, ...]:
    """Return the table cells of one job and direction."""
    return (
        m.job,
        m.direction,
        f"{m.iops:,.0f}",
        f"{m.bw_bytes / MIB:,.1f}",
        _us(m.clat_mean_us),
        _us(m.clat_p99_us),
        _us(m.clat_p99_9_us),
        _us(m.tlat_mean_us),
        _us(m.tlat_p99_us),
        f"{m.runtime_s:.3f}",
    )


def _us(value: float | None) -> str:
    """Return a latency in µs, or "unknown" when fio did not record it."""
    return "unknown" if value is None else f"{value:,.1f}"
