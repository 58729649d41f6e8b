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

from pytest_kvmio.facts.guest import guest_host
from pytest_kvmio.facts.guestmap import GuestDisk, map_guest_disks
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


def _backend_pid(target: str) -> int | None:
    """Return the pid of the lab's qemu-storage-daemon serving a disk of the vhost domain, read now."""
    backend = next(b for b in vhost.backends(LabPaths.from_env()) if b.target == f"{DOMAIN}/{target}")
    return vhost.running_pid(backend)


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
    pid = _backend_pid("vdc")
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
    pid = _backend_pid("vdc")
    assert pid is not None
    os.kill(pid, 9)
    up = kvmio("lab", "up", timeout=600)  # supervises: starts the dead backend, restarts nothing else
    assert up.returncode == 0, up.stderr[-2000:]
    assert "1 qemu-storage-daemon started" in up.stderr and "0 (re)defined" in up.stderr, up.stderr[-2000:]
    assert _backend_pid("vdc") not in (None, pid)
    read = "dd if=/dev/%s of=/dev/null bs=4096 count=256 iflag=direct"
    deadline = time.monotonic() + 60  # reconnect timeout 10 s, TCG
    while True:
        result = guest.run(read, device, timeout=30)
        if result.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result.rc == 0, result.stderr


def test_the_perf_suite_counts_the_backend_cpu_of_a_vhost_user_disk(tmp_path: Path, lab: dict[str, Any]) -> None:
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    thresholds = tmp_path / "thresholds"
    thresholds.mkdir()
    shutil.copy(REPO / "thresholds" / "profiles.yaml", thresholds / "profiles.yaml")
    (thresholds / "classes.yaml").write_text(
        "version: 1\nclasses:\n  vhost-study:\n    description: the lab's vhost-user study disks\n"
        f"    match:\n      - target: '*/{DOMAIN}/vd[bc]'\n"
        "    limits:\n      randread-4k-qd1:\n        host_cpu_us_per_io: {ceiling: 1000000}\n"
    )
    out = tmp_path / "verdicts.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_perf.py", "-p", "no:cacheprovider", "--host=local",
         f"--domain={DOMAIN}", f"--thresholds={thresholds}", "-k", "host_cpu and randread-4k-qd1-",
         "--fio-repeat", "1", "--fio-runtime", "2", "--fio-ramp-time", "1", f"--kvmio-json={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    perf = {v["target"]: v["facts"]["perf"] for v in json.loads(out.read_text())["verdicts"] if v["rule"] == "perf-host-cpu"}
    pid = _backend_pid("vdc")
    vdb, vdc = perf[f"local/{DOMAIN}/vdb"], perf[f"local/{DOMAIN}/vdc"]
    assert vdb["io_mode"] == "io_uring" and len(vdb["counted"]) == 1
    assert vdc["io_mode"] == "vhost-user" and f"qemu-storage-daemon pid {pid} (serves " in vdc["counted"][1]
    assert vdc["median"] > 0
