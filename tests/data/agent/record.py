"""Record QEMU guest agent exchanges as replay files for tests/test_guest_agent.py.

Sources: a qemu-ga listening on a unix socket (``--socket PATH``; e.g. the host's own qemu-ga
started with ``qemu-ga -m unix-listen -p PATH``), or a running libvirt domain (``--domain NAME
--uri qemu:///system``). Each scenario runs one command through GuestAgentBackend and writes every
request and raw reply (or libvirt error code and message) to ``NAME.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class SocketAgent:
    """Talk to a qemu-ga unix socket directly (newline-delimited JSON)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, command: str, timeout: int) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.path)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        return buf.decode().strip()


class Recorder:
    """Wrap an agent callable and keep each request with its reply or libvirt error."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.exchanges: list[dict[str, Any]] = []

    def __call__(self, command: str, timeout: int) -> str:
        entry: dict[str, Any] = {"request": json.loads(command)}
        self.exchanges.append(entry)
        try:
            reply = self.agent(command, timeout)
        except Exception as exc:
            if type(exc).__name__ != "libvirtError":
                raise
            entry["error"] = {"code": exc.get_error_code(), "domain": exc.get_error_domain(),
                              "message": exc.get_error_message()}
            raise
        entry["reply"] = reply
        return reply


SCENARIOS = {
    "normal": "cat /proc/version; echo done",
    "nonzero_exit": "echo out; echo oops >&2; exit 3",
    "signal": "kill -KILL $$",
    "binary": "printf 'caf\\303\\251 \\377\\376\\000end'",
    "slow": "sleep 2; echo late",
    "truncated": "head -c 17000000 /dev/zero",
    "too_large": "head -c 3200000 /dev/zero",
    "stderr_only": "ls /nonexistent-kvmio",
}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE.parents[2]))
    from pytest_kvmio.facts.agent import GuestAgentBackend, LibvirtAgent
    from pytest_kvmio.facts.guest_errors import GuestError

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--socket")
    p.add_argument("--domain")
    p.add_argument("--uri", default="qemu:///system")
    p.add_argument("--source", required=True, help="what produced the replies (kept in the file)")
    p.add_argument("--prefix", default="")
    p.add_argument("scenario", nargs="*", default=list(SCENARIOS))
    a = p.parse_args(argv)
    base = SocketAgent(a.socket) if a.socket else LibvirtAgent(a.uri, a.domain)
    for name in a.scenario:
        rec = Recorder(base)
        backend = GuestAgentBackend(a.domain or "recorded", rec, command_timeout=60)
        command = SCENARIOS.get(name, name)
        try:
            res = backend.run(command)
            print(name, res.rc, res.stdout_bytes[:80], res.stderr_bytes[:80])
        except GuestError as exc:
            print(name, "error:", exc)
        for ex in rec.exchanges:  # keep files small: one truncated reply is enough to show the flag
            if len(ex.get("reply", "")) > 4096:
                reply = json.loads(ex["reply"])
                for key in ("out-data", "err-data"):
                    if key in reply.get("return", {}):
                        reply["return"][key] = reply["return"][key][:64]
                ex["reply"] = json.dumps(reply)
                ex["shortened"] = "out-data/err-data cut to 64 base64 chars by record.py"
        out = HERE / f"{a.prefix}{name}.json"
        out.write_text(json.dumps({"source": a.source, "command": command,
                                   "exchanges": rec.exchanges}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
