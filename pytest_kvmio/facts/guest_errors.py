"""Why a guest command could not run: the reasons, the exception types, and libvirt's agent errors classified."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

# Why the guest can't be used; fixtures turn GuestUnavailable into a skip with this reason.
NOT_RUNNING = "domain not running"
NOT_CONNECTED = "agent not connected"
NOT_CONFIGURED = "agent not configured"
EXEC_DISABLED = "guest-exec disabled"
AGENT_TIMEOUT = "agent timeout"
NO_DOMAIN = "domain not found"
NO_AGENT_SUPPORT = "no agent support in the libvirt driver"


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


def error_parts(exc: BaseException) -> tuple[int | None, str]:
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
    code, msg = error_parts(exc)
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


