"""The QEMU guest agent transport: a testinfra backend that runs commands through libvirt's agent channel.

The agent transport needs no guest network: ``guest-exec`` starts ``/bin/sh -c CMD`` in the
guest with its output captured, and ``guest-exec-status`` is polled until the process exited.

Connection mode: ``virDomainQemuAgentCommand`` is refused on a read-only libvirt connection
("read only access prevents virDomainQemuAgentCommand"), so the agent backend opens its own
read-write connection to the same URI and uses it for agent commands only. Those commands change
nothing on the hypervisor; inside the guest they run what the suites ask (read-only commands, and
fio on scratch disks). Everything else in kvmio keeps using read-only connections.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testinfra.backend.base import BaseBackend, CommandResult

from pytest_kvmio.facts.connection import HostUnreachable, open_connection
from pytest_kvmio.facts.guest_errors import (
    EXEC_DISABLED,
    GuestCommandTimeout,
    GuestError,
    GuestOutputTruncated,
    GuestUnavailable,
    classify_agent_error,
)

if TYPE_CHECKING:
    import libvirt

logger = logging.getLogger("pytest_kvmio.facts.agent")

#: ``agent(json_command, timeout_seconds) -> json_reply``; raises ``libvirt.libvirtError`` on failure.
AgentCall = Callable[[str, int], str]

#: Seconds a guest command may run, whatever the transport (the agent's, or `timeout` over SSH).
DEFAULT_COMMAND_TIMEOUT = 60.0

DEFAULT_AGENT_TIMEOUT = 10
#: qemu-ga keeps at most this much of each stream (GUEST_EXEC_MAX_OUTPUT, QEMU 2.5+).
AGENT_MAX_OUTPUT = 16 * 1024 * 1024

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


@dataclass
class GuestCommandResult(CommandResult):
    """A testinfra CommandResult with what the agent adds: signal and truncation."""

    signal: int | None = None
    out_truncated: bool = False
    err_truncated: bool = False
    pid: int | None = None


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
            if self._conn is None:
                try:  # read-write: agent commands need it; bounded, with keepalive
                    self._conn = open_connection(self.uri, host=self.uri, readonly=False)
                except HostUnreachable as exc:
                    raise GuestError(self.domain, str(exc), "connect") from None
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


