"""A/B statistics: the balanced run order, and per metric the ratio B/A with a 95 % interval, a p-value and a verdict.

The ratio is median(B) / median(A); its interval is scipy's bootstrap over the two independent samples
(percentile method, seeded, so a report can be reproduced from its samples) and its p-value scipy's
two-sided Mann–Whitney U test. The verdict is from B's side, knowing which way is good for the metric:
`better` or `worse` only when the whole interval lies beyond ±margin on that side, `same` when it lies
inside ±margin, `inconclusive` otherwise, with roughly how many more rounds would decide.

The samples are per-run values, latency percentiles included: the bootstrap resamples runs, so a percentile of the
runs' pooled json+ histograms (what the perf gate judges, perf/histogram.py) would leave it nothing to resample.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pytest_kvmio.perf.thresholds import METRIC_DIRECTIONS

Verdict = Literal["better", "worse", "same", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("better", "worse", "same", "inconclusive")
CONFIDENCE = 0.95
DEFAULT_MARGIN = 0.05
RESAMPLES = 9999
#: Seed of the bootstrap: the same samples always give the same interval.
SEED = 20240502
#: Fewer samples per arm than this can't give an interval.
MIN_SAMPLES = 3
#: Beyond this many more rounds the effect sits on the margin's edge: more rounds won't decide it in practice.
MAX_MORE_ROUNDS = 200


def balanced_order(rounds: int) -> list[str]:
    """Return the run order of `rounds` rounds, each one run of A and one of B: A B B A A B B A …

    Alternating which arm goes first cancels a linear drift (a warming cache, a neighbour ramping up)
    between the arms over every two rounds.
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected at least 1, got {rounds}")
    return [arm for i in range(rounds) for arm in (("a", "b") if i % 2 == 0 else ("b", "a"))]


@dataclass(frozen=True)
class Comparison:
    """B against A on one metric: samples, medians, ratio B/A, its interval, the p-value and the verdict."""

    metric: str
    direction: str
    a_samples: tuple[float, ...]
    b_samples: tuple[float, ...]
    a_median: float
    b_median: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    margin: float
    verdict: Verdict
    more_rounds: int | None = None  # inconclusive: roughly how many more rounds would decide
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher-is-better"

    @property
    def not_worse(self) -> bool:
        """Return True when the whole interval lies on the good side of −margin (B not worse than A by more)."""
        if self.higher_is_better:
            return self.ci_low >= 1 - self.margin
        return self.ci_high <= 1 + self.margin

    @property
    def surely_worse(self) -> bool:
        """Return True when the whole interval lies beyond −margin on the bad side."""
        return self.verdict == "worse"

    def interval(self) -> str:
        """Return `0.52 [0.48, 0.57]`: the ratio and its interval."""
        return f"{self.ratio:.3g} [{self.ci_low:.3g}, {self.ci_high:.3g}]"

    def explain(self) -> str:
        """Say the verdict with its numbers, e.g. for a message or a table's note."""
        good = "higher" if self.higher_is_better else "lower"
        text = (
            f"{self.metric}: B/A {self.interval()} (95% interval, p={self.p_value:.3g}, {good} is better, "
            f"margin ±{self.margin:.0%}): {self.verdict}"
        )
        if self.verdict == "inconclusive" and self.more_rounds is not None:
            text += f"; about {self.more_rounds} more rounds would decide"
        elif self.verdict == "inconclusive":
            text += "; the effect sits on the margin: more rounds are unlikely to decide"
        return text + (f" ({self.note})" if self.note else "")

    def as_dict(self) -> dict[str, Any]:
        """Return the comparison as JSON-ready values (the `comparisons` entries of `kvmio ab --json`)."""
        out = asdict(self)
        out["a_samples"] = list(self.a_samples)
        out["b_samples"] = list(self.b_samples)
        return out


def direction_of(metric: str) -> str:
    """Return higher-is-better or lower-is-better for a metric (a KeyError names an unknown one)."""
    try:
        return METRIC_DIRECTIONS[metric]
    except KeyError:
        raise KeyError(f"{metric}: no known direction (known: {', '.join(METRIC_DIRECTIONS)})") from None


