"""The `fio` fixture's object: plan a profile on one disk, run it repeatedly in the guest (or read --fio-results), cache it.

Live: each profile runs `repeat` times in the guest against the disk (see runner.py for the safety checks)
and the QEMU process CPU is sampled on the host around every run (facts/hostcpu.py). Results are cached
per disk and profile for the session, so the rules of one profile (one item per metric) share one measurement.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.facts.guest_errors import GuestError
from pytest_kvmio.facts.hostcpu import HostCpuError, QemuCpu
from pytest_kvmio.perf.fio import FioError, read_fio
from pytest_kvmio.perf.offline import HOSTCPU_FILE, RUN_FILE, run_files
from pytest_kvmio.perf.results import (
    PerfResult,
    fingerprint_of,
    host_cpu_us_per_io,
    metrics_of,
)
from pytest_kvmio.perf.runner import (
    FioRunError,
    GuestFio,
    ScratchRefused,
    is_scratch_serial,
)
from pytest_kvmio.perf.session import state
from pytest_kvmio.perf.thresholds import (
    Limit,
    Profile,
    StorageClass,
    ThresholdsError,
)
from pytest_kvmio.runconfig import run_config


def backend_processes(disk: Any) -> dict[int, str]:
    """Return the processes serving a vhost-user disk's socket (pid -> what it is), read with the host facts."""
    backend = getattr(disk, "backend", None)
    if not getattr(disk, "is_vhost_user", False) or backend is None:
        return {}
    return {p.pid: f"{p.describe()} (serves {backend.socket})" for p in backend.listeners}


# --- the fixture's object --------------------------------------------------------------------

class DiskFio:
    """fio for one disk: plans (skips), runs or reads results, and judges them."""

    def __init__(self, request: pytest.FixtureRequest, target: Any) -> None:
        self.request = request
        self.target = target
        self.disk = target.disk
        self.perf = state(request.config)
        self.thresholds = self.perf.thresholds
        run = run_config(request.config)
        self.offline_dir: str | None = run.fio_results
        self.storage_class: StorageClass | None = self.thresholds.class_for(self.disk.id, self.disk.serial)
        self.scratch_pattern = run.scratch_serial

    @property
    def offline(self) -> bool:
        """Return True when results are read from --fio-results instead of measured."""
        return bool(self.offline_dir)

    @property
    def scratch(self) -> bool:
        """Return True when the serial marks the disk as scratch (content is checked before writing)."""

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

        guest = self.request.getfixturevalue("guest")
        guest_disk = self.request.getfixturevalue("guest_disk")
        runner = GuestFio(
            guest, guest_disk.device, label=self.disk.id, serial=self.disk.serial,
            scratch_pattern=self.scratch_pattern, prefilled=self.perf.prefilled, progress=self.perf.progress,
        )
        result = self._new_result(profile)
        result.device = guest_disk.device
        cpu: QemuCpu | None = QemuCpu(self.target.host.testinfra_host, self.disk.domain.name, backend_processes(self.disk))
        if self.disk.is_vhost_user and not backend_processes(self.disk):
            # Its I/O runs in a backend kvmio can't name: QEMU's CPU alone would make vhost-user look free.
            result.notes.append(f"no host CPU cost: no process known to serve vhost-user socket {self.disk.source_path}")
            cpu = None
        if self.scratch:
            result.prefill_seconds = runner.prefill()  # raises ScratchRefused before writing anything
        elif profile.rw not in ("write", "randwrite"):
            result.notes.append("not a scratch disk: not pre-filled, read with --readonly")
        repeat = self.perf.repeat(profile)
        result.time = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
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
            result.fio_version = result.fio_version or out.report.version
            result.host_cpu.append(cost)
            if cpu is not None and cost is not None:
                result.host_cpu_counted = cpu.counted()
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
        runs = sorted(run_files(directory, RUN_FILE).get(profile.name, []))
        if not runs:
            pytest.skip(f"{self.disk.id}: no {profile.name}.json or {profile.name}.<n>.json in {directory}")
        costs = {n: p for n, p in run_files(directory, HOSTCPU_FILE).get(profile.name, [])}
        result = self._new_result(profile)
        for n, path in runs:
            report = read_fio(path)
            result.runs.append(metrics_of(report, profile, target=self.disk.id))
            if result.time is None and report.final.timestamp_ms:  # fio's own clock: when the first run ran
                stamp = dt.datetime.fromtimestamp(report.final.timestamp_ms / 1000, dt.timezone.utc)
                result.time = stamp.isoformat(timespec="seconds")
            result.fio_version = result.fio_version or report.version
            result.sources.append(str(path))
            result.notes.extend(f"{path.name}: {p}" for p in report.problems())
            cost_file = costs.get(n)
            result.host_cpu.append(float(cost_file.read_text().strip()) if cost_file else None)
        return result
