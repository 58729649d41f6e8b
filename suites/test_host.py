"""Host rules: what every hypervisor must run before its storage can be trusted."""

from __future__ import annotations

import pytest

from pytest_kvmio.model.versions import Requirement

KERNEL_MIN = Requirement.parse(">=5.10")
QEMU_MIN = Requirement.parse(">=5.0")
LIBVIRT_MIN = Requirement.parse(">=6.3")


def _version_known(hypervisor, what):
    found = getattr(hypervisor, what)
    if found is None:
        driver = hypervisor.hypervisor_type
        why = f" (libvirt driver {driver!r} is not QEMU)" if what == "qemu" and driver not in (None, "QEMU") else ""
        if hypervisor.offline:
            why = f" (offline: say which hosts the templates must run on with --assume {what}=VERSION)"
        pytest.skip(f"{hypervisor.name}: {what} version unknown{why}")
    return found


def _assumed(hypervisor, what):
    return " (assumed with --assume)" if what in hypervisor.assumed else ""


@pytest.mark.rule("host-kernel-min", facts=["host", "kernel"])
def test_host_kernel_is_at_least_5_10(hypervisor):
    """io_uring arrived in 5.1 but 5.10 is the first LTS kernel where it is stable and complete."""
    kernel = _version_known(hypervisor, "kernel")
    assert KERNEL_MIN(kernel), f"{hypervisor.name}: kernel {kernel}{_assumed(hypervisor, 'kernel')} is older than 5.10; upgrade the host kernel"


@pytest.mark.rule("host-qemu-min", facts=["host", "qemu"])
def test_host_qemu_is_at_least_5_0(hypervisor):
    """QEMU 5.0 is the first release with the io_uring AIO backend."""
    qemu = _version_known(hypervisor, "qemu")
    assert QEMU_MIN(qemu), f"{hypervisor.name}: QEMU {qemu}{_assumed(hypervisor, 'qemu')} is older than 5.0; upgrade qemu-system"


@pytest.mark.rule("host-libvirt-min", facts=["host", "libvirt"])
def test_host_libvirt_is_at_least_6_3(hypervisor):
    """libvirt 6.3 is the first release that accepts io='io_uring' in domain XML."""
    libvirt = _version_known(hypervisor, "libvirt")
    assert LIBVIRT_MIN(libvirt), f"{hypervisor.name}: libvirt {libvirt}{_assumed(hypervisor, 'libvirt')} is older than 6.3; upgrade libvirt"


@pytest.mark.rule("host-io-uring-enabled", facts=["host", "kernel", "kernel.io_uring_disabled"])
def test_host_allows_io_uring(host, hypervisor):
    """With kernel.io_uring_disabled at 1 or 2, QEMU (unprivileged) cannot create rings; io_uring disks fail to start."""
    disabled = hypervisor.io_uring_disabled
    assert disabled in (None, 0), (
        f"{hypervisor.name}: kernel.io_uring_disabled = {disabled}; io_uring disks cannot start. "
        "Set it to 0 (sysctl -w kernel.io_uring_disabled=0, persist in /etc/sysctl.d) "
        "or add QEMU's user to kernel.io_uring_group"
    )


@pytest.mark.rule("host-scheduler-none", facts=["host", "block_devices"])
def test_host_flash_disks_use_no_io_scheduler(host, hypervisor):
    """The guest already schedules its I/O; a second scheduler on NVMe/SSD adds latency and jitter."""
    flash = [b for b in hypervisor.block_devices if not b.is_virtual and (b.is_nvme or b.rotational is False)]
    if not flash:  # kvmio makes no item then (catalogue); this guards facts supplied by a project's own fixture
        pytest.skip(f"{hypervisor.name}: no NVMe or non-rotational block device")
    wrong = [f"{b.name} uses {b.scheduler}" for b in flash if b.scheduler not in (None, "none")]
    assert not wrong, (
        f"{hypervisor.name}: {', '.join(wrong)}; set `none` (echo none > /sys/block/DEV/queue/scheduler, "
        'persist with a udev rule ACTION=="add|change", KERNEL=="nvme[0-9]*n[0-9]*", ATTR{queue/scheduler}="none")'
    )
