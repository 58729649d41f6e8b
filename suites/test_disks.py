"""Disk rules: how each virtual disk reaches its storage (AIO mode, cache, allocation, queues)."""

from __future__ import annotations

import pytest

from pytest_kvmio.domain import VALID_IO_MODES, configured_queues, default_queues

DIRECT_CACHE_MODES = ("none", "directsync")


def _async_io(disk):
    if disk.io not in ("native", "io_uring"):
        pytest.skip(f"{disk.id}: io={disk.io or 'default (threads)'} needs no O_DIRECT")


@pytest.mark.rule("disk-io-mode-valid", severity="blocker")
def test_io_mode_is_one_libvirt_knows(disk):
    """libvirt knows threads, native and io_uring; 'uring' is a common typo it rejects at define time."""
    assert disk.io is None or disk.io in VALID_IO_MODES, (
        f"{disk.id}: io={disk.io!r} is not one of {', '.join(VALID_IO_MODES)}"
        + ("; write io='io_uring'" if disk.io == "uring" else "")
    )


@pytest.mark.rule("disk-direct-io-for-async", severity="critical")
def test_async_io_uses_direct_io(disk):
    """Linux AIO is only asynchronous with O_DIRECT (libvirt refuses native without it); io_uring through the page cache pays for double caching and host-crash exposure."""
    _async_io(disk)
    assert disk.effective_cache in DIRECT_CACHE_MODES, (
        f"{disk.id}: io='{disk.io}' with cache='{disk.effective_cache}'"
        + ("" if disk.cache else " (QEMU's default, no cache attribute)")
        + "; set cache='none' (or 'directsync')"
    )


@pytest.mark.rule("disk-native-not-sparse", severity="critical")
def test_native_aio_is_not_on_a_sparse_image(disk):
    """Linux AIO blocks while a sparse image grows; guests hang on metadata updates."""
    if disk.io != "native":
        pytest.skip(f"{disk.id}: io is not native")
    if disk.type == "block" or disk.source_dev:
        return  # a block device has no filesystem metadata to update
    if disk.image is None or disk.image.sparse is None:
        pytest.skip(f"{disk.describe_allocation()} (offline or not readable); run against the host")
    assert not disk.image.sparse, (
        f"{disk.describe_allocation()}: io='native' on a sparse image; "
        "preallocate it (qemu-img create -o preallocation=full) or use io='io_uring'"
    )


@pytest.mark.rule("disk-io-uring-supported", severity="blocker")
def test_io_uring_only_where_the_host_supports_it(disk, hypervisor):
    """A disk with io='io_uring' fails to start on a host without io_uring (old kernel/QEMU/libvirt or disabled)."""
    if disk.io != "io_uring":
        pytest.skip(f"{disk.id}: io is not io_uring")
    supported, why = hypervisor.io_uring_support()
    if supported is None:
        hint = " (offline: supply them with --assume kernel=...,qemu=...,libvirt=...)" if hypervisor.offline else ""
        pytest.skip(f"{disk.id}: io_uring support unknown: {why}{hint}")
    assert supported, f"{disk.id}: io='io_uring' but {hypervisor.name} has {why}; use io='native' or upgrade"


@pytest.mark.rule("disk-iothread-assigned", severity="normal")
def test_virtio_disk_uses_an_existing_iothread(disk):
    """Without an IOThread, disk emulation shares the QEMU main loop with everything else and stalls vCPUs."""
    if disk.is_virtio_blk:
        where, iothread = f"<driver iothread='{disk.iothread}'>", disk.iothread
    elif disk.is_virtio_scsi:
        ctl = disk.controller
        where, iothread = f"virtio-scsi controller {ctl.index} <driver iothread='{ctl.iothread}'>", ctl.iothread
    else:
        pytest.skip(f"{disk.id}: bus {disk.bus} has no IOThread support")
    defined = disk.domain.iothread_ids
    assert iothread is not None, (
        f"{disk.id}: no IOThread assigned; add <iothreads>1</iothreads> and "
        + ("iothread='1' to the disk's <driver>" if disk.is_virtio_blk else "<driver iothread='1'/> to its controller")
    )
    assert iothread in defined, (
        f"{disk.id}: {where} but the domain defines IOThreads {list(defined) or 'none'}; add it to <iothreads>"
    )


@pytest.mark.rule("disk-multiqueue", severity="normal")
def test_virtio_queues_match_vcpus(disk, hypervisor):
    """One queue per vCPU lets every vCPU submit I/O without contending for a shared queue."""
    queues, where = configured_queues(disk)
    if where == "not a virtio disk":
        pytest.skip(f"{disk.id}: bus {disk.bus} is not virtio")
    if queues is None:
        queues, where = default_queues(disk.domain, hypervisor.qemu)
        if queues is None:
            pytest.skip(f"{disk.id}: no queues attribute and {where}")
    vcpus, most = disk.domain.vcpus, disk.domain.max_vcpus
    # With vCPU hotplug, up to the maximum is right too: hotplugged vCPUs then get a queue of their own.
    span = f"{vcpus} vCPUs" if most == vcpus else f"{vcpus} vCPUs (up to {most} with hotplug)"
    assert vcpus <= queues <= most, (
        f"{disk.id}: {queues} queue(s) ({where}) for {span}; set queues='{vcpus}'"
        + (" on the disk's <driver>" if disk.is_virtio_blk else " on the virtio-scsi controller's <driver>")
    )


@pytest.mark.rule("disk-discard-unmap", severity="minor")
def test_thin_image_passes_discard(disk):
    """Without discard='unmap' a thin image only grows: blocks the guest frees are never returned to the host."""
    if disk.type != "file":
        pytest.skip(f"{disk.id}: {disk.type} disk, not a thin image file")
    if disk.image is not None and disk.image.sparse is not None:
        thin = disk.image.sparse
        why = disk.image.describe()
    elif disk.format == "qcow2":
        thin, why = True, "qcow2 images are thin unless preallocated (allocation unknown offline)"
    else:
        pytest.skip(f"{disk.describe_allocation()}; run against the host")
    if not thin:
        pytest.skip(f"{disk.id}: fully allocated ({why})")
    assert disk.discard == "unmap", (
        f"{disk.id}: thin image ({why}) with discard={disk.discard or 'ignore (default)'}; set discard='unmap'"
    )


@pytest.mark.rule("disk-cache-safe", severity="critical")
def test_cache_mode_honours_guest_flushes(disk, record_property):
    """cache='unsafe' ignores guest flushes: a host crash loses data the guest was told is on disk."""
    assert disk.effective_cache != "unsafe", (
        f"{disk.id}: cache='unsafe' ignores guest flushes; use cache='none' (or writeback where guests flush)"
    )
    if disk.effective_cache == "writeback":
        record_property(
            "kvmio_note",
            f"{disk.id}: cache=writeback{'' if disk.cache else ' (QEMU default)'}: safe only where guests flush",
        )
