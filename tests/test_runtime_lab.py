"""Issue 20 on the real lab: the runtime seeds (an IOThread moved behind libvirt's back, a pending restart, a guest
scheduler set by hand) fail their rules on the seeded domain and pass on the compliant one, also after a second
`kvmio lab up`; what kvmio reads from /proc agrees with what libvirt itself reports."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import libvirt
import pytest
import testinfra
from lxml import etree

from pytest_kvmio.facts.host import collect_host_facts
from pytest_kvmio.lab import seeds
from tests.conftest import SUITES, kvmio

pytestmark = [pytest.mark.integration, pytest.mark.lab]

RUNTIME_RULES = ("domain-runtime-pinning", "disk-runtime-settings", "domain-pending-restart", "guest-scheduler-persistent")


def _verdicts(pytester: pytest.Pytester) -> dict[tuple[str, str], dict[str, Any]]:
    out = pytester.path / "verdicts.json"
    pytester.runpytest_subprocess(
        str(SUITES / "test_runtime.py"), str(SUITES / "test_guest.py"), "-k", "reboot or runtime or restart or pins",
        "--host=local", "--domain=kvmio-lab-*", "--kvmio-json", str(out), "-p", "no:cacheprovider", timeout=600,
    )
    verdicts = json.loads(out.read_text())["verdicts"]
    return {(v["rule"], v["target"]): v for v in verdicts if v["rule"] in RUNTIME_RULES}


def _check_seeds(verdicts: dict[tuple[str, str], dict[str, Any]]) -> None:
    drift = verdicts[("domain-runtime-pinning", "local/kvmio-lab-pinning")]
    assert drift["outcome"] == "failed"
    assert "IOThread 2" in drift["message"] and "declared 1 (<iothreadpin> pin) but runs on 0" in drift["message"]
    pending = verdicts[("domain-pending-restart", "local/kvmio-lab-pinning")]
    assert pending["outcome"] == "failed"
    assert "disk vdb cache: (absent) → none" in pending["message"] and "next restart" in pending["message"]
    by_hand = verdicts[("guest-scheduler-persistent", "local/kvmio-lab-legacy/vdc")]
    assert by_hand["outcome"] == "failed"
    assert "after a reboot it gets mq-deadline" in by_hand["message"]
    # the compliant guest passes by the kernel's own default for multi-queue disks; a single-queue one by its boot script
    for rule, target in (("domain-runtime-pinning", "local/kvmio-lab-good"), ("domain-pending-restart", "local/kvmio-lab-good")):
        assert verdicts[(rule, target)]["outcome"] == "passed", verdicts[(rule, target)]["message"]
    for dev in ("vdb", "vdc", "sda"):
        good = verdicts[("guest-scheduler-persistent", f"local/kvmio-lab-good/{dev}")]
        assert good["outcome"] == "passed" and "kernel's default" in good["facts"]["set_by"], good
    script = verdicts[("guest-scheduler-persistent", "local/kvmio-lab-pinning/sda")]
    assert script["outcome"] == "passed" and "/etc/local.d/kvmio-scheduler.start" in script["facts"]["set_by"], script
    settings = [v for (rule, _), v in verdicts.items() if rule == "disk-runtime-settings"]
    assert settings and all(v["outcome"] == "passed" for v in settings), [v["message"] for v in settings]


def test_runtime_seeds_fail_their_rules_and_the_compliant_domain_passes(pytester: pytest.Pytester) -> None:
    _check_seeds(_verdicts(pytester))


def test_a_second_lab_up_reapplies_nothing_and_keeps_the_verdicts(pytester: pytest.Pytester) -> None:
    again = kvmio("lab", "up", timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already runs on 0" in again.stdout + again.stderr and "already waits for a restart" in again.stdout + again.stderr
    _check_seeds(_verdicts(pytester))


def test_a_domain_started_from_its_seeded_definition_is_defined_afresh_by_lab_up(pytester: pytest.Pytester) -> None:
    """A host reboot (how CI found it) or a plain `virsh start` boots kvmio-lab-pinning from the persistent XML that
    carries its pending-restart seed: cache='none' is then in effect and nothing is pending. `kvmio lab up` must see
    that, define the domain afresh, boot it and seed it again, so the manifest's verdicts hold."""
    name = "kvmio-lab-pinning"

    def virsh(*args: str) -> str:
        return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                              check=True).stdout

    up = None
    try:
        virsh("destroy", name)
        virsh("start", name)
        live = etree.fromstring(virsh("dumpxml", name).encode())
        assert live.xpath("devices/disk[target/@dev='vdb']/driver/@cache") == ["none"]  # the seed, in effect
        up = kvmio("lab", "up", timeout=900)
        assert up.returncode == 0, up.stderr[-2000:]
        said = up.stdout + up.stderr
        assert f"{name} runs with its pending-restart seed (vdb cache='none')" in said and "defining it afresh" in said
        assert "cache='none' already waits" not in said and "vdb: cache='none' defined" in said, said
    finally:
        if up is None or up.returncode != 0:  # leave the shared lab as the manifest says, whatever failed above
            kvmio("lab", "up", timeout=900)
    _check_seeds(_verdicts(pytester))


def test_affinities_read_from_proc_equal_what_libvirt_reports() -> None:
    """libvirt's virDomainGetVcpus and virDomainGetIOThreadInfo read the threads' real affinity (a round trip per
    domain); the one facts command must agree with them, the seeded drift included."""
    conn = libvirt.openReadOnly("qemu:///system")
    facts, domains = collect_host_facts("local", testinfra.get_host("local://"), conn, "qemu:///system")
    compared = 0
    for dom in domains:
        if not dom.name.startswith("kvmio-lab-") or not dom.running:
            continue
        assert dom.runtime is not None and dom.runtime.error is None, dom.name
        virt = conn.lookupByName(dom.name)
        _, cpumaps = virt.vcpus()
        for vcpu, cpumap in enumerate(cpumaps):
            assert dom.runtime.vcpu_threads()[vcpu].affinity == {c for c, on in enumerate(cpumap) if on}, dom.name
            compared += 1
        for iothread, cpumap in virt.ioThreadInfo(0):
            assert dom.runtime.iothread_threads()[iothread].affinity == {c for c, on in enumerate(cpumap) if on}, dom.name
            compared += 1
    assert compared >= 10
    drifted = next(d for d in domains if d.name == "kvmio-lab-pinning").runtime
    assert drifted is not None and drifted.iothread_threads()[2].runs_on == {0}


def test_the_printed_fix_puts_the_drifted_iothread_back_and_the_rule_then_passes(pytester: pytest.Pytester) -> None:
    drift = _verdicts(pytester)[("domain-runtime-pinning", "local/kvmio-lab-pinning")]
    commands = drift["fix"]["host_commands"]
    assert commands == ["virsh iothreadpin kvmio-lab-pinning 2 1 --live"]
    try:
        for command in commands:
            done = subprocess.run(command.split(), capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        fixed = _verdicts(pytester)[("domain-runtime-pinning", "local/kvmio-lab-pinning")]
        assert fixed["outcome"] == "passed", fixed["message"]
    finally:  # the lab's seed again, as `kvmio lab up` applies it
        seeds.drift_iothread("kvmio-lab-pinning", 2, frozenset({0}))
    assert _verdicts(pytester)[("domain-runtime-pinning", "local/kvmio-lab-pinning")]["outcome"] == "failed"
