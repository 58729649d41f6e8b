"""One measurement: fio metrics of a profile's jobs combined, the repeated runs' result, the environment fingerprint."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_kvmio.perf.decide import format_value
from pytest_kvmio.perf.fio import (
    LATENCY_KINDS,
    LATENCY_METRICS,
    FioError,
    FioJobError,
    FioMetrics,
    FioReport,
    percentile_of,
)
from pytest_kvmio.perf.histogram import (
    MEDIAN_OF_RUNS,
    POOLED,
    LatencyHistogram,
    bucket_value,
    merge,
    parse_bins,
)
from pytest_kvmio.perf.thresholds import (
    Profile,
)

#: Metrics recorded per run (FioMetrics fields) plus the host CPU cost.
RUN_METRICS = (
    "iops", "bw_bytes", *LATENCY_METRICS, "errors", "cpu_usr_pct", "cpu_sys_pct", "runtime_s",
)
HOST_CPU = "host_cpu_us_per_io"
UNITS = {"iops": "IOPS", "bw_bytes": "B/s", "errors": "errors", "runtime_s": "s", HOST_CPU: "µs/IO"}


def unit_of(metric: str) -> str:
    """Return the unit a report shows next to a metric."""
    if metric.endswith("_us"):
        return "µs"
    if metric.endswith("_pct"):
        return "%"
    return UNITS.get(metric, "")


# --- one measurement ------------------------------------------------------------------------


def _direction(rw: str) -> str:
    if rw in ("read", "randread"):
        return "read"
    if rw in ("trim", "randtrim"):
        return "trim"
    if rw in ("write", "randwrite"):
        return "write"
    return "mixed"


def _combine(entries: list[FioMetrics], direction: str) -> FioMetrics:
    """Return one entry for several jobs (no group_reporting) or the read+write halves of a mix."""
    import dataclasses

    if len(entries) == 1:
        return entries[0]
    ios = [e.total_ios or 0 for e in entries]
    weights = sum(ios)

    def mean(name: str) -> float | None:
        means = [getattr(e, name) for e in entries]
        if not weights or any(m is None for m in means):
            return None
        return sum(m * n for m, n in zip(means, ios)) / weights

    def worst(name: str) -> float | None:
        values = [getattr(e, name) for e in entries]
        return None if any(v is None for v in values) else max(values)

    # Means weighted by I/Os; percentiles: the worst job's, conservative, never optimistic. Histograms add up:
    # their percentiles are those of all the jobs' I/Os together.
    latency: dict[str, Any] = {
        name: mean(name) if name.endswith("_mean_us") else worst(name) for name in LATENCY_METRICS
    }
    histograms = {
        kind: merge(e.histograms[kind] for e in entries)
        for kind in LATENCY_KINDS
        if all(kind in e.histograms for e in entries)
    }

    return dataclasses.replace(
        entries[0],
        direction=direction,
        iops=sum(e.iops for e in entries),
        bw_bytes=sum(e.bw_bytes for e in entries),
        **latency,
        runtime_s=max(e.runtime_s for e in entries),
        io_bytes=sum(e.io_bytes for e in entries),
        total_ios=sum(ios) if all(e.total_ios is not None for e in entries) else None,
        errors=sum(e.errors for e in entries),
        jobs_merged=None if any(e.jobs_merged is None for e in entries) else sum(e.jobs_merged or 0 for e in entries),
        notes=tuple(dict.fromkeys(n for e in entries for n in e.notes)),
        histograms=histograms,
    )


def metrics_of(report: FioReport, profile: Profile, target: str | None = None) -> FioMetrics:
    """Return the one entry a profile is judged on: its direction, jobs merged; read+write for mixes.

    A job that reported an error (fio's "error" != 0) raises FioJobError naming the target
    (host/domain/disk), the profile, the job and the error: its numbers are not a measurement.
    """
    job_errors = report.job_errors()
    if job_errors:
        where = f"{target}: " if target else ""
        raise FioJobError(
            report.source, f"{where}profile {profile.name}: fio reported {'; '.join(job_errors)}", job_errors
        )
    direction = _direction(profile.rw)
    if direction == "mixed":
        entries = [m for m in report.metrics if m.direction == "mixed"] or [
            m for m in report.metrics if m.direction in ("read", "write")
        ]
    else:
        entries = [m for m in report.metrics if m.direction == direction]
    if not entries:
        have = ", ".join(m.label for m in report.metrics) or "nothing"
        raise FioError(report.source, f"no {direction} result for profile {profile.name} (have {have})")
    return _combine(entries, direction)


def pooled_histogram(runs: Sequence[FioMetrics], kind: str) -> LatencyHistogram | None:
    """Return the merged json+ histogram of `kind` over every run, None unless every run carries one."""
    if not runs or any(kind not in run.histograms for run in runs):
        return None
    return merge(run.histograms[kind] for run in runs)


def pooled_value(runs: Sequence[FioMetrics], metric: str) -> float | None:
    """Return a percentile metric of the runs' pooled histogram (µs), None for other metrics or without json+."""
    found = percentile_of(metric)
    if found is None:
        return None
    histogram = pooled_histogram(runs, found[0])
    return None if histogram is None or not histogram.total else histogram.percentile(found[1])


def pooled_percentiles(runs: Sequence[FioMetrics]) -> dict[str, float]:
    """Return every percentile metric the runs' pooled histograms give (empty without json+ bins)."""
    values = {metric: pooled_value(runs, metric) for metric in LATENCY_METRICS}
    return {metric: value for metric, value in values.items() if value is not None}


def histogram_bins(histogram: LatencyHistogram) -> dict[str, Any]:
    """Return a histogram for a results file: its unit and fio's bucket values in that unit → count."""
    bins = {str(bucket_value(i)): n for i, n in sorted(histogram.counts.items()) if n}
    return {"unit_ns": histogram.unit_ns, "bins": bins}


def histogram_of_bins(document: dict[str, Any]) -> LatencyHistogram:
    """Return the histogram histogram_bins wrote (HistogramError names a bin that is not a fio bucket value)."""
    return parse_bins(document["bins"], unit_ns=document["unit_ns"])


def host_cpu_us_per_io(cpu_seconds: float, metrics: FioMetrics, ramp_time: int) -> float | None:
    """Return QEMU CPU µs per I/O: CPU over the whole fio command / I/Os over runtime + ramp.

    fio counts I/Os only after ramp_time, but the QEMU process also worked during the ramp; the I/O
    count is extrapolated with the measured IOPS so the ramp does not inflate the cost.
    """
    ios = metrics.iops * (metrics.runtime_s + ramp_time)
    if ios <= 0:
        return None
    return cpu_seconds * 1e6 / ios


@dataclass
class PerfResult:
    """Repeated runs of one profile on one disk: per-run metrics, host CPU cost, medians."""

    target: str
    profile: str
    serial: str | None = None
    device: str | None = None
    readonly: bool = True
    runs: list[FioMetrics] = field(default_factory=list)
    host_cpu: list[float | None] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    storage_class: str | None = None
    prefill_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: The host processes whose CPU host_cpu counts (QEMU; for a vhost-user disk also its backend).
    host_cpu_counted: list[str] = field(default_factory=list)
    #: When the measurement started (ISO 8601, UTC): the host's clock live, fio's own `timestamp` read from files.
    time: str | None = None
    #: The fio version that measured it (fio's "fio version").
    fio_version: str | None = None

    def samples(self, metric: str) -> list[float | None]:
        """Return one value per run (None where fio could not measure it)."""
        if metric == HOST_CPU:
            return list(self.host_cpu)
        values: list[float | None] = []
        for run in self.runs:
            value = getattr(run, metric)
            values.append(None if value is None else float(value))
        return values

    def median(self, metric: str) -> float | None:
        """Return the median of a metric, None unless every run measured it."""
        values = self.samples(metric)
        if not values or any(v is None for v in values):
            return None
        return float(statistics.median(v for v in values if v is not None))

    def pooled(self, metric: str) -> float | None:
        """Return a latency percentile of all runs' I/Os together (their merged json+ histograms, µs); None for
        other metrics or when a run has no histogram (fio's plain json): the verdict then uses the median."""
        return pooled_value(self.runs, metric)

    def estimator(self, metric: str) -> str:
        """Return how the verdict's value of `metric` is estimated: pooled histogram or median of runs."""
        return POOLED if self.pooled(metric) is not None else MEDIAN_OF_RUNS

    def as_result(self) -> dict[str, Any]:
        """Return the entry of the perf results file (perf-results.schema.json)."""
        samples = {m: self.samples(m) for m in RUN_METRICS}
        if any(v is not None for v in self.host_cpu):
            samples[HOST_CPU] = list(self.host_cpu)
        samples = {k: [None if v is None or not math.isfinite(v) else v for v in vs] for k, vs in samples.items()}
        entry: dict[str, Any] = {
            "target": self.target,
            "profile": self.profile,
            "serial": self.serial,
            "fingerprint": {k: v for k, v in self.fingerprint.items() if k not in HOST_FIELDS},
            "samples": samples,
            **({"time": self.time} if self.time else {}),
            **({"fio_version": self.fio_version} if self.fio_version else {}),
        }
        # The runs' merged json+ histograms: `kvmio baseline record` pools them over every session.
        histograms = {kind: pooled_histogram(self.runs, kind) for kind in LATENCY_KINDS}
        found = {kind: histogram_bins(h) for kind, h in histograms.items() if h is not None and h.total}
        if found:
            entry["histograms"] = found
        return entry

    def summary(self) -> str:
        """Return one line: medians of the headline metrics."""
        parts = [f"{format_value(self.median('iops') or 0)} IOPS"]
        lat = self.median("clat_mean_us")
        if lat is not None:
            parts.append(f"mean {format_value(lat, 'clat_mean_us')}")
        cpu = self.median(HOST_CPU)
        if cpu is not None:
            parts.append(f"host CPU {format_value(cpu)} µs/IO")
        return ", ".join(parts)


HOST_FIELDS = ("cpu_model", "kernel", "qemu", "libvirt")


def fingerprint_of(facts: Any, disk: Any, storage_class: str | None) -> dict[str, Any]:
    """Return the environment a measurement ran on (the fields baselines compare)."""
    model = ("vhost-user-blk" if getattr(disk, "is_vhost_user", False) else "virtio-blk" if disk.is_virtio_blk
             else "virtio-scsi" if disk.is_virtio_scsi else disk.bus)
    return {
        "cpu_model": getattr(facts, "cpu_model", None),
        "kernel": _str(getattr(facts, "kernel", None)),
        "qemu": _str(getattr(facts, "qemu", None)),
        "libvirt": _str(getattr(facts, "libvirt", None)),
        "storage_class": storage_class,
        "device_model": model,
        "io_mode": disk.effective_io if disk.domain.xml else disk.io,  # offline without XML: unknown
        "cache": disk.effective_cache if disk.domain.xml else disk.cache,  # offline without XML: unknown
    }


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
