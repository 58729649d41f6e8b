"""fio's latency histogram (json+ `bins`): bucket values, runs merged, percentiles of the pooled runs.

fio files every completion latency into one of a fixed set of buckets and computes its percentiles from them;
`--output-format=json+` prints the buckets (`clat_ns.bins`: bucket value → count). Merging the buckets of
repeated runs and reading a percentile off the sum gives the percentile of all the runs' I/Os together, as
precise as fio's own (a bucket is at most 1/64 of its value wide, under 1.6 %), where the median of each
run's percentile weighs a short run like a long one and can't be finer than the spread between runs.

The bucket layout is fio's (stat.h: FIO_IO_U_PLAT_BITS = 6, FIO_IO_U_PLAT_VAL = 64; stat.c: plat_val_to_idx,
plat_idx_to_val, calc_clat_percentiles; fio 3.33, read in the axboe/fio repository and written anew here):
latencies below 2 × 64 have a bucket each; above, each power of two [2^m, 2^(m+1)) is split into 64 equal
buckets of width 2^(m-6), and fio reports a bucket by the middle of its range. A percentile p is the value of
the first bucket at which the running count reaches p/100 × N. fio 3 keys `bins` by that value in ns; fio 2.x
keyed them by bucket index in µs and listed FIO_IO_U_PLAT_BITS, _VAL and _NR among them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: fio's histogram precision: 2^PLAT_BITS buckets per power of two.
PLAT_BITS = 6
PLAT_VAL = 1 << PLAT_BITS
#: Below this value every latency has a bucket of its own (index = value).
EXACT_BELOW = PLAT_VAL << 1
#: fio 2.x json+ put its layout among the bins under these names.
LAYOUT_KEYS = ("FIO_IO_U_PLAT_BITS", "FIO_IO_U_PLAT_VAL", "FIO_IO_U_PLAT_NR")

#: How a verdict's value was estimated from repeated runs (the `estimator` of decisions and baselines).
POOLED = "pooled-histogram"
MEDIAN_OF_RUNS = "median-of-runs"
ESTIMATORS = (POOLED, MEDIAN_OF_RUNS)


class HistogramError(ValueError):
    """Histogram bins that are not fio's, or histograms that can't be merged; `key` names the bin at fault."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


def bucket_index(value: int) -> int:
    """Return the index of fio's bucket that holds a latency `value` (in the histogram's unit)."""
    if value < 0:
        raise HistogramError(f"a latency can't be negative, got {value}")
    if value < EXACT_BELOW:
        return value
    shift = value.bit_length() - 1 - PLAT_BITS  # log2 of the bucket width in this power of two
    return (shift + 1) * PLAT_VAL + ((value >> shift) & (PLAT_VAL - 1))


def bucket_bounds(index: int) -> tuple[int, int]:
    """Return the range [low, high) of latencies bucket `index` holds."""
    if index < 0:
        raise HistogramError(f"a bucket index can't be negative, got {index}")
    if index < EXACT_BELOW:
        return index, index + 1
    shift = (index >> PLAT_BITS) - 1
    low = (1 << (shift + PLAT_BITS)) + (index & (PLAT_VAL - 1)) * (1 << shift)
    return low, low + (1 << shift)


def bucket_value(index: int) -> int:
    """Return the value fio reports for bucket `index`: the middle of its range (the index itself below 128)."""
    low, high = bucket_bounds(index)
    return low if high - low == 1 else (low + high) // 2


@dataclass(frozen=True)
class LatencyHistogram:
    """One latency histogram: count per fio bucket index, and the unit of its values in ns (1 for fio 3, 1000 for 2.x)."""

    counts: Mapping[int, int] = field(default_factory=dict)
    unit_ns: int = 1

    @property
    def total(self) -> int:
        """Return how many latencies the histogram holds."""
        return sum(self.counts.values())

    def merged(self, other: LatencyHistogram) -> LatencyHistogram:
        """Return the histogram of both: counts added bucket by bucket."""
        if other.unit_ns != self.unit_ns:
            raise HistogramError(
                f"can't merge a histogram in {_unit(self.unit_ns)} with one in {_unit(other.unit_ns)} "
                "(fio 3 and fio 2.x buckets differ)"
            )
        counts = dict(self.counts)
        for index, count in other.counts.items():
            counts[index] = counts.get(index, 0) + count
        return LatencyHistogram(counts, self.unit_ns)

    def percentile(self, pct: float) -> float:
        """Return the `pct` percentile in µs as fio computes it: the value of the first bucket whose running
        count reaches pct/100 × N."""
        if not 0 < pct <= 100:
            raise HistogramError(f"a percentile is in (0, 100], got {pct}")
        total = self.total
        if not total:
            raise HistogramError("an empty histogram has no percentiles")
        wanted = pct / 100.0 * total
        running = 0
        for index in sorted(self.counts):
            running += self.counts[index]
            if running >= wanted:
                return bucket_value(index) * self.unit_ns / 1000
        return bucket_value(max(self.counts)) * self.unit_ns / 1000  # rounding at 100 %

    def precision(self, pct: float) -> float:
        """Return the half-width of the bucket of the `pct` percentile in µs: how far fio's value may be off."""
        value = self.percentile(pct) * 1000 / self.unit_ns
        low, high = bucket_bounds(bucket_index(round(value)))
        return (high - low) / 2 * self.unit_ns / 1000


def merge(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """Return the histogram of all `histograms` together (the pooled runs)."""
    found = list(histograms)
    if not found:
        raise HistogramError("no histograms to merge")
    pooled = found[0]
    for other in found[1:]:
        pooled = pooled.merged(other)
    return pooled


def pooled_percentile(histograms: Sequence[LatencyHistogram], pct: float) -> float:
    """Return the `pct` percentile in µs of the merged histogram of repeated runs."""
    return merge(histograms).percentile(pct)


def parse_bins(bins: Mapping[str, int], *, unit_ns: int) -> LatencyHistogram:
    """Return the histogram of a fio json+ `bins` object; a HistogramError's `key` names the bin at fault.

    fio 3 keys are bucket values in ns and each must be the value of its own bucket; fio 2.x keys are bucket
    indices, with the layout listed among them (FIO_IO_U_PLAT_BITS must be fio's 6).
    """
    layout = {key: bins[key] for key in LAYOUT_KEYS if key in bins}
    by_index = bool(layout)
    if by_index and layout.get("FIO_IO_U_PLAT_BITS", PLAT_BITS) != PLAT_BITS:
        raise HistogramError(
            f"expected {PLAT_BITS} (fio's bucket layout), got {layout['FIO_IO_U_PLAT_BITS']}", "FIO_IO_U_PLAT_BITS"
        )
    counts: dict[int, int] = {}
    for key, count in bins.items():
        if key in LAYOUT_KEYS or not count:
            continue
        number = int(key)
        if by_index:
            index = number
        else:
            index = bucket_index(number)
            if bucket_value(index) != number:
                raise HistogramError(
                    f"{key} is not one of fio's bucket values (the nearest is {bucket_value(index)}); "
                    "not a fio json+ histogram", key,
                )
        counts[index] = counts.get(index, 0) + count
    return LatencyHistogram(counts, unit_ns)


def _unit(unit_ns: int) -> str:
    return "ns" if unit_ns == 1 else "µs" if unit_ns == 1000 else f"units of {unit_ns} ns"
