"""The SSH guest transport for real: into the lab guest through its loopback port forward.

`kvmio lab up` gives kvmio-lab-good a user-mode NIC (restrict=on) forwarded from 127.0.0.1 to the
guest's dropbear, authorizes the lab's client key over the guest agent, pins the guest's host key,
and publishes `guest_ssh.spec` (a --guest template) in `kvmio lab status --json`. These tests use
that spec and check that they really talk to the guest (its kernel, its boot id, its dropbear log),
not to the hypervisor's own sshd.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.conftest import SUITES

pytestmark = [pytest.mark.integration, pytest.mark.lab]

URI = "qemu:///system"
GOOD = "kvmio-lab-good"
GUEST_RULES = ("guest-scheduler-none", "guest-queues-active", "guest-irq-spread")
AUTH_OK = re.compile(r"Pubkey auth succeeded for 'root'")


@pytest.fixture(scope="module")
def lab(lab: dict[str, Any]) -> dict[str, Any]:
    """The lab's status (conftest brings it up), which must offer SSH into the good guest."""
    assert lab.get("guest_ssh"), "kvmio lab status --json has no guest_ssh entry"
    assert lab["guest_ssh"]["domains"] == [GOOD]
    return lab


@pytest.fixture(scope="module")
def ssh_spec(lab: dict[str, Any]) -> str:
    spec: str = lab["guest_ssh"]["spec"]
    assert "{domain}" in spec
    return spec


@pytest.fixture(scope="module")
def good_dom(lab: dict[str, Any]) -> Any:
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open(URI)
    dom = conn.lookupByName(GOOD)
    assert dom.isActive(), f"{GOOD} is not running"
    return dom


def _ssh_host(spec: str) -> Any:
    import testinfra

    host = testinfra.get_host(spec.replace("{domain}", GOOD))
    assert host.backend.get_connection_type() == "ssh"
    return host


def _agent_host(dom: Any) -> Any:
    from pytest_kvmio.facts.guest import agent_host

    return agent_host(dom)


def _auth_count(agent: Any) -> int:
    """Return how many public-key logins the guest's dropbear has accepted (read over the agent)."""
    log = agent.run("cat /run/dropbear.log")
    assert log.rc == 0, log.stderr
    return len(AUTH_OK.findall(log.stdout))


def test_ssh_reaches_the_guest_kernel_not_the_host(ssh_spec: str, good_dom: Any) -> None:
    ssh = _ssh_host(ssh_spec)
    version = ssh.run("cat /proc/version")
    assert version.rc == 0, version.stderr
    host_release = subprocess.check_output(["uname", "-r"], text=True).strip()
    assert re.match(r"Linux version 6\.1\.\d+", version.stdout), version.stdout
    assert host_release not in version.stdout
    # The very same boot of the very same guest as the agent sees (boot_id is random per boot).
    agent = _agent_host(good_dom)
    boot_id = "cat /proc/sys/kernel/random/boot_id"
    assert ssh.check_output(boot_id) == agent.check_output(boot_id)
    assert ssh.check_output("cat /proc/version") == agent.check_output("cat /proc/version")


def test_ssh_runs_commands_like_testinfra_expects(ssh_spec: str) -> None:
    ssh = _ssh_host(ssh_spec)
    assert ssh.run("exit 3").rc == 3
    quoted = ssh.run("printf %%s %s", "it's $HOME; `x`")
    assert quoted.stdout == "it's $HOME; `x`"
    assert ssh.file("/etc/passwd").contains("^root:")
    assert ssh.check_output("id -u") == "0"
    assert ssh.check_output("fio --version").startswith("fio-")


def test_guest_accepts_public_keys_only(lab: dict[str, Any]) -> None:
    port = lab["guest_ssh"]["ports"][GOOD]
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no", "-o", "ConnectTimeout=10",
         "root@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr, proc.stderr


def test_same_guest_disk_mapping_over_agent_and_ssh(ssh_spec: str, good_dom: Any) -> None:
    from pytest_kvmio.facts.guestmap import GuestDisk, map_guest_disks
    from pytest_kvmio.model.domain import parse_domain

    disks = [d for d in parse_domain(good_dom.XMLDesc(0), source=GOOD, host="local").disks if d.is_storage]
    over_ssh = map_guest_disks(_ssh_host(ssh_spec), disks)
    over_agent = map_guest_disks(_agent_host(good_dom), disks)
    assert set(over_ssh) == {"vdb", "vdc", "sda"}
    assert all(isinstance(found, GuestDisk) for found in over_ssh.values()), over_ssh
    assert over_ssh == over_agent


def test_guest_rules_of_the_good_domain_pass_over_ssh(
    pytester: pytest.Pytester, ssh_spec: str, good_dom: Any
) -> None:
    agent = _agent_host(good_dom)
    logins_before = _auth_count(agent)
    out = pytester.path / "verdicts.json"
    result = pytester.runpytest_subprocess(
        str(SUITES / "test_guest.py"), "--host=local", f"--domain={GOOD}", f"--guest={ssh_spec}",
        "--kvmio-json", str(out), "-p", "no:cacheprovider", timeout=900,
    )
    assert out.exists(), result.stdout.str()[-3000:]
    verdicts = json.loads(out.read_text())["verdicts"]
    guest = {(v["rule"], v["target"]): v for v in verdicts if v["rule"] in GUEST_RULES}
    expected = {(rule, f"local/{GOOD}/{dev}") for rule in GUEST_RULES for dev in ("vdb", "vdc", "sda")}
    assert set(guest) == expected, sorted(guest)
    failed = {k: f"{v['outcome']}: {v['message']}" for k, v in guest.items() if v["outcome"] != "passed"}
    assert not failed, failed
    for v in guest.values():
        assert re.fullmatch(r"(vd|sd)[a-z]+", v["facts"]["guest_device"]), v
    assert result.ret == pytest.ExitCode.OK
    # ...and they ran over SSH: the guest's dropbear accepted new logins during the run.
    assert _auth_count(agent) > logins_before


def test_restrict_on_keeps_the_guest_from_reaching_the_host(ssh_spec: str, lab: dict[str, Any]) -> None:
    """The host's sshd answers on 127.0.0.1; through SLIRP's gateway (10.0.2.2 = host loopback) it must not."""
    port = lab["ssh"]["port"]
    probe = _ssh_host(ssh_spec).run(f"echo | nc -w 3 10.0.2.2 {int(port)}")
    assert probe.rc != 0, probe.stdout
    assert "SSH-2.0" not in probe.stdout
