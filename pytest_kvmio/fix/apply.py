"""What `kvmio fix --apply` does to a defined domain besides defining it: keep the definition it replaces, put it
back (`--rollback`), and restart the domain so that the new definition runs (`--restart`).

A backup is the domain's persistent XML exactly as libvirt returned it with VIR_DOMAIN_XML_SECURE |
VIR_DOMAIN_XML_INACTIVE (secrets included, so defining it back loses none), in a file of mode 0600 in a directory
of mode 0700, beside a small JSON file that says which host, libvirt URI and domain (name, UUID) it came from.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.model.domain import SAFE_PARSER

#: libvirt's flags: the inactive (persistent) definition, with its secrets (so defining it back drops none).
XML_INACTIVE, XML_SECURE = 2, 1
BACKUP_ENV = "KVMIO_BACKUP_DIR"
#: The default wait for a guest to shut down (libvirt-guests' SHUTDOWN_TIMEOUT default is 300 s too).
SHUTDOWN_TIMEOUT = 300.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_backup_dir() -> tuple[Path, str]:
    """Return where backups go and what said so: $KVMIO_BACKUP_DIR, else /var/lib/kvmio/backups for root, else
    $XDG_STATE_HOME/kvmio/backups (~/.local/state/kvmio/backups)."""
    if os.environ.get(BACKUP_ENV):
        return Path(os.environ[BACKUP_ENV]), BACKUP_ENV
    if os.geteuid() == 0:
        return Path("/var/lib/kvmio/backups"), "the default for root"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "kvmio" / "backups", "the default ($XDG_STATE_HOME/kvmio/backups)"


@dataclass(frozen=True)
class Backup:
    """A saved persistent definition and where it came from."""

    path: Path
    domain: str
    uuid: str | None
    host: str
    libvirt_uri: str

    @property
    def meta_path(self) -> Path:
        return meta_path(self.path)


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _private_write(path: Path, text: str) -> None:
    """Write a new file of mode 0600 (never over an existing one: each backup has its own name)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def save_backup(directory: Path, *, host: str, libvirt_uri: str, domain: str, uuid: str | None, xml: str,
                source: str = "--backup-dir") -> Backup:
    """Save `xml` (the domain's secure inactive XML, as libvirt returned it) before it is replaced; return the backup."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = directory / f"{_UNSAFE.sub('_', host)}-{_UNSAFE.sub('_', domain)}-{stamp}.xml"
        _private_write(path, xml)
        meta = {"domain": domain, "uuid": uuid, "host": host, "libvirt_uri": libvirt_uri,
                "saved": stamp, "flags": "VIR_DOMAIN_XML_SECURE|VIR_DOMAIN_XML_INACTIVE"}
        _private_write(meta_path(path), json.dumps(meta, indent=2) + "\n")
    except OSError as exc:
        raise CommandError(f"{source} {directory}: cannot save {domain}'s definition before changing it: "
                           f"{exc.strerror or exc}; pass --backup-dir DIR (or set {BACKUP_ENV}) to a writable "
                           "directory") from None
    return Backup(path, domain, uuid, host, libvirt_uri)


def load_backup(path: Path) -> tuple[Backup, str]:
    """Read a backup and its JSON companion; InputError names the file and what is wrong."""
    try:
        xml = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--rollback {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        meta: Any = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--rollback {path}: its companion {meta_path(path).name} (host, URI, domain) cannot be "
                         f"read: {exc.strerror or exc}; kvmio fix --apply writes both") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--rollback {meta_path(path)}: not JSON: {exc}") from None
    missing = [k for k in ("domain", "host", "libvirt_uri") if not isinstance(meta, dict) or not isinstance(meta.get(k), str)]
    if missing:
        raise InputError(f"--rollback {meta_path(path)}: expected the fields {', '.join(missing)} (strings)")
    return Backup(path, meta["domain"], meta.get("uuid"), meta["host"], meta["libvirt_uri"]), xml


def restore(conn: Any, backup: Backup, xml: str) -> Any:
    """Define the saved XML again (the persistent definition only: a running domain runs on until it restarts)."""
    try:
        root = etree.fromstring(xml.encode(), parser=SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise InputError(f"--rollback {backup.path}: not the XML kvmio saved: {exc}") from None
    if root.tag != "domain" or (root.findtext("name") or "").strip() != backup.domain:
        raise InputError(f"--rollback {backup.path}: holds no <domain> named {backup.domain!r} as its companion says")
    if backup.uuid and (root.findtext("uuid") or "").strip() != backup.uuid:
        raise InputError(f"--rollback {backup.path}: its <uuid> is not {backup.uuid} as its companion says")
    return conn.defineXML(xml)


def restart(dom: Any, *, timeout: float, force: bool, say: Callable[[str], None],
            poll: float = 0.5) -> str:
    """Shut a running domain down (ACPI or agent, as libvirt chooses) and start it; return how it was stopped.

    Past `timeout` seconds it raises CommandError, unless `force`: then it destroys (powers off) the domain.
    """
    name = dom.name()
    how = "was not running"
    if dom.isActive():
        say(f"{name}: shutting down (up to {timeout:g} s)")
        try:
            dom.shutdown()
        except Exception as exc:  # noqa: BLE001  # libvirt refuses when neither ACPI nor the agent is there
            say(f"{name}: shutdown request refused: {_message(exc)}")
        deadline = time.monotonic() + timeout
        while dom.isActive() and time.monotonic() < deadline:
            time.sleep(poll)
        how = "shut down"
        if dom.isActive():
            if not force:
                raise CommandError(
                    f"{name}: still running {timeout:g} s after the shutdown request (its guest ignores ACPI and has no "
                    "agent that shuts it down?); the new definition is saved and takes effect at its next start. "
                    "Shut it down from inside, wait longer (--shutdown-timeout SECONDS), or pass --force to power "
                    "it off (virsh destroy: unflushed guest writes are lost)")
            say(f"{name}: still running after {timeout:g} s; --force: destroying (powering off) it")
            dom.destroy()
            how = f"destroyed after {timeout:g} s (--force)"
    dom.create()
    say(f"{name}: started ({how})")
    return how


def _message(exc: Exception) -> str:
    get = getattr(exc, "get_error_message", None)
    return str(get() if callable(get) else exc)
