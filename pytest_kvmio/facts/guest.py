"""A testinfra Host inside a libvirt guest: over the QEMU guest agent (the default) or SSH (``--guest=ssh://...``)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import testinfra
import testinfra.backend
import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

from pytest_kvmio.facts.agent import (
    DEFAULT_COMMAND_TIMEOUT,
    GuestAgentBackend,
    LibvirtAgent,
)
from pytest_kvmio.facts.guest_errors import (
    NOT_RUNNING,
    GuestUnavailable,
    classify_agent_error,
    error_parts,
)

if TYPE_CHECKING:
    import libvirt

logger = logging.getLogger("pytest_kvmio.facts.guest")



class GuestHost(testinfra.host.Host):
    """A testinfra Host inside a libvirt guest (guest.file(), guest.run(), guest.check_output())."""

    backend: BaseBackend

    def __init__(self, backend: BaseBackend) -> None:
        super().__init__(backend)
        backend.set_host(self)

    def __repr__(self) -> str:
        return f"<GuestHost {self.backend.get_pytest_id()}>"


def agent_host(
    domain: libvirt.virDomain | str,
    uri: str | None = None,
    *,
    conn: libvirt.virConnect | None = None,
    check: bool = True,
    **options: Any,
) -> GuestHost:
    """Return a GuestHost for a domain over its guest agent, opening a read-write connection to uri.

    ``domain`` is an open virDomain (its connection's URI is reused, read-only is fine) or a name
    with ``uri``. Pass ``conn`` to reuse a read-write connection instead of opening one.
    With ``check`` the domain state and guest-info are verified now (GuestUnavailable otherwise).
    """
    if isinstance(domain, str):
        name = domain
        if uri is None and conn is None:
            raise ValueError(f"{name}: agent_host needs uri or conn with a domain name")
    else:
        name = domain.name()
        if uri is None:
            uri = domain.connect().getURI()
    agent = LibvirtAgent(uri or conn.getURI(), name, conn)  # type: ignore[union-attr]
    backend = GuestAgentBackend(name, agent, **options)
    if check:
        try:
            active = agent.is_active()
        except Exception as exc:
            if type(exc).__name__ != "libvirtError":
                raise
            raise classify_agent_error(name, exc, "lookup") from exc
        if not active:
            raise GuestUnavailable(name, NOT_RUNNING, f"state is not running on {agent.uri}")
        backend.check_agent()
    return GuestHost(backend)


def _address_sources() -> list[tuple[str, int]]:
    import libvirt

    return [
        ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
        ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
        ("arp", getattr(libvirt, "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP", 2)),
    ]


def pick_address(interfaces: dict[str, Any]) -> str | None:
    """Pick the guest address to connect to from interfaceAddresses(): IPv4 first, no loopback/link-local."""
    v4: list[str] = []
    v6: list[str] = []
    for ifname, iface in sorted(interfaces.items()):
        if ifname == "lo":
            continue
        for entry in (iface or {}).get("addrs") or []:
            addr = str(entry.get("addr", ""))
            if not addr or addr.startswith("127.") or addr == "::1" or addr.lower().startswith("fe80:"):
                continue
            (v6 if ":" in addr else v4).append(addr)
    if v4:
        return v4[0]
    if v6:
        return f"[{v6[0]}]"
    return None


def domain_address(dom: libvirt.virDomain) -> str:
    """Return an address of the guest, asking the agent, then DHCP leases, then the ARP table."""
    tried: list[str] = []
    for label, source in _address_sources():
        try:
            found = pick_address(dom.interfaceAddresses(source, 0) or {})
        except Exception as exc:
            if type(exc).__name__ != "libvirtError":
                raise
            tried.append(f"{label}: {error_parts(exc)[1]}")
            continue
        if found:
            return found
        tried.append(f"{label}: no usable address")
    raise GuestUnavailable(dom.name(), "no guest address", "; ".join(tried))


_FIELD = re.compile(r"\{(address|domain)\}")


def guest_host(
    spec_template: str | None,
    domain: libvirt.virDomain,
    conn_uri: str | None = None,
    **options: Any,
) -> testinfra.host.Host:
    """Return the guest's testinfra Host: the agent by default, or testinfra.get_host(spec) for e.g. ssh://root@{address}."""
    if not spec_template:
        return agent_host(domain, conn_uri, **options)
    values: dict[str, str] = {"domain": domain.name()}
    if "{address}" in spec_template:
        if not domain.isActive():
            raise GuestUnavailable(domain.name(), NOT_RUNNING)
        values["address"] = domain_address(domain)
    spec = _FIELD.sub(lambda m: values[m.group(1)], spec_template)
    timeout = float(options.get("command_timeout", DEFAULT_COMMAND_TIMEOUT))
    return TimedHost(testinfra.backend.get_backend(spec), timeout)


class TimedHost(GuestHost):
    """A guest Host over a transport without command timeouts (SSH): every command runs under `timeout`.

    `run(..., timeout=S)` sets the bound of one command; the default is the host's. A command that
    runs too long is killed in the guest (exit 137), so a hung guest command never hangs the suite.
    """

    def __init__(self, backend: BaseBackend, command_timeout: float = DEFAULT_COMMAND_TIMEOUT) -> None:
        super().__init__(backend)
        self.command_timeout = command_timeout

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:  # type: ignore[override]
        limit = kwargs.pop("timeout", None) or self.command_timeout
        inner = self.backend.quote(command, *args)
        return super().run("timeout -s KILL %s /bin/sh -c %s", str(max(1, int(limit))), inner, **kwargs)

