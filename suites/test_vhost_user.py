"""vhost-user disk rules: a user-space backend (SPDK, qemu-storage-daemon) serves the disk over a UNIX socket.

Such a disk bypasses QEMU's block layer, so the IOThread, cache, io, discard and sparse-image rules make no item for
it (libvirt refuses those settings on it); disk-multiqueue and the guest rules judge it like any virtio-blk disk.
What it needs instead: guest memory the backend can share, a socket that reconnects, no more queues than the backend
offers, and a live process behind the socket.
"""

from __future__ import annotations

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.model.checks import vhost_memory
from pytest_kvmio.model.domain import RECONNECT_TIMEOUT, effective_queues

SHARED_MEMORY_FIX = "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"


@pytest.mark.rule("disk-vhost-shared-memory")
def test_vhost_user_disk_has_shared_guest_memory(disk, kvmio_facts, kvmio_record):
    """The vhost-user backend reads and writes guest memory itself: libvirt refuses the domain unless that memory is shared, and SPDK can only use it from hugepages."""
    domain = disk.domain
    memory = vhost_memory(disk)
    kvmio_facts["memory"] = domain.memory_facts()
    assert memory.shared, (
        f"{disk.id}: vhost-user disk but guest memory is not shared ({memory.why}); add {SHARED_MEMORY_FIX} "
        "(libvirt refuses the domain otherwise: 'vhostuser' requires shared memory)"
    )
    if memory.spdk is not None:
        kvmio_facts["backend"] = memory.spdk.describe()
        assert memory.holds, (
            f"{disk.id}: served by {memory.spdk.describe()} (SPDK), which needs guest memory in hugepages; "
            "add <hugepages/> to <memoryBacking> and reserve them on the host (vm.nr_hugepages)"
        )
    elif domain.memory_source != "memfd" and not domain.hugepages:
        kvmio_record(
            "kvmio_note",
            f"{disk.id}: shared memory without memfd or hugepages: libvirt backs it with a file in its "
            "memory_backing_dir (qemu.conf); prefer <source type='memfd'/>",
        )


@pytest.mark.rule("disk-vhost-reconnect")
def test_vhost_user_disk_reconnects_after_a_backend_restart(disk):
    """Without reconnect, a restart of the vhost-user backend (an upgrade, a crash) leaves the disk dead until the domain restarts."""
    if disk.reconnect_enabled is None:
        seen = "no <reconnect>"
    else:
        seen = f"<reconnect enabled='{'yes' if disk.reconnect_enabled else 'no'}' timeout='{disk.reconnect_timeout}'>"
    assert disk.reconnects, (
        f"{disk.id}: socket {disk.source_path} has {seen}; add <reconnect enabled='yes' timeout='{RECONNECT_TIMEOUT}'/> "
        "inside the disk's <source>"
    )


@pytest.mark.rule("disk-vhost-backend-queues")
def test_vhost_user_queues_fit_what_the_backend_offers(disk, hypervisor, kvmio_facts):
    """QEMU refuses to start a vhost-user disk with more queues than its backend offers ('The maximum number of queues supported by the backend is 1')."""
    queues, where = effective_queues(disk, hypervisor.qemu)
    if disk.backend is None:
        raise CouldNotJudge(f"{disk.id}: no facts about socket {disk.source_path} were read on the host")
    offered, how = disk.backend.queues()
    kvmio_facts.update(configured_queues=queues, backend_queues=offered, backend_queues_from=how)
    if queues is None or offered is None:
        pytest.skip(f"{disk.id}: queue count unknown: {where if queues is None else how}")
    assert queues <= offered, (
        f"{disk.id}: {queues} queue(s) ({where}) but the backend offers {offered} ({how}); QEMU refuses to start "
        f"the disk: raise the backend's queues (qemu-storage-daemon: num-queues={queues}; SPDK: "
        f"vhost_create_blk_controller --max-queues) or set queues='{offered}' on the disk's <driver>"
    )


@pytest.mark.rule("disk-vhost-backend-serving")
def test_vhost_user_socket_is_served_by_a_live_process(disk, hypervisor, kvmio_facts):
    """A vhost-user disk is only as alive as the process behind its socket: without one the domain can't start and a running guest's I/O hangs."""
    backend = disk.backend
    if backend is None:
        raise CouldNotJudge(f"{disk.id}: no facts about socket {disk.source_path} were read on the host")
    kvmio_facts["backend"] = backend.facts()
    assert backend.exists, (
        f"{disk.id}: socket {disk.source_path} does not exist on {hypervisor.name}; start the backend that serves "
        "it (SPDK: vhost_create_blk_controller; qemu-storage-daemon --export type=vhost-user-blk,addr.path=...) "
        "or fix the disk's <source path>"
    )
    if backend.serving is None and backend.unreadable:
        raise CouldNotJudge(f"{disk.id}: cannot tell who serves {disk.source_path}: {backend.unreadable}")
    assert backend.serving is not None, (
        f"{disk.id}: socket {disk.source_path} exists but no process listens on it (a backend that died left it "
        "behind); restart the backend"
    )
