"""Bounded waits: a host, a libvirt daemon or a guest agent that hangs errors its own items, in bounded time.

The hangs are real: a TCP listener that accepts SSH connections and never sends a banner, a UNIX
socket that accepts libvirt connections and never answers, and a proxy in front of the real libvirtd
that stops forwarding after the connection is open (libvirt's keepalive must notice). None of the
assertions is a timing: a wait that were unbounded would hang the test (pytester's timeout fails it).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.facts.connection import (
    HostUnreachable,
    libvirt_module,
    open_connection,
)
from tests.conftest import SUITES, verdicts_of

LIBVIRT_RO_SOCKET = Path("/var/run/libvirt/libvirt-sock-ro")


class SilentListener:
    """Accept connections and never say anything (a hung sshd or libvirtd); keeps them open."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.accepted: list[socket.socket] = []
        sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung_tcp_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    listener = SilentListener(sock)
    yield sock.getsockname()[1]
    listener.close()


@pytest.fixture
def hung_unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "hung-libvirt.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    listener = SilentListener(sock)
    yield path
    listener.close()


def test_a_hung_ssh_host_errors_its_items_and_the_other_host_still_runs(
    pytester: pytest.Pytester, hung_tcp_port: int
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rule("host-kernel-min")
        def test_host(host):
            assert host.kvmio.kernel
        """
    )
    out = pytester.path / "v.json"
    hung = f"ssh://nobody@127.0.0.1:{hung_tcp_port}"
    # `local` with libvirt's in-process test driver: a second host that answers.
    result = pytester.runpytest_subprocess(
        "--host", hung, "--host", "local", "--libvirt-uri", "test:///default", "--kvmio-json", str(out),
        timeout=120,
    )
    verdicts = verdicts_of(out)
    hung_verdict = verdicts[("host-kernel-min", f"127.0.0.1:{hung_tcp_port}")]
    assert hung_verdict["outcome"] == "error"
    assert "banner exchange" in hung_verdict["message"] or "timed out" in hung_verdict["message"]
    assert verdicts[("host-kernel-min", "local")]["outcome"] == "passed"
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_libvirtd_that_accepts_and_never_answers_is_unreachable_after_the_open_timeout(
    hung_unix_socket: Path,
) -> None:
    uri = f"qemu+unix:///system?socket={hung_unix_socket}"
    with pytest.raises(HostUnreachable, match=r"hv01: libvirt at .* did not answer within 2 s; check that libvirtd"):
        open_connection(uri, host="hv01", timeout=2)


def test_a_hung_libvirtd_errors_the_items_of_its_host(pytester: pytest.Pytester, hung_unix_socket: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rule("host-kernel-min")
        def test_host(host):
            assert host.kvmio.kernel
        """
    )
    out = pytester.path / "v.json"
    result = pytester.runpytest_subprocess(
        "--host", "local", "--libvirt-uri", f"qemu+unix:///system?socket={hung_unix_socket}",
        "--kvmio-json", str(out), timeout=120,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    verdict = verdicts_of(out)[("host-kernel-min", "local")]
    assert verdict["outcome"] == "error"
    assert "did not answer within 15 s" in verdict["message"]


class FreezingProxy:
    """Forward a UNIX socket to libvirtd's read-only socket until `freeze()`; then forward nothing."""

    def __init__(self, path: Path, upstream: Path) -> None:
        self.path, self.upstream = path, upstream
        self.frozen = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(str(self.upstream))
            self.open += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.1)
                dst.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.frozen.clear()
        for sock in [*self.open, self.sock]:
            sock.close()


@pytest.mark.integration
@pytest.mark.skipif(not LIBVIRT_RO_SOCKET.exists(), reason="needs libvirtd running (qemu:///system)")
def test_keepalive_ends_a_call_to_a_daemon_that_hung_after_the_connection_opened(tmp_path: Path) -> None:
    proxy = FreezingProxy(tmp_path / "proxy.sock", LIBVIRT_RO_SOCKET)
    try:
        conn = open_connection(f"qemu+unix:///system?socket={proxy.path}", host="local")
        assert conn.getCapabilities()  # the connection works through the proxy
        proxy.frozen.set()
        libvirt = libvirt_module()
        with pytest.raises(libvirt.libvirtError, match="keepalive timeout"):
            conn.getCapabilities()
    finally:
        proxy.close()


@pytest.mark.lab
@pytest.mark.integration
def test_a_hung_guest_agent_errors_the_guest_items_and_the_run_goes_on(
    pytester: pytest.Pytester, lab: dict[str, Any]
) -> None:
    """qemu-ga stopped (SIGSTOP, over the guest's SSH) in kvmio-lab-good: its guest items error, bounded."""
    import testinfra

    domain = lab["guest_ssh"]["domains"][0]
    guest = testinfra.get_host(lab["guest_ssh"]["spec"].replace("{domain}", domain))
    pid = guest.check_output("pidof qemu-ga").split()[0]
    assert guest.run(f"kill -STOP {int(pid)}").rc == 0
    try:
        out = pytester.path / "v.json"
        pytester.runpytest_subprocess(
            str(SUITES / "test_guest.py"), "--host=local", f"--domain={domain}", "-k", "scheduler",
            "--kvmio-json", str(out), "-p", "no:cacheprovider", timeout=300,
        )
        verdicts = [v for v in json.loads(out.read_text())["verdicts"] if v["rule"] == "guest-scheduler-none"]
    finally:
        guest.run(f"kill -CONT {int(pid)}")
    assert verdicts and all(v["outcome"] == "error" for v in verdicts), verdicts
    assert all("agent" in v["message"] for v in verdicts), verdicts
    # The agent answers again once resumed, so the lab is left as it was.
    deadline = time.monotonic() + 60
    while subprocess.run(["virsh", "-c", "qemu:///system", "qemu-agent-command", domain, '{"execute":"guest-ping"}'],
                         capture_output=True, timeout=30).returncode != 0:
        assert time.monotonic() < deadline, f"{domain}: the guest agent did not answer after SIGCONT"
        time.sleep(1)