def _ratio_of_medians(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    med_a = np.median(a, axis=axis)
    med_b = np.median(b, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(med_b / med_a)


def ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Return the bootstrap interval of median(B) / median(A) over two independent samples."""
    from scipy import stats  # scipy.stats takes a second to import: only when an experiment is compared

    result = stats.bootstrap(
        (np.asarray(a, dtype=float), np.asarray(b, dtype=float)), _ratio_of_medians, vectorized=True,
        paired=False, confidence_level=confidence, n_resamples=RESAMPLES, method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def verdict_of(ci_low: float, ci_high: float, margin: float, higher_is_better: bool) -> Verdict:
    """Return the verdict of an interval of B/A: beyond ±margin on one side, inside it, or neither."""
    up, down = 1 + margin, 1 - margin
    if ci_low > up:
        return "better" if higher_is_better else "worse"
    if ci_high < down:
        return "worse" if higher_is_better else "better"
    if down <= ci_low and ci_high <= up:
        return "same"
    return "inconclusive"


def more_rounds(rounds: int, ratio: float, ci_low: float, ci_high: float, margin: float) -> int | None:
    """Return roughly how many more rounds would shrink the interval enough to decide, None if hopeless.

    The interval's width shrinks about as 1/sqrt(rounds). It decides once its half-width (in log space)
    is below the distance from the ratio to the nearest margin edge it straddles.
    """
    if ratio <= 0 or ci_low <= 0 or ci_high <= 0 or rounds < 1:
        return None
    half = (math.log(ci_high) - math.log(ci_low)) / 2
    edges = [math.log(1 + margin), math.log(1 - margin)]
    distance = min(abs(math.log(ratio) - e) for e in edges)
    if distance <= 0 or half <= 0:
        return None
    needed = math.ceil(rounds * (half / distance) ** 2)
    extra = max(1, needed - rounds)
    return extra if extra <= MAX_MORE_ROUNDS else None


def compare(
    metric: str, a: Sequence[float | None], b: Sequence[float | None], *, margin: float = DEFAULT_MARGIN,
    rounds: int | None = None,
) -> Comparison:
    """Compare B with A on one metric (None samples, runs that could not measure it, are left out)."""
    if not 0 <= margin < 1:
        raise ValueError(f"margin: expected a fraction in [0, 1), got {margin}")
    direction = direction_of(metric)
    xs = tuple(float(v) for v in a if v is not None and math.isfinite(v))
    ys = tuple(float(v) for v in b if v is not None and math.isfinite(v))
    if len(xs) < MIN_SAMPLES or len(ys) < MIN_SAMPLES:
        raise ValueError(
            f"{metric}: {len(xs)} sample(s) of A and {len(ys)} of B; at least {MIN_SAMPLES} of each are needed "
            "for an interval (run more rounds)"
        )
    a_med, b_med = statistics.median(xs), statistics.median(ys)
    if a_med <= 0:
        raise ValueError(f"{metric}: A's median is {a_med}; a ratio B/A needs a positive A")
    ratio = b_med / a_med
    low, high = ratio_interval(xs, ys)
    note = ""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high, note = 0.0, math.inf, "some resamples of A had a zero median"
    from scipy import stats  # see ratio_interval

    p_value = float(stats.mannwhitneyu(ys, xs, alternative="two-sided").pvalue)
    verdict = verdict_of(low, high, margin, direction == "higher-is-better")
    extra = None
    if verdict == "inconclusive":
        extra = more_rounds(rounds or min(len(xs), len(ys)), ratio, low, high, margin)
    return Comparison(
        metric=metric, direction=direction, a_samples=xs, b_samples=ys, a_median=a_med, b_median=b_med,
        ratio=ratio, ci_low=low, ci_high=high, p_value=p_value, margin=margin, verdict=verdict,
        more_rounds=extra, note=note,
    )
