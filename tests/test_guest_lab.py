"""Integration tests of the guest transport and disk mapping against the running kvmio lab.

The `lab` fixture (tests/conftest.py) brings the lab up first. Select with `-m lab`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.facts.guest import GuestHost, agent_host, guest_host
from pytest_kvmio.facts.guest_errors import (
    NOT_RUNNING,
    GuestCommandTimeout,
    GuestUnavailable,
)
from pytest_kvmio.facts.guestmap import (
    DiskRef,
    GuestDisk,
    irq_delta,
    map_guest_disks,
    read_irq_counts,
)

pytestmark = pytest.mark.lab

URI = "qemu:///system"
PREFIX = "kvmio-lab-"


def lab_disks(xml: str) -> list[DiskRef]:
    """Read target, bus, serial and <address> of every disk in a domain XML."""
    disks = []
    for d in ET.fromstring(xml).findall("./devices/disk"):
        target = d.find("target")
        if target is None or d.get("device", "disk") != "disk":
            continue
        addr = d.find("address")
        disks.append(
            DiskRef(
                target=target.get("dev", ""),
                bus=target.get("bus"),
                serial=d.findtext("serial"),
                address=dict(addr.attrib) if addr is not None else None,
            )
        )
    return disks


@pytest.fixture(scope="module")
def lab_guests(lab: dict[str, Any]) -> Iterator[list[tuple[Any, GuestHost]]]:
    """Yield (virDomain, GuestHost) for every running lab domain whose agent answers."""
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda *a: None, None)
    try:
        conn = libvirt.openReadOnly(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"{URI}: {exc}")
    doms = [d for d in conn.listAllDomains() if d.name().startswith(PREFIX)]
    assert doms, f"no {PREFIX}* domain on {URI} after `kvmio lab up`"
    found, why = [], []
    for dom in sorted(doms, key=lambda d: d.name()):
        try:
            found.append((dom, agent_host(dom, agent_timeout=20, command_timeout=120)))
        except GuestUnavailable as exc:
            why.append(str(exc))
    assert found, "no lab guest answers after `kvmio lab up`: " + "; ".join(why)
    yield found
    for _, guest in found:
        guest.backend.agent.close()  # type: ignore[attr-defined]
    conn.close()


@pytest.fixture(scope="module")
def guest(lab_guests: list[tuple[Any, GuestHost]]) -> GuestHost:
    """Return the first lab guest that answers."""
    return lab_guests[0][1]


def test_proc_version(guest: GuestHost) -> None:
    assert guest.check_output("cat /proc/version").startswith("Linux version ")


def test_file_content_through_testinfra(guest: GuestHost) -> None:
    cmdline = guest.file("/proc/cmdline").content_string
    assert "console=" in cmdline
    assert guest.file("/proc/version").exists


def test_quoted_argument_reaches_the_guest_verbatim(guest: GuestHost) -> None:
    assert guest.check_output("printf %s %s", "%s", "a b; echo injected") == "a b; echo injected"


def test_nonzero_exit_and_stderr(guest: GuestHost) -> None:
    result = guest.run("echo out; echo err >&2; exit 4")
    assert (result.rc, result.stdout, result.stderr) == (4, "out\n", "err\n")


def test_signal(guest: GuestHost) -> None:
    result = guest.run("kill -KILL $$")
    assert result.signal == 9 and result.rc == 137  # type: ignore[attr-defined]


def test_binary_output(guest: GuestHost) -> None:
    result = guest.run("head -c 4096 /dev/urandom")
    assert result.rc == 0 and len(result.stdout_bytes) == 4096
    assert isinstance(result.stdout, str)


def test_command_timeout_kills_the_command_and_its_children(guest: GuestHost) -> None:
    with pytest.raises(GuestCommandTimeout, match="sleep 37; echo never"):
        guest.run("sleep 37; echo never", timeout=2)
    for _ in range(20):  # the kill is asynchronous: give it a few seconds under TCG
        left = [p for p in guest.check_output("ps -o args").splitlines() if p.startswith("sleep 37")]
        if not left:
            break
        time.sleep(0.5)
    assert not left, left


def test_disks_map_by_serial(lab_guests: list[tuple[Any, GuestHost]]) -> None:
    seen_scratch = False
    for dom, guest in lab_guests:
        disks = lab_disks(dom.XMLDesc(0))
        mapping = map_guest_disks(guest, disks)
        for disk in disks:
            m = mapping[disk.target]
            if disk.serial:
                assert isinstance(m, GuestDisk), f"{dom.name()}/{disk.target}: {m}"
                assert m.scheduler, m
                assert m.hw_queues and m.hw_queues >= 1, m
                serial_seen = guest.check_output("cat /sys/block/%s/serial 2>/dev/null || true", m.device)
                if disk.bus == "virtio":
                    assert serial_seen == disk.serial[:20]
                seen_scratch = seen_scratch or disk.serial.startswith("kvmio-scratch")
    assert seen_scratch, "no kvmio-scratch* disk in any lab domain"


def test_request_interrupts_increase_under_reads(lab_guests: list[tuple[Any, GuestHost]]) -> None:
    for dom, guest in lab_guests:
        mapping = map_guest_disks(guest, lab_disks(dom.XMLDesc(0)))
        virtio = [m for m in mapping.values() if isinstance(m, GuestDisk) and m.virtio and m.device.startswith("vd")]
        if not virtio:
            continue
        disk = virtio[0]
        before = read_irq_counts(guest, disk)
        guest.check_output(
            "fio --name=irq --filename=/dev/%s --readonly --rw=randread --direct=1 --bs=4k "
            "--size=8M --runtime=2 --time_based --output-format=terse >/dev/null",
            disk.device,
            timeout=60,
        )
        after = read_irq_counts(guest, disk.device)
        delta = irq_delta(before, after)
        assert sum(delta.values()) > 0, f"{dom.name()}/{disk.describe()}: no request interrupts: {delta}"
        return
    pytest.skip("no mapped virtio-blk disk in the lab")


def test_shut_off_lab_domain_is_unavailable_not_an_error() -> None:
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda *a: None, None)
    conn = libvirt.openReadOnly(URI)
    doms = [d for d in conn.listAllDomains() if d.name().startswith(PREFIX)]
    if not doms:
        pytest.skip(f"no {PREFIX}* domain on {URI}; run `kvmio lab up`")
    off = [d for d in doms if not d.isActive()]
    if not off:
        pytest.skip(f"every {PREFIX}* domain is running")
    with pytest.raises(GuestUnavailable) as info:
        agent_host(off[0])
    assert info.value.reason == NOT_RUNNING and info.value.domain == off[0].name()


@pytest.fixture
def loopback_sshd(tmp_path: Path) -> Iterator[Path]:
    """Run an sshd on 127.0.0.1:2299 for root with a throwaway key; yield an ssh_config for it."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        pytest.skip("needs root and /usr/sbin/sshd")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    auth = tmp_path / "authorized_keys"
    auth.write_text((tmp_path / "user.pub").read_text())
    auth.chmod(0o600)
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-p", "2299", "-o", "ListenAddress=127.0.0.1", "-h", str(tmp_path / "host"),
         "-o", f"AuthorizedKeysFile={auth}", "-o", f"PidFile={tmp_path / 'pid'}", "-o", "PermitRootLogin=prohibit-password", "-o", "StrictModes=no"],
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host *\n  Port 2299\n  IdentityFile {tmp_path / 'user'}\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 10\n"
    )
    time.sleep(0.5)
    try:
        yield config
    finally:
        proc.terminate()
        proc.wait(10)


def test_ssh_transport_reaches_an_sshd(lab_guests: list[tuple[Any, GuestHost]], loopback_sshd: Path) -> None:
    """Exercise the SSH path of guest_host for real; the target is the host's loopback sshd, not the guest."""
    dom = lab_guests[0][0]
    host = guest_host(f"ssh://root@127.0.0.1?ssh_config={loopback_sshd}", dom, URI)
    assert host.backend.get_connection_type() == "ssh"
    assert host.check_output("echo %s", dom.name()) == dom.name()
