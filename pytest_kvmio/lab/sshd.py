"""Run a loopback sshd with its own host key, and authorize a generated client key for root."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from pytest_kvmio.errors import CommandError
from pytest_kvmio.lab.daemons import pids_of
from pytest_kvmio.lab.paths import LabPaths
from pytest_kvmio.lab.shell import run

HOST = "127.0.0.1"
AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")


class SshFiles:
    """The files of the lab's sshd and client under ssh/."""

    def __init__(self, paths: LabPaths) -> None:
        d = paths.ssh
        self.dir = d
        self.host_key = d / "ssh_host_ed25519_key"
        self.client_key = d / "id_ed25519"
        self.sshd_config = d / "sshd_config"
        self.ssh_config = d / "ssh_config"
        self.known_hosts = d / "known_hosts"
        self.pidfile = d / "sshd.pid"
        self.log = d / "sshd.log"


def _keygen(path: Path, comment: str) -> None:
    if not path.is_file() or not path.with_suffix(".pub").is_file():
        path.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], timeout=30)


def running_pid(files: SshFiles) -> int | None:
    """Return the pid of the lab's sshd if it is alive."""
    try:
        pid = int(files.pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid not in pids_of("sshd"):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if str(files.sshd_config).encode() in cmdline else None  # ours, not a reused pid


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _authorize(pub: str) -> None:
    AUTHORIZED_KEYS.parent.mkdir(mode=0o700, exist_ok=True)
    lines = AUTHORIZED_KEYS.read_text().splitlines() if AUTHORIZED_KEYS.exists() else []
    if pub not in lines:
        with AUTHORIZED_KEYS.open("a") as fh:
            fh.write(pub + "\n")
    AUTHORIZED_KEYS.chmod(0o600)


def _unauthorize(pub: str) -> None:
    if not AUTHORIZED_KEYS.exists():
        return
    lines = AUTHORIZED_KEYS.read_text().splitlines()
    kept = [line for line in lines if line.strip() != pub]
    if kept != lines:
        AUTHORIZED_KEYS.write_text("".join(f"{line}\n" for line in kept))


def specs(files: SshFiles, port: int) -> dict[str, str]:
    """Return the host spec and libvirt URI that reach this machine through the lab's sshd."""
    return {
        "host_spec": f"ssh://root@{HOST}:{port}?ssh_identity_file={files.client_key}&ssh_config={files.ssh_config}",
        "libvirt_uri": f"qemu+ssh://root@{HOST}:{port}/system?keyfile={files.client_key}&no_verify=1",
        "known_hosts": str(files.known_hosts),
        "ssh_config": str(files.ssh_config),
        "identity_file": str(files.client_key),
        "port": str(port),
    }


def ensure(paths: LabPaths, port: int, extra_config: str = "") -> tuple[dict[str, str], bool]:
    """Make keys and configs, start sshd if not running; return (specs, started).

    ``extra_config`` (more `Host` blocks, e.g. the lab guests') is appended to ssh_config.
    """
    files = SshFiles(paths)
    files.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keygen(files.host_key, "kvmio-lab-hostkey")
    _keygen(files.client_key, f"kvmio-lab@{paths.root}")
    files.sshd_config.write_text(
        f"Port {port}\nListenAddress {HOST}\nHostKey {files.host_key}\nPidFile {files.pidfile}\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nAuthorizedKeysFile .ssh/authorized_keys\n"
        "MaxStartups 50:30:100\nMaxSessions 50\nSubsystem sftp internal-sftp\n"
    )
    host_pub = files.host_key.with_suffix(".pub").read_text().split()
    files.known_hosts.write_text(f"[{HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
    files.ssh_config.write_text(
        f"Host {HOST}\n  Port {port}\n  User root\n  IdentityFile {files.client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {files.known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        "  LogLevel ERROR\n" + extra_config
    )
    _authorize(files.client_key.with_suffix(".pub").read_text().strip())
    started = False
    if running_pid(files) is None:
        if _port_open(port):
            raise CommandError(f"{HOST}:{port} is taken by another process; set KVMIO_LAB_SSH_PORT to a free port")
        os.makedirs("/run/sshd", exist_ok=True)
        run(["/usr/sbin/sshd", "-t", "-f", files.sshd_config], timeout=30)
        with files.log.open("ab") as fh:
            subprocess.run(["/usr/sbin/sshd", "-f", files.sshd_config, "-E", str(files.log)],
                           stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, timeout=30, check=True)
        started = True
    deadline = time.monotonic() + 10
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise CommandError(f"sshd did not listen on {HOST}:{port} within 10s; see {files.log}")
        time.sleep(0.2)
    probe = run(["ssh", "-F", files.ssh_config, HOST, "true"], timeout=30, check=False)
    if probe.returncode != 0:
        raise CommandError(f"ssh root@{HOST}:{port} with the lab key failed: {probe.stderr.strip()}; "
                           f"see {files.log}")
    return specs(files, port), started


def stop(paths: LabPaths) -> bool:
    """Stop the lab's sshd (only the one whose pid it recorded) and remove the client key from root."""
    files = SshFiles(paths)
    pid = running_pid(files)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if pid not in pids_of("sshd"):
                break
            time.sleep(0.1)
    pub = files.client_key.with_suffix(".pub")
    if pub.is_file():
        _unauthorize(pub.read_text().strip())
    return pid is not None
