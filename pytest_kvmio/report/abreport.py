"""Reports of an A/B experiment: the terminal table, the chart (matplotlib), and Allure results, one per comparison."""

from __future__ import annotations

import html
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

from pytest_kvmio.perf.ab import AbResult
from pytest_kvmio.perf.abstats import Comparison
from pytest_kvmio.perf.decide import format_value

MIB = 1024 * 1024
LABELS = {
    "iops": "IOPS", "bw_bytes": "bandwidth", "clat_mean_us": "mean latency", "clat_p99_us": "p99 latency",
    "host_cpu_us_per_io": "host CPU µs/IO",
}
CHART_UNITS = {"bw_bytes": " (MiB/s)", "clat_mean_us": " (µs)", "clat_p99_us": " (µs)", "host_cpu_us_per_io": " (µs)"}
#: Allure status of each verdict: a worse change fails, an undecided one is skipped (Allure's "inconclusive" category).
ALLURE_STATUS = {"better": "passed", "same": "passed", "worse": "failed", "inconclusive": "skipped"}
NO_MATPLOTLIB = "matplotlib is not installed: no chart (pip install 'pytest-kvmio[charts]')"


def show(value: float, metric: str) -> str:
    """Return a value with its unit (bandwidth in MiB/s)."""
    if metric == "bw_bytes":
        return f"{value / MIB:,.1f} MiB/s"
    if metric == "host_cpu_us_per_io":
        return f"{format_value(value)} µs"
    return format_value(value, metric)


def table_rows(result: AbResult) -> list[tuple[str, ...]]:
    """Return the table: header, then metric, A median, B median, B/A [95% interval], p-value, verdict."""
    rows: list[tuple[str, ...]] = [("metric", "A (median)", "B (median)", "B/A [95% interval]", "p", "verdict")]
    for c in result.comparisons:
        verdict: str = c.verdict
        if c.verdict == "inconclusive":
            verdict += f" (~{c.more_rounds} more rounds)" if c.more_rounds is not None else " (on the margin)"
        rows.append((LABELS.get(c.metric, c.metric), show(c.a_median, c.metric), show(c.b_median, c.metric),
                     c.interval(), f"{c.p_value:.3g}", verdict))
    return rows


def _path(disk: Any) -> str:
    """Say how a disk's I/O is served: QEMU's io and cache modes, or the vhost-user socket (no io/cache there)."""
    if getattr(disk, "is_vhost_user", False):
        return f"vhost-user-blk on {disk.source_path}, bus={disk.bus}"
    return f"io={disk.effective_io}, cache={disk.effective_cache}, bus={disk.bus}"


def format_table(result: AbResult) -> list[str]:
    """Return the terminal lines: the arms, the table, the metrics not compared and why."""
    a, b = result.a, result.b
    lines = [
        f"A: {a.label} ({a.kind}: {_path(a.disk)})",
        f"B: {b.label} ({b.kind}: {_path(b.disk)})",
        f"profile {result.profile.name}, {result.rounds} rounds ({' '.join(o.upper() for o in result.order)}), "
        f"margin ±{result.margin:.0%}; verdicts are B's",
    ]
    rows = table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(w) if i in (0, 5) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines += [f"  not compared: {LABELS.get(m, m)}: {why}" for m, why in result.skipped.items()]
    lines += [f"  note: {arm.label}: {n}" for arm in (a, b) for n in arm.notes]
    lines += [f"  host CPU of {arm.label} counts: {', '.join(arm.counted)}" for arm in (a, b) if arm.counted]
    return lines


def table_html(result: AbResult, only: Comparison | None = None) -> str:
    """Return the table as HTML (an Allure attachment), optionally one comparison's row only."""
    rows = table_rows(result)
    wanted = rows[1:] if only is None else [r for r, c in zip(rows[1:], result.comparisons) if c is only]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in wanted)
    arms = "".join(f"<p>{html.escape(line)}</p>" for line in format_table(result)[:3])
    return (f"<html><body>{arms}<table border='1' cellpadding='4'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></body></html>")


