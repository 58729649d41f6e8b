"""The user-space process that serves a vhost-user disk's socket (SPDK, qemu-storage-daemon, ...), as the host shows it.

A vhost-user disk's I/O runs in that backend, not in QEMU. What rules need from it: whether the socket exists and a
live process listens on it, which program that is (SPDK needs hugepage-backed guest memory), and how many queues it
offers, where its command line says (qemu-storage-daemon's `--export type=vhost-user-blk,...,num-queues=N`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

#: qemu-storage-daemon's vhost-user-blk export offers one queue unless num-queues says otherwise.
QSD_DEFAULT_QUEUES = 1
#: Program names of SPDK's vhost targets (spdk_tgt, the older `vhost` app).
SPDK_PROGRAMS = ("spdk_tgt", "vhost")


@dataclass(frozen=True)
class BackendProcess:
    """A process holding the socket: pid, command name, executable and command line."""

    pid: int
    comm: str
    exe: str = ""
    cmdline: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        """Return the executable's base name (the command name when the executable can't be read)."""
        return os.path.basename(self.exe.removesuffix(" (deleted)")) or self.comm

    @property
    def is_spdk(self) -> bool:
        return self.program in SPDK_PROGRAMS or "spdk" in self.exe.lower()

    @property
    def is_qemu_storage_daemon(self) -> bool:
        return self.program == "qemu-storage-daemon"

    def describe(self) -> str:
        return f"{self.program} pid {self.pid}"


@dataclass(frozen=True)
class VhostBackend:
    """A vhost-user socket on the host and the processes that serve it."""

    socket: str
    exists: bool
    owner: str | None = None  # user:group of the socket file
    mode: str | None = None  # octal permissions of the socket file
    listeners: tuple[BackendProcess, ...] = ()  # processes holding the listening socket bound to the path
    connections: int = 0  # accepted connections on the path (QEMU connected)
    #: Set when the host could not show other processes' sockets (not root): no listener then proves nothing.
    unreadable: str | None = None

    @property
    def serving(self) -> BackendProcess | None:
        """Return the process listening on the socket (the first, should several hold it)."""
        return self.listeners[0] if self.listeners else None

    def queues(self) -> tuple[int | None, str]:
        """Return how many queues the backend offers on this socket and how that is known (None: unknown)."""
        proc = self.serving
        if proc is None:
            return None, "no process serves the socket"
        if proc.is_qemu_storage_daemon:
            for export in qsd_exports(proc.cmdline):
                if export.get("type") == "vhost-user-blk" and _export_path(export) == self.socket:
                    raw = export.get("num-queues")
                    if raw is None:
                        return QSD_DEFAULT_QUEUES, f"{proc.describe()}: export {export.get('id', '?')} sets no num-queues (default 1)"
                    try:
                        return int(str(raw)), f"{proc.describe()}: export {export.get('id', '?')} num-queues={raw}"
                    except ValueError:
                        return None, f"{proc.describe()}: num-queues={raw!r} is not a number"
            return None, f"{proc.describe()}: no --export on its command line serves {self.socket} (added over QMP?)"
        if proc.is_spdk:
            return None, f"{proc.describe()} (SPDK): read it with `rpc.py vhost_get_controllers`"
        return None, f"{proc.describe()}: kvmio can't read this backend's queue count"

    def facts(self) -> dict[str, Any]:
        """Return the backend as plain values (verdict facts)."""
        return {
            "socket": self.socket, "exists": self.exists, "owner": self.owner, "mode": self.mode,
            "listeners": [{"pid": p.pid, "program": p.program, "exe": p.exe} for p in self.listeners],
            "connections": self.connections, "unreadable": self.unreadable,
        }


def _split_keyval(text: str) -> list[str]:
    """Split QEMU's key=value,key=value syntax, where ',,' is a literal comma."""
    parts, cur, i = [], [], 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(text[i])
        i += 1
    parts.append("".join(cur))
    return parts


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_export(value: str) -> dict[str, Any]:
    """Return one `--export` option as flat keys (`addr.path`), from QEMU's keyval or JSON syntax."""
    value = value.strip()
    if value.startswith("{"):
        try:
            doc = json.loads(value)
        except ValueError:
            return {}
        return _flatten(doc) if isinstance(doc, dict) else {}
    out: dict[str, Any] = {}
    for part in _split_keyval(value):
        key, sep, val = part.partition("=")
        if sep:
            out[key] = val
    return out


def qsd_exports(cmdline: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Return every `--export` of a qemu-storage-daemon command line, parsed."""
    exports = []
    args = list(cmdline)
    for i, arg in enumerate(args):
        if arg in ("--export", "-export") and i + 1 < len(args):
            exports.append(parse_export(args[i + 1]))
        elif arg.startswith(("--export=", "-export=")):
            exports.append(parse_export(arg.split("=", 1)[1]))
    return exports


def _export_path(export: dict[str, Any]) -> str | None:
    path = export.get("addr.path")
    return os.path.normpath(str(path)) if path else None


@dataclass
class _Parsed:
    """Lines of one socket's section of the host script's output, before they become a VhostBackend."""

    socket: str
    exists: bool = False
    owner: str | None = None
    mode: str | None = None
    procs: dict[int, dict[str, Any]] = field(default_factory=dict)
    connections: int = 0
    unreadable: str | None = None


def parse_backend_lines(socket: str, lines: list[str], uid: int | None) -> VhostBackend:
    """Return the backend of one socket from its `vhost-*` lines (see facts/host.py VHOST_SCRIPT)."""
    parsed = _Parsed(socket)
    for line in lines:
        key, _, value = line.partition("=")
        if key == "vhost-socket":
            owner, _, mode = value.partition(" ")
            parsed.exists, parsed.owner, parsed.mode = True, owner or None, mode or None
        elif key == "vhost-connections" and value.strip().isdigit():
            parsed.connections = int(value)
        elif key in ("vhost-pid", "vhost-exe", "vhost-cmdline"):
            pid_text, _, rest = value.partition(" ")
            if not pid_text.isdigit():
                continue
            proc = parsed.procs.setdefault(int(pid_text), {"comm": "", "exe": "", "cmdline": ()})
            if key == "vhost-pid":
                proc["comm"] = rest
            elif key == "vhost-exe":
                proc["exe"] = rest
            else:
                proc["cmdline"] = tuple(a for a in rest.split("\x1f") if a)
    if uid not in (None, 0) and not parsed.procs:
        parsed.unreadable = f"facts read as uid {uid}: other users' sockets are not visible in /proc/*/fd; read as root"
    listeners = tuple(BackendProcess(pid, p["comm"], p["exe"], p["cmdline"]) for pid, p in sorted(parsed.procs.items()))
    return VhostBackend(socket, parsed.exists, parsed.owner, parsed.mode, listeners, parsed.connections, parsed.unreadable)
