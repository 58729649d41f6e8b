"""Each disk and domain rule's check: one function of the model, asserted on by its suite test and consulted by its fix.

A check says whether its rule holds on one disk or domain — True, False, or None when a fact is unknown here — with
what it found (`why`, never prefixed with the target's id), or returns the layout its message and its fix are made
of. Where a rule applies is the catalogue's business; a check assumes it does. Failure messages stay in `suites/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pytest_kvmio.model.domain import (
    DIRECT_CACHE_MODES,
    VALID_IO_MODES,
    Controller,
    Disk,
    Domain,
    configured_queues,
    default_queues,
)
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
