"""Decide pass, fail or inconclusive from repeated fio samples against a limit or a baseline.

The verdict is taken on the median of the runs (default 3), so one outlier run neither fails
nor rescues a result. When the runs straddle the decision edge (the limit, or the edge of the
baseline's tolerance band) and their spread, (max - min) / median, exceeds `max_spread`, the
runs disagree about the answer: the outcome is inconclusive, not a pass or a regression.
A metric fio could not measure (None, e.g. latency under gtod_reduce) is inconclusive, never a pass.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pytest_kvmio.thresholds import (
    DEFAULT_MAX_SPREAD,
    FINGERPRINT_FIELDS,
    Baseline,
    Direction,
    Limit,
)

__all__ = [
    "DEFAULT_MAX_SPREAD",
    "Decision",
    "Outcome",
    "decide_baseline",
    "decide_limit",
    "fingerprint_diff",
    "format_value",
    "spread",
]


class Outcome(StrEnum):
    """The result of one gate: the string values go into reports and the JSON summary."""

    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Decision:
    """One verdict of one metric of one profile, with everything its message states."""

    outcome: Outcome
    message: str
    profile: str
    metric: str
    kind: str  # "floor", "ceiling" or "baseline"
    reference: float  # the limit, or the baseline median
    edge: float  # the value the median is compared with (limit, or tolerance band edge)
    samples: tuple[float | None, ...]
    median: float | None
    spread: float | None
    tolerance: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Return True when the gate passed."""
        return self.outcome is Outcome.PASSED

    @property
    def failed(self) -> bool:
        """Return True when the gate failed."""
        return self.outcome is Outcome.FAILED

    @property
    def inconclusive(self) -> bool:
        """Return True when the samples cannot decide."""
        return self.outcome is Outcome.INCONCLUSIVE


def spread(samples: Sequence[float]) -> float:
    """Return (max - min) / |median|: 0 for identical samples, inf around a zero median."""
    low, high = min(samples), max(samples)
    if low == high:
        return 0.0
    middle = abs(statistics.median(samples))
    return (high - low) / middle if middle else math.inf


def format_value(value: float, metric: str = "") -> str:
    """Return a value the way a report shows it: thousands separators, µs or % unit from the metric name."""
    if math.isinf(value):
        text = "inf"
    elif abs(value) >= 100 or value == int(value):
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}"
    else:
        text = f"{value:.2f}"
    if metric.endswith("_us"):
        return f"{text} µs"
    if metric.endswith("_pct"):
        return f"{text}%"
    if metric == "bw_bytes":
        return f"{text} B/s"
    return text


def _samples_text(samples: Sequence[float]) -> str:
    return " ".join(format_value(s) for s in samples)


def _unusable(samples: Sequence[float | None]) -> str | None:
    """Return why the samples cannot be judged, or None when they can."""
    if not samples:
        return "no samples (fio did not run or its results were not read)"
    missing = sum(1 for s in samples if s is None)
    if missing:
        return (
            f"not measured in {missing} of {len(samples)} runs (fio reported no value: "
            "gtod_reduce, no percentiles, or no I/O in that direction)"
        )
    bad = [s for s in samples if s is not None and not math.isfinite(s)]
    if bad:
        return f"non-finite values {bad} in the samples; check the fio output"
    return None


def _acceptable(value: float, edge: float, direction: Direction) -> bool:
    return value >= edge if direction == "higher-is-better" else value <= edge


def _decide(
    *,
    profile: str,
    metric: str,
    kind: str,
    reference: float,
    edge: float,
    direction: Direction,
    samples: Sequence[float | None],
    max_spread: float,
    against: str,
    edge_text: str,
    tolerance: float | None = None,
    warnings: tuple[str, ...] = (),
    verdict_text: Callable[[float, bool], str],
) -> Decision:
    head = f"{profile} {metric}"
    values = tuple(samples)
    reason = _unusable(values)
    if reason is not None:
        return Decision(
            Outcome.INCONCLUSIVE,
            f"{head}: {reason}; cannot judge against {against}",
            profile, metric, kind, reference, edge, values, None, None, tolerance, warnings,
        )
    numbers = [float(s) for s in values if s is not None]
    middle = statistics.median(numbers)
    width = spread(numbers)
    measured = f"median {format_value(middle, metric)} (samples {_samples_text(numbers)})"
    verdicts = {_acceptable(n, edge, direction) for n in numbers}
    if width > max_spread and len(verdicts) == 2:  # some runs pass, some fail: they straddle the edge
        return Decision(
            Outcome.INCONCLUSIVE,
            f"{head}: samples {_samples_text(numbers)} (median {format_value(middle, metric)}) straddle "
            f"{edge_text} with a spread of {width:.0%}, over the {max_spread:.0%} that allows a verdict; "
            "rerun on a quieter system or with more runs",
            profile, metric, kind, reference, edge, values, middle, width, tolerance, warnings,
        )
    ok = _acceptable(middle, edge, direction)
    text = verdict_text(middle, ok)
    return Decision(
        Outcome.PASSED if ok else Outcome.FAILED,
        f"{head}: {measured} {text}",
        profile, metric, kind, reference, edge, values, middle, width, tolerance, warnings,
    )


