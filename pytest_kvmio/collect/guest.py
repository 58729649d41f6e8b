"""Run commands inside a libvirt guest: a testinfra backend over the QEMU guest agent.

The agent transport needs no guest network: ``guest-exec`` starts ``/bin/sh -c CMD`` in the
guest with its output captured, and ``guest-exec-status`` is polled until the process exited.

Connection mode: ``virDomainQemuAgentCommand`` is refused on a read-only libvirt connection
("read only access prevents virDomainQemuAgentCommand"), so the agent backend opens its own
read-write connection to the same URI and uses it for agent commands only. Those commands change
nothing on the hypervisor; inside the guest they run what the suites ask (read-only commands, and
fio on scratch disks). Everything else in kvmio keeps using read-only connections.

SSH is the alternative transport (``--guest=ssh://user@{address}``): see :func:`guest_host`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import testinfra
import testinfra.backend
import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

if TYPE_CHECKING:
    import libvirt

logger = logging.getLogger("pytest_kvmio.collect.guest")

#: ``agent(json_command, timeout_seconds) -> json_reply``; raises ``libvirt.libvirtError`` on failure.
AgentCall = Callable[[str, int], str]

DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_AGENT_TIMEOUT = 10
#: qemu-ga keeps at most this much of each stream (GUEST_EXEC_MAX_OUTPUT, QEMU 2.5+).
AGENT_MAX_OUTPUT = 16 * 1024 * 1024

# Why the guest can't be used; fixtures turn GuestUnavailable into a skip with this reason.
NOT_RUNNING = "domain not running"
NOT_CONNECTED = "agent not connected"
NOT_CONFIGURED = "agent not configured"
EXEC_DISABLED = "guest-exec disabled"
AGENT_TIMEOUT = "agent timeout"
NO_DOMAIN = "domain not found"
NO_AGENT_SUPPORT = "no agent support in the libvirt driver"


# Kill a process and its descendants; minimal guests have no pkill, so read PPid from
# /proc/*/status once, with shell builtins only (forks are slow under TCG).
KILL_TREE = (
    "kill -STOP PID 2>/dev/null; m=; "
    "for d in /proc/[0-9]*; do while read -r k v; do "
    "case $k in PPid:) m=\"$m ${d#/proc/}:$v\"; break;; esac; done < \"$d/status\"; done 2>/dev/null; "
    "all=PID; t=PID; while [ -n \"$t\" ]; do n=; for e in $m; do for p in $t; do "
    "[ \"${e#*:}\" = \"$p\" ] && n=\"$n ${e%%:*}\"; done; done; all=\"$all $n\"; t=$n; done; "
    "kill -KILL $all"
)


class GuestError(Exception):
    """A guest command could not be run or its result could not be read."""

    def __init__(self, domain: str, message: str, command: str | None = None) -> None:
        self.domain = domain
        self.command = command
        where = f"{domain}: " if command is None else f"{domain}: {command!r}: "
        super().__init__(where + message)


class GuestUnavailable(GuestError):
    """The guest can't run commands now (domain down, agent absent/blocked); tests should skip."""

    def __init__(
        self, domain: str, reason: str, detail: str = "", command: str | None = None
    ) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(domain, reason + (f" ({detail})" if detail else ""), command)


class GuestCommandTimeout(GuestError):
    """A guest command did not exit within its timeout."""


class GuestOutputTooLarge(GuestError):
    """A reply was larger than libvirt's RPC message limit (about 3 MB of command output)."""


class GuestReadOnlyConnection(GuestError):
    """Agent commands were sent over a read-only libvirt connection."""


class GuestOutputTruncated(UserWarning):
    """qemu-ga dropped output beyond its capture limit."""


@dataclass
class GuestCommandResult(CommandResult):
    """A testinfra CommandResult with what the agent adds: signal and truncation."""

    signal: int | None = None
    out_truncated: bool = False
    err_truncated: bool = False
    pid: int | None = None


def _error_parts(exc: BaseException) -> tuple[int | None, str]:
    get_code = getattr(exc, "get_error_code", None)
    get_msg = getattr(exc, "get_error_message", None)
    code = get_code() if get_code is not None else None
    msg = (get_msg() if get_msg is not None else None) or str(exc)
    return code, msg


def _libvirt_code(name: str, default: int) -> int:
    try:
        import libvirt
    except ImportError:  # pragma: no cover - libvirt-python is a dependency
        return default
    return int(getattr(libvirt, name, default))


