"""A/B experiments: two arms (a guest disk, or a disk's backing source read on the hypervisor), one fio profile, rounds in a balanced order.

An arm is `DOMAIN/DISK` (fio in the guest on that disk, with the perf suite's safety: writes only on blank
scratch disks, read profiles with --readonly) or `DOMAIN/DISK@host` (the same profile run by fio on the
hypervisor against the disk's backing file or block device, read profiles only, --readonly). Every arm is
checked before anything runs (`plan`); a bad one raises InputError naming the input and what to fix.
Each run records the profile's metrics and a host CPU cost per I/O: the QEMU process's (all threads,
IOThreads included; for a vhost-user disk also the backend process serving its socket) for a guest arm,
fio's own for a host arm — not the same quantity, so only guest arms are compared on it.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_kvmio.errors import InputError
from pytest_kvmio.facts.guest import guest_host
from pytest_kvmio.facts.guest_errors import GuestError
from pytest_kvmio.facts.guestmap import GuestDisk, map_guest_disks
from pytest_kvmio.facts.hostcpu import HostCpuError, QemuCpu
from pytest_kvmio.facts.targets import HostTarget
from pytest_kvmio.model.domain import Disk
from pytest_kvmio.perf.abstats import DEFAULT_MARGIN, Comparison, balanced_order, compare
from pytest_kvmio.perf.diskfio import backend_processes
from pytest_kvmio.perf.fio import FioError, FioMetrics, parse_fio
from pytest_kvmio.perf.results import HOST_CPU, host_cpu_us_per_io, metrics_of
from pytest_kvmio.perf.runner import (
    COMMAND_SLACK,
    MEASURED_OUTPUT,
    FioRunError,
    GuestFio,
    ScratchRefused,
    fio_filename,
    is_scratch_serial,
)
from pytest_kvmio.perf.thresholds import Profile

HOST_SUFFIX = "@host"
#: The metrics every experiment compares, in table order (host CPU only between two guest arms).
METRICS = ("iops", "bw_bytes", "clat_mean_us", "clat_p99_us", HOST_CPU)
#: Disk types whose backing source fio can open on the hypervisor.
HOST_READABLE_TYPES = ("file", "block")
#: Rounds of an experiment unless told (`kvmio ab --rounds`, `--kvmio-ab ...,rounds=N`).
DEFAULT_ROUNDS = 6


class AbRunError(Exception):
    """A run failed (fio, the guest, the host); the experiment stops and says which arm and round."""


@dataclass(frozen=True)
class ArmSpec:
    """One arm as written: DOMAIN/DISK, or DOMAIN/DISK@host for fio on the hypervisor."""

    text: str
    domain: str
    disk: str
    on_host: bool

    @property
    def kind(self) -> str:
        return "host" if self.on_host else "guest"


def parse_arm(text: str, field_name: str = "arm") -> ArmSpec:
    """Read `DOMAIN/DISK` or `DOMAIN/DISK@host`; InputError names the field and the expected form."""
    raw = text.strip()
    on_host = raw.endswith(HOST_SUFFIX)
    body = raw[: -len(HOST_SUFFIX)] if on_host else raw
    domain, sep, disk = body.partition("/")
    if not sep or not domain or not disk or "/" in disk or "@" in body:
        raise InputError(
            f"{field_name}: {text!r} is not an arm; expected DOMAIN/DISK (fio in the guest on that disk, e.g. "
            "kvmio-lab-ab/vdb) or DOMAIN/DISK@host (fio on the hypervisor on that disk's backing source)"
        )
    return ArmSpec(raw, domain, disk, on_host)


def parse_margin(text: str) -> float:
    """Read a margin as a fraction (0.05) or a percentage (5%); ValueError says what is expected."""
    value = text.strip()
    try:
        margin = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"{text!r}: expected a percentage like 5% or a fraction like 0.05") from None
    if not 0 <= margin < 1:
        raise ValueError(f"{text!r}: expected a margin from 0% up to (not including) 100%")
    return margin


# --- one arm, resolved and ready to run ------------------------------------------------------------------


@dataclass
class RunSample:
    """One fio run of one arm: its metrics and the host CPU µs per I/O it cost."""

    metrics: FioMetrics
    cpu_us_per_io: float | None
    seconds: float


class ArmRunner(Protocol):
    def check(self) -> None: ...
    def prefill(self) -> None: ...
    def run(self, profile: Profile) -> RunSample: ...


@dataclass
class Arm:
    """A resolved arm: its spec, the libvirt disk it names, and (once prepared) how it runs."""

    name: str  # "a" or "b"
    spec: ArmSpec
    disk: Disk
    runner: ArmRunner | None = None
    device: str | None = None  # the guest's block device (guest arms)
    notes: list[str] = field(default_factory=list)
    #: The host processes whose CPU the arm's host CPU per I/O counts (QEMU; a vhost-user disk's backend too).
    counted: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.spec.text

    @property
    def kind(self) -> str:
        return self.spec.kind

    def facts(self) -> dict[str, Any]:
        """Return the arm and the configuration facts a change board compares (io, cache, bus, queues, ...)."""
        disk = self.disk
        model = ("vhost-user-blk" if disk.is_vhost_user else "virtio-blk" if disk.is_virtio_blk
                 else "virtio-scsi" if disk.is_virtio_scsi else disk.bus)
        out: dict[str, Any] = {
            "arm": self.label, "kind": self.kind, "target": disk.id, "io": disk.effective_io,
            "cache": disk.effective_cache, "bus": disk.bus, "device_model": model, "queues": disk.queues,
            "iothread": disk.iothread, "format": disk.format, "type": disk.type, "source": disk.source,
            "serial": disk.serial,
        }
        if self.device:
            out["guest_device"] = self.device
        if self.notes:
            out["notes"] = list(self.notes)
        if disk.is_vhost_user:  # no io or cache mode: the backend serving the socket does the I/O
            out.update(io=None, cache=None, socket=disk.source_path)
        if self.counted:
            out["host_cpu_counted"] = list(self.counted)
        return out


def _find_disk(host: HostTarget, spec: ArmSpec, field_name: str) -> Disk:
    domain = next((d for d in host.domains if d.name == spec.domain), None)
    if domain is None:
        names = ", ".join(d.name for d in host.domains) or "none"
        raise InputError(f"{field_name} {spec.text}: no domain {spec.domain!r} on {host.name} (domains there: {names})")
    disk = next((d for d in domain.disks if d.target == spec.disk and d.is_storage), None)
    if disk is None:
        names = ", ".join(d.target for d in domain.disks if d.is_storage) or "none"
        raise InputError(f"{field_name} {spec.text}: {spec.domain} has no disk {spec.disk!r} (its disks: {names})")
    return disk


def plan(
    host: HostTarget, a: ArmSpec, b: ArmSpec, profile: Profile, scratch_pattern: str,
) -> tuple[Arm, Arm]:
    """Resolve both arms on the host and refuse, before anything runs, what must not run."""
    if host.error is not None:
        raise InputError(f"--host {host.name}: {host.error}")
    arms = []
    for name, spec in (("a", a), ("b", b)):
        where = f"--{name}"
        disk = _find_disk(host, spec, where)
        if spec.on_host:
            if profile.write:
                raise InputError(
                    f"{where} {spec.text}: {profile.name} writes ({profile.rw}); fio on the hypervisor runs read "
                    "profiles only, with --readonly, on a disk a guest is using. Use a read profile"
                )
            if disk.type not in HOST_READABLE_TYPES or not (disk.source_file or disk.source_dev):
                raise InputError(
                    f"{where} {spec.text}: @host needs a file or block device backing the disk, and this is a "
                    f"{disk.type} disk ({disk.source or 'no source'}); fio on the hypervisor can't open it. "
                    "Compare it in the guest (drop @host)"
                )
        else:
            if disk.domain.running is False:
                raise InputError(f"{where} {spec.text}: domain {spec.domain} is not running; start it (virsh start)")
            if profile.write and not is_scratch_serial(disk.serial, scratch_pattern):
                raise InputError(
                    f"{where} {spec.text}: {profile.name} writes ({profile.rw}) and the disk's serial "
                    f"{disk.serial!r} does not match the scratch pattern {scratch_pattern!r}; write profiles run "
                    "only on blank scratch disks. Use a read profile or a scratch disk"
                )
        arms.append(Arm(name, spec, disk))
    first, second = arms
    if profile.write and (first.disk.id == second.disk.id or (first.disk.source and first.disk.source == second.disk.source)):
        raise InputError(
            f"--a {a.text} and --b {b.text}: {profile.name} writes, and both arms write the same scratch disk "
            f"({first.disk.source or first.disk.id}); each arm needs its own scratch disk for a write profile"
        )
    return first, second


# --- runners -------------------------------------------------------------------------------------------


class GuestArmRunner:
    """fio in the guest on one disk (perf/runner.py's checks), the QEMU process's CPU sampled around each run."""

    def __init__(
        self, arm: Arm, host: HostTarget, *, guest_spec: str | None, scratch_pattern: str, prefilled: set[str],
        guests: dict[str, Any], progress: Callable[[str], None],
    ) -> None:
        self.arm = arm
        self.host = host
        self.guest_spec = guest_spec
        self.scratch_pattern = scratch_pattern
        self.prefilled = prefilled
        self.guests = guests  # one guest Host and disk map per domain, shared by the arms
        self.progress = progress
        self.fio: GuestFio | None = None
        # A vhost-user disk's I/O runs in the backend serving its socket: its CPU counts with QEMU's.
        self.cpu = QemuCpu(host.testinfra_host, arm.disk.domain.name, backend_processes(arm.disk))

    def check(self) -> None:
        """Open the guest, find the disk by serial, and check a scratch disk's content (nothing written)."""
        disk = self.arm.disk
        name = disk.domain.name
        try:
            if name not in self.guests:
                guest = guest_host(self.guest_spec, self.host.connection.lookupByName(name), self.host.facts.libvirt_uri)
                mapping = map_guest_disks(guest, [d for d in disk.domain.disks if d.is_storage])
                self.guests[name] = (guest, mapping)
            guest, mapping = self.guests[name]
        except GuestError as exc:
            raise AbRunError(f"{self.arm.label}: guest unreachable: {exc}") from None
        found = mapping.get(disk.target)
        if not isinstance(found, GuestDisk):
            why = found.reason if found is not None else "not probed"
            raise InputError(f"--{self.arm.name} {self.arm.label}: cannot find the disk in the guest: {why}")
        self.arm.device = found.device
        if disk.is_vhost_user and not self.cpu.backends:
            raise InputError(
                f"--{self.arm.name} {self.arm.label}: no process serves vhost-user socket {disk.source_path} on "
                f"{self.host.name}, so its I/O cost can't be counted; start the backend (or read facts as root)"
            )
        self.fio = GuestFio(
            guest, found.device, label=disk.id, serial=disk.serial, scratch_pattern=self.scratch_pattern,
            prefilled=self.prefilled, progress=self.progress,
        )
        try:
            if self.fio.scratch_serial:
                self.fio.check_writable("pre-fill")
            else:
                self.arm.notes.append("not a scratch disk: not pre-filled, read with --readonly")
        except ScratchRefused as exc:
            raise InputError(f"--{self.arm.name} {self.arm.label}: {exc}") from None
        except GuestError as exc:
            raise AbRunError(f"{self.arm.label}: guest unreachable: {exc}") from None

    def prefill(self) -> None:
        """Write a scratch disk once (reads of never-written blocks measure the image format, not the storage)."""
        assert self.fio is not None, "check() first"
        if not self.fio.scratch_serial:
            return
        try:
            self.fio.prefill()  # checks the content again: refuses before writing anything
        except ScratchRefused as exc:
            raise InputError(f"--{self.arm.name} {self.arm.label}: {exc}") from None
        except (FioRunError, GuestError) as exc:
            raise AbRunError(f"{self.arm.label}: pre-fill failed: {exc}") from None

    def run(self, profile: Profile) -> RunSample:
        assert self.fio is not None, "check() first"
        try:
            before = self.cpu.sample()
            out = self.fio.run_once(profile)
            spent = self.cpu.sample().minus(before).seconds
            self.arm.counted = self.cpu.counted()
            metrics = metrics_of(out.report, profile, target=self.arm.disk.id)
        except (FioRunError, GuestError, HostCpuError, FioError) as exc:
            raise AbRunError(f"{self.arm.label}: {exc}") from None
        except ScratchRefused as exc:
            raise InputError(f"--{self.arm.name} {self.arm.label}: {exc}") from None
        return RunSample(metrics, host_cpu_us_per_io(spent, metrics, profile.ramp_time), out.seconds)


def host_fio_command(profile: Profile, source: str) -> str:
    """Return the quoted hypervisor command for one read-only fio run on a disk's backing source."""
    if profile.write:
        raise ValueError(f"{profile.name}: writes ({profile.rw}); fio on the hypervisor runs read profiles only")
    limit = profile.runtime + profile.ramp_time + COMMAND_SLACK
    args = ["timeout", "-s", "KILL", str(limit), "fio", MEASURED_OUTPUT, f"--filename={fio_filename(source)}",
            *profile.fio_args(), "--readonly"]
    return " ".join(shlex.quote(a) for a in args)


def fio_cpu_us_per_io(metrics: FioMetrics, numjobs: int) -> float | None:
    """Return fio's own CPU µs per I/O (user + system; fio reports them per job, averaged over the group)."""
    if metrics.cpu_usr_pct is None or metrics.cpu_sys_pct is None or metrics.iops <= 0:
        return None
    return (metrics.cpu_usr_pct + metrics.cpu_sys_pct) / 100 * numjobs * 1e6 / metrics.iops


class HostArmRunner:
    """fio on the hypervisor, read-only, on the disk's backing file or block device."""

    def __init__(self, arm: Arm, host: HostTarget) -> None:
        self.arm = arm
        self.host = host
        self.source = arm.disk.source_file or arm.disk.source_dev or ""

    def check(self) -> None:
        """Check that the backing source exists on the hypervisor and that fio is installed there."""
        quoted = shlex.quote(self.source)
        check = self.host.testinfra_host.run(f"test -e {quoted} && command -v fio >/dev/null")
        if check.rc != 0:
            missing = self.host.testinfra_host.run(f"test -e {quoted}").rc != 0
            what = f"{self.source} does not exist on {self.host.name}" if missing else f"fio is not installed on {self.host.name}"
            raise InputError(f"--{self.arm.name} {self.arm.label}: {what}")
        if self.arm.disk.format not in (None, "raw"):
            self.arm.notes.append(f"{self.arm.disk.format} image: fio reads the container file, not the guest's view")

    def prefill(self) -> None:
        """Nothing to write: the host arm only reads (a guest arm on the same disk pre-fills it)."""

    def run(self, profile: Profile) -> RunSample:
        command = host_fio_command(profile, self.source)
        started = time.monotonic()
        result = self.host.testinfra_host.run(command)
        seconds = time.monotonic() - started
        if result.rc != 0:
            raise AbRunError(
                f"{self.arm.label}: fio on {self.host.name} failed (exit {result.rc}): "
                f"{(result.stderr or result.stdout).strip()[-500:]}\ncommand: {command}"
            )
        try:
            metrics = metrics_of(parse_fio(result.stdout, f"{self.arm.label} {profile.name}"), profile, target=self.arm.label)
        except FioError as exc:
            raise AbRunError(f"{self.arm.label}: {exc}") from None
        return RunSample(metrics, fio_cpu_us_per_io(metrics, profile.numjobs), seconds)


# --- the experiment ------------------------------------------------------------------------------------


@dataclass
class AbResult:
    """What an experiment measured and concluded; `document()` is the `kvmio ab --json` document."""

    a: Arm
    b: Arm
    profile: Profile
    rounds: int
    order: list[str]
    margin: float
    samples: dict[str, dict[str, list[float | None]]]  # arm name -> metric -> one value per run
    comparisons: list[Comparison]
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it was not compared
    wall_seconds: float = 0.0
    fio_seconds: float = 0.0  # the ramp + runtime asked of fio, summed over every run
    prepare_seconds: float = 0.0

    def comparison(self, metric: str) -> Comparison:
        """Return the comparison of one metric; KeyError says why it is missing."""
        for c in self.comparisons:
            if c.metric == metric:
                return c
        raise KeyError(f"{metric}: not compared ({self.skipped.get(metric, 'not one of ' + ', '.join(METRICS))})")

    def document(self) -> dict[str, Any]:
        """Return the JSON-ready document: arms with their facts, profile, rounds, order, comparisons."""
        return {
            "a": self.a.facts(),
            "b": self.b.facts(),
            "profile": self.profile.name,
            "fio": {"rw": self.profile.rw, "bs": self.profile.bs, "iodepth": self.profile.iodepth,
                    "numjobs": self.profile.numjobs, "runtime": self.profile.runtime, "ramp_time": self.profile.ramp_time},
            "rounds": self.rounds,
            "order": list(self.order),
            "margin": self.margin,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "not_compared": dict(self.skipped),
            "samples": {arm: dict(metrics) for arm, metrics in self.samples.items()},  # per run, in `order`
            "seconds": {"wall": round(self.wall_seconds, 3), "fio_asked": self.fio_seconds,
                        "prepare": round(self.prepare_seconds, 3)},
        }


def compare_samples(
    a: Arm, b: Arm, samples: dict[str, dict[str, list[float | None]]], *, margin: float, rounds: int,
) -> tuple[list[Comparison], dict[str, str]]:
    """Compare every metric both arms measured; say why the others were not compared."""
    comparisons: list[Comparison] = []
    skipped: dict[str, str] = {}
    for metric in METRICS:
        if metric == HOST_CPU and (a.kind != "guest" or b.kind != "guest"):
            skipped[metric] = "compared between guest arms only: fio's own CPU on the host is not the QEMU process's"
            continue
        try:
            comparisons.append(compare(metric, samples["a"][metric], samples["b"][metric], margin=margin, rounds=rounds))
        except ValueError as exc:
            skipped[metric] = str(exc)
    return comparisons, skipped


def run_experiment(
    a: Arm, b: Arm, profile: Profile, *, rounds: int, margin: float = DEFAULT_MARGIN,
    progress: Callable[[str], None] = lambda line: None,
) -> AbResult:
    """Prepare both arms, run the rounds in the balanced order, compare every metric."""
    started = time.monotonic()
    runners = [arm.runner for arm in (a, b) if arm.runner is not None]
    assert len(runners) == 2, "attach_runners() first"
    for runner in runners:  # every check before anything is written: a bad arm stops the run untouched
        runner.check()
    for runner in runners:
        runner.prefill()
    prepared = time.monotonic()
    order = balanced_order(rounds)
    arms = {"a": a, "b": b}
    samples: dict[str, dict[str, list[float | None]]] = {n: {m: [] for m in METRICS} for n in arms}
    per_run = profile.runtime + profile.ramp_time
    total = per_run * len(order)
    for i, name in enumerate(order):
        arm = arms[name]
        assert arm.runner is not None
        sample = arm.runner.run(profile)
        for metric in METRICS:
            value = sample.cpu_us_per_io if metric == HOST_CPU else getattr(sample.metrics, metric)
            samples[name][metric].append(None if value is None else float(value))
        cpu = f", {sample.cpu_us_per_io:,.0f} µs CPU/IO" if sample.cpu_us_per_io is not None else ""
        progress(
            f"kvmio ab: round {i // 2 + 1}/{rounds} {name.upper()} {arm.label}: {sample.metrics.iops:,.0f} IOPS{cpu} "
            f"[{time.monotonic() - prepared:.0f}s of ~{total}s]"
        )
    comparisons, skipped = compare_samples(a, b, samples, margin=margin, rounds=rounds)
    return AbResult(
        a=a, b=b, profile=profile, rounds=rounds, order=order, margin=margin, samples=samples,
        comparisons=comparisons, skipped=skipped, wall_seconds=time.monotonic() - started,
        fio_seconds=float(total), prepare_seconds=prepared - started,
    )


def attach_runners(
    a: Arm, b: Arm, host: HostTarget, *, guest_spec: str | None, scratch_pattern: str,
    progress: Callable[[str], None] = lambda line: None, prefilled: set[str] | None = None,
) -> None:
    """Give each arm its runner: the guest's fio or the hypervisor's (guests and pre-fills shared).

    `prefilled` names the scratch disks already written this session (the perf suite's), so none is written twice.
    """
    prefilled = prefilled if prefilled is not None else set()
    guests: dict[str, Any] = {}
    for arm in (a, b):
        if arm.spec.on_host:
            arm.runner = HostArmRunner(arm, host)
        else:
            arm.runner = GuestArmRunner(
                arm, host, guest_spec=guest_spec, scratch_pattern=scratch_pattern, prefilled=prefilled,
                guests=guests, progress=progress,
            )
