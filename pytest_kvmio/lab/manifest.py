"""Derive the expected findings of every lab domain and offline XML file from the topology.

The rule semantics below are the contract with the suites; an integration test asserts that the
suites' failed verdicts equal this manifest exactly.
"""

from __future__ import annotations

from typing import Any

from pytest_kvmio.lab.topology import DiskSpec, DomainSpec

VALID_IO = ("threads", "native", "io_uring")
DIRECT_CACHE = ("none", "directsync")
MULTIQUEUE_DEFAULT_SINCE = (5, 2)  # QEMU: virtio-blk/scsi num-queues defaults to vCPUs from pc-*-5.2


def machine_version(machine: str) -> tuple[int, int] | None:
    """Return (major, minor) of a versioned machine type such as pc-q35-7.2; None if unversioned."""
    tail = machine.rsplit("-", 1)[-1]
    parts = tail.split(".")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def default_queues(machine: str, vcpus: int) -> int:
    """Return QEMU's default virtio queue count: vCPUs for machine types >= 5.2, else 1."""
    version = machine_version(machine)
    if version is None:  # 'q35'/'pc' alias: libvirt expands it to the newest (7.2 here)
        return vcpus
    return vcpus if version >= MULTIQUEUE_DEFAULT_SINCE else 1


def configured_queues(dom: DomainSpec, disk: DiskSpec) -> int:
    """Return the disk's queue count (virtio-scsi: its controller's), computing QEMU's default."""
    if disk.bus == "scsi":
        ctrl = dom.controller_of(disk)
        explicit = ctrl.queues if ctrl else None
    else:
        explicit = disk.queues
    return explicit if explicit is not None else default_queues(dom.machine, dom.vcpus)


def parse_cpuset(spec: str) -> set[int]:
    """Return the CPUs of a libvirt cpuset such as '0-3,^2,6'."""
    cpus: set[int] = set()
    excluded: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        target = cpus
        if part.startswith("^"):
            target, part = excluded, part[1:]
        if "-" in part:
            lo, hi = part.split("-", 1)
            target.update(range(int(lo), int(hi) + 1))
        else:
            target.add(int(part))
    return cpus - excluded


def vhost_failures(dom: DomainSpec, disk: DiskSpec) -> list[str]:
    """Return the rules a vhost-user disk is expected to fail; the block-layer rules make no item for it."""
    failed: list[str] = []
    if not dom.shared_memory:
        failed.append("disk-vhost-shared-memory")
    if disk.reconnect is None:
        failed.append("disk-vhost-reconnect")
    if configured_queues(dom, disk) != dom.vcpus:
        failed.append("disk-multiqueue")
    live = dom.offline_file is None  # the backend rules are judged on a live host only
    if live and disk.backend_queues is not None and configured_queues(dom, disk) > disk.backend_queues:
        failed.append("disk-vhost-backend-queues")
    return failed


def disk_failures(dom: DomainSpec, disk: DiskSpec) -> list[str]:
    """Return the disk rules this disk is expected to fail (host supports io_uring)."""
    if disk.vhost:
        return vhost_failures(dom, disk)
    failed: list[str] = []
    if disk.io is not None and disk.io not in VALID_IO:
        failed.append("disk-io-mode-valid")
    if disk.io in ("native", "io_uring") and disk.cache not in DIRECT_CACHE:
        failed.append("disk-direct-io-for-async")
    if disk.io == "native" and disk.image.sparse:
        failed.append("disk-native-not-sparse")
    # disk-io-uring-supported: this host supports io_uring, so it never fails here.
    if disk.bus in ("virtio", "scsi"):
        if disk.bus == "virtio":
            thread = disk.iothread
        else:
            ctrl = dom.controller_of(disk)
            thread = ctrl.iothread if ctrl else None
        if thread is None or not 1 <= thread <= dom.iothreads:
            failed.append("disk-iothread-assigned")
        if configured_queues(dom, disk) != dom.vcpus:
            failed.append("disk-multiqueue")
    if disk.image.sparse and disk.discard != "unmap":
        failed.append("disk-discard-unmap")
    if disk.cache == "unsafe":
        failed.append("disk-cache-safe")
    return failed


