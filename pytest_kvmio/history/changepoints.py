"""Change points of a series: E-divisive (Matteson & James 2014) with a permutation test and a minimum segment length.

The series is split where the energy distance between the part before and the part after is largest; a split
counts only when a permutation test says such a distance is unlikely from the same values in random order
(p ≤ alpha), and every segment keeps at least `min_segment` points, so one spike is never a change of its own.
Found segments are split again the same way, best split first, until no split is significant.

Throughput noise is multiplicative, so positive series are analysed on the log scale: a 30 % drop looks the same at
1,000 and at 100,000 IOPS. The permutations come from numpy's PCG64 seeded with `seed`: one input, one answer.

`detect` is the one entry point (the power study in benchmarks/ and the perf-history gate call it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_ALPHA", "DEFAULT_MIN_SEGMENT", "DEFAULT_PERMUTATIONS", "ChangePoint", "detect"]

#: Fewest points on either side of a change: one or two odd runs are noise, not a new level.
DEFAULT_MIN_SEGMENT = 3
#: Largest permutation p-value that still counts as a change. With 999 permutations, 0.005 keeps the false alarms on
#: unchanged lab series at 0.4 % per series (95 % upper bound 0.9 %; 0.01 gave 0.7 %, upper bound 1.2 %): the power
#: study, benchmarks/bench_detector_power.py --sweep.
DEFAULT_ALPHA = 0.005
#: Permutations per test; the smallest p-value they can show is 1 / (permutations + 1). 199 capped detection at about
#: 97.5 % even for a clean drop.
DEFAULT_PERMUTATIONS = 999


@dataclass(frozen=True)
class ChangePoint:
    """Where a series changes level: the first index of the new segment and the segments' medians."""

    index: int
    before: float  # median of the segment that ends here
    after: float  # median of the segment that starts here
    ratio: float  # after / before (inf when before is 0 and after is not)
    p_value: float | None  # the permutation test's, for the split that found it


def _energy(distances: np.ndarray, min_segment: int) -> np.ndarray:
    """Return the energy statistic of each split of the series (a matrix per row: distances[..., n, n]).

    For a split at t, with n points: q(t) = t (n - t) / n x (2 mean|left - right| - mean|left - left'| -
    mean|right - right'|); splits closer than `min_segment` to either end get -inf. Works on a stack of permuted
    distance matrices at once (leading axes are kept).
    """
    n = distances.shape[-1]
    # Cumulative sums over both axes: the sum of any top-left block in O(1).
    cum = distances.cumsum(axis=-1).cumsum(axis=-2)
    t = np.arange(1, n)
    left = cum[..., t - 1, t - 1]  # sum over the [0, t) x [0, t) block (each pair twice)
    cross = cum[..., t - 1, n - 1] - left  # sum over [0, t) x [t, n)
    total = cum[..., n - 1, n - 1]
    right = total[..., None] - left - 2 * cross  # sum over [t, n) x [t, n)
    m = n - t
    with np.errstate(divide="ignore", invalid="ignore"):
        between = 2 * cross / (t * m)
        within_left = np.where(t > 1, left / np.maximum(t * (t - 1), 1), 0.0)
        within_right = np.where(m > 1, right / np.maximum(m * (m - 1), 1), 0.0)
        q = (t * m / n) * (between - within_left - within_right)
    allowed = (t >= min_segment) & (m >= min_segment)
    return np.where(allowed, q, -np.inf)


def _best_split(values: np.ndarray, min_segment: int) -> tuple[int, float]:
    """Return (split, statistic) of the strongest split of one segment; (-1, -inf) when it is too short."""
    if len(values) < 2 * min_segment:
        return -1, -math.inf
    distances = np.abs(values[:, None] - values[None, :])
    q = _energy(distances, min_segment)
    at = int(np.argmax(q))
    return at + 1, float(q[at])


def _p_value(values: np.ndarray, observed: float, min_segment: int, permutations: int,
             rng: np.random.Generator) -> float:
    """Return the share of permutations (the observed order counted once) whose best split is as strong."""
    n = len(values)
    order = rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1)
    shuffled = values[order]  # (permutations, n)
    distances = np.abs(shuffled[:, :, None] - shuffled[:, None, :])
    best = _energy(distances, min_segment).max(axis=-1)
    # A tiny slack: ties that differ only by rounding count as ties (as strong as the observed split).
    as_strong = int(np.count_nonzero(best >= observed - 1e-12 * max(1.0, abs(observed))))
    return (1 + as_strong) / (permutations + 1)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def detect(
    values: Sequence[float],
    *,
    min_segment: int = DEFAULT_MIN_SEGMENT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    permutations: int = DEFAULT_PERMUTATIONS,
) -> list[ChangePoint]:
    """Return the significant change points of `values`, in index order (deterministic for a given seed).

    `min_segment` is the fewest points a segment may have (on both sides of every change), `alpha` the largest
    permutation p-value accepted, `permutations` the permutations per test. Values must be finite numbers; a
    series shorter than 2 x min_segment has no change point.
    """
    if min_segment < 1:
        raise ValueError(f"min_segment={min_segment}: expected at least 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: expected a probability between 0 and 1")
    if permutations < 1:
        raise ValueError(f"permutations={permutations}: expected at least 1")
    raw = [float(v) for v in values]
    if any(not math.isfinite(v) for v in raw):
        raise ValueError("values must be finite numbers (leave out runs that measured nothing)")
    data = np.log(raw) if raw and all(v > 0 for v in raw) else np.asarray(raw, dtype=float)
    rng = np.random.Generator(np.random.PCG64(seed))
    cuts: list[int] = []
    p_values: dict[int, float] = {}
    tested: dict[tuple[int, int], tuple[int, float]] = {}  # segment -> its best split (found once)
    while True:
        bounds = [0, *sorted(cuts), len(data)]
        candidates = []
        for start, stop in zip(bounds, bounds[1:]):
            if (start, stop) not in tested:
                split, strength = _best_split(data[start:stop], min_segment)
                tested[(start, stop)] = (split, strength)
            split, strength = tested[(start, stop)]
            if split > 0:
                candidates.append((strength, start, stop, split))
        if not candidates:
            break
        strength, start, stop, split = max(candidates)
        p = _p_value(data[start:stop], strength, min_segment, permutations, rng)
        if p > alpha:
            break
        cuts.append(start + split)
        p_values[start + split] = p
    edges = [0, *sorted(cuts), len(raw)]
    found = []
    for i, index in enumerate(sorted(cuts), start=1):
        before = _median(raw[edges[i - 1]:index])
        after = _median(raw[index:edges[i + 1]])
        ratio = after / before if before else (math.inf if after else 1.0)
        found.append(ChangePoint(index=index, before=before, after=after, ratio=ratio, p_value=p_values[index]))
    return found