def chart_png(result: AbResult, comparisons: list[Comparison] | None = None) -> bytes | None:
    """Return a PNG: per metric, both arms' samples side by side with their medians; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = comparisons if comparisons is not None else result.comparisons
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for ax, c in zip(axes[0], shown):
        scale = MIB if c.metric == "bw_bytes" else 1.0
        for x, (samples, median, color) in enumerate(
            ((c.a_samples, c.a_median, "#4c78a8"), (c.b_samples, c.b_median, "#f58518"))
        ):
            samples = tuple(s / scale for s in samples)
            median /= scale
            count = len(samples)
            xs = [x + (i - (count - 1) / 2) * 0.06 for i in range(count)]
            ax.scatter(xs, samples, color=color, s=18, zorder=3)
            ax.hlines(median, x - 0.3, x + 0.3, color=color, linewidth=2)
        ax.set_xticks([0, 1], ["A", "B"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(bottom=0)
        unit = CHART_UNITS.get(c.metric, "")
        ax.set_title(f"{LABELS.get(c.metric, c.metric)}{unit}\nB/A {c.interval()}: {c.verdict}", fontsize=8)
    fig.suptitle(f"{result.a.label} (A) vs {result.b.label} (B), {result.profile.name}", fontsize=9)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


def write_chart(result: AbResult, path: str | Path) -> str | None:
    """Write the chart to `path`; return why it was not written (no matplotlib), else None."""
    png = chart_png(result)
    if png is None:
        return NO_MATPLOTLIB if result.comparisons else "nothing was compared: no chart"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)
    return None


def _attach(directory: Path, content: bytes | str, name: str, mime: str, ext: str) -> dict[str, str]:
    source = f"{uuid.uuid4()}-attachment.{ext}"
    data = content.encode("utf-8") if isinstance(content, str) else content
    (directory / source).write_bytes(data)
    return {"name": name, "source": source, "type": mime}


def allure_results(result: AbResult, directory: str | Path, *, host: str, started_ms: int | None = None) -> list[Path]:
    """Write one Allure result per comparison into `directory`, with the table and the chart attached."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stop = int(time.time() * 1000)
    start = started_ms if started_ms is not None else stop - int(result.wall_seconds * 1000)
    document = json.dumps(result.document(), indent=2, default=str)
    written = []
    for c in result.comparisons:
        attachments = [_attach(out, table_html(result), "A/B table", "text/html", "html")]
        png = chart_png(result, [c])
        if png is not None:
            attachments.append(_attach(out, png, "A/B chart", "image/png", "png"))
        attachments.append(_attach(out, document, "A/B experiment (kvmio ab --json)", "application/json", "json"))
        name = f"{LABELS.get(c.metric, c.metric)}: {result.b.label} vs {result.a.label}"
        key = f"kvmio-ab:{host}:{result.a.label}:{result.b.label}:{result.profile.name}:{c.metric}"
        labels = [
            ("epic", host), ("feature", result.a.disk.domain.name), ("story", "ab"), ("parentSuite", "A/B experiments"),
            ("suite", result.profile.name), ("subSuite", host), ("tag", c.verdict), ("kvmio_outcome", c.verdict),
            ("severity", "normal"),
        ]
        entry: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "historyId": uuid.uuid5(uuid.NAMESPACE_URL, key).hex,
            "testCaseId": uuid.uuid5(uuid.NAMESPACE_URL, key).hex,
            "name": name,
            "fullName": key,
            "status": ALLURE_STATUS[c.verdict],
            "statusDetails": {"message": c.explain()},
            "stage": "finished",
            "description": (
                f"A/B experiment: is B better than A? B/A of the medians with a 95% bootstrap interval and a "
                f"Mann-Whitney p-value over {result.rounds} rounds in a balanced order."
            ),
            "start": start,
            "stop": stop,
            "labels": [{"name": k, "value": v} for k, v in labels],
            "parameters": [{"name": "a", "value": result.a.label}, {"name": "b", "value": result.b.label},
                           {"name": "profile", "value": result.profile.name}, {"name": "metric", "value": c.metric}],
            "attachments": attachments,
        }
        path = out / f"{entry['uuid']}-result.json"
        path.write_text(json.dumps(entry, indent=2), encoding="utf-8")
        written.append(path)
    return written
