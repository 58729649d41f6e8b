"""Choose the accelerator: KVM only when a bounded probe boot under KVM reaches the guest init."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

PROBE_SECONDS = 20.0
READY_MARK = b"kvmio-init: ready"


def probe_kvm(kernel: Path, initrd: Path, workdir: Path, bound: float = PROBE_SECONDS) -> tuple[bool, str]:
    """Boot the guest under -accel kvm for at most `bound` seconds; return (works, why)."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm is missing"
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / "kvm-probe-console.log"
    console.unlink(missing_ok=True)
    argv = [
        "qemu-system-x86_64", "-accel", "kvm", "-M", "q35", "-m", "512", "-smp", "1",
        "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet kvmio.disks=0",
        "-serial", f"file:{console}",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + bound
    try:
        while time.monotonic() < deadline:
            if console.exists() and READY_MARK in console.read_bytes():
                return True, f"probe boot under KVM reached the guest init in {bound - (deadline - time.monotonic()):.1f}s"
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                return False, f"qemu -accel kvm exited {proc.returncode}: {err.splitlines()[-1] if err else ''}"
            time.sleep(0.5)
        return False, f"probe boot under KVM printed no init banner within {bound:.0f}s (nested KVM hangs)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def choose(kernel: Path, initrd: Path, cache_dir: Path, key: str) -> tuple[str, str]:
    """Return (domain type 'kvm'|'qemu', reason), cached per guest build."""
    record = cache_dir / f"accel-{key}.json"
    if record.is_file():
        doc = json.loads(record.read_text())
        return doc["domain_type"], doc["reason"] + " (cached probe)"
    works, why = probe_kvm(kernel, initrd, cache_dir / "probe")
    domain_type = "kvm" if works else "qemu"
    record.write_text(json.dumps({"domain_type": domain_type, "reason": why}) + "\n")
    return domain_type, why


def accel_name(domain_type: str) -> str:
    """Return the accelerator name for the manifest ('tcg' for <domain type='qemu'>)."""
    return "kvm" if domain_type == "kvm" else "tcg"
