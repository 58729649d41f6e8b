"""A series as a picture: its points over the runs, each segment's median, the change points, the environment changes.

matplotlib is optional (`pip install 'pytest-kvmio[charts]'`): without it `plot_png` returns None and says nothing.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from pytest_kvmio.history.fingerprint import describe_diff, segment_diff
from pytest_kvmio.history.series import Series, edges_of, levels


def environment_changes(series: Series) -> list[tuple[int, str]]:
    """Return (index, what changed) for each point whose environment differs from the point before it."""
    out = []
    for i in range(1, len(series.points)):
        diff = segment_diff([series.points[i - 1].fingerprint], [series.points[i].fingerprint])
        if diff:
            out.append((i, describe_diff(diff)))
    return out


def plot_png(series: Series) -> bytes | None:
    """Return the PNG of an analysed series; None without matplotlib or points."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not series.points:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.6))
    xs = list(range(len(series.points)))
    ax.plot(xs, series.values(), marker="o", markersize=3, linewidth=0.8, color="#4c78a8", label=series.metric)
    edges = edges_of(series)
    for (start, stop), level in zip(zip(edges, edges[1:]), levels(series)):
        ax.hlines(level, start - 0.4, stop - 0.6, colors="#f58518", linewidth=2)
    for change in series.changes:
        ax.axvline(change.point.index - 0.5, color="#e45756", linestyle="--", linewidth=1.2)
        ax.annotate(f"{change.point.ratio - 1:+.0%}\nrun {change.run}", (change.point.index - 0.5, ax.get_ylim()[1]),
                    fontsize=7, color="#e45756", va="top", ha="left")
    for index, what in environment_changes(series):
        ax.axvline(index - 0.5, color="#54a24b", linestyle=":", linewidth=1.2)
        ax.annotate(what[:80], (index - 0.5, ax.get_ylim()[0]), fontsize=6, color="#54a24b", rotation=90,
                    va="bottom", ha="right")
    ax.set_xlabel("run")
    step = max(1, len(xs) // 12)
    ax.set_xticks(xs[::step], [series.points[i].run[:16] for i in xs[::step]], rotation=30, fontsize=6, ha="right")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{series.target} {series.profile} {series.metric}: {len(series.changes)} change point(s) "
                 "(red: change point, green: environment change)", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def file_name(series: Series) -> str:
    """Return a file name for a series' plot: its target, profile and metric, safe for any file system."""
    text = f"{series.target}-{series.profile}-{series.metric}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) + ".png"


def write_plots(series: list[Series], directory: str | Path) -> list[Path]:
    """Write one PNG per series into `directory` (created); return the files written (none without matplotlib)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for one in series:
        png = plot_png(one)
        if png is None:
            continue
        path = out / file_name(one)
        path.write_bytes(png)
        written.append(path)
    return written
