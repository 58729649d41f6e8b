"""Guest rules: the half of the storage path inside the VM (scheduler, queues, interrupts)."""

from __future__ import annotations

import shlex

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.facts.guestmap import irq_delta, read_irq_counts
from pytest_kvmio.model.domain import configured_queues, default_queues

#: Load lengths tried in turn until the interrupts answer the question; a busy host can starve a vCPU.
IRQ_LOAD_SECONDS = (3, 6, 12)
#: Interrupts on a single CPU that count as evidence (fewer: the load was too light to tell).
IRQ_MIN_EVIDENCE = 200


@pytest.mark.rule("guest-scheduler-none")
def test_guest_virtio_disk_uses_no_io_scheduler(disk, guest_disk, kvmio_facts):
    """The host already schedules the real device; a guest scheduler on a virtio disk reorders twice."""
    kvmio_facts.update(guest_device=guest_disk.device, scheduler=guest_disk.scheduler)
    assert guest_disk.scheduler == "none", (
        f"{disk.id}: {guest_disk.describe()} uses scheduler {guest_disk.scheduler}; set none in the guest "
        '(udev: ACTION=="add|change", KERNEL=="vd[a-z]", ATTR{queue/scheduler}="none")'
    )


@pytest.mark.rule("guest-scheduler-persistent")
def test_guest_scheduler_none_survives_a_reboot(disk, guest_disk, guest_boot, kvmio_facts):
    """A scheduler written by hand lasts until the next reboot; what sets `none` must be part of the guest's boot."""
    if guest_disk.scheduler != "none":
        pytest.skip(f"{disk.id}: {guest_disk.describe()} uses {guest_disk.scheduler} now (guest-scheduler-none judges that)")
    after = guest_boot.after_reboot(guest_disk.device, guest_disk.hw_queues)
    kvmio_facts.update(guest_device=guest_disk.device, after_reboot=after.scheduler, set_by=after.why,
                       **({"unchecked_conditions": list(after.unchecked)} if after.unchecked else {}))
    if after.persistent_none is None:
        pytest.skip(f"{disk.id}: can't tell what {guest_disk.describe()} gets at boot: {after.why}")
    assert after.persistent_none, (
        f"{disk.id}: {guest_disk.describe()} uses none now, but after a reboot it gets {after.scheduler} ({after.why}): "
        "nothing in the boot sets none. Add a udev rule, e.g. /etc/udev/rules.d/60-scheduler.rules: "
        'ACTION=="add|change", KERNEL=="vd[a-z]*", ATTR{queue/scheduler}="none"'
    )


@pytest.mark.rule("guest-queues-active")
def test_guest_sees_the_configured_queues(disk, guest_disk, hypervisor, kvmio_facts):
    """Queues configured in libvirt help only if the guest driver really opens them."""
    queues, where = configured_queues(disk)
    if queues is None:
        queues, where = default_queues(disk, hypervisor.qemu)
        if queues is None:
            pytest.skip(f"{disk.id}: {where}")
    kvmio_facts.update(guest_device=guest_disk.device, configured_queues=queues, guest_queues=guest_disk.hw_queues)
    assert guest_disk.hw_queues == queues, (
        f"{disk.id}: {guest_disk.describe()} has {guest_disk.hw_queues} hardware queue(s) in /sys/block/"
        f"{guest_disk.device}/mq but {queues} are configured ({where})"
    )


@pytest.mark.rule("guest-irq-spread")
def test_guest_request_interrupts_land_on_several_cpus(disk, domain, guest, guest_disk, kvmio_facts, kvmio_record):
    """If every completion interrupt lands on one vCPU, that vCPU caps the disk's IOPS."""
    dev = shlex.quote(f"/dev/{guest_disk.device}")
    vcpus = domain.vcpus
    seen: list[dict[int, int]] = []
    for seconds in IRQ_LOAD_SECONDS:
        before = read_irq_counts(guest, guest_disk)
        # Read-only load (fio --readonly refuses to write), one job pinned to each vCPU, so every vCPU submits
        # on its own queue whatever the guest scheduler does on a busy host.
        load = guest.run(
            f"fio --readonly --name=irq --filename={dev} --rw=randread --bs=4k --direct=1 --ioengine=libaio "
            f"--iodepth=4 --numjobs={vcpus} --cpus_allowed=0-{vcpus - 1} --cpus_allowed_policy=split "
            f"--time_based --runtime={seconds} --output=/dev/null"
        )
        if load.rc != 0:
            raise CouldNotJudge(f"{disk.id}: fio load on guest {guest_disk.device} failed: {load.stderr.strip()[:300]}")
        delta = irq_delta(before, read_irq_counts(guest, guest_disk))
        seen.append(delta)
        kvmio_facts.update(guest_device=guest_disk.device, irq_delta_per_cpu={str(k): v for k, v in delta.items()},
                           load_seconds=seconds, attempts=len(seen))
        busy = [cpu for cpu, n in delta.items() if n > 0]
        if len(busy) > 1:
            return
        # Unambiguous only when the load was heavy enough twice in a row, or the device has a single queue.
        heavy = [d for d in seen[-2:] if sum(d.values()) >= IRQ_MIN_EVIDENCE]
        if busy and (guest_disk.hw_queues == 1 or len(heavy) == 2):
            pytest.fail(
                f"{disk.id}: under load, {guest_disk.describe()}'s request interrupts landed only on CPU {busy} "
                f"(per CPU: {delta}; {len(seen)} loads of {', '.join(str(s) for s in IRQ_LOAD_SECONDS[:len(seen)])} s, "
                f"{guest_disk.hw_queues} hardware queue(s)); configure queues = vCPUs so each vCPU gets its own queue",
                pytrace=False,
            )
    kvmio_record("kvmio_outcome", "inconclusive")
    pytest.skip(
        f"{disk.id}: inconclusive: {len(seen)} loads ({', '.join(str(s) for s in IRQ_LOAD_SECONDS)} s) gave too few "
        f"request interrupts to tell (per CPU: {seen}); rerun on a quieter host"
    )
