"""Decide pass, fail or inconclusive from repeated fio samples against a limit or a baseline.

The verdict is taken on the median of the runs (default 3), so one outlier run neither fails
nor rescues a result. When the runs straddle the decision edge (the limit, or the edge of the
baseline's tolerance band) and their spread, (max - min) / median, exceeds `max_spread`, the
runs disagree about the answer: the outcome is inconclusive, not a pass or a regression.
A metric fio could not measure (None, e.g. latency under gtod_reduce) is inconclusive, never a pass.

Noise. `dispersion` is the relative noise of samples: the standard deviation of their logarithms
(statistics.stdev), because throughput noise is multiplicative (a busy neighbour halves or doubles a
run). It is deliberately not a robust estimator: a slow run now and then is exactly the noise a gate
meets on a shared machine, and a band that ignores it raises false alarms. `kvmio baseline record`
stores a baseline's `noise` from one or several sessions (perf results files recorded minutes apart):
`session_noise` is the dispersion of all the sessions' samples together, so drift between sessions counts.
The gate's lower edge is the baseline median x min(1 - tolerance, e^(-noise_multiple x noise)) (upper edge
for lower-is-better metrics), noise_multiple defaulting to DEFAULT_NOISE_MULTIPLE (3). A run outside the
band whose own dispersion exceeds max(2 x the recorded noise, max_spread) is inconclusive, not failed: it is
too noisy to tell a regression from its own noise. A baseline without a recorded noise keeps band = tolerance.

Few samples. The recorded noise is an estimate from the baseline's samples (six, for two sessions of three runs),
and a host that drifts between sessions can show less noise in them than it has. So a quiet run outside the band
fails only beyond the band computed with the noise at its 95 % upper bound (thresholds.noise_bound: about 2.1 x
the recorded noise for 6 samples, 1.3 x for 30); between the two edges it is inconclusive, and the message says
that recording more sessions narrows it. The pass/fail edge itself is the band above.

Estimators. Where fio wrote json+ histograms, a latency percentile can be taken over all the runs' I/Os together
(`pooled`: the percentile of their merged histogram, perf/histogram.py) instead of the median of each run's
percentile; the decision then judges that value and says so (`estimator`), while the spread and noise checks still
read the per-run samples. A baseline recorded one way is compared with a run estimated the same way where it can be.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pytest_kvmio.perf.fio import percentile_of
from pytest_kvmio.perf.histogram import MEDIAN_OF_RUNS, POOLED
from pytest_kvmio.perf.thresholds import (
    DEFAULT_MAX_SPREAD,
    DEFAULT_NOISE_MULTIPLE,
    FINGERPRINT_FIELDS,
    NOISE_CONFIDENCE,
    Baseline,
    Direction,
    Limit,
)

__all__ = [
    "DEFAULT_MAX_SPREAD",
    "DEFAULT_NOISE_MULTIPLE",
    "NOISY_RUN_FACTOR",
    "Decision",
    "Outcome",
    "decide_baseline",
    "decide_limit",
    "dispersion",
    "fingerprint_diff",
    "format_value",
    "session_noise",
    "spread",
]

#: A run is "noisier than the baseline" when its dispersion exceeds this multiple of the recorded noise.
NOISY_RUN_FACTOR = 2.0


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
    band: float | None = None  # baselines: the relative band judged against, max(tolerance, K x noise)
    noise: float | None = None  # this run's dispersion (see `dispersion`)
    undecided_band: float | None = None  # baselines: beyond the band but within this, a quiet run is inconclusive
    baseline_noise: float | None = None  # the noise recorded with the baseline, None when unknown
    estimator: str = MEDIAN_OF_RUNS  # how `median` was taken: "median-of-runs", or "pooled-histogram" (json+)

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


def dispersion(samples: Sequence[float]) -> float:
    """Return the samples' relative noise: the standard deviation of their logarithms (0 for one sample).

    Samples that are not all positive (an error count of 0) fall back to stdev / |median|, inf around a
    zero median.
    """
    if len(samples) < 2:
        return 0.0
    if all(s > 0 for s in samples):
        return statistics.stdev(math.log(s) for s in samples)
    deviation = statistics.stdev(samples)
    if deviation == 0:
        return 0.0
    middle = abs(statistics.median(samples))
    return deviation / middle if middle else math.inf


def session_noise(sessions: Sequence[Sequence[float]]) -> float:
    """Return the dispersion of every session's samples together (drift between sessions included)."""
    if not sessions or not all(sessions):
        raise ValueError("session_noise needs at least one session, each with samples")
    return dispersion([s for session in sessions for s in session])


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
    band: float | None = None,
    baseline_noise: float | None = None,
    noisy_above: float | None = None,
    noisy_text: str = "",
    undecided_band: float | None = None,
    undecided_edge: float | None = None,
    undecided_text: str = "",
    pooled: float | None = None,
) -> Decision:
    """Judge the median against `edge`; a run out of it with a dispersion over `noisy_above`, or still within
    `undecided_edge`, is inconclusive."""
    head = f"{profile} {metric}"
    values = tuple(samples)

    def make(outcome: Outcome, message: str, middle: float | None = None, width: float | None = None,
             noise: float | None = None) -> Decision:
        return Decision(
            outcome, message, profile, metric, kind, reference, edge, values, middle, width, tolerance, warnings,
            band=band, noise=noise, baseline_noise=baseline_noise, undecided_band=undecided_band,
            estimator=POOLED if pooled is not None and middle is not None else MEDIAN_OF_RUNS,
        )

    reason = _unusable(values)
    if reason is not None:
        return make(Outcome.INCONCLUSIVE, f"{head}: {reason}; cannot judge against {against}")
    numbers = [float(s) for s in values if s is not None]
    middle = statistics.median(numbers) if pooled is None else pooled
    width = spread(numbers)
    noise = dispersion(numbers)
    measured = f"median {format_value(middle, metric)} (samples {_samples_text(numbers)})"
    if pooled is not None:
        measured = (
            f"pooled {format_value(middle, metric)} (the percentile of the {len(numbers)} runs' merged latency "
            f"histogram; per-run samples {_samples_text(numbers)})"
        )
    verdicts = {_acceptable(n, edge, direction) for n in numbers}
    if width > max_spread and len(verdicts) == 2:  # some runs pass, some fail: they straddle the edge
        return make(
            Outcome.INCONCLUSIVE,
            f"{head}: samples {_samples_text(numbers)} ({'pooled' if pooled is not None else 'median'} "
            f"{format_value(middle, metric)}) straddle "
            f"{edge_text} with a spread of {width:.0%}, over the {max_spread:.0%} that allows a verdict; "
            "rerun on a quieter system or with more runs",
            middle, width, noise,
        )
    ok = _acceptable(middle, edge, direction)
    text = verdict_text(middle, ok)
    if not ok and noisy_above is not None and noise > noisy_above:
        return make(
            Outcome.INCONCLUSIVE,
            f"{head}: {measured} {text}, but this run's noise ({noise:.0%}) is over {noisy_text}: "
            "too noisy to tell a regression from its own noise; rerun on a quieter system or with more runs",
            middle, width, noise,
        )
    if not ok and undecided_edge is not None and _acceptable(middle, undecided_edge, direction):
        return make(
            Outcome.INCONCLUSIVE,
            f"{head}: {measured} {text}, but within {undecided_text}: the baseline's samples are too few to tell "
            "this from the host's own drift; record more sessions into the baseline (`kvmio baseline record "
            "--results ...`) to narrow it, or rerun",
            middle, width, noise,
        )
    return make(Outcome.PASSED if ok else Outcome.FAILED, f"{head}: {measured} {text}", middle, width, noise)