def classify_agent_error(domain: str, exc: BaseException, command: str) -> GuestError:
    """Turn a libvirt error from an agent command into a GuestUnavailable or GuestError."""
    code, msg = _error_parts(exc)
    low = msg.lower()
    if "read only access prevents" in low or code == _libvirt_code("VIR_ERR_OPERATION_DENIED", 6):
        return GuestReadOnlyConnection(
            domain,
            f"agent commands need a read-write libvirt connection ({msg})",
            command,
        )
    if "unable to encode message payload" in low:
        # libvirt RPC caps a string at 4 MiB (VIR_NET_MESSAGE_STRING_MAX); base64 makes ~3 MB of output
        # too much. The command has exited by now and its output is lost.
        return GuestOutputTooLarge(
            domain,
            f"output too large for libvirt's RPC limit ({msg}); keep agent command output under "
            "about 3 MB (write to a file in the guest and read it in parts) or use --guest=ssh://",
            command,
        )
    if code == _libvirt_code("VIR_ERR_NO_DOMAIN", 42) or "domain not found" in low:
        return GuestUnavailable(domain, NO_DOMAIN, msg, command)
    if "not running" in low or code == _libvirt_code("VIR_ERR_OPERATION_INVALID", 55):
        return GuestUnavailable(domain, NOT_RUNNING, msg, command)
    if "not connected" in low:
        return GuestUnavailable(domain, NOT_CONNECTED, msg, command)
    if "not configured" in low:
        return GuestUnavailable(domain, NOT_CONFIGURED, msg, command)
    if code == _libvirt_code("VIR_ERR_NO_SUPPORT", 3) or "not supported by the connection driver" in low:
        return GuestUnavailable(domain, NO_AGENT_SUPPORT, msg, command)
    if "has been disabled" in low or "commanddisabled" in low:
        return GuestUnavailable(domain, EXEC_DISABLED, msg, command)
    if (
        code == _libvirt_code("VIR_ERR_AGENT_UNRESPONSIVE", 86)
        or code == _libvirt_code("VIR_ERR_AGENT_UNSYNCED", 97)
        or code == _libvirt_code("VIR_ERR_OPERATION_TIMEOUT", 68)
        or "not responding" in low
        or "timed out" in low
    ):
        return GuestUnavailable(domain, AGENT_TIMEOUT, msg, command)
    return GuestError(domain, f"agent command failed: {msg}", command)


class LibvirtAgent:
    """Send agent commands to one domain over a read-write libvirt connection of its own."""

    def __init__(self, uri: str, domain: str, conn: libvirt.virConnect | None = None) -> None:
        self.uri = uri
        self.domain = domain
        self._conn = conn
        self._own_conn = conn is None
        self._dom: libvirt.virDomain | None = None

    def _domain(self) -> libvirt.virDomain:
        if self._dom is None:
            import libvirt

            if self._conn is None:
                self._conn = libvirt.open(self.uri)  # read-write: agent commands need it
            self._dom = self._conn.lookupByName(self.domain)
        return self._dom

    def __call__(self, command: str, timeout: int) -> str:
        """Send one JSON agent command and return the JSON reply."""
        import libvirt_qemu

        return str(libvirt_qemu.qemuAgentCommand(self._domain(), command, timeout, 0))

    def is_active(self) -> bool:
        """Return whether the domain is running."""
        return bool(self._domain().isActive())

    def close(self) -> None:
        """Close the connection if this object opened it."""
        if self._own_conn and self._conn is not None:
            self._conn.close()
        self._conn = None
        self._dom = None


