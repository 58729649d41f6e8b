"""SSH into lab guests: loopback port forwards to dropbear, keys exchanged over the guest agent.

Guests with ``DomainSpec.ssh`` get a user-mode NIC (xmlgen.qemu_net_args) whose only way in is
``127.0.0.1:PORT`` → guest :22. Their init makes a dropbear host key at boot; `kvmio lab up` then,
over the guest agent (a channel that needs no network and that only the hypervisor can open),
writes the lab's client public key to the guest's /root/.ssh/authorized_keys and reads the host
key back, which it pins in ``ssh/known_hosts_guests``. Nothing is baked into the cached initramfs,
so a new client key (after `lab down`) costs no rebuild.
"""

from __future__ import annotations

import shlex
import socket
import time
from typing import TYPE_CHECKING, Any

from pytest_kvmio.errors import CommandError
from pytest_kvmio.facts.guest import agent_host
from pytest_kvmio.facts.guest_errors import GuestError
from pytest_kvmio.lab import topology
from pytest_kvmio.lab.shell import run

if TYPE_CHECKING:
    import libvirt

    from pytest_kvmio.lab.sshd import SshFiles

HOST = "127.0.0.1"
HOST_KEY_PUB = "/etc/dropbear/host_key.pub"
PROBE_TIMEOUT = 60.0  # dropbear starts before the agent, but TCG is slow


def ssh_domains() -> list[topology.DomainSpec]:
    """Return the lab domains reachable over SSH."""
    return [d for d in topology.DOMAINS if d.ssh]


def ports(base: int) -> dict[str, int]:
    """Return the loopback port of each SSH-enabled domain: base, base + 1, ... in topology order."""
    return {d.name: base + i for i, d in enumerate(ssh_domains())}


def port_in_use(port: int) -> bool:
    """Return whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def known_hosts(files: SshFiles) -> str:
    return str(files.dir / "known_hosts_guests")


def config_block(files: SshFiles, base: int) -> str:
    """Return ssh_config `Host <domain>` blocks, so that `ssh -F ssh_config kvmio-lab-good` works."""
    blocks = []
    for name, port in ports(base).items():
        blocks.append(
            f"Host {name}\n  HostName {HOST}\n  Port {port}\n  User root\n  IdentityFile {files.client_key}\n"
            f"  IdentitiesOnly yes\n  HostKeyAlias {name}\n  UserKnownHostsFile {known_hosts(files)}\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n"
            "  ServerAliveInterval 10\n  ServerAliveCountMax 3\n  LogLevel ERROR\n"
        )
    return "".join(blocks)


def spec(files: SshFiles, base: int) -> dict[str, Any]:
    """Return the manifest's `guest_ssh` entry: the --guest template and the domains it reaches."""
    return {
        "spec": f"ssh://{{domain}}?ssh_config={files.ssh_config}",
        "domains": [d.name for d in ssh_domains()],
        "ports": ports(base),
        "ssh_config": str(files.ssh_config),
        "known_hosts": known_hosts(files),
    }


def _exchange_keys(dom: libvirt.virDomain, conn: libvirt.virConnect, client_pub: str) -> str:
    """Authorize client_pub for root in the guest and return the guest's host public key (agent)."""

    cmd = (
        "umask 077 && mkdir -p /root/.ssh && "
        f"printf '%s\\n' {shlex.quote(client_pub)} > /root/.ssh/authorized_keys.tmp && "
        "mv /root/.ssh/authorized_keys.tmp /root/.ssh/authorized_keys && "
        f"cat {HOST_KEY_PUB}"
    )
    try:
        result = agent_host(dom, conn=conn, command_timeout=30).run(cmd)
    except GuestError as exc:
        raise CommandError(f"{dom.name()}: could not exchange SSH keys over the guest agent: {exc}") from exc
    fields = result.stdout.split()
    if result.rc != 0 or len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise CommandError(f"{dom.name()}: no dropbear host key at {HOST_KEY_PUB} (exit {result.rc}: "
                           f"{(result.stderr or result.stdout).strip()[:300]}); is the guest build current?")
    return f"{fields[0]} {fields[1]}"


def ensure(conn: libvirt.virConnect, files: SshFiles, base: int) -> dict[str, Any]:
    """Exchange keys with every running SSH-enabled guest, pin host keys, and check that ssh works."""
    client_pub = files.client_key.with_suffix(".pub").read_text().strip()
    lines = []
    running = []
    for d in ssh_domains():
        dom = conn.lookupByName(d.name)
        if not dom.isActive():
            continue
        lines.append(f"{d.name} {_exchange_keys(dom, conn, client_pub)}\n")
        running.append(d.name)
    path = files.dir / "known_hosts_guests"
    path.write_text("".join(lines))
    for name in running:
        deadline = time.monotonic() + PROBE_TIMEOUT
        while True:
            probe = run(["ssh", "-F", files.ssh_config, name, "cat /proc/version"], timeout=30, check=False)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"ssh -F {files.ssh_config} {name} failed: {probe.stderr.strip()[:300]}; "
                                   "guest log: virsh qemu-agent-command or /run/dropbear.log in the guest")
            time.sleep(1)
    return spec(files, base)
