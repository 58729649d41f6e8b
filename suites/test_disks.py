"""Disk rules: how each virtual disk reaches its storage (AIO mode, cache, allocation, queues).

Where each rule applies is declared in the catalogue (pytest_kvmio/catalogue.py): a disk the rule does
not concern (io is not native, a vhost-user disk, a bus without IOThreads) gets no item at all.
"""

from __future__ import annotations

import pytest

from pytest_kvmio.model.domain import VALID_IO_MODES, configured_queues, default_queues

DIRECT_CACHE_MODES = ("none", "directsync")


@pytest.mark.rule("disk-io-mode-valid")
def test_io_mode_is_one_libvirt_knows(disk):
    """libvirt knows threads, native and io_uring; 'uring' is a common typo it rejects at define time."""
    assert disk.io in VALID_IO_MODES, (
        f"{disk.id}: io={disk.io!r} is not one of {', '.join(VALID_IO_MODES)}"
        + ("; write io='io_uring'" if disk.io == "uring" else "")
    )


@pytest.mark.rule("disk-direct-io-for-async")
def test_async_io_uses_direct_io(disk):
    """Linux AIO is only asynchronous with O_DIRECT (libvirt refuses native without it); io_uring through the page cache pays for double caching and host-crash exposure."""
    reaches, backend = disk.aio_backend
    if disk.io == "io_uring" and reaches is None:
        pytest.skip(f"{disk.id}: {backend}")
    assert disk.effective_cache in DIRECT_CACHE_MODES, (
        f"{disk.id}: io='{disk.io}' with cache='{disk.effective_cache}'"
        + ("" if disk.cache not in (None, "default") else " (QEMU's default)")
        + "; set cache='none' (or 'directsync')"
    )


@pytest.mark.rule("disk-native-not-sparse")
def test_native_aio_is_not_on_a_sparse_image(disk):
    """Linux AIO blocks while a sparse image grows; guests hang on metadata updates."""
    reaches, why = disk.aio_backend
    if reaches is None:
        pytest.skip(f"{disk.id}: {why}; lint the domain's live XML (--host) or use a file or block disk")
    allocation = disk.allocation
    if allocation.thin is None:
        pytest.skip(f"{disk.describe_allocation()}; run against the host (--host) to read it")
    assert not allocation.thin, (
        f"{disk.id}: io='native' on a sparse image ({allocation.why}); "
        "preallocate it (qemu-img create -o preallocation=full) or use io='io_uring'"
    )


@pytest.mark.rule("disk-io-uring-supported")
def test_io_uring_only_where_the_host_supports_it(disk, hypervisor):
    """A disk with io='io_uring' fails to start on a host without io_uring (old kernel/QEMU/libvirt or disabled)."""
    reaches, backend = disk.aio_backend
    if reaches is None:
        pytest.skip(f"{disk.id}: {backend}")
    supported, why = hypervisor.io_uring_support()
    if supported is None:
        hint = " (offline: supply them with --assume kernel=...,qemu=...,libvirt=...)" if hypervisor.offline else ""
        pytest.skip(f"{disk.id}: io_uring support unknown: {why}{hint}")
    assert supported, f"{disk.id}: io='io_uring' but {hypervisor.name} has {why}; use io='native' or upgrade"


@pytest.mark.rule("disk-iothread-assigned")
def test_virtio_disk_uses_an_existing_iothread(disk):
    """Without an IOThread, disk emulation shares the QEMU main loop with everything else and stalls vCPUs."""
    if disk.is_virtio_blk:
        owner, used = "the disk's <driver>", disk.iothreads
    else:
        ctl = disk.controller
        owner, used = f"virtio-scsi controller {ctl.index}'s <driver>", ctl.iothreads
    defined = disk.domain.iothread_ids
    assert used, (
        f"{disk.id}: no IOThread assigned; "
        + (f"add iothread='{defined[0]}' to {owner} (the domain has IOThreads {list(defined)})" if defined
           else f"add <iothreads>1</iothreads> to the domain and iothread='1' to {owner}")
    )
    missing = [t for t in used if t not in defined]
    assert not missing, (
        f"{disk.id}: {owner} uses IOThread(s) {missing} but the domain defines IOThreads "
        f"{list(defined) or 'none'}; add them to <iothreads>/<iothreadids>"
    )


@pytest.mark.rule("disk-multiqueue")
def test_virtio_queues_match_vcpus(disk, hypervisor):
    """One queue per vCPU lets every vCPU submit I/O without contending for a shared queue."""
    queues, where = configured_queues(disk)
    mapping = disk.iothread_queues or (disk.controller.iothread_queues if disk.controller else {})
    if mapping:
        # Queues spread over several IOThreads are a deliberate layout that decides the queue count (it need not
        # equal the vCPUs). Listed without <queue> ids, libvirt spreads the queues round-robin; with ids, the
        # mapping must cover every queue.
        mapped = sorted(q for ids in mapping.values() for q in ids)
        if not mapped:
            return
        count = queues if queues is not None else len(mapped)
        unmapped = [q for q in range(count) if q not in mapped]
        shown = ", ".join(f"IOThread {t}: queues {list(q)}" for t, q in mapping.items())
        assert not unmapped, (
            f"{disk.id}: queue(s) {unmapped} of {count} ({where}) have no IOThread in the queue→IOThread mapping "
            f"({shown}); map every queue to an IOThread"
        )
        return
    if queues is None:
        queues, where = default_queues(disk, hypervisor.qemu)
        if queues is None:
            pytest.skip(f"{disk.id}: no queues attribute and {where}")
    vcpus, most = disk.domain.vcpus, disk.domain.max_vcpus
    # With vCPU hotplug, up to the maximum is right too: hotplugged vCPUs then get a queue of their own.
    span = f"{vcpus} vCPUs" if most == vcpus else f"{vcpus} vCPUs (up to {most} with hotplug)"
    assert vcpus <= queues <= most, (
        f"{disk.id}: {queues} queue(s) ({where}) for {span}; set queues='{vcpus}'"
        + (" on the disk's <driver>" if disk.is_virtio_blk else " on the virtio-scsi controller's <driver>")
    )


@pytest.mark.rule("disk-discard-unmap")
def test_thin_image_passes_discard(disk):
    """Without discard='unmap' a thin image only grows: blocks the guest frees are never returned to the host."""
    allocation = disk.allocation
    if allocation.thin is None and disk.discard != "unmap":
        pytest.skip(f"{disk.describe_allocation()}; run against the host (--host) to read it")
    assert disk.discard == "unmap", (
        f"{disk.id}: thin image ({allocation.why}) with discard={disk.discard or 'ignore (default)'}; set discard='unmap'"
    )


@pytest.mark.rule("disk-cache-safe")
def test_cache_mode_honours_guest_flushes(disk, kvmio_record):
    """cache='unsafe' ignores guest flushes: a host crash loses data the guest was told is on disk."""
    assert disk.effective_cache != "unsafe", (
        f"{disk.id}: cache='unsafe' ignores guest flushes; use cache='none' (or writeback where guests flush)"
    )
    if disk.effective_cache == "writeback":
        default = "" if disk.cache not in (None, "default") else " (QEMU default)"
        kvmio_record("kvmio_note", f"{disk.id}: cache=writeback{default}: safe only where guests flush")
