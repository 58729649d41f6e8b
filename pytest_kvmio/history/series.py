"""Points and series of the results history, their change points with the environment diff, and the perf-history gate.

A series is one (host, target, profile, metric): the host is the host's UUID where libvirt gave one, else the host
part of the target id. A change of environment (kernel, io mode) stays in the same series, which is how a change
point can name it. Points are ordered by time, then run.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_kvmio.history.changepoints import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SEGMENT,
    ChangePoint,
    detect,
)
from pytest_kvmio.history.fingerprint import describe_diff, segment_diff
from pytest_kvmio.perf.decide import format_value
from pytest_kvmio.perf.thresholds import Direction

SeriesKey = tuple[str, str, str, str]  # host, target, profile, metric


@dataclass(frozen=True)
class Point:
    """One measurement of one metric: the run's median of its repeated fio runs, with where and when it ran."""

    host: str  # the host's UUID, or the host part of the target id
    target: str
    profile: str
    metric: str
    run: str
    time: str  # ISO 8601, UTC
    value: float
    samples: tuple[float | None, ...] = ()
    source: str = "live"  # live, fio-results, perf-results, ab
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    ci: Mapping[str, Any] = field(default_factory=dict)
    digest: str = ""  # the unique key within the series: importing the same measurement twice adds nothing

    @property
    def key(self) -> SeriesKey:
        return (self.host, self.target, self.profile, self.metric)


@dataclass(frozen=True)
class Change:
    """A change point of a series, with the run where it starts and what changed in the environment."""

    point: ChangePoint
    run: str
    env_diff: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        p = self.point
        return {
            "run": self.run, "index": p.index, "before": p.before, "after": p.after,
            "ratio": None if math.isinf(p.ratio) else p.ratio, "p_value": p.p_value, "env_diff": self.env_diff,
        }

    def describe(self, metric: str) -> str:
        p = self.point
        return (f"run {self.run} (#{p.index}): {format_value(p.before, metric)} → {format_value(p.after, metric)} "
                f"({_percent(p.ratio)}, p={_p(p.p_value)}); {describe_diff(self.env_diff)}")


def _percent(ratio: float) -> str:
    return "inf" if math.isinf(ratio) else f"{ratio - 1:+.0%}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


@dataclass
class Series:
    """The points of one series, oldest first, and (once analysed) its change points."""

    key: SeriesKey
    points: list[Point]
    changes: list[Change] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.key[0]

    @property
    def target(self) -> str:
        return self.key[1]

    @property
    def profile(self) -> str:
        return self.key[2]

    @property
    def metric(self) -> str:
        return self.key[3]

    def values(self) -> list[float]:
        return [p.value for p in self.points]

    def analyse(self, *, min_segment: int = DEFAULT_MIN_SEGMENT, alpha: float = DEFAULT_ALPHA, seed: int = 0) -> Series:
        """Find the change points and each one's environment diff (between the segments on either side)."""
        found = detect(self.values(), min_segment=min_segment, alpha=alpha, seed=seed)
        edges = [0, *(c.index for c in found), len(self.points)]
        changes = []
        for i, point in enumerate(found, start=1):
            before = self.points[edges[i - 1]:point.index]
            after = self.points[point.index:edges[i + 1]]
            diff = segment_diff([p.fingerprint for p in before], [p.fingerprint for p in after],
                                [p.run for p in after])
            changes.append(Change(point, self.points[point.index].run, diff))
        self.changes = changes
        return self

    def as_dict(self) -> dict[str, Any]:
        """Return the series as `kvmio history show --json` gives it."""
        return {
            "target": self.target, "profile": self.profile, "metric": self.metric,
            "points": [{"run": p.run, "time": p.time, "value": p.value} for p in self.points],
            "change_points": [c.as_dict() for c in self.changes],
        }

    def lines(self) -> list[str]:
        """Return the series in words: its key and size, the latest value, each change point."""
        head = f"{self.target} {self.profile} {self.metric}"
        if self.host != self.target.split("/")[0]:
            head += f" (host {self.host})"
        latest = self.points[-1]
        out = [f"{head}: {len(self.points)} point(s), {self.points[0].time} … {latest.time}, "
               f"latest {format_value(latest.value, self.metric)} (run {latest.run})"]
        if not self.changes:
            out.append("  no change point")
        out += [f"  change point at {c.describe(self.metric)}" for c in self.changes]
        return out


def group(points: Iterable[Point]) -> list[Series]:
    """Return the points as series, sorted by key, each oldest first (time, then run, then digest)."""
    by_key: dict[SeriesKey, list[Point]] = {}
    for point in points:
        by_key.setdefault(point.key, []).append(point)
    return [Series(key, sorted(found, key=lambda p: (p.time, p.run, p.digest)))
            for key, found in sorted(by_key.items())]


