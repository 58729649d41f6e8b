"""Guest rules: the half of the storage path inside the VM (scheduler, queues, interrupts)."""

from __future__ import annotations

import shlex

import pytest

from pytest_kvmio.domain import configured_queues, default_queues
from pytest_kvmio.guestmap import irq_delta, read_irq_counts

IRQ_LOAD_SECONDS = 3


def _virtio(disk):
    if not (disk.is_virtio_blk or disk.is_virtio_scsi):
        pytest.skip(f"{disk.id}: bus {disk.bus} is not virtio")


@pytest.mark.rule("guest-scheduler-none", severity="normal")
def test_guest_virtio_disk_uses_no_io_scheduler(disk, guest_disk, kvmio_facts):
    """The host already schedules the real device; a guest scheduler on a virtio disk reorders twice."""
    _virtio(disk)
    kvmio_facts.update(guest_device=guest_disk.device, scheduler=guest_disk.scheduler)
    assert guest_disk.scheduler == "none", (
        f"{disk.id}: {guest_disk.describe()} uses scheduler {guest_disk.scheduler}; set none in the guest "
        '(udev: ACTION=="add|change", KERNEL=="vd[a-z]", ATTR{queue/scheduler}="none")'
    )


@pytest.mark.rule("guest-queues-active", severity="normal")
def test_guest_sees_the_configured_queues(disk, guest_disk, hypervisor, kvmio_facts):
    """Queues configured in libvirt help only if the guest driver really opens them."""
    _virtio(disk)
    queues, where = configured_queues(disk)
    if queues is None:
        queues, where = default_queues(disk.domain, hypervisor.qemu)
        if queues is None:
            pytest.skip(f"{disk.id}: {where}")
    kvmio_facts.update(guest_device=guest_disk.device, configured_queues=queues, guest_queues=guest_disk.hw_queues)
    assert guest_disk.hw_queues == queues, (
        f"{disk.id}: {guest_disk.describe()} has {guest_disk.hw_queues} hardware queue(s) in /sys/block/"
        f"{guest_disk.device}/mq but {queues} are configured ({where})"
    )


@pytest.mark.rule("guest-irq-spread", severity="minor")
def test_guest_request_interrupts_land_on_several_cpus(disk, domain, guest, guest_disk, kvmio_facts):
    """If every completion interrupt lands on one vCPU, that vCPU caps the disk's IOPS."""
    _virtio(disk)
    if domain.vcpus < 2:
        pytest.skip(f"{domain.id}: one vCPU; nothing to spread over")
    before = read_irq_counts(guest, guest_disk)
    dev = shlex.quote(f"/dev/{guest_disk.device}")
    # Read-only load (fio --readonly refuses to write), one job per vCPU so every queue is used.
    load = guest.run(
        f"fio --readonly --name=irq --filename={dev} --rw=randread --bs=4k --direct=1 --ioengine=libaio "
        f"--iodepth=4 --numjobs={domain.vcpus} --time_based --runtime={IRQ_LOAD_SECONDS} --output=/dev/null"
    )
    assert load.rc == 0, f"{disk.id}: fio load on guest {guest_disk.device} failed: {load.stderr.strip()[:300]}"
    after = read_irq_counts(guest, guest_disk)
    delta = irq_delta(before, after)
    busy = sorted(cpu for cpu, n in delta.items() if n > 0)
    kvmio_facts.update(guest_device=guest_disk.device, irq_delta_per_cpu={str(k): v for k, v in delta.items()})
    assert sum(delta.values()) > 0, f"{disk.id}: no request interrupts on {guest_disk.device} under load"
    assert len(busy) > 1, (
        f"{disk.id}: under load, {guest_disk.describe()}'s request interrupts landed only on CPU {busy} "
        f"(per CPU: {delta}); configure queues = vCPUs so each vCPU gets its own queue"
    )
