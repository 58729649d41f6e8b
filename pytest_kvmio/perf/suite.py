"""Performance glue: thresholds per target, repeated fio runs, decisions, the perf results file.

Live (the default): the `fio` fixture runs each profile `repeat` times in the guest against the
disk (see fio_runner.py for the safety checks) and samples the QEMU process CPU on the host
around every run (hostcpu.py). Results are cached per disk and profile for the session, so the
rules of one profile (one item per metric) share one measurement.

Offline (`--fio-results DIR`): nothing runs; fio JSON files are read from

    DIR/<host>/<domain>/<disk>/<profile>.json            one run, or
    DIR/<host>/<domain>/<disk>/<profile>.<n>.json        run n (1, 2, 3, ...; numeric order)

where <disk> is the libvirt target dev (vdb, sda) and <profile> a profile name of profiles.yaml.
Each file is one fio run's JSON output (text before it and interim `--status-interval` documents
are fine: the last document is the result). Optional `DIR/<host>/<domain>/domain.xml`
(`virsh dumpxml`) supplies serials, bus, io mode and cache, so storage classes that match by serial
work offline; without it a disk matches classes by target glob only. Optional
`<profile>[.<n>].hostcpu` files hold the QEMU CPU µs per I/O of that run (one number).
Every other file is ignored; a directory level that doesn't fit the layout is a usage error.

Inconclusive decisions mark the verdict inconclusive (`kvmio_record("kvmio_outcome",
"inconclusive")`) and SKIP the test with the decision's message, so a plain pytest run does not
fail on noise; `--kvmio-fail-inconclusive` turns them into a failing exit status (gate plugin).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.perf.fio import LATENCY_METRICS, FioError, FioJobError, FioMetrics, FioReport, read_fio
from pytest_kvmio.perf.decide import Decision, Outcome, format_value
from pytest_kvmio.perf.thresholds import (
    METRIC_DIRECTIONS,
    Limit,
    Profile,
    StorageClass,
    Thresholds,
    ThresholdsError,
    load_thresholds,
)

#: Metrics recorded per run (FioMetrics fields) plus the host CPU cost.
RUN_METRICS = (
    "iops", "bw_bytes", *LATENCY_METRICS, "errors", "cpu_usr_pct", "cpu_sys_pct", "runtime_s",
)
HOST_CPU = "host_cpu_us_per_io"
UNITS = {"iops": "IOPS", "bw_bytes": "B/s", "errors": "errors", "runtime_s": "s", HOST_CPU: "µs/IO"}
_RUN_FILE = re.compile(r"^(?P<profile>.+?)(?:\.(?P<n>\d+))?\.json$")
_HOSTCPU_FILE = re.compile(r"^(?P<profile>.+?)(?:\.(?P<n>\d+))?\.hostcpu$")


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

    # Means weighted by I/Os; percentiles: the worst job's, conservative, never optimistic.
    latency: dict[str, Any] = {
        name: mean(name) if name.endswith("_mean_us") else worst(name) for name in LATENCY_METRICS
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

    def as_result(self) -> dict[str, Any]:
        """Return the entry of the perf results file (perf-results.schema.json)."""
        samples = {m: self.samples(m) for m in RUN_METRICS}
        if any(v is not None for v in self.host_cpu):
            samples[HOST_CPU] = list(self.host_cpu)
        samples = {k: [None if v is None or not math.isfinite(v) else v for v in vs] for k, vs in samples.items()}
        return {
            "target": self.target,
            "profile": self.profile,
            "serial": self.serial,
            "fingerprint": {k: v for k, v in self.fingerprint.items() if k not in _HOST_FIELDS},
            "samples": samples,
        }

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


_HOST_FIELDS = ("cpu_model", "kernel", "qemu", "libvirt")


def fingerprint_of(facts: Any, disk: Any, storage_class: str | None) -> dict[str, Any]:
    """Return the environment a measurement ran on (the fields baselines compare)."""
    model = "virtio-blk" if disk.is_virtio_blk else "virtio-scsi" if disk.is_virtio_scsi else disk.bus
    return {
        "cpu_model": getattr(facts, "cpu_model", None),
        "kernel": _str(getattr(facts, "kernel", None)),
        "qemu": _str(getattr(facts, "qemu", None)),
        "libvirt": _str(getattr(facts, "libvirt", None)),
        "storage_class": storage_class,
        "device_model": model,
        "io_mode": disk.io,
        "cache": disk.effective_cache if disk.domain.xml else disk.cache,  # offline without XML: unknown
    }


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


# --- session state --------------------------------------------------------------------------


@dataclass
class PerfState:
    """Per session: the thresholds, the measurements, which scratch disks were pre-filled."""

    config: pytest.Config
    results: dict[tuple[str, str], PerfResult | BaseException] = field(default_factory=dict)
    prefilled: set[str] = field(default_factory=set)
    _thresholds: Thresholds | None = None

    @property
    def thresholds(self) -> Thresholds:
        """Load the thresholds directory once; a bad file is a usage error naming it."""
        if self._thresholds is None:
            self._thresholds = _load(self.config)
        return self._thresholds

    def repeat(self, profile: Profile) -> int:
        """Return the runs per profile: --fio-repeat > KVMIO_FIO_REPEAT > ini > profiles.yaml."""
        from pytest_kvmio.options import setting

        value, source = setting(self.config, "fio_repeat")
        if value is None:
            return profile.repeat
        try:
            number = int(str(value))
        except ValueError:
            number = 0
        if number < 1:
            raise pytest.UsageError(f"{source}: expected a whole number of at least 1, got {value!r}")
        return number

    def progress(self, line: str) -> None:
        """Write a progress line to the terminal (fio runs are long)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.config.get_verbosity() < -1:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            reporter.ensure_newline()
            reporter.write_line(line)
            return
        with capture.global_and_fixture_disabled():  # a test is running: its output is captured
            reporter.ensure_newline()
            reporter.write_line(line)

    def write_results(self, path: str) -> int:
        """Write the perf results file for `kvmio baseline record`; return the number of results."""
        done = [r for r in self.results.values() if isinstance(r, PerfResult) and r.runs]
        host = next((r.fingerprint for r in done), {})
        document = {
            "fingerprint": {k: host.get(k) for k in _HOST_FIELDS},
            "results": [r.as_result() for r in sorted(done, key=lambda r: (r.target, r.profile))],
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        tmp.replace(target)
        return len(done)


PERF = pytest.StashKey[PerfState]()


def _load(config: pytest.Config) -> Thresholds:
    from pytest_kvmio.options import setting

    value, source = setting(config, "thresholds")
    if value is None:
        candidates = [Path(config.rootpath) / "thresholds", Path.cwd() / "thresholds"]
        directory = next((c for c in candidates if c.is_dir()), candidates[0])
        source = "default thresholds/"
    else:
        directory = Path(str(value))
        if not directory.is_absolute() and not directory.exists():
            directory = Path(config.rootpath) / directory
    try:
        thresholds = load_thresholds(directory)
    except ThresholdsError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None
    runtime = config.getoption("kvmio_fio_runtime", None)
    ramp = config.getoption("kvmio_fio_ramp_time", None)
    if runtime is not None or ramp is not None:
        thresholds = thresholds.with_timing(runtime=runtime, ramp_time=ramp)
    return thresholds


def state(config: pytest.Config) -> PerfState:
    """Return the session's perf state (created on first use)."""
    found = config.stash.get(PERF, None)
    if found is None:
        found = config.stash[PERF] = PerfState(config)
    return found


class PerfPlugin:
    """Hooks of the perf half: option checks, and the results file at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        if config.getoption("kvmio_fio_results", None):
            for option, dest in (("--host", "kvmio_hosts"), ("--domain-xml", "kvmio_domain_xml")):
                if config.getoption(dest, None):
                    raise pytest.UsageError(
                        f"--fio-results evaluates fio files offline and {option} "
                        f"{'runs fio on live hosts' if option == '--host' else 'lints XML files'}; pass one of them"
                    )

    def pytest_collection(self, session: pytest.Session) -> None:
        """Read explicitly named thresholds before collecting, so a bad file is a usage error (exit 4)."""
        from pytest_kvmio.options import setting

        if setting(self.config, "thresholds")[0] is not None or self.config.getoption("kvmio_fio_results", None):
            state(self.config).thresholds  # noqa: B018 - loads and validates

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.config.getoption("kvmio_perf_results", None)
        perf = self.config.stash.get(PERF, None)
        if path and perf is not None:
            count = perf.write_results(path)
            perf.progress(f"kvmio: {count} perf result(s) written to {path} (kvmio baseline record --results {path})")


# --- parametrization of the suite ------------------------------------------------------------


def profile_names(config: pytest.Config) -> list[str]:
    """Return the profiles of the thresholds directory, in file order."""
    return list(state(config).thresholds.profiles)


def _disk_targets(config: pytest.Config) -> list[Any]:
    from pytest_kvmio.plugin import STATE
    from pytest_kvmio.collect.targets import iter_targets

    return [t for t in iter_targets(config.stash[STATE].hosts(), "disk") if t.disk is not None]


def limit_metrics(config: pytest.Config, profile: str) -> list[str]:
    """Return the metrics (host CPU aside) with a limit for `profile` in a class some disk belongs to."""
    thresholds = state(config).thresholds
    found = (thresholds.class_for(t.disk.id, t.disk.serial) for t in _disk_targets(config))
    classes = {c.name for c in found if c is not None}
    metrics = {m for c in classes for m in thresholds.limits(c, profile)}
    metrics.discard(HOST_CPU)
    return sorted(metrics, key=_metric_order)


def baseline_metrics(config: pytest.Config, profile: str) -> list[str]:
    """Return the metrics some disk has a baseline for, for `profile`."""
    thresholds = state(config).thresholds
    found: set[str] = set()
    for t in _disk_targets(config):
        found.update(thresholds.baselines_for(t.disk.id, profile))
    return sorted(found, key=_metric_order)


def _metric_order(metric: str) -> tuple[int, str]:
    order = list(METRIC_DIRECTIONS)
    return (order.index(metric) if metric in order else len(order), metric)


# --- the fixture's object --------------------------------------------------------------------


class DiskFio:
    """fio for one disk: plans (skips), runs or reads results, and judges them."""

    def __init__(self, request: pytest.FixtureRequest, target: Any) -> None:
        self.request = request
        self.target = target
        self.disk = target.disk
        self.perf = state(request.config)
        self.thresholds = self.perf.thresholds
        self.offline_dir: str | None = request.config.getoption("kvmio_fio_results", None)
        self.storage_class: StorageClass | None = self.thresholds.class_for(self.disk.id, self.disk.serial)
        pattern = request.config.getini("kvmio_scratch_serial") or "kvmio-scratch*"
        self.scratch_pattern = str(pattern)

    @property
    def offline(self) -> bool:
        """Return True when results are read from --fio-results instead of measured."""
        return bool(self.offline_dir)

    @property
    def scratch(self) -> bool:
        """Return True when the serial marks the disk as scratch (content is checked before writing)."""
        from pytest_kvmio.perf.runner import is_scratch_serial

        return is_scratch_serial(self.disk.serial, self.scratch_pattern)

    def profile(self, name: str) -> Profile:
        """Return a profile of the thresholds directory."""
        try:
            return self.thresholds.profile(name)
        except ThresholdsError as exc:
            raise pytest.UsageError(str(exc)) from None

    def require_class(self) -> StorageClass:
        """Return the disk's storage class, or skip: without one there are no limits to judge by."""
        if self.storage_class is None:
            pytest.skip(
                f"{self.disk.id}: no storage class matches (serial {self.disk.serial!r}); add a match rule in "
                f"{self.thresholds.directory}/classes.yaml to judge it"
            )
        return self.storage_class

    def limit(self, profile: str, metric: str) -> Limit:
        """Return the class limit of a metric, or skip when the disk's class sets none."""
        storage_class = self.require_class()
        found = self.thresholds.limits(storage_class.name, profile).get(metric)
        if found is None:
            pytest.skip(f"{self.disk.id}: class {storage_class.name} sets no {metric} limit for {profile}")
        return found

    def plan(self, name: str) -> Profile:
        """Return the profile if it may run on this disk, else skip with the reason (before anything runs)."""
        profile = self.profile(name)
        if profile.write and not self.scratch and not self.offline:
            pytest.skip(
                f"{self.disk.id}: {name} writes ({profile.rw}) and serial {self.disk.serial!r} is not scratch "
                f"({self.scratch_pattern!r}); write profiles run only on scratch disks"
            )
        return profile

    def run(self, name: str) -> PerfResult:
        """Return the measurement of a profile on this disk: run `repeat` times once per session."""
        profile = self.plan(name)
        key = (self.disk.id, name)
        cached = self.perf.results.get(key)
        if isinstance(cached, PerfResult):
            return cached
        if isinstance(cached, BaseException):
            raise CouldNotJudge(f"{self.disk.id}: {name}: not measured: {cached}")
        try:
            result = self._read_files(profile) if self.offline else self._measure(profile)
        except (FioError, ThresholdsError) as exc:
            self.perf.results[key] = exc
            raise CouldNotJudge(f"{self.disk.id}: {name}: not measured: {exc}") from exc
        except Exception as exc:
            from pytest_kvmio.perf.runner import FioRunError, ScratchRefused
            from pytest_kvmio.collect.guest import GuestError
            from pytest_kvmio.collect.hostcpu import HostCpuError

            if not isinstance(exc, (ScratchRefused, FioRunError, GuestError, HostCpuError)):
                raise
            self.perf.results[key] = exc
            raise CouldNotJudge(f"{self.disk.id}: {name}: not measured: {exc}") from exc
        self.perf.results[key] = result
        return result

    def fingerprint(self) -> dict[str, Any]:
        """Return the environment fingerprint of this disk."""
        cls = self.storage_class.name if self.storage_class else None
        return fingerprint_of(self.target.host.facts, self.disk, cls)

    def _new_result(self, profile: Profile) -> PerfResult:
        return PerfResult(
            target=self.disk.id, profile=profile.name, serial=self.disk.serial, readonly=not profile.write,
            fingerprint=self.fingerprint(), storage_class=self.storage_class.name if self.storage_class else None,
        )

    def _measure(self, profile: Profile) -> PerfResult:
        from pytest_kvmio.perf.runner import GuestFio
        from pytest_kvmio.collect.hostcpu import HostCpuError, QemuCpu

        guest = self.request.getfixturevalue("guest")
        guest_disk = self.request.getfixturevalue("guest_disk")
        runner = GuestFio(
            guest, guest_disk.device, label=self.disk.id, serial=self.disk.serial,
            scratch_pattern=self.scratch_pattern, prefilled=self.perf.prefilled, progress=self.perf.progress,
        )
        result = self._new_result(profile)
        result.device = guest_disk.device
        cpu: QemuCpu | None = QemuCpu(self.target.host.testinfra_host, self.disk.domain.name)
        if self.scratch:
            result.prefill_seconds = runner.prefill()  # raises ScratchRefused before writing anything
        elif profile.rw not in ("write", "randwrite"):
            result.notes.append("not a scratch disk: not pre-filled, read with --readonly")
        repeat = self.perf.repeat(profile)
        total = repeat * (profile.runtime + profile.ramp_time)
        started = time.monotonic()
        for i in range(1, repeat + 1):
            elapsed = time.monotonic() - started
            self.perf.progress(
                f"kvmio fio: {self.disk.id} ({guest_disk.device}) {profile.name} run {i}/{repeat} "
                f"[{elapsed:.0f}s of ~{total}s]"
            )
            before = None
            if cpu is not None:
                try:
                    before = cpu.sample()
                except HostCpuError as exc:
                    result.notes.append(f"no host CPU cost: {exc}")
                    cpu = None
            out = runner.run_once(profile)
            metrics = metrics_of(out.report, profile, target=self.disk.id)
            cost = None
            if cpu is not None and before is not None:
                cost = host_cpu_us_per_io(cpu.sample().minus(before).seconds, metrics, profile.ramp_time)
            result.runs.append(metrics)
            result.host_cpu.append(cost)
            result.run_seconds.append(out.seconds)
            for problem in out.report.problems():
                result.notes.append(f"run {i}: {problem}")
        self.perf.progress(
            f"kvmio fio: {self.disk.id} {profile.name} done in {time.monotonic() - started:.0f}s: {result.summary()}"
        )
        return result

    def _read_files(self, profile: Profile) -> PerfResult:
        assert self.offline_dir is not None
        directory = Path(self.offline_dir, *self.disk.id.split("/"))
        runs = sorted(_run_files(directory, _RUN_FILE).get(profile.name, []))
        if not runs:
            pytest.skip(f"{self.disk.id}: no {profile.name}.json or {profile.name}.<n>.json in {directory}")
        costs = {n: p for n, p in _run_files(directory, _HOSTCPU_FILE).get(profile.name, [])}
        result = self._new_result(profile)
        for n, path in runs:
            report = read_fio(path)
            result.runs.append(metrics_of(report, profile, target=self.disk.id))
            result.sources.append(str(path))
            result.notes.extend(f"{path.name}: {p}" for p in report.problems())
            cost_file = costs.get(n)
            result.host_cpu.append(float(cost_file.read_text().strip()) if cost_file else None)
        return result


def _run_files(directory: Path, pattern: re.Pattern[str]) -> dict[str, list[tuple[int, Path]]]:
    found: dict[str, list[tuple[int, Path]]] = {}
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.setdefault(match["profile"], []).append((int(match["n"] or 0), path))
    return found


# --- offline targets ------------------------------------------------------------------------


def offline_hosts(root: str, domain_globs: list[str] | None = None) -> list[Any]:
    """Return host targets built from a --fio-results directory (DIR/<host>/<domain>/<disk>/...)."""
    from pytest_kvmio.model.domain import Disk, Domain, DomainXMLError, parse_domain
    from pytest_kvmio.collect.facts import HostFacts
    from pytest_kvmio.collect.targets import HostTarget

    base = Path(root)
    hosts = []
    for host_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        facts = HostFacts(name=host_dir.name, offline=True)
        domains = []
        for dom_dir in sorted(p for p in host_dir.iterdir() if p.is_dir()):
            xml = dom_dir / "domain.xml"
            if xml.is_file():
                try:
                    dom = parse_domain(xml.read_text(encoding="utf-8"), source=str(xml), host=host_dir.name)
                except DomainXMLError as exc:
                    raise pytest.UsageError(f"--fio-results: {exc}") from None
                dom.name = dom_dir.name
            else:
                dom = Domain(name=dom_dir.name, host=host_dir.name, source=str(dom_dir), xml="")
            known = {d.target for d in dom.disks}
            for disk_dir in sorted(p for p in dom_dir.iterdir() if p.is_dir()):
                if disk_dir.name not in known:
                    dom.disks.append(Disk(domain=dom, type="file", device="disk", target=disk_dir.name, bus=None))
            present = {p.name for p in dom_dir.iterdir() if p.is_dir()}
            dom.disks = [d for d in dom.disks if d.target in present]
            if dom.disks:
                domains.append(dom)
        hosts.append(HostTarget(name=host_dir.name, spec=None, facts=facts, domains=domains))
    from pytest_kvmio.collect.targets import filter_domains

    unmatched = filter_domains(hosts, domain_globs)
    if unmatched:
        raise pytest.UsageError(f"--domain {', '.join(unmatched)}: matches no domain in --fio-results {root}")
    if not any(h.domains for h in hosts):
        raise pytest.UsageError(
            f"--fio-results {root}: no <host>/<domain>/<disk>/<profile>.json files found; "
            "expected e.g. hv01/vm01/vdb/randread-4k-qd32x4.1.json"
        )
    return hosts


# --- verdicts -------------------------------------------------------------------------------


def perf_facts(decision: Decision, result: PerfResult, *, limit: Limit | None = None) -> dict[str, Any]:
    """Return the `perf` verdict facts of one decision (for the Allure table and chart)."""
    return {
        "profile": decision.profile,
        "metric": decision.metric,
        "median": decision.median,
        "samples": list(decision.samples),
        "limit": None if limit is None else {"floor": limit.floor, "ceiling": limit.ceiling, "class": limit.storage_class},
        "baseline": decision.reference if decision.kind == "baseline" else None,
        "tolerance": decision.tolerance,
        "band": decision.band,
        "noise": decision.noise,
        "baseline_noise": decision.baseline_noise,
        "unit": unit_of(decision.metric),
        "outcome": str(decision.outcome),
        "spread": decision.spread,
        "readonly": result.readonly,
        "device": result.device,
        "notes": result.notes,
    }


def judge(decision: Decision, target: str, record_property: Callable[[str, object], None]) -> None:
    """Pass, fail with the decision's message, or mark inconclusive and skip."""
    __tracebackhide__ = True
    for warning in decision.warnings:
        record_property("kvmio_note", warning)
    if decision.outcome is Outcome.INCONCLUSIVE:
        record_property("kvmio_outcome", "inconclusive")
        pytest.skip(f"{target}: inconclusive: {decision.message}")
    if decision.outcome is Outcome.FAILED:
        extra = f" ({'; '.join(decision.warnings)})" if decision.warnings else ""
        pytest.fail(f"{target}: {decision.message}{extra}", pytrace=False)
