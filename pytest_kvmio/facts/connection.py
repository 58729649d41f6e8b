"""Host specs, libvirt URIs and read-only libvirt connections (libvirt imported lazily)."""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from pytest_kvmio.model.redact import redact_uri

LOCAL_URI = "qemu:///system"
REMOTE_URI_TEMPLATE = "qemu+ssh://{host}/system{query}"


class HostUnreachable(Exception):
    """A host or its libvirt daemon did not answer; the message says which and how to fix."""


@dataclass(frozen=True)
class HostSpec:
    """One `--host` value: a display name, a testinfra spec and the parts of its address."""

    raw: str
    name: str
    testinfra_spec: str
    is_local: bool
    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    keyfile: str | None = None

    def libvirt_uri(self, template: str | None) -> str:
        """Return the libvirt URI for this host from `--libvirt-uri` (a template) or the default."""
        if template is None:
            template = LOCAL_URI if self.is_local else REMOTE_URI_TEMPLATE
        host = self.hostname or ""
        if self.user:
            host = f"{self.user}@{host}"
        if self.port:
            host = f"{host}:{self.port}"
        query = "?" + urlencode({"keyfile": self.keyfile}) if self.keyfile else ""
        return template.format(
            host=host,
            hostname=self.hostname or "",
            user=self.user or "",
            port=self.port or "",
            keyfile=self.keyfile or "",
            query=query,
            name=self.name,
        )


#: What a host name, an IP address (IPv6 without its brackets) or a user name may hold: these parts end up in
#: ssh and libvirt command lines and URIs, so shell syntax, spaces and a leading '-' (an ssh option) are refused.
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_host_part(value: str, what: str, raw: str) -> str:
    """Return `value` when it is a plain host or user name; raise ValueError naming `raw` otherwise."""
    pattern, allowed = (
        (_USERNAME, "letters, digits, '_', '.', '-'") if what == "user" else
        (_HOSTNAME, "letters, digits, '_', '.', '-'; an IPv6 address in brackets")
    )
    if not pattern.fullmatch(value):
        raise ValueError(f"{raw!r}: {value!r} is not a {what} name ({allowed}; not starting with '-')")
    return value


def parse_host_spec(raw: str) -> HostSpec:
    """Read `local`, `hv01`, `root@hv01:2222` or any testinfra spec (`ssh://...`, `paramiko://...`)."""
    text = raw.strip()
    if not text:
        raise ValueError("empty host name")
    if text in ("local", "localhost", "local://"):
        return HostSpec(raw=raw, name="local", testinfra_spec="local://", is_local=True)
    spec = text if "://" in text else f"ssh://{text}"
    try:
        parts = urlsplit(spec)
        hostname = parts.hostname
    except ValueError as exc:  # e.g. brackets around something that is not an IPv6 address
        raise ValueError(f"{raw!r}: {exc}") from None
    if parts.scheme == "local":
        return HostSpec(raw=raw, name="local", testinfra_spec="local://", is_local=True)
    if not hostname:
        raise ValueError(f"{raw!r} names no host; expected e.g. hv01, root@hv01:22 or ssh://hv01")
    if not text.isprintable():
        raise ValueError(f"{raw!r}: control characters (a newline, a tab) are not allowed in a host spec")
    host_text = parts.netloc.rpartition("@")[2]
    if host_text.startswith("[") and "]" in host_text:  # IPv6
        try:
            ipaddress.IPv6Address(host_text[1:host_text.index("]")].split("%")[0])
        except ValueError:
            raise ValueError(f"{raw!r}: {host_text!r} is not an IPv6 address") from None
    else:
        check_host_part(host_text.split(":")[0], "host", raw)
    if parts.username is not None:
        check_host_part(parts.username, "user", raw)
    query = parse_qs(parts.query)
    keyfile = query.get("ssh_identity_file", [None])[0]
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{raw!r}: port is not a number") from None
    name = hostname if port in (None, 22) else f"{hostname}:{port}"
    return HostSpec(
        raw=raw,
        name=name,
        testinfra_spec=spec,
        is_local=False,
        hostname=hostname,
        user=parts.username,
        port=port,
        keyfile=keyfile,
    )


#: Seconds libvirt may take to open a connection before the host counts as unreachable.
OPEN_TIMEOUT = 15.0
#: libvirt keepalive: a probe every KEEPALIVE_INTERVAL s; after KEEPALIVE_COUNT unanswered probes
#: libvirt closes the connection, so a call to a daemon that hung after we connected fails after
#: about interval × (count + 1) = 12 s instead of blocking the run.
KEEPALIVE_INTERVAL = 4
KEEPALIVE_COUNT = 2

