"""Start virtlogd and libvirtd when none runs (no systemd), and wait for qemu:///system."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import libvirt

from pytest_kvmio.errors import CommandError
from pytest_kvmio.facts.connection import libvirt_module
from pytest_kvmio.lab.paths import LIBVIRT_URI
from pytest_kvmio.lab.shell import tail

DAEMONS = ("virtlogd", "libvirtd")


def pids_of(name: str) -> list[int]:
    """Return pids whose executable is named `name` (reads /proc; no pgrep patterns)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if os.path.basename(exe.removesuffix(" (deleted)")) == name:
            pids.append(int(entry.name))
    return pids


def ensure_running() -> list[str]:
    """Start whichever daemon is not running; return the names started."""
    for d in ("/var/log/libvirt", "/run/libvirt"):
        os.makedirs(d, exist_ok=True)
    started = []
    for name in DAEMONS:
        if pids_of(name):
            continue
        # A daemonizing child inherits our pipes; give it files instead, or we would wait on it.
        out = Path("/var/log/libvirt") / f"kvmio-lab-{name}.out"
        with out.open("ab") as fh:
            proc = subprocess.run([f"/usr/sbin/{name}", "-d"], stdin=subprocess.DEVNULL, stdout=fh,
                                  stderr=fh, timeout=30, check=False)
        if proc.returncode != 0:
            raise CommandError(f"{name} -d exited {proc.returncode}: {tail(out, 5)}; "
                               f"run `{name} -v` in a terminal to see why")
        started.append(name)
    return started


def connect(uri: str = LIBVIRT_URI, timeout: float = 30) -> libvirt.virConnect:
    """Return a connection to `uri`, retrying until it answers or `timeout` runs out."""
    libvirt_module()  # registers the handler that keeps libvirt from printing every error to stderr
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            conn = libvirt.open(uri)
            conn.getLibVersion()
            return conn
        except libvirt.libvirtError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise CommandError(
                f"{uri} did not answer within {timeout:.0f}s ({last}); "
                "see /var/log/libvirt/libvirtd.log or run `libvirtd -v` in a terminal"
            )
        time.sleep(0.5)