def decide_limit(
    samples: Sequence[float | None], limit: Limit, *, max_spread: float = DEFAULT_MAX_SPREAD,
    pooled: float | None = None,
) -> Decision:
    """Judge the median of `samples` (or the `pooled` percentile of their histograms) against a class floor or
    ceiling (both when both are set)."""
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
                verdict_text=verdict, pooled=pooled,
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
    pooled: float | None = None,
) -> Decision:
    """Judge the median of `samples` against a recorded baseline median and its band (tolerance or noise).

    `pooled` (the percentile of the runs' merged json+ histograms) is judged instead of the median when the
    baseline was recorded that way too; against a median-of-runs baseline the run's median is judged, like for
    like. A pooled baseline met by a run without histograms is judged on the median, with a warning.
    """
    tolerance = baseline.tolerance
    warned: tuple[str, ...] = ()
    if baseline.estimator != POOLED:
        pooled = None
    elif pooled is None and percentile_of(baseline.metric) is not None:
        warned = (
            (
                f"baseline of {baseline.target} {baseline.profile} {baseline.metric} is the percentile of the pooled "
                "histograms of its sessions, this run has no json+ histogram: judged on the median of the runs"
            ),
        )
    band = baseline.band
    reference = baseline.median
    if baseline.direction == "higher-is-better":
        edge, side = reference * (1 - band), "lower"
    else:
        edge, side = reference * (1 + band), "upper"
    pooled_text = ", pooled histogram" if baseline.estimator == POOLED else ""
    shown = f"baseline {format_value(reference, baseline.metric)} (tolerance {tolerance:.0%}{pooled_text})"
    widened = ""
    if band > tolerance and baseline.noise is not None:
        widened = (
            f"band widened from {tolerance:.0%} to {band:.0%} by the recorded noise "
            f"({baseline.noise_multiple:g} × {baseline.noise:.0%})"
        )
    warnings: tuple[str, ...] = warned
    if fingerprint is not None:
        differences = fingerprint_diff(baseline.fingerprint, fingerprint)
        if differences:
            warnings += (
                f"baseline of {baseline.target} {baseline.profile} was recorded on {baseline.at} on a "
                f"different environment: {'; '.join(differences)}",
            )
    def verdict(middle: float, ok: bool) -> str:
        if reference == 0:
            where = "equals" if middle == 0 else "is above"
        else:
            delta = (middle - reference) / reference
            where = "equals" if delta == 0 else f"is {abs(delta):.0%} {'above' if delta > 0 else 'below'}"
        text = f"{where} {shown}"
        if ok:
            text += " — within the band" if widened else " — within tolerance"
        return f"{text}; {widened}" if widened else text

    noisy_above = noisy_text = None
    if baseline.noise is not None:
        noisy_above = max(NOISY_RUN_FACTOR * baseline.noise, max_spread)
        noisy_text = (
            f"{NOISY_RUN_FACTOR:g} × the baseline's recorded noise ({baseline.noise:.0%}) "
            f"and the {max_spread:.0%} max spread"
        )
    edge_text = f"{format_value(edge, baseline.metric)}, the {side} edge of {shown},"
    if widened:
        edge_text = (
            f"{format_value(edge, baseline.metric)}, the {side} edge of the {band:.0%} band around {shown} "
            f"({widened}),"
        )
    zone = _undecided(baseline)
    return _decide(
        profile=baseline.profile, metric=baseline.metric, kind="baseline", reference=reference, edge=edge,
        direction=baseline.direction, samples=samples, max_spread=max_spread,
        against=shown, edge_text=edge_text, tolerance=tolerance, warnings=warnings, verdict_text=verdict,
        band=band, baseline_noise=baseline.noise, noisy_above=noisy_above, noisy_text=noisy_text or "",
        undecided_band=zone[0] if zone else None, undecided_edge=zone[1] if zone else None,
        undecided_text=zone[2] if zone else "",
        pooled=pooled,
    )


def _undecided(baseline: Baseline) -> tuple[float, float, str] | None:
    """Return the inconclusive zone beyond a baseline's band: its band, edge and words (None when there is none)."""
    outer = baseline.undecided_band
    bound = baseline.noise_bound
    if outer <= baseline.band or bound is None or baseline.noise is None:
        return None
    edge = baseline.median * (1 - outer) if baseline.direction == "higher-is-better" else baseline.median * (1 + outer)
    text = (
        f"the {outer:.0%} band that the noise's {NOISE_CONFIDENCE:.0%} upper bound allows "
        f"({bound:.0%}: {baseline.noise:.0%} recorded over {len(baseline.samples)} samples)"
    )
    return outer, edge, text


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
