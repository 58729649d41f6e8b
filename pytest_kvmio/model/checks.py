"""Each disk and domain rule's check: one function of the model, asserted on by its suite test and consulted by its fix.

A check says whether its rule holds on one disk or domain — True, False, or None when a fact is unknown here — with
what it found (`why`, never prefixed with the target's id), or returns the layout its message and its fix are made
of. Where a rule applies is the catalogue's business; a check assumes it does. Failure messages stay in `suites/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pytest_kvmio.model.cpuset import format_cpuset
from pytest_kvmio.model.domain import (
    DIRECT_CACHE_MODES,
    VALID_IO_MODES,
    Controller,
    Disk,
    Domain,
    configured_queues,
    default_queues,
)
from pytest_kvmio.model.runtime import QemuThread
from pytest_kvmio.model.versions import Version
from pytest_kvmio.model.vhost import BackendProcess

#: What makes an unknown image allocation known.
READ_ON_THE_HOST = "run against the host (--host) to read it"
#: What makes an unknown io_uring support known offline.
ASSUME_VERSIONS = "offline: supply them with --assume kernel=...,qemu=...,libvirt=..."

# --- a disk's io, cache and allocation ------------------------------------------------------------------------------


def io_mode_valid(disk: Disk) -> bool:
    """Return True when the disk's io= is a mode libvirt knows (disk-io-mode-valid)."""
    return disk.io in VALID_IO_MODES


def async_io_is_direct(disk: Disk) -> tuple[bool | None, str]:
    """Return whether native/io_uring I/O bypasses the page cache (disk-direct-io-for-async), and what was found.

    None when io='io_uring' may reach no file or block backend (type='volume': the pool decides).
    """
    reaches, backend = disk.aio_backend
    if disk.io == "io_uring" and reaches is None:
        return None, backend
    return disk.effective_cache in DIRECT_CACHE_MODES, f"io='{disk.io}' with cache='{disk.effective_cache}'"


def native_image_not_sparse(disk: Disk) -> tuple[bool | None, str]:
    """Return whether io='native' sits on an image that never grows (disk-native-not-sparse), and its allocation.

    None when io may reach no file or block backend, or when the image's allocation is unknown here.
    """
    reaches, why = disk.aio_backend
    if reaches is None:
        return None, f"{why}; lint the domain's live XML (--host) or use a file or block disk"
    allocation = disk.allocation
    if allocation.thin is None:
        return None, f"{allocation.why}; {READ_ON_THE_HOST}"
    return not allocation.thin, allocation.why


def io_uring_supported(disk: Disk, support: tuple[bool | None, str], offline: bool) -> tuple[bool | None, str]:
    """Return whether the host runs a disk's io='io_uring' (disk-io-uring-supported), given the host's support and why.

    None when io may reach no file or block backend, or when the host's support is unknown (`offline`: say how to
    supply it).
    """
    reaches, backend = disk.aio_backend
    if reaches is None:
        return None, backend
    supported, why = support
    if supported is None:
        return None, f"io_uring support unknown: {why}" + (f" ({ASSUME_VERSIONS})" if offline else "")
    return supported, why


def thin_image_discards(disk: Disk) -> tuple[bool | None, str]:
    """Return whether a thin image passes discard='unmap' (disk-discard-unmap), and its allocation.

    True for discard='unmap' or an image known not to be thin; None when the allocation is unknown here.
    """
    allocation = disk.allocation
    if disk.discard == "unmap":
        return True, allocation.why
    if allocation.thin is None:
        return None, f"{allocation.why}; {READ_ON_THE_HOST}"
    return not allocation.thin, allocation.why


def cache_is_safe(disk: Disk) -> bool:
    """Return True when QEMU's cache mode honours guest flushes (disk-cache-safe: anything but unsafe)."""
    return disk.effective_cache != "unsafe"


# --- IOThreads and queues -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IOThreadUse:
    """disk-iothread-assigned on one disk: the IOThreads it uses and those the domain does not define."""

    #: The virtio-scsi controller whose <driver> assigns them; None: the disk's own <driver>.
    controller: Controller | None
    used: tuple[int, ...]
    missing: list[int]

    @property
    def holds(self) -> bool:
        return bool(self.used) and not self.missing


