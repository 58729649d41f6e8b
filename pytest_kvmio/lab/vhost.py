"""Serve the lab's vhost-user disks: one qemu-storage-daemon per disk, which `kvmio lab` starts, supervises, stops.

qemu-storage-daemon (Debian's qemu-system-common) exports a raw image as a vhost-user-blk device on a UNIX socket,
like an SPDK vhost target would; the image lives in the lab's image directory beside the ordinary virtio-blk disk of
the same domain, opened alike (O_DIRECT, io_uring), so the two paths can be compared. `up` starts a daemon that is
not running or runs with other arguments and leaves a matching one alone; `down` stops it and removes its socket.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_kvmio.errors import CommandError
from pytest_kvmio.lab import topology, xmlgen
from pytest_kvmio.lab.paths import LabPaths
from pytest_kvmio.lab.topology import DiskSpec, DomainSpec

QSD = "/usr/bin/qemu-storage-daemon"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_USER = "libvirt-qemu"
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Backend:
    """The qemu-storage-daemon that serves one vhost-user disk of a lab domain."""

    domain: str
    disk: DiskSpec
    paths: LabPaths

    @property
    def key(self) -> str:
        return f"{self.domain}-{self.disk.target}"

    @property
    def target(self) -> str:
        return f"{self.domain}/{self.disk.target}"

    @property
    def socket(self) -> Path:
        return xmlgen.vhost_socket(self.paths.vhost, self.domain, self.disk.target)

    @property
    def pidfile(self) -> Path:
        return self.paths.vhost / f"{self.key}.pid"

    @property
    def image(self) -> Path:
        return self.paths.images / self.disk.image.filename

    @property
    def queues(self) -> int:
        assert self.disk.backend_queues is not None
        return self.disk.backend_queues

    def argv(self) -> list[str]:
        """Return the daemon's command line (without --daemonize/--pidfile, which `start` adds)."""
        return [
            QSD,
            "--blockdev", f"driver=file,node-name=file0,filename={_escape(self.image)},aio=io_uring,cache.direct=on",
            "--blockdev", "driver=raw,node-name=disk0,file=file0",
            "--export", (f"type=vhost-user-blk,id=export0,node-name=disk0,addr.type=unix,"
                         f"addr.path={_escape(self.socket)},writable=on,num-queues={self.queues}"),
        ]


def _escape(path: Path) -> str:
    """Return a path as one QEMU keyval value (a comma is written twice)."""
    return str(path).replace(",", ",,")


def backends(paths: LabPaths, domains: tuple[DomainSpec, ...] = topology.DOMAINS) -> list[Backend]:
    """Return the backend of every vhost-user disk of the lab's domains."""
    return [Backend(dom.name, disk, paths) for dom in domains for disk in dom.disks if disk.vhost]


