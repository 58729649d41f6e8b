"""`kvmio lab` lifecycle on the real machine: up twice is idempotent, down leaves nothing, a failing
step says which and what to do. Restores the lab at the end, for the lab tests that follow."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LAB_UP_TIMEOUT, kvmio

pytestmark = [pytest.mark.integration, pytest.mark.lab]

URI = "qemu:///system"


def _lab_domains() -> dict[str, str]:
    """Return {name: uuid} of the kvmio-lab-* domains libvirt knows."""
    names = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    return {
        n: subprocess.run(["virsh", "-c", URI, "domuuid", n], capture_output=True, text=True, timeout=60).stdout.strip()
        for n in names if n.startswith("kvmio-lab-")
    }


def _lab_processes(state_dir: str) -> list[str]:
    """Return command lines of processes that belong to the lab (its guests, its sshd, its vhost-user backends)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "guest=kvmio-lab-" in cmdline or f"{state_dir}/ssh/sshd_config" in cmdline or f"{state_dir}/vhost/" in cmdline:
            found.append(f"{proc.name}: {cmdline[:150]}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lab_up_twice_changes_nothing(lab: dict[str, Any]) -> None:
    before = _lab_domains()
    ids = {n: subprocess.run(["virsh", "-c", URI, "domid", n], capture_output=True, text=True).stdout.strip()
           for n in before}
    again = kvmio("lab", "up", timeout=LAB_UP_TIMEOUT)
    assert again.returncode == 0, again.stderr
    progress = again.stdout + again.stderr
    assert "0 (re)defined" in progress and "all guests already answering" in progress, progress
    assert "0 qemu-storage-daemon started" in progress, progress  # the vhost-user backends keep running
    backends = {b["target"]: b["pid"] for b in lab["status"]["vhost"]}
    assert backends and all(backends.values()), backends
    status = json.loads(kvmio("lab", "status", "--json").stdout)
    assert {b["target"]: b["pid"] for b in status["status"]["vhost"]} == backends
    assert _lab_domains() == before  # same domains, same UUIDs
    after_ids = {n: subprocess.run(["virsh", "-c", URI, "domid", n], capture_output=True, text=True).stdout.strip()
                 for n in before}
    assert after_ids == ids  # running guests were not restarted


def test_lab_down_leaves_nothing_and_a_failed_step_says_which(lab: dict[str, Any]) -> None:
    state_dir = os.environ.get("KVMIO_LAB_DIR", "/var/lib/kvmio-lab")
    images = [Path(p) for dom in lab["status"]["domains"].values() for p in dom["images"]]
    assert images and all(p.exists() for p in images)
    client_pub = Path(state_dir, "ssh", "id_ed25519.pub").read_text().strip()
    try:
        down = kvmio("lab", "down", timeout=300)
        assert down.returncode == 0, down.stderr
        assert _lab_domains() == {}
        assert _lab_processes(state_dir) == []  # no guest, sshd or qemu-storage-daemon left
        assert not Path(state_dir, "vhost").exists()  # no socket left
        assert [str(p) for p in images if p.exists()] == []
        authorized = Path("/root/.ssh/authorized_keys")
        assert client_pub not in (authorized.read_text() if authorized.exists() else "")

        # A step that fails names itself and the fix; here: the port of the lab's sshd is taken.
        port = _free_port()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            failed = kvmio("lab", "up", timeout=LAB_UP_TIMEOUT, env={"KVMIO_LAB_SSH_PORT": str(port)})
        assert failed.returncode == 1, failed.stdout[-2000:]
        assert f"step sshd failed: 127.0.0.1:{port} is taken by another process; set KVMIO_LAB_SSH_PORT" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert not [p for p in _lab_processes(state_dir) if "sshd_config" in p]  # the failed step left no sshd
    finally:
        restored = kvmio("lab", "up", timeout=LAB_UP_TIMEOUT)
        assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-2000:]