def iothread_use(disk: Disk) -> IOThreadUse:
    """Return which IOThreads a virtio-blk disk (or a SCSI disk's virtio-scsi controller) uses and which are missing."""
    ctl = None if disk.is_virtio_blk else disk.controller
    used = disk.iothreads if ctl is None else ctl.iothreads
    return IOThreadUse(ctl, used, [t for t in used if t not in disk.domain.iothread_ids])


@dataclass(frozen=True)
class QueueLayout:
    """disk-multiqueue on one disk: its queues (the XML's or QEMU's default), whence, and its queue→IOThread mapping."""

    queues: int | None
    where: str
    vcpus: int
    max_vcpus: int
    #: The explicit queue→IOThread mapping, the disk's or else its virtio-scsi controller's: IOThread id -> queue ids.
    mapping: dict[int, tuple[int, ...]] = field(default_factory=dict)
    #: Queues the mapping leaves without an IOThread.
    unmapped: list[int] = field(default_factory=list)

    @property
    def holds(self) -> bool | None:
        """Return whether a mapping covers every queue, else vCPUs ≤ queues ≤ the hotplug maximum (None: unknown)."""
        if self.mapping:
            return not self.unmapped
        if self.queues is None:
            return None
        return self.vcpus <= self.queues <= self.max_vcpus

    @property
    def span(self) -> str:
        """Say how many vCPUs the queues should serve (with hotplug, up to the maximum is right too)."""
        if self.max_vcpus == self.vcpus:
            return f"{self.vcpus} vCPUs"
        return f"{self.vcpus} vCPUs (up to {self.max_vcpus} with hotplug)"


def queue_layout(disk: Disk, qemu: Version | None) -> QueueLayout:
    """Return a virtio disk's queue layout as QEMU (version `qemu`, None when unknown) would give it."""
    queues, where = configured_queues(disk)
    ctl = disk.controller
    mapping = disk.iothread_queues or (ctl.iothread_queues if ctl is not None else {})
    vcpus, most = disk.domain.vcpus, disk.domain.max_vcpus
    if mapping:
        # Queues spread over several IOThreads are a deliberate layout that decides the queue count (it need not
        # equal the vCPUs). Listed without <queue> ids, libvirt spreads the queues round-robin; with ids, the
        # mapping must cover every queue.
        mapped = sorted(q for ids in mapping.values() for q in ids)
        if not mapped:
            return QueueLayout(queues, where, vcpus, most, mapping)
        count = queues if queues is not None else len(mapped)
        return QueueLayout(count, where, vcpus, most, mapping, [q for q in range(count) if q not in mapped])
    if queues is None:
        queues, where = default_queues(disk, qemu)
    return QueueLayout(queues, where, vcpus, most)


class Overlap(NamedTuple):
    """A vCPU that may run on an IOThread's host CPUs."""

    vcpu: int
    #: The vCPU's host CPUs; None: not pinned (any host CPU).
    cpus: frozenset[int] | None
    iothread: int
    pin: frozenset[int]


@dataclass(frozen=True)
class IOThreadPinning:
    """domain-iothread-pinned on one domain: IOThreads without a pin, and vCPUs that may share an IOThread's CPUs."""

    unpinned: list[int]
    overlaps: list[Overlap]

    @property
    def holds(self) -> bool:
        return not self.unpinned and not self.overlaps


def iothread_pinning(domain: Domain) -> IOThreadPinning:
    """Return which of a domain's IOThreads are unpinned and which vCPUs overlap which IOThread's pin."""
    overlaps = []
    for vcpu in range(domain.vcpus):
        cpus = domain.vcpu_cpus(vcpu)
        for tid, pin in sorted(domain.iothread_pins.items()):
            if cpus is None or cpus & pin:
                overlaps.append(Overlap(vcpu, cpus, tid, pin))
    return IOThreadPinning([t for t in domain.iothread_ids if t not in domain.iothread_pins], overlaps)


# --- vhost-user disks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VhostMemory:
    """disk-vhost-shared-memory on one vhost-user disk: whether guest memory is shared, and an SPDK backend's needs."""

    shared: bool
    why: str
    #: The SPDK process serving the disk (known live), which can use guest memory only from hugepages.
    spdk: BackendProcess | None
    lacks_hugepages: bool

    @property
    def holds(self) -> bool:
        return self.shared and not self.lacks_hugepages