class GuestAgentBackend(BaseBackend):
    """testinfra backend that runs commands through the QEMU guest agent."""

    NAME = "qemu-ga"

    def __init__(
        self,
        domain: str,
        agent: AgentCall,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        agent_timeout: int = DEFAULT_AGENT_TIMEOUT,
        shell: str = "/bin/sh",
        encoding: str = "utf-8",
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(domain, **kwargs)
        self.domain = domain
        self.agent = agent
        self.command_timeout = command_timeout
        self.agent_timeout = agent_timeout
        self.shell = shell
        self._encoding = encoding  # no python in minimal guests to ask (BaseBackend.get_encoding)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._sleep = sleep
        self._clock = clock
        self._checked = False
        self.agent_info: dict[str, Any] = {}

    def get_pytest_id(self) -> str:
        return f"qemu-ga://{self.domain}"

    def decode(self, data: bytes) -> str:
        """Decode guest output without failing on bytes that aren't text (raw bytes stay in stdout_bytes)."""
        return data.decode(self.encoding, errors="replace")

    def _call(self, execute: str, arguments: dict[str, Any] | None, command: str | None) -> Any:
        request: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            request["arguments"] = arguments
        try:
            raw = self.agent(json.dumps(request), self.agent_timeout)
        except GuestError:
            raise
        except Exception as exc:  # libvirt.libvirtError, without importing libvirt here
            if type(exc).__name__ != "libvirtError":
                raise
            raise classify_agent_error(self.domain, exc, command or execute) from exc
        try:
            reply = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise GuestError(
                self.domain, f"{execute}: agent reply is not JSON: {raw!r:.200}", command
            ) from exc
        if isinstance(reply, dict) and "error" in reply:
            err = reply["error"] or {}
            desc = f"{err.get('class', 'Error')}: {err.get('desc', '')}"
            if err.get("class") == "CommandDisabled" or "has been disabled" in desc:
                raise GuestUnavailable(self.domain, EXEC_DISABLED, desc, command)
            raise GuestError(self.domain, f"{execute} failed: {desc}", command)
        if not isinstance(reply, dict) or "return" not in reply:
            raise GuestError(self.domain, f"{execute}: unexpected agent reply {raw!r:.200}", command)
        return reply["return"]

    def check_agent(self) -> dict[str, Any]:
        """Ask guest-info once and raise GuestUnavailable unless guest-exec and guest-exec-status are enabled."""
        if self._checked:
            return self.agent_info
        info = self._call("guest-info", None, None)
        if not isinstance(info, dict):
            raise GuestError(self.domain, f"guest-info: unexpected reply {info!r:.200}")
        enabled = {
            c.get("name"): bool(c.get("enabled", False))
            for c in info.get("supported_commands", [])
            if isinstance(c, dict)
        }
        for name in ("guest-exec", "guest-exec-status"):
            if name not in enabled:
                raise GuestUnavailable(
                    self.domain,
                    EXEC_DISABLED,
                    f"qemu-ga {info.get('version', '?')} does not offer {name}",
                )
            if not enabled[name]:
                raise GuestUnavailable(
                    self.domain,
                    EXEC_DISABLED,
                    f"{name} is disabled in qemu-ga {info.get('version', '?')} (--block-rpcs/--allow-rpcs)",
                )
        self.agent_info = info
        self._checked = True
        return info

    def run(self, command: str, *args: str, **kwargs: Any) -> GuestCommandResult:
        """Run a shell command in the guest (args are quoted) and wait for it, up to its timeout."""
        cmd = self.get_command(command, *args)
        timeout = kwargs.get("timeout")
        return self.run_guest(cmd, timeout=self.command_timeout if timeout is None else float(timeout))

    def run_guest(self, cmd: str, timeout: float) -> GuestCommandResult:
        """Run an already quoted shell command with guest-exec and poll guest-exec-status."""
        self.check_agent()
        started = self._call(
            "guest-exec",
            {"path": self.shell, "arg": ["-c", cmd], "capture-output": True},
            cmd,
        )
        try:
            pid = int(started["pid"])
        except (TypeError, KeyError, ValueError) as exc:
            raise GuestError(self.domain, f"guest-exec: no pid in reply {started!r:.200}", cmd) from exc
        deadline = self._clock() + timeout
        interval = self.poll_interval
        while True:
            status = self._call("guest-exec-status", {"pid": pid}, cmd)
            if not isinstance(status, dict):
                raise GuestError(self.domain, f"guest-exec-status: unexpected reply {status!r:.200}", cmd)
            if status.get("exited"):
                return self._result(cmd, pid, status)
            if self._clock() >= deadline:
                self._abandon(pid)
                raise GuestCommandTimeout(
                    self.domain,
                    f"still running after {timeout:g} s (killed guest pid {pid} and its children)",
                    cmd,
                )
            self._sleep(interval)
            interval = min(interval * 2, self.max_poll_interval)

    def _abandon(self, pid: int) -> None:
        # Best effort: don't leave a timed-out command (e.g. fio) running in the guest. Its
        # children would outlive the shell (re-parented to init), so kill the whole tree.
        try:
            self._call("guest-exec", {"path": self.shell, "arg": ["-c", KILL_TREE.replace("PID", str(pid))]}, None)
        except GuestError as exc:
            logger.warning("%s: could not kill timed-out guest pid %d: %s", self.domain, pid, exc)

    def _decode_stream(self, status: dict[str, Any], key: str, cmd: str) -> bytes:
        data = status.get(key)
        if not data:
            return b""
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise GuestError(self.domain, f"guest-exec-status: {key} is not base64", cmd) from exc

    def _result(self, cmd: str, pid: int, status: dict[str, Any]) -> GuestCommandResult:
        out = self._decode_stream(status, "out-data", cmd)
        err = self._decode_stream(status, "err-data", cmd)
        signal = status.get("signal")
        if "exitcode" in status:
            rc = int(status["exitcode"])
        elif signal is not None:
            rc = 128 + int(signal)  # what a shell reports for a killed child
        else:
            raise GuestError(self.domain, f"guest-exec-status: exited without exitcode or signal: {status!r:.200}", cmd)
        out_trunc = bool(status.get("out-truncated"))
        err_trunc = bool(status.get("err-truncated"))
        for flag, name, data in ((out_trunc, "stdout", out), (err_trunc, "stderr", err)):
            if flag:
                warnings.warn(
                    GuestOutputTruncated(
                        f"{self.domain}: {cmd!r}: qemu-ga truncated {name} at {len(data)} bytes"
                    ),
                    stacklevel=4,
                )
        result = GuestCommandResult(
            backend=self,
            exit_status=rc,
            command=self.encode(cmd),
            _stdout=out,
            _stderr=err,
            signal=None if signal is None else int(signal),
            out_truncated=out_trunc,
            err_truncated=err_trunc,
            pid=pid,
        )
        logger.debug("RUN %s", result)
        return result


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
            tried.append(f"{label}: {_error_parts(exc)[1]}")
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