def qemu_user() -> str:
    """Return the user QEMU runs as (qemu.conf `user = "..."`, Debian's default libvirt-qemu)."""
    try:
        text = QEMU_CONF.read_text()
    except OSError:
        return DEFAULT_QEMU_USER
    found = re.search(r'^\s*user\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else DEFAULT_QEMU_USER


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(backend: Backend) -> int | None:
    """Return the pid of the backend's daemon when it runs with the wanted arguments and its socket exists."""
    pid = _read_pid(backend.pidfile)
    if pid is None:
        return None
    argv = _cmdline(pid)
    if argv is None or argv[: len(backend.argv())] != backend.argv():
        return None
    return pid if backend.socket.is_socket() else None


def _owner(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def start(backend: Backend) -> int:
    """Start the backend's daemon (it daemonizes once the export serves its socket); return its pid."""
    backend.paths.vhost.mkdir(parents=True, exist_ok=True)
    backend.paths.vhost.chmod(0o755)  # QEMU (not root) must reach the socket
    backend.socket.unlink(missing_ok=True)
    backend.pidfile.unlink(missing_ok=True)
    argv = backend.argv() + ["--daemonize", "--pidfile", str(backend.pidfile)]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    pid = _read_pid(backend.pidfile)
    if proc.returncode != 0 or pid is None or not backend.socket.is_socket():
        raise CommandError(
            f"{backend.target}: qemu-storage-daemon did not start (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:] or 'no output'}; command: {' '.join(argv)}"
        )
    user = qemu_user()
    try:
        entry = pwd.getpwnam(user)
        os.chown(backend.socket, entry.pw_uid, entry.pw_gid)
    except KeyError:
        raise CommandError(f"{backend.target}: QEMU's user {user!r} (qemu.conf) does not exist; "
                           "install libvirt-daemon-system") from None
    backend.socket.chmod(0o660)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def ensure(paths: LabPaths, domains: tuple[DomainSpec, ...] = topology.DOMAINS) -> tuple[list[str], list[str]]:
    """Start every backend that is not running as wanted; return (targets started, targets kept)."""
    started, kept = [], []
    for backend in backends(paths, domains):
        if running_pid(backend) is not None:
            kept.append(backend.target)
            continue
        old = _read_pid(backend.pidfile)
        if old is not None and _is_lab_daemon(old, paths):
            _stop_pid(old)  # running with other arguments: replace it
        start(backend)
        started.append(backend.target)
    return started, kept


def stranded_domains(started: list[str], domains: tuple[DomainSpec, ...] = topology.DOMAINS) -> list[str]:
    """Return the domains with a disk whose backend was just (re)started and that does not reconnect to it."""
    return sorted({dom.name for dom in domains for disk in dom.disks
                   if disk.vhost and disk.reconnect is None and f"{dom.name}/{disk.target}" in started})


def _is_lab_daemon(pid: int, paths: LabPaths) -> bool:
    """Return True for a qemu-storage-daemon whose command line names a socket in the lab's vhost directory."""
    argv = _cmdline(pid) or []
    return bool(argv) and os.path.basename(argv[0]) == "qemu-storage-daemon" and any(
        f"addr.path={paths.vhost}/" in a for a in argv
    )


def lab_daemons(paths: LabPaths) -> list[int]:
    """Return the pids of every qemu-storage-daemon serving a socket in the lab's vhost directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_lab_daemon(int(entry.name), paths):
            pids.append(int(entry.name))
    return sorted(pids)


def stop_all(paths: LabPaths, domains: tuple[DomainSpec, ...] = topology.DOMAINS) -> list[int]:
    """Stop every lab daemon (by pid file and by command line, so none is left behind) and remove its socket."""
    pids = set(lab_daemons(paths))
    for backend in backends(paths, domains):
        pid = _read_pid(backend.pidfile)
        if pid is not None and _is_lab_daemon(pid, paths):
            pids.add(pid)
    for pid in sorted(pids):
        _stop_pid(pid)
    if paths.vhost.exists():
        for leftover in paths.vhost.iterdir():
            leftover.unlink(missing_ok=True)
    return sorted(pids)


def status(paths: LabPaths, domains: tuple[DomainSpec, ...] = topology.DOMAINS) -> list[dict[str, Any]]:
    """Return each backend's state: target, pid (None when not running as wanted), socket, its owner, image."""
    out = []
    for backend in backends(paths, domains):
        out.append({
            "target": backend.target,
            "pid": running_pid(backend),
            "socket": str(backend.socket),
            "owner": _owner(backend.socket) if backend.socket.exists() else None,
            "image": str(backend.image),
            "queues": backend.queues,
            "reconnect": backend.disk.reconnect,
        })
    return out


def manifest_entries(paths: LabPaths) -> dict[str, dict[str, Any]]:
    """Return what the manifest says about each backend (target -> socket, image, queues, command line)."""
    return {
        b.target: {"socket": str(b.socket), "pidfile": str(b.pidfile), "image": str(b.image), "queues": b.queues,
                   "reconnect": b.disk.reconnect, "program": "qemu-storage-daemon", "argv": b.argv()}
        for b in backends(paths)
    }