def vhost_memory(disk: Disk) -> VhostMemory:
    """Return whether a vhost-user disk's backend can use guest memory: shared, and in hugepages for SPDK."""
    shared, why = disk.domain.shared_memory()
    serving = disk.backend.serving if disk.backend is not None else None
    spdk = serving if serving is not None and serving.is_spdk else None
    return VhostMemory(shared, why, spdk, spdk is not None and not disk.domain.hugepages)


# --- what runs: threads, QEMU's disk settings, the persistent definition (live, running domains) --------------------


@dataclass(frozen=True)
class ThreadDrift:
    """A vCPU or IOThread thread that runs elsewhere than the live XML says."""

    kind: str  # vCPU or IOThread
    number: int
    tid: int
    name: str
    #: What the XML implies: its pin, the domain's <vcpu cpuset>, or (unpinned) every CPU the cgroup allows.
    declared: frozenset[int]
    declared_by: str
    actual: frozenset[int]

    @property
    def thread(self) -> str:
        return f"{self.kind} {self.number} (thread {self.tid} '{self.name}')"


@dataclass(frozen=True)
class RuntimePinning:
    """domain-runtime-pinning on one running domain: threads that drifted, threads that could not be compared."""

    drifts: list[ThreadDrift]
    unknown: list[str]
    compared: int

    @property
    def holds(self) -> bool | None:
        if self.drifts:
            return False
        return True if self.compared else None


def _expected_cpus(pin: frozenset[int] | None, domain_cpuset: frozenset[int] | None, what: str,
                   cgroup: frozenset[int] | None, host: frozenset[int] | None) -> tuple[frozenset[int] | None, str]:
    """Return the CPUs a thread should run on and why: its pin, else <vcpu cpuset>, else all its cgroup (or host) allows."""
    if pin is not None:
        return pin, f"<{what}> pin"
    if domain_cpuset is not None:
        return domain_cpuset, "<vcpu cpuset> (unpinned threads follow it)"
    if cgroup is not None:
        return cgroup, "unpinned: every CPU its cgroup allows"
    return host, "unpinned: every host CPU"


def runtime_pinning(domain: Domain, host_cpus: frozenset[int] | None = None) -> RuntimePinning:
    """Return which vCPU and IOThread threads of a running domain run elsewhere than its live XML pins them.

    A pinned thread must run on exactly its pin; an unpinned one on every CPU its cgroup allows (a narrower affinity
    is a pin nobody declared: a `taskset`, a tuned profile, a hook). libvirt applies <vcpu cpuset> to unpinned vCPUs
    and IOThreads (src/qemu/qemu_process.c qemuProcessSetupPid).
    """
    runtime = domain.runtime
    if runtime is None or runtime.error:
        return RuntimePinning([], [runtime.error if runtime and runtime.error else "QEMU's threads were not read"], 0)
    drifts: list[ThreadDrift] = []
    unknown: list[str] = []
    compared = 0
    wanted: list[tuple[str, int, QemuThread | None, frozenset[int] | None, str]] = []
    vcpus = runtime.vcpu_threads()
    if runtime.single_threaded_tcg:
        unknown.append("single-threaded TCG runs every vCPU in one thread ('ALL CPUs/TCG'): no vCPU affinity to compare")
    else:
        wanted += [("vCPU", v, vcpus.get(v), domain.vcpu_pins.get(v), "vcpupin") for v in range(domain.vcpus)]
    iothreads = runtime.iothread_threads()
    wanted += [("IOThread", t, iothreads.get(t), domain.iothread_pins.get(t), "iothreadpin") for t in domain.iothread_ids]
    for kind, number, thread, pin, what in wanted:
        if thread is None or thread.runs_on is None:
            unknown.append(f"{kind} {number}: no such thread in QEMU (named by debug-threads)")
            continue
        declared, why = _expected_cpus(pin, domain.vcpu_cpuset, what, thread.cgroup_cpus, host_cpus)
        if declared is None:
            unknown.append(f"{kind} {number}: unpinned and the host's CPUs are unknown")
            continue
        compared += 1
        if thread.runs_on != declared:
            drifts.append(ThreadDrift(kind, number, thread.tid, thread.name, declared, why, thread.runs_on))
    return RuntimePinning(drifts, unknown, compared)


