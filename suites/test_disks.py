"""Disk rules: how each virtual disk reaches its storage (AIO mode, cache, allocation, queues).

Where each rule applies is declared in the catalogue (pytest_kvmio/verdict/catalogue.py): a disk the rule does
not concern (io is not native, a vhost-user disk, a bus without IOThreads) gets no item at all.
"""

from __future__ import annotations

import pytest

from pytest_kvmio.model.checks import (
    async_io_is_direct,
    cache_is_safe,
    io_mode_valid,
    io_uring_supported,
    iothread_use,
    native_image_not_sparse,
    queue_layout,
    thin_image_discards,
)
from pytest_kvmio.model.domain import VALID_IO_MODES


@pytest.mark.rule("disk-io-mode-valid")
def test_io_mode_is_one_libvirt_knows(disk):
    """libvirt knows threads, native and io_uring; 'uring' is a common typo it rejects at define time."""
    assert io_mode_valid(disk), (
        f"{disk.id}: io={disk.io!r} is not one of {', '.join(VALID_IO_MODES)}"
        + ("; write io='io_uring'" if disk.io == "uring" else "")
    )


@pytest.mark.rule("disk-direct-io-for-async")
def test_async_io_uses_direct_io(disk):
    """Linux AIO is only asynchronous with O_DIRECT (libvirt refuses native without it); io_uring through the page cache pays for double caching and host-crash exposure."""
    direct, found = async_io_is_direct(disk)
    if direct is None:
        pytest.skip(f"{disk.id}: {found}")
    assert direct, (
        f"{disk.id}: {found}"
        + ("" if disk.cache not in (None, "default") else " (QEMU's default)")
        + "; set cache='none' (or 'directsync')"
    )


@pytest.mark.rule("disk-native-not-sparse")
def test_native_aio_is_not_on_a_sparse_image(disk):
    """Linux AIO blocks while a sparse image grows; guests hang on metadata updates."""
    not_sparse, why = native_image_not_sparse(disk)
    if not_sparse is None:
        pytest.skip(f"{disk.id}: {why}")
    assert not_sparse, (
        f"{disk.id}: io='native' on a sparse image ({why}); "
        "preallocate it (qemu-img create -o preallocation=full) or use io='io_uring'"
    )


@pytest.mark.rule("disk-io-uring-supported")
def test_io_uring_only_where_the_host_supports_it(disk, hypervisor):
    """A disk with io='io_uring' fails to start on a host without io_uring (old kernel/QEMU/libvirt or disabled)."""
    supported, why = io_uring_supported(disk, hypervisor.io_uring_support(), hypervisor.offline)
    if supported is None:
        pytest.skip(f"{disk.id}: {why}")
    assert supported, f"{disk.id}: io='io_uring' but {hypervisor.name} has {why}; use io='native' or upgrade"


@pytest.mark.rule("disk-iothread-assigned")
def test_virtio_disk_uses_an_existing_iothread(disk):
    """Without an IOThread, disk emulation shares the QEMU main loop with everything else and stalls vCPUs."""
    use = iothread_use(disk)
    ctl = use.controller
    owner = "the disk's <driver>" if ctl is None else f"virtio-scsi controller {ctl.index}'s <driver>"
    defined = disk.domain.iothread_ids
    assert use.used, (
        f"{disk.id}: no IOThread assigned; "
        + (f"add iothread='{defined[0]}' to {owner} (the domain has IOThreads {list(defined)})" if defined
           else f"add <iothreads>1</iothreads> to the domain and iothread='1' to {owner}")
    )
    assert not use.missing, (
        f"{disk.id}: {owner} uses IOThread(s) {use.missing} but the domain defines IOThreads "
        f"{list(defined) or 'none'}; add them to <iothreads>/<iothreadids>"
    )


@pytest.mark.rule("disk-multiqueue")
def test_virtio_queues_match_vcpus(disk, hypervisor):
    """One queue per vCPU lets every vCPU submit I/O without contending for a shared queue."""
    layout = queue_layout(disk, hypervisor.qemu)
    if layout.mapping:  # a deliberate layout of queues over IOThreads: it must cover every queue
        shown = ", ".join(f"IOThread {t}: queues {list(q)}" for t, q in layout.mapping.items())
        assert layout.holds, (
            f"{disk.id}: queue(s) {layout.unmapped} of {layout.queues} ({layout.where}) have no IOThread in the "
            f"queue→IOThread mapping ({shown}); map every queue to an IOThread"
        )
        return
    if layout.holds is None:
        pytest.skip(f"{disk.id}: no queues attribute and {layout.where}")
    assert layout.holds, (
        f"{disk.id}: {layout.queues} queue(s) ({layout.where}) for {layout.span}; set queues='{layout.vcpus}'"
        + (" on the disk's <driver>" if disk.is_virtio_blk else " on the virtio-scsi controller's <driver>")
    )


@pytest.mark.rule("disk-discard-unmap")
def test_thin_image_passes_discard(disk):
    """Without discard='unmap' a thin image only grows: blocks the guest frees are never returned to the host."""
    discards, why = thin_image_discards(disk)
    if discards is None:
        pytest.skip(f"{disk.id}: {why}")
    assert discards, (
        f"{disk.id}: thin image ({why}) with discard={disk.discard or 'ignore (default)'}; set discard='unmap'"
    )


@pytest.mark.rule("disk-cache-safe")
def test_cache_mode_honours_guest_flushes(disk, kvmio_record):
    """cache='unsafe' ignores guest flushes: a host crash loses data the guest was told is on disk."""
    assert cache_is_safe(disk), (
        f"{disk.id}: cache='unsafe' ignores guest flushes; use cache='none' (or writeback where guests flush)"
    )
    if disk.effective_cache == "writeback":
        default = "" if disk.cache not in (None, "default") else " (QEMU default)"
        kvmio_record("kvmio_note", f"{disk.id}: cache=writeback{default}: safe only where guests flush")
