"""The thresholds model: fio profiles, storage classes and their limits, baselines, metric directions.

Loaded from a `thresholds/` directory by `loading.load_thresholds`; the YAML and schema checks are in
`documents`. A bad file raises `ThresholdsError` naming the file, the path inside it and what was expected.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "DEFAULT_MAX_SPREAD",
    "DEFAULT_NOISE_MULTIPLE",
    "DEFAULT_REPEAT",
    "DEFAULT_TOLERANCE",
    "FINGERPRINT_FIELDS",
    "METRIC_DIRECTIONS",
    "RENAMED_METRICS",
    "Baseline",
    "Direction",
    "Limit",
    "MatchRule",
    "Profile",
    "StorageClass",
    "Thresholds",
    "ThresholdsError",
    "direction_of",
    "renamed_metric",
    "match_target",
]

Direction = Literal["higher-is-better", "lower-is-better"]

#: Which way is better for each metric a limit or baseline may name (fio.py keys + host CPU cost).
METRIC_DIRECTIONS: Mapping[str, Direction] = MappingProxyType(
    {
        "iops": "higher-is-better",
        "bw_bytes": "higher-is-better",
        # Completion latency (fio's clat), then total latency (fio's lat: submission included).
        "clat_mean_us": "lower-is-better",
        "clat_p50_us": "lower-is-better",
        "clat_p90_us": "lower-is-better",
        "clat_p99_us": "lower-is-better",
        "clat_p99_9_us": "lower-is-better",
        "clat_p99_99_us": "lower-is-better",
        "tlat_mean_us": "lower-is-better",
        "tlat_p50_us": "lower-is-better",
        "tlat_p90_us": "lower-is-better",
        "tlat_p99_us": "lower-is-better",
        "tlat_p99_9_us": "lower-is-better",
        "tlat_p99_99_us": "lower-is-better",
        "errors": "lower-is-better",
        "cpu_usr_pct": "lower-is-better",
        "cpu_sys_pct": "lower-is-better",
        "host_cpu_us_per_io": "lower-is-better",
    }
)

#: Environment facts a baseline records; a difference makes a comparison suspect.
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "cpu_model",
    "kernel",
    "qemu",
    "libvirt",
    "storage_class",
    "device_model",
    "io_mode",
    "cache",
)

DEFAULT_RUNTIME = 10
DEFAULT_RAMP_TIME = 2
DEFAULT_REPEAT = 3
DEFAULT_TOLERANCE = 0.15
DEFAULT_MAX_SPREAD = 0.25
#: A baseline's band is max(tolerance, this x its recorded noise); a baseline file may set `noise_multiple`.
DEFAULT_NOISE_MULTIPLE = 3.0
#: Confidence of the upper bound on the noise that a baseline's few samples allow (see `noise_bound`).
NOISE_CONFIDENCE = 0.95

WRITING_RW = frozenset({"write", "randwrite", "rw", "readwrite", "randrw", "trim", "randtrim", "trimwrite"})
_UNITS = {"": 1, "k": 1024, "m": 1024**2}


class ThresholdsError(ValueError):
    """A thresholds file is missing, unreadable or invalid; the message names file and path."""


#: Metric names refused since completion and total latency got names of their own: old -> (clat, tlat).
RENAMED_METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        f"lat_{stat}_us": (f"clat_{stat}_us", f"tlat_{stat}_us")
        for stat in ("mean", "p50", "p90", "p99", "p99_9", "p99_99")
    }
)


def renamed_metric(metric: str) -> str | None:
    """Return why a metric name is refused because it was renamed, None for any other name."""
    if metric not in RENAMED_METRICS:
        return None
    clat, tlat = RENAMED_METRICS[metric]
    return f"{metric} was renamed: it meant completion latency; use {clat} (or {tlat} for total latency)"


def direction_of(metric: str) -> Direction:
    """Return which way is better for `metric`; raise KeyError for a metric without one (or renamed)."""
    if metric in RENAMED_METRICS:
        raise KeyError(renamed_metric(metric))
    return METRIC_DIRECTIONS[metric]


@dataclass(frozen=True)
class Profile:
    """One fio job definition, run `repeat` times per disk."""

    name: str
    description: str
    rw: str
    bs: str
    iodepth: int
    numjobs: int
    runtime: int
    ramp_time: int
    write: bool
    repeat: int = DEFAULT_REPEAT
    ioengine: str = "libaio"
    direct: bool = True
    group_reporting: bool = True
    rwmixread: int | None = None
    size: str | None = None

    @property
    def bs_bytes(self) -> int:
        """Return the block size in bytes."""
        number, unit = re.fullmatch(r"(\d+)([kKmM]?)", self.bs).groups()  # type: ignore[union-attr]
        return int(number) * _UNITS[unit.lower()]

    @property
    def total_seconds(self) -> int:
        """Return the wall time of all repeats, ramp included (for progress and timeouts)."""
        return (self.runtime + self.ramp_time) * self.repeat

    def with_timing(
        self, runtime: int | None = None, ramp_time: int | None = None, repeat: int | None = None
    ) -> Profile:
        """Return a copy with runtime, ramp time or repeat count overridden where given."""
        return dataclasses.replace(
            self,
            runtime=self.runtime if runtime is None else runtime,
            ramp_time=self.ramp_time if ramp_time is None else ramp_time,
            repeat=self.repeat if repeat is None else repeat,
        )

    def fio_args(self) -> list[str]:
        """Return the fio options of this job, without filename, output format or --readonly."""
        args = [
            f"--name={self.name}",
            f"--rw={self.rw}",
            f"--bs={self.bs}",
            f"--iodepth={self.iodepth}",
            f"--numjobs={self.numjobs}",
            f"--ioengine={self.ioengine}",
            f"--direct={int(self.direct)}",
            f"--runtime={self.runtime}",
            f"--ramp_time={self.ramp_time}",
            "--time_based",
        ]
        if self.group_reporting:
            args.append("--group_reporting")
        if self.rwmixread is not None:
            args.append(f"--rwmixread={self.rwmixread}")
        if self.size is not None:
            args.append(f"--size={self.size}")
        return args


@dataclass(frozen=True)
class MatchRule:
    """A membership rule: every glob given must match (target glob is matched per part)."""

    target: str | None = None
    serial: str | None = None

    def matches(self, target_id: str, serial: str | None) -> bool:
        """Return True when the target id and serial satisfy every glob of this rule."""
        if self.target is not None and not match_target(self.target, target_id):
            return False
        if self.serial is not None and (serial is None or not fnmatch.fnmatchcase(serial, self.serial)):
            return False
        return True


@dataclass(frozen=True)
class Limit:
    """A fixed bound of one metric for one profile in one storage class."""

    storage_class: str
    profile: str
    metric: str
    floor: float | None = None
    ceiling: float | None = None


@dataclass(frozen=True)
class StorageClass:
    """A named group of disks sharing limits; membership by target and/or serial glob."""

    name: str
    description: str
    match: tuple[MatchRule, ...]
    max_spread: float
    limits: Mapping[str, Mapping[str, Limit]] = field(default_factory=lambda: MappingProxyType({}))
    #: How much worse a metric may get at a change point of the results history before perf-history fails.
    tolerance: float = DEFAULT_TOLERANCE

    def matches(self, target_id: str, serial: str | None) -> bool:
        """Return True when any membership rule matches."""
        return any(rule.matches(target_id, serial) for rule in self.match)


@functools.lru_cache(maxsize=256)
def _chi2_low(dof: int) -> float:
    from scipy.stats import chi2  # imported on first use: offline lint never judges a baseline

    return float(chi2.ppf(1 - NOISE_CONFIDENCE, dof))


def noise_bound(noise: float, samples: int) -> float:
    """Return the upper NOISE_CONFIDENCE bound of a noise (a log-scale standard deviation) measured on `samples`.

    Six samples from two sessions can show 10 % noise where the host really moves 20 %: the estimate of a
    standard deviation from n samples is itself uncertain, (n - 1) s² / σ² following χ² with n - 1 degrees of
    freedom. The bound is s √((n - 1) / χ²(1 - confidence; n - 1)): 2.1 s for 6 samples, 1.3 s for 30, s with
    many. Unknown sample counts (fewer than 2) return the noise unchanged.
    """
    if samples < 2 or not math.isfinite(noise):
        return noise
    return noise * math.sqrt((samples - 1) / _chi2_low(samples - 1))


def band_of(tolerance: float, noise: float, multiple: float, direction: Direction) -> float:
    """Return the relative band a baseline allows: the tolerance, or more where multiple x noise says so.

    Noise is on the log scale (multiplicative), so the widened lower edge is median x exp(-multiple x noise)
    for a higher-is-better metric (it never reaches zero) and the upper edge median x exp(+multiple x noise).
    """
    if not math.isfinite(noise):
        return tolerance
    spread = multiple * noise
    widened = 1 - math.exp(-spread) if direction == "higher-is-better" else math.exp(spread) - 1
    return max(tolerance, widened)


@dataclass(frozen=True)
class Baseline:
    """A recorded median of one metric for one target glob and profile."""

    target: str
    profile: str
    metric: str
    median: float
    tolerance: float
    direction: Direction
    at: str
    fingerprint: Mapping[str, Any]
    samples: tuple[float, ...] = ()
    source: str = ""
    noise: float | None = None  # relative dispersion over the recorded sessions; None in files before it
    sessions: int | None = None
    noise_multiple: float = DEFAULT_NOISE_MULTIPLE
    #: How `median` was taken from the samples: "median-of-runs", or "pooled-histogram" (a latency percentile of
    #: every recorded run's json+ histogram merged, perf/histogram.py).
    estimator: str = "median-of-runs"

    @property
    def band(self) -> float:
        """Return the relative band the gate allows: the tolerance, widened by noise_multiple x the recorded noise.

        The noise is on the log scale (multiplicative), so the widened edge is median x exp(-k x noise) for a
        higher-is-better metric (never at or below zero: a throttle far below still fails) and
        median x exp(+k x noise) for a lower-is-better one.
        """
        if self.noise is None:
            return self.tolerance
        return band_of(self.tolerance, self.noise, self.noise_multiple, self.direction)

    @property
    def noise_bound(self) -> float | None:
        """Return the upper bound of the recorded noise its sample count allows (see `noise_bound`), or None."""
        if self.noise is None:
            return None
        return noise_bound(self.noise, len(self.samples))

    @property
    def undecided_band(self) -> float:
        """Return the band beyond which a quiet run fails: the band with the noise at its upper bound.

        Between `band` and this, a median is inconclusive: outside what the recorded noise says, but within what
        noise of the bound its few samples allow could produce. It narrows as sessions are added and equals
        `band` for a baseline without noise or recorded samples.
        """
        bound = self.noise_bound
        if bound is None:
            return self.band
        return max(self.band, band_of(self.tolerance, bound, self.noise_multiple, self.direction))


@dataclass(frozen=True)
class Thresholds:
    """Everything in a thresholds directory, validated and cross-checked."""

    directory: str
    profiles: Mapping[str, Profile]
    classes: Mapping[str, StorageClass]
    baselines: tuple[Baseline, ...] = ()
    #: class_for's answers by (target id, serial): every perf rule asks for every disk, a fleet has thousands.
    _class_of: dict[tuple[str, str | None], StorageClass | None] = field(default_factory=dict, init=False,
                                                                        repr=False, compare=False)

    def profile(self, name: str) -> Profile:
        """Return the profile called `name`; raise ThresholdsError naming the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            raise ThresholdsError(
                f"{self.directory}/profiles.yaml: no profile {name!r}; known: {', '.join(self.profiles)}"
            ) from None

    def class_for(self, target_id: str, serial: str | None = None) -> StorageClass | None:
        """Return the first storage class (in classes.yaml order) whose rules match, or None."""
        key = (target_id, serial)
        if key not in self._class_of:
            self._class_of[key] = next((c for c in self.classes.values() if c.matches(target_id, serial)), None)
        return self._class_of[key]

    def limits(self, class_name: str, profile: str) -> Mapping[str, Limit]:
        """Return metric -> Limit of a class for a profile (empty when the class sets none)."""
        try:
            storage_class = self.classes[class_name]
        except KeyError:
            raise ThresholdsError(
                f"{self.directory}/classes.yaml: no storage class {class_name!r}; known: {', '.join(self.classes)}"
            ) from None
        return storage_class.limits.get(profile, MappingProxyType({}))

    def baseline(self, target_id: str, profile: str, metric: str) -> Baseline | None:
        """Return the baseline for a target, profile and metric: exact target first, else first glob."""
        candidates = [b for b in self.baselines if b.profile == profile and b.metric == metric]
        for candidate in candidates:
            if candidate.target == target_id:
                return candidate
        for candidate in candidates:
            if match_target(candidate.target, target_id):
                return candidate
        return None

    def baselines_for(self, target_id: str, profile: str) -> dict[str, Baseline]:
        """Return metric -> Baseline for every metric with a baseline for this target and profile."""
        metrics = dict.fromkeys(b.metric for b in self.baselines if b.profile == profile)
        found = {metric: self.baseline(target_id, profile, metric) for metric in metrics}
        return {metric: b for metric, b in found.items() if b is not None}

    def with_timing(
        self, runtime: int | None = None, ramp_time: int | None = None, repeat: int | None = None
    ) -> Thresholds:
        """Return a copy whose profiles all use the given runtime, ramp time or repeat count."""
        profiles = {n: p.with_timing(runtime, ramp_time, repeat) for n, p in self.profiles.items()}
        return dataclasses.replace(self, profiles=MappingProxyType(profiles))


def match_target(pattern: str, target_id: str) -> bool:
    """Return True when a host/domain/disk glob matches a target id part by part ('*' stays in a part)."""
    pattern_parts = pattern.split("/")
    target_parts = target_id.split("/")
    if len(pattern_parts) != len(target_parts):
        return False
    return all(fnmatch.fnmatchcase(t, p) for p, t in zip(pattern_parts, target_parts))