@dataclass(frozen=True)
class RuntimeSettings:
    """disk-runtime-settings on one disk: the settings QEMU runs that differ from the live XML."""

    #: (setting, the XML's, QEMU's)
    differences: list[tuple[str, str, str]]
    #: Why the disk could not be compared (None: it was).
    unknown: str | None
    source: str = ""

    @property
    def holds(self) -> bool | None:
        return None if self.unknown else not self.differences


def runtime_settings(disk: Disk) -> RuntimeSettings:
    """Return how the aio, cache and discard QEMU was started with differ from a running disk's live XML.

    Disks hotplugged (or changed) after start are not on the command line: they are not judged from it.
    """
    runtime = disk.domain.runtime
    if runtime is None or runtime.error:
        return RuntimeSettings([], runtime.error if runtime else "QEMU's command line was not read")
    if disk.alias is None:
        return RuntimeSettings([], "the live XML gives the disk no <alias>: it can't be found on QEMU's command line")
    settings = runtime.disks.get(disk.alias)
    if settings is None:
        return RuntimeSettings([], f"no -device id={disk.alias} on QEMU's command line: the disk was hotplugged or "
                                   "changed after start, so the command line does not say what it runs")
    path = disk.source_file or disk.source_dev
    if path and settings.filename and settings.filename != path:
        return RuntimeSettings([], f"QEMU was started on {settings.filename} and the live XML says {path}: the disk was "
                                   "changed after start (block copy, media change), so the command line does not say "
                                   "what it runs")
    differences = []
    if disk.aio_backend[0] is True and disk.effective_io != settings.effective_aio:
        differences.append(("aio", disk.effective_io, settings.effective_aio))
    if disk.effective_cache != settings.cache:
        differences.append(("cache", disk.effective_cache, settings.cache))
    declared_discard = "unmap" if disk.discard == "unmap" else "ignore"
    if declared_discard != settings.effective_discard:
        differences.append(("discard", declared_discard, settings.effective_discard))
    return RuntimeSettings(differences, None, f"QEMU {settings.syntax} for -device id={disk.alias}")


def storage_signature(domain: Domain) -> dict[str, str]:
    """Return every attribute a storage rule judges, as 'where: what' -> value, for comparing two definitions."""
    sig: dict[str, str] = {
        "vcpus": str(domain.vcpus), "maximum vcpus": str(domain.max_vcpus),
        "iothreads": ",".join(map(str, domain.iothread_ids)) or "none",
        "<vcpu cpuset>": format_cpuset(domain.vcpu_cpuset) if domain.vcpu_cpuset else "none",
        "<emulatorpin>": format_cpuset(domain.emulator_pin) if domain.emulator_pin else "none",
        "memory access": str(domain.memory_access), "memory source": str(domain.memory_source),
        "hugepages": str(domain.hugepages),
    }
    sig.update({f"<vcpupin vcpu='{v}'>": format_cpuset(c) for v, c in domain.vcpu_pins.items()})
    sig.update({f"<iothreadpin iothread='{t}'>": format_cpuset(c) for t, c in domain.iothread_pins.items()})
    for ctl in domain.controllers:
        if ctl.is_virtio_scsi:
            where = f"controller scsi index {ctl.index}"
            sig.update({f"{where} queues": str(ctl.queues), f"{where} iothread": str(ctl.iothread),
                        f"{where} queue mapping": str(ctl.iothread_queues or "none")})
    for d in domain.disks:
        values = {"type": d.type, "bus": d.bus, "source": d.source, "format": d.format, "cache": d.cache, "io": d.io,
                  "discard": d.discard, "detect_zeroes": d.detect_zeroes, "iothread": d.iothread, "queues": d.queues,
                  "queue mapping": d.iothread_queues or None, "readonly": d.readonly}
        sig.update({f"disk {d.target} {k}": "(absent)" if v is None else str(v) for k, v in values.items()})
    return sig


def pending_changes(domain: Domain) -> list[tuple[str, str, str]] | None:
    """Return the storage attributes whose persistent value differs from the running one: (attribute, running,
    persistent); None when there is no persistent definition to compare (not running, or transient)."""
    if domain.persistent is None:
        return None
    running, persistent = storage_signature(domain), storage_signature(domain.persistent)
    return [(key, running.get(key, "(absent)"), persistent.get(key, "(absent)"))
            for key in sorted(running.keys() | persistent.keys()) if running.get(key) != persistent.get(key)]