def select(series: Iterable[Series], *, target: str | None = None, profile: str | None = None,
           metric: str | None = None) -> list[Series]:
    """Return the series whose target matches the glob and whose profile and metric equal the given ones."""
    return [s for s in series
            if (target is None or fnmatch.fnmatchcase(s.target, target))
            and (profile is None or s.profile == profile) and (metric is None or s.metric == metric)]


def document(series: Sequence[Series]) -> dict[str, Any]:
    """Return the `kvmio history show --json` document."""
    return {"series": [s.as_dict() for s in series]}


# --- the perf-history gate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryDecision:
    """What the perf-history gate says of a series: outcome, message, and the change point a failure names."""

    outcome: str  # passed, failed, inconclusive
    message: str
    change: Change | None = None
    current: float | None = None  # the latest segment's median
    reference: float | None = None  # the level before the change point a failure names

    def facts(self) -> dict[str, Any]:
        """Return the verdict facts (a waiver names `change_point.run`)."""
        return {
            "outcome": self.outcome,
            "change_point": None if self.change is None else self.change.as_dict(),
            "current": self.current,
            "reference": self.reference,
        }


def _worse(ratio: float, direction: Direction, tolerance: float) -> bool:
    """Return True when `ratio` (new / old) is worse than the tolerance allows."""
    if direction == "higher-is-better":
        return ratio < 1 - tolerance
    return ratio > 1 + tolerance


def judge_series(series: Series, *, direction: Direction, tolerance: float, min_points: int,
                 waived: Callable[[str], bool] = lambda run: False) -> HistoryDecision:
    """Judge an analysed series: failed while a change for the worse beyond `tolerance` has not recovered.

    The latest segment's median is compared with the level before each change point that went the wrong way: the
    series has recovered from it when that comparison is within the tolerance again. A change point a waiver names
    (`waived(run)`) is accepted: the levels before it are no longer compared with. A failure names the earliest
    change point not recovered from (a waived one only when nothing else fails, so the waiver can cover it).
    Fewer than `min_points` points: inconclusive.
    """
    head = f"{series.profile} {series.metric}"
    count = len(series.points)
    if count < min_points:
        return HistoryDecision(
            "inconclusive",
            f"{head}: the history has {count} point(s); change points need {min_points} "
            "(run the suite with --kvmio-history on more runs, or import earlier results with `kvmio history import`)",
        )
    medians = levels(series)
    current = medians[-1]

    def unrecovered(start: int) -> list[tuple[Change, float]]:
        found = []
        for i, change in enumerate(series.changes):
            if i < start:
                continue
            level = medians[i]
            went_worse = _worse(change.point.ratio, direction, 0.0)
            overall = current / level if level else math.inf
            if went_worse and _worse(overall, direction, tolerance):
                found.append((change, level))
        return found

    last_waived = max((i for i, c in enumerate(series.changes) if waived(c.run)), default=-1)
    failing = unrecovered(last_waived + 1 if last_waived >= 0 else 0)
    failing = [f for f in failing if not waived(f[0].run)]
    if not failing and last_waived >= 0:
        failing = [f for f in unrecovered(0) if waived(f[0].run)][:1]  # only a waiver stands in its way: say so
    window = f"{count} points since {series.points[0].time}"
    if not failing:
        return HistoryDecision(
            "passed",
            f"{head}: latest level {format_value(current, series.metric)} ({len(series.changes)} change point(s) "
            f"in {window}); no change for the worse beyond {tolerance:.0%} stands",
            current=current,
        )
    change, level = failing[0]
    overall = current / level if level else math.inf
    others = "".join(f"; also {c.describe(series.metric)}" for c, _ in failing[1:])
    return HistoryDecision(
        "failed",
        f"{head}: {_percent(overall)} since the change point at {change.describe(series.metric)} — the latest level "
        f"{format_value(current, series.metric)} against {format_value(level, series.metric)} before it, beyond "
        f"the {tolerance:.0%} tolerance{others}; fix the cause, or accept the new level with a waiver "
        f"(rule perf-history, change_point: {change.run})",
        change=change, current=current, reference=level,
    )


def levels(series: Series) -> list[float]:
    """Return each segment's median of an analysed series (one level without change points)."""
    if series.changes:
        return [series.changes[0].point.before, *(c.point.after for c in series.changes)]
    return [statistics.median(series.values())]


def edges_of(series: Series) -> list[int]:
    """Return the segment boundaries of an analysed series: 0, each change point's index, the length."""
    return [0, *(c.point.index for c in series.changes), len(series.points)]
