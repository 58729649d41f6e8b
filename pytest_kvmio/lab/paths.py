"""Locate the lab's state on disk (all of it under one directory, default /var/lib/kvmio-lab)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_kvmio.errors import CommandError

DEFAULT_DIR = "/var/lib/kvmio-lab"
DEFAULT_SSH_PORT = 2222
DEFAULT_GUEST_SSH_PORT = 2223
LIBVIRT_URI = "qemu:///system"
DOMAIN_PREFIX = "kvmio-lab-"


@dataclass(frozen=True)
class LabPaths:
    """Every file and directory the lab owns."""

    root: Path

    @classmethod
    def from_env(cls) -> LabPaths:
        """Return the paths under $KVMIO_LAB_DIR, else /var/lib/kvmio-lab."""
        return cls(Path(os.environ.get("KVMIO_LAB_DIR") or DEFAULT_DIR))

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def debs(self) -> Path:
        return self.cache / "debs"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def xml(self) -> Path:
        return self.root / "xml"

    @property
    def offline(self) -> Path:
        return self.root / "offline"

    @property
    def vhost(self) -> Path:
        """The vhost-user backends' sockets and pid files."""
        return self.root / "vhost"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def state(self) -> Path:
        """What `up` started (daemons, sshd), so that `down` stops only that."""
        return self.root / "state.json"

    def console_log(self, domain: str) -> Path:
        return self.logs / f"{domain}-console.log"


def ssh_port() -> int:
    """Return the loopback sshd port from $KVMIO_LAB_SSH_PORT, else 2222."""
    return _port_from_env("KVMIO_LAB_SSH_PORT", DEFAULT_SSH_PORT)


def guest_ssh_port() -> int:
    """Return the loopback port forwarded to the SSH-enabled guest's :22 ($KVMIO_LAB_GUEST_SSH_PORT, else 2223)."""
    return _port_from_env("KVMIO_LAB_GUEST_SSH_PORT", DEFAULT_GUEST_SSH_PORT)


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise CommandError(f"{name}={raw!r}: expected a TCP port number (1-65535)")
    return port