def domain_failures(dom: DomainSpec, host_cpus: int) -> list[str]:
    """Return the domain rules this domain is expected to fail."""
    live = dom.running and dom.offline_file is None
    runtime = (["domain-runtime-pinning"] if live and dom.drift_iothreads else []) + (
        ["domain-pending-restart"] if live and dom.pending_restart else [])
    return sorted(_iothread_failures(dom, host_cpus) + runtime)


def _iothread_failures(dom: DomainSpec, host_cpus: int) -> list[str]:
    if dom.iothreads == 0:
        return []  # domain-iothread-pinned is skipped without iothreads
    all_cpus = set(range(host_cpus))
    vcpu_sets = [
        parse_cpuset(dom.vcpupin[i]) if i in dom.vcpupin
        else parse_cpuset(dom.vcpu_cpuset) if dom.vcpu_cpuset else all_cpus
        for i in range(dom.vcpus)
    ]
    for thread in range(1, dom.iothreads + 1):
        pin = dom.iothreadpin.get(thread)
        if pin is None or any(parse_cpuset(pin) & cpus for cpus in vcpu_sets):
            return ["domain-iothread-pinned"]
    return []


def boot_scheduler(dom: DomainSpec, disk: DiskSpec) -> str:
    """Return the scheduler the guest's boot gives a disk: the knob's, else the kernel's default for its queues."""
    if disk.guest_scheduler is not None:
        return disk.guest_scheduler
    seen = min(configured_queues(dom, disk), dom.vcpus)
    return "none" if seen > 1 else "mq-deadline"  # Linux block/elevator.c elevator_get_default


def guest_failures(dom: DomainSpec, disk: DiskSpec) -> list[str]:
    """Return the guest rules a running domain's disk is expected to fail."""
    failed: list[str] = []
    at_boot = boot_scheduler(dom, disk)
    now = disk.guest_scheduler_by_hand or at_boot
    if now != "none":
        failed.append("guest-scheduler-none")
    elif at_boot != "none":  # guest-scheduler-persistent is judged where the scheduler is none now
        failed.append("guest-scheduler-persistent")
    configured = configured_queues(dom, disk)
    seen = min(configured, dom.vcpus)  # virtio-blk and virtio-scsi cap request queues at nr_cpu_ids
    if seen != configured:
        failed.append("guest-queues-active")
    if seen < 2:
        failed.append("guest-irq-spread")
    return failed


def expected(dom: DomainSpec, host_cpus: int) -> dict[str, list[str]]:
    """Return {target: [rule ids expected to fail]} for domain and disk rules."""
    result = {dom.name: domain_failures(dom, host_cpus)}
    for disk in dom.disks:
        result[f"{dom.name}/{disk.target}"] = sorted(disk_failures(dom, disk))
    return result


def expected_guest(dom: DomainSpec) -> dict[str, list[str]]:
    """Return {disk target: [guest rule ids expected to fail]}; empty for domains not running."""
    if not dom.running:
        return {}
    return {f"{dom.name}/{disk.target}": sorted(guest_failures(dom, disk)) for disk in dom.disks}


def build(
    domains: tuple[DomainSpec, ...],
    offline: dict[str, DomainSpec],
    xml_paths: dict[str, str],
    host_cpus: int,
    ssh: dict[str, str],
    accel: str,
    libvirt_uri: str,
    guest_ssh: dict[str, Any] | None = None,
    vhost: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the manifest document (see README-lab.md for the format)."""
    return {
        "domains": {
            dom.name: {
                "running": dom.running,
                "purpose": dom.purpose,
                "xml": xml_paths.get(dom.name),
                "expected_failures": expected(dom, host_cpus),
                "expected_guest_failures": expected_guest(dom),
            }
            for dom in domains
        },
        "offline_xml": {
            path: {
                "domain": dom.name,
                "purpose": dom.purpose,
                "expected_failures": expected(dom, host_cpus),
            }
            for path, dom in offline.items()
        },
        "ssh": ssh,
        "guest_ssh": guest_ssh,
        "vhost": vhost or {},
        "libvirt_uri": libvirt_uri,
        "accel": accel,
    }
