"""The suites against the real lab (libvirtd + TCG guests), over `local` and over SSH on loopback.

The lab's manifest states every finding its seeded misconfigurations must produce; the verdicts
must equal it exactly: no missing finding, no extra one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUITES

pytestmark = [pytest.mark.integration, pytest.mark.lab]

def _expected(manifest: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for name, entry in manifest["domains"].items():
        for key in ("expected_failures", "expected_guest_failures"):
            for target, rules in (entry.get(key) or {}).items():
                found.update((rule, target) for rule in rules)
    return found


def _run_suites(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
    out = pytester.path / "verdicts.json"
    result = pytester.runpytest_subprocess(
        str(SUITES), "-m", "not perf", "--kvmio-json", str(out), "-p", "no:cacheprovider", *args, timeout=900
    )
    assert out.exists(), result.stdout.str()[-3000:]
    return result, json.loads(out.read_text())["verdicts"]


def _findings(verdicts: list[dict[str, Any]], host: str) -> set[tuple[str, str]]:
    """Return (rule, target without host) of every failed domain/disk/guest verdict."""
    return {
        (v["rule"], v["target"].split("/", 1)[1])
        for v in verdicts
        if v["outcome"] == "failed" and not v["rule"].startswith("host-") and v["target"].startswith(f"{host}/")
    }


def _check_against_manifest(verdicts: list[dict[str, Any]], host: str, manifest: dict[str, Any]) -> None:
    errors = [f"{v['rule']} {v['target']}: {v['message']}" for v in verdicts if v["outcome"] == "error"]
    assert not errors, "verdicts in error:\n" + "\n".join(errors)
    expected, found = _expected(manifest), _findings(verdicts, host)
    assert found == expected, f"missing findings: {sorted(expected - found)}\nextra findings: {sorted(found - expected)}"
    # Every running lab domain's guest was reached: guest rules ran, they were not skipped.
    for name, entry in manifest["domains"].items():
        if entry.get("running"):
            guest = [v for v in verdicts if v["rule"] == "guest-scheduler-none" and v["target"].startswith(f"{host}/{name}/")]
            assert guest and all(v["outcome"] != "skipped" for v in guest), (name, guest)
    host_rules = {v["rule"]: v["outcome"] for v in verdicts if v["target"] == host}
    for rule in ("host-kernel-min", "host-qemu-min", "host-libvirt-min", "host-io-uring-enabled"):
        assert host_rules[rule] == "passed", (rule, host_rules)


def test_lab_verdicts_over_local_equal_the_manifest(pytester: pytest.Pytester, lab: dict[str, Any]) -> None:
    result, verdicts = _run_suites(pytester, "--host=local", "--domain=kvmio-lab-*")
    _check_against_manifest(verdicts, "local", lab)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the lab seeds misconfigurations on purpose


def test_lab_verdicts_over_ssh_equal_the_manifest(pytester: pytest.Pytester, lab: dict[str, Any]) -> None:
    ssh = lab["ssh"]
    result, verdicts = _run_suites(
        pytester, f"--host={ssh['host_spec']}", f"--libvirt-uri={ssh['libvirt_uri']}", "--domain=kvmio-lab-*"
    )
    host = "127.0.0.1:" + str(ssh["port"])
    _check_against_manifest(verdicts, host, lab)
    kernel = next(v for v in verdicts if v["rule"] == "host-kernel-min")
    assert kernel["facts"]["kernel"] == subprocess.check_output(["uname", "-r"], text=True).strip()


def test_lab_offline_xml_verdicts_equal_the_manifest(pytester: pytest.Pytester, lab: dict[str, Any]) -> None:
    files = list(lab["offline_xml"])
    assert files, "the lab writes offline XML for what libvirt refuses to define"
    _, verdicts = _run_suites(pytester, *[f"--domain-xml={f}" for f in files])
    expected = {  # offline ids carry the file's name: offline/<file>:<domain>/<disk>
        (rule, f"{Path(path).name}:{target}")
        for path, entry in lab["offline_xml"].items()
        for target, rules in entry["expected_failures"].items()
        for rule in rules
    }
    assert _findings(verdicts, "offline") == expected
    for path in files:  # and libvirt really refuses them: that is why they are offline
        refused = subprocess.run(["virsh", "-c", "qemu:///system", "define", path], capture_output=True, text=True)
        assert refused.returncode != 0, f"libvirt accepted {path}"


def test_ansible_inventory_hosts_are_checked_over_ssh(pytester: pytest.Pytester, lab: dict[str, Any]) -> None:
    ssh = lab["ssh"]
    inventory = pytester.path / "inventory.ini"
    inventory.write_text(
        "[hypervisors]\n"
        f"labhv ansible_host=127.0.0.1 ansible_port={ssh['port']} ansible_user=root "
        f"ansible_ssh_private_key_file={ssh['identity_file']} ansible_ssh_common_args='-F {ssh['ssh_config']}'\n"
    )
    out = pytester.path / "verdicts.json"
    result = pytester.runpytest_subprocess(
        str(SUITES / "test_host.py"), f"--ansible-inventory={inventory}",
        "--libvirt-uri=qemu+ssh://{host}/system{query}&no_verify=1", "--kvmio-json", str(out),
    )
    verdicts = {v["rule"]: v for v in json.loads(out.read_text())["verdicts"]}
    assert verdicts["host-libvirt-min"]["target"] == "labhv"
    assert verdicts["host-libvirt-min"]["outcome"] == "passed", verdicts["host-libvirt-min"]["message"]
    assert result.ret == pytest.ExitCode.OK
