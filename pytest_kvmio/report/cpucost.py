"""Host CPU cost per I/O compared across disks with different io modes (the io_uring vs native question, and
vhost-user, whose cost includes its backend process: each row says which processes were counted)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from pytest_kvmio.verdict.record import Verdict

RULE = "perf-host-cpu"


def cpu_costs(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """Return one row per disk and profile that measured host CPU µs per I/O."""
    rows = []
    for verdict in verdicts:
        perf = verdict.facts.get("perf") if verdict.rule == RULE else None
        if not isinstance(perf, dict) or perf.get("median") is None:
            continue
        rows.append({
            "target": verdict.target,
            "profile": perf.get("profile"),
            "io_mode": perf.get("io_mode") or verdict.facts.get("effective_io") or "threads",
            "cpu_us_per_io": float(perf["median"]),
            "counted": list(perf.get("counted") or []),
        })
    return sorted(rows, key=lambda r: (str(r["profile"]), r["cpu_us_per_io"]))


def by_io_mode(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Return {profile: {io mode: median CPU µs per I/O over its disks}}."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[str(row["profile"])][str(row["io_mode"])].append(row["cpu_us_per_io"])
    return {p: {m: statistics.median(v) for m, v in sorted(modes.items())} for p, modes in sorted(groups.items())}


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """Return terminal lines: per profile, each disk's cost and the ratio to the cheapest io mode."""
    if not rows:
        return []
    lines = []
    for profile, modes in by_io_mode(rows).items():
        cheapest = min(modes.values())
        summary = ", ".join(
            f"{mode} {cost:,.0f}" + (f" (×{cost / cheapest:.2f})" if cheapest > 0 and cost != cheapest else "")
            for mode, cost in sorted(modes.items(), key=lambda kv: kv[1])
        )
        lines.append(f"{profile}: host CPU µs per I/O by io mode: {summary}")
        for row in (r for r in rows if r["profile"] == profile):
            counted = f"  ({', '.join(row['counted'])})" if row.get("counted") else ""
            lines.append(f"    {row['target']:<40} io={row['io_mode']:<9} {row['cpu_us_per_io']:>10,.0f} µs/IO{counted}")
    return lines