def decide_limit(
    samples: Sequence[float | None], limit: Limit, *, max_spread: float = DEFAULT_MAX_SPREAD
) -> Decision:
    """Judge the median of `samples` against a class floor or ceiling (both when both are set)."""
    if limit.floor is None and limit.ceiling is None:
        raise ValueError(f"{limit.storage_class} {limit.profile} {limit.metric}: limit has neither floor nor ceiling")
    decisions = []
    for kind, bound in (("floor", limit.floor), ("ceiling", limit.ceiling)):
        if bound is None:
            continue
        direction: Direction = "higher-is-better" if kind == "floor" else "lower-is-better"
        against = f"{kind} {format_value(bound, limit.metric)} ({limit.storage_class})"

        def verdict(middle: float, ok: bool, kind: str = kind, bound: float = bound) -> str:
            word = ("at or above" if ok else "below") if kind == "floor" else ("at or below" if ok else "above")
            gap = f" by {abs(middle - bound) / bound:.0%}" if not ok and bound else ""
            return f"is {word} {kind} {format_value(bound, limit.metric)}{gap} ({limit.storage_class})"

        decisions.append(
            _decide(
                profile=limit.profile, metric=limit.metric, kind=kind, reference=bound, edge=bound,
                direction=direction, samples=samples, max_spread=max_spread, against=against, edge_text=against,
                verdict_text=verdict,
            )
        )
    # Both bounds set: a failure outranks an inconclusive result, which outranks a pass.
    rank = {Outcome.FAILED: 0, Outcome.INCONCLUSIVE: 1, Outcome.PASSED: 2}
    return min(decisions, key=lambda d: rank[d.outcome])


def decide_baseline(
    samples: Sequence[float | None],
    baseline: Baseline,
    *,
    max_spread: float = DEFAULT_MAX_SPREAD,
    fingerprint: Mapping[str, object] | None = None,
) -> Decision:
    """Judge the median of `samples` against a recorded baseline median and its tolerance band."""
    tolerance = baseline.tolerance
    reference = baseline.median
    if baseline.direction == "higher-is-better":
        edge, side = reference * (1 - tolerance), "lower"
    else:
        edge, side = reference * (1 + tolerance), "upper"
    shown = f"baseline {format_value(reference, baseline.metric)} (tolerance {tolerance:.0%})"
    warnings: tuple[str, ...] = ()
    if fingerprint is not None:
        differences = fingerprint_diff(baseline.fingerprint, fingerprint)
        if differences:
            warnings = (
                f"baseline of {baseline.target} {baseline.profile} was recorded on {baseline.at} on a "
                f"different environment: {'; '.join(differences)}",
            )

    def verdict(middle: float, ok: bool) -> str:
        if reference == 0:
            change = "equals" if middle == 0 else "is above"
            return f"{change} {shown}" + (" — within tolerance" if ok else "")
        delta = (middle - reference) / reference
        where = "equals" if delta == 0 else f"is {abs(delta):.0%} {'above' if delta > 0 else 'below'}"
        return f"{where} {shown}" + (" — within tolerance" if ok else "")

    return _decide(
        profile=baseline.profile, metric=baseline.metric, kind="baseline", reference=reference, edge=edge,
        direction=baseline.direction, samples=samples, max_spread=max_spread,
        against=shown, edge_text=f"{format_value(edge, baseline.metric)}, the {side} edge of {shown},",
        tolerance=tolerance, warnings=warnings,
        verdict_text=verdict,
    )


def fingerprint_diff(recorded: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """Return one `field: recorded 'a', now 'b'` line per environment field that differs."""
    fields = [f for f in FINGERPRINT_FIELDS if f in recorded or f in current]
    fields += sorted((set(recorded) | set(current)) - set(FINGERPRINT_FIELDS))
    differences = []
    for name in fields:
        before, after = recorded.get(name), current.get(name)
        if before is None and after is None:
            continue
        if str(before) != str(after):
            was = "unknown" if before is None else repr(str(before))
            now = "unknown" if after is None else repr(str(after))
            differences.append(f"{name}: recorded {was}, now {now}")
    return differences