_handler_lock = threading.Lock()
_handler_set = False


def _run_event_loop(libvirt: ModuleType) -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def libvirt_module() -> ModuleType:
    """Import libvirt-python on first use so offline linting needs no libvirt C library.

    The first call also registers libvirt's default event loop and runs it in a daemon thread:
    keepalive (which bounds every call on an open connection) works only with an event loop.
    """
    global _handler_set
    try:
        import libvirt
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise HostUnreachable(
            f"libvirt-python is not importable ({exc}); install it (pip install libvirt-python,"
            " which needs apt packages libvirt-dev and pkg-config) or lint offline with --domain-xml"
        ) from None
    with _handler_lock:
        if not _handler_set:
            # libvirt prints every error to stderr by default; ours carry the message instead.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=_run_event_loop, args=(libvirt,), name="kvmio-libvirt-events",
                             daemon=True).start()
            _handler_set = True
    return libvirt


def open_connection(uri: str, *, host: str, readonly: bool = True, timeout: float = OPEN_TIMEOUT) -> Any:
    """Open a libvirt connection within `timeout` seconds, with keepalive; raise HostUnreachable.

    libvirt's own open has no bound: a daemon that accepts the connection and never answers (hung,
    stopped, or an SSH tunnel whose far end is gone) would block the run forever. The open runs in
    a daemon thread; if it does not return in time the host is reported unreachable and the thread
    is left to libvirt (it holds only its own half-open connection).
    """
    libvirt = libvirt_module()
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["conn"] = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
        except libvirt.libvirtError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name=f"kvmio-open-{host}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HostUnreachable(
            f"{host}: libvirt at {redact_uri(uri)} did not answer within {timeout:g} s; "
            "check that libvirtd there is running and not hung (systemctl status libvirtd)"
        )
    if "error" in outcome:
        raise HostUnreachable(
            f"{host}: cannot connect to libvirt at {redact_uri(uri)}: {outcome['error'].get_error_message()}; "
            "check that libvirtd runs there and that --libvirt-uri is right"
        )
    conn = outcome["conn"]
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
    except libvirt.libvirtError:
        pass  # drivers without a daemon (test:///, embedded) have nothing to keep alive
    return conn


def open_readonly(uri: str, *, host: str) -> Any:
    """Open a read-only libvirt connection (bounded, with keepalive); raise HostUnreachable naming host and URI."""
    return open_connection(uri, host=host, readonly=True)


def ansible_host_specs(pattern: str, inventory: str | None) -> list[HostSpec]:
    """Expand `ansible://PATTERN` with an Ansible inventory into one HostSpec per host.

    Commands go through testinfra's ansible backend; libvirt's URI is built from the host's
    ansible_host, ansible_user, ansible_port and ansible_ssh_private_key_file variables.
    """
    from testinfra.utils.ansible_runner import AnsibleRunner

    try:
        runner = AnsibleRunner(inventory)
        names = runner.get_hosts(pattern or "all")
    except Exception as exc:  # ansible-inventory missing or the inventory unreadable
        raise ValueError(
            f"ansible://{pattern}: cannot read the inventory {inventory or '(ansible default)'}: {exc}; "
            "install ansible-core and check --ansible-inventory"
        ) from None
    if not names:
        raise ValueError(f"ansible://{pattern}: no host in the inventory {inventory or '(ansible default)'} matches")
    specs = []
    for name in names:
        hostvars = runner.get_variables(name)
        query = f"?ansible_inventory={inventory}" if inventory else ""
        local = hostvars.get("ansible_connection") == "local"
        port = hostvars.get("ansible_port")
        where = f"inventory {inventory or '(ansible default)'}: host {name!r}"
        check_host_part(name, "host", where)
        if not local:
            check_host_part(str(hostvars.get("ansible_host") or name), "host", f"{where}: ansible_host")
            if hostvars.get("ansible_user"):
                check_host_part(str(hostvars["ansible_user"]), "user", f"{where}: ansible_user")
            if port and not str(port).isdigit():
                raise ValueError(f"{where}: ansible_port {port!r} is not a port number")
        specs.append(
            HostSpec(
                raw=f"ansible://{name}",
                name=name,
                testinfra_spec=f"ansible://{name}{query}",
                is_local=local,
                hostname=None if local else str(hostvars.get("ansible_host") or name),
                user=None if local else hostvars.get("ansible_user"),
                port=int(port) if port and not local else None,
                keyfile=None if local else hostvars.get("ansible_ssh_private_key_file"),
            )
        )
    return specs
