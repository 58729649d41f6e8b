"""The vhost-user path on the lab's kvmio-lab-vhost: the guest finds its vhost-user disks by PCI address, `kvmio ab`
counts the qemu-storage-daemon's CPU for the vhost-user arm, and a disk with <reconnect> survives a backend restart.

Short runs: the lab runs under TCG on a shared 2-core machine, so only facts are asserted, no speed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest

from pytest_kvmio.collect.guest import guest_host
from pytest_kvmio.collect.guestmap import GuestDisk, map_guest_disks
from pytest_kvmio.lab import vhost
from pytest_kvmio.lab.paths import LabPaths
from pytest_kvmio.model.domain import parse_domain
from tests.conftest import kvmio

pytestmark = [pytest.mark.integration, pytest.mark.lab]

DOMAIN = "kvmio-lab-vhost"
URI = "qemu:///system"


@pytest.fixture(scope="module")
def vhost_guest() -> tuple[Any, Any]:
    libvirt.registerErrorHandler(lambda *a: None, None)
    conn = libvirt.open(URI)
    dom = conn.lookupByName(DOMAIN)
    return parse_domain(dom.XMLDesc(0), source=DOMAIN, host="local"), guest_host(None, dom, URI)


def test_the_guest_finds_the_vhost_user_disks_by_pci_address(vhost_guest: tuple[Any, Any]) -> None:
    domain, guest = vhost_guest
    mapping = map_guest_disks(guest, domain.disks)
    assert mapping["vdb"].matched_by == "serial"  # type: ignore[union-attr]
    for target in ("vdc", "vdd"):
        found = mapping[target]
        assert isinstance(found, GuestDisk) and found.matched_by.startswith("PCI address"), found
        assert found.hw_queues == 2 and found.scheduler == "none", found
    assert len({m.device for m in mapping.values() if isinstance(m, GuestDisk)}) == 3


def test_ab_counts_the_backend_cpu_of_the_vhost_user_arm(tmp_path: Path, lab: dict[str, Any]) -> None:
    out = tmp_path / "ab.json"
    done = kvmio("ab", "--a", f"{DOMAIN}/vdb", "--b", f"{DOMAIN}/vdc", "--profile", "randread-4k-qd1", "--rounds", "2",
                 "--fio-runtime", "2", "--fio-ramp-time", "1", "--json", str(out), timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    pid = {b["target"]: b["pid"] for b in lab["status"]["vhost"]}[f"{DOMAIN}/vdc"]
    assert doc["b"]["device_model"] == "vhost-user-blk" and doc["a"]["device_model"] == "virtio-blk"
    counted = doc["b"]["host_cpu_counted"]
    assert counted[0].startswith("QEMU pid") and f"qemu-storage-daemon pid {pid} (serves " in counted[1], counted
    assert len(doc["a"]["host_cpu_counted"]) == 1  # the virtio-blk arm: QEMU alone
    assert all(v is not None and v > 0 for v in doc["samples"]["b"]["host_cpu_us_per_io"])
    assert f"qemu-storage-daemon pid {pid}" in done.stdout + done.stderr


def test_a_disk_with_reconnect_survives_a_backend_restart(vhost_guest: tuple[Any, Any]) -> None:
    """Kill vdc's backend, let `kvmio lab up` start it again: QEMU reconnects and the guest reads the disk again."""
    domain, guest = vhost_guest
    device = map_guest_disks(guest, domain.disks)["vdc"].device  # type: ignore[union-attr]
    backend = next(b for b in vhost.backends(LabPaths.from_env()) if b.target == f"{DOMAIN}/vdc")
    pid = vhost.running_pid(backend)
    assert pid is not None
    os.kill(pid, 9)
    up = kvmio("lab", "up", timeout=600)  # supervises: starts the dead backend, restarts nothing else
    assert up.returncode == 0, up.stderr[-2000:]
    assert "1 qemu-storage-daemon started" in up.stderr and "0 (re)defined" in up.stderr, up.stderr[-2000:]
    assert vhost.running_pid(backend) not in (None, pid)
    read = "dd if=/dev/%s of=/dev/null bs=4096 count=256 iflag=direct"
    deadline = time.monotonic() + 60  # reconnect timeout 10 s, TCG
    while True:
        result = guest.run(read, device, timeout=30)
        if result.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result.rc == 0, result.stderr
