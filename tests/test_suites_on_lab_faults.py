"""An infrastructure fault in the middle of a run is an error naming its cause, never a failed rule.

libvirtd is killed on the lab right after the first guest item of the compliant domain has finished;
the items that then need libvirt (the guest agent goes through it) must end as errors that say what
broke, no item of the compliant domain may fail, and every report is still written. libvirtd is
started again afterwards; the running guests survive it (QEMU does not depend on libvirtd).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from pytest_kvmio.lab import daemons
from tests.conftest import SUITES

pytestmark = [pytest.mark.integration, pytest.mark.lab]

DOMAIN = "kvmio-lab-good"
KILLER = """
import os
import signal
import time

from pytest_kvmio.lab.daemons import pids_of

KILLED = []


def pytest_runtest_logreport(report):
    if not KILLED and report.when == "teardown" and "test_guest.py" in report.nodeid:
        for pid in pids_of("libvirtd"):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pids_of("libvirtd") and time.monotonic() < deadline:
            time.sleep(0.1)
        KILLED.append(report.nodeid)
        print(f"kvmio-test: killed libvirtd after {report.nodeid}")
"""


def _restart_libvirtd() -> None:
    daemons.ensure_running()
    conn = daemons.connect(timeout=60)
    try:
        deadline = time.monotonic() + 120
        dom = conn.lookupByName(DOMAIN)
        import libvirt_qemu

        while True:  # libvirtd reconnects to the guest agent of the running domain
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 10, 0)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        conn.close()


def test_libvirtd_dying_mid_run_gives_errors_naming_the_cause_not_failures(
    pytester: pytest.Pytester, lab: dict[str, Any]
) -> None:
    pytester.makepyfile(kvmio_killer=KILLER)  # loaded with -p: a conftest here would not see the suites' items
    out, junit, allure = pytester.path / "verdicts.json", pytester.path / "junit.xml", pytester.path / "allure-results"
    try:
        result = pytester.runpytest_subprocess(
            str(SUITES / "test_disks.py"), str(SUITES / "test_guest.py"), "--host=local", f"--domain={DOMAIN}",
            "--kvmio-json", str(out), f"--junitxml={junit}", f"--alluredir={allure}", "-p", "no:cacheprovider",
            "-p", "kvmio_killer", "-s", timeout=600,
        )
    finally:
        _restart_libvirtd()
    output = "\n".join(result.outlines + result.errlines)
    assert "kvmio-test: killed libvirtd after" in output, output[-3000:]
    document = json.loads(out.read_text())
    verdicts = document["verdicts"]
    failed = [f"{v['rule']} {v['target']}: {v['message']}" for v in verdicts if v["outcome"] == "failed"]
    assert not failed, "the compliant domain failed:\n" + "\n".join(failed)
    errors = [v for v in verdicts if v["outcome"] == "error"]
    assert errors, "no item needed libvirt after the kill?\n" + output[-3000:]
    for verdict in errors:
        assert verdict["rule"].startswith("guest-"), verdict
        message = verdict["message"].lower()
        assert "kvmio could not judge" in message or "guest unreachable" in message, verdict
        assert any(cause in message for cause in ("libvirt", "socket", "connection", "agent")), verdict
    print("\n".join(f"{v['outcome']:7} {v['rule']} {v['target']}: {v['message'][:200]}" for v in verdicts if v["rule"].startswith("guest-")))
    assert document["gate"]["passed"] is False and result.ret == pytest.ExitCode.TESTS_FAILED
    assert document["totals"]["error"] == len(errors) and document["totals"]["failed"] == 0
    # Every report was written: JUnit parses and counts the errors, Allure has a result per item.
    suite = etree.parse(str(junit)).getroot().find("testsuite")
    assert suite is not None and int(suite.get("errors", "0")) + int(suite.get("failures", "0")) == len(errors)
    assert len(list(Path(allure).glob("*-result.json"))) == len(verdicts)
    broken = [json.loads(p.read_text()) for p in Path(allure).glob("*-result.json")]
    assert all(r["status"] != "failed" for r in broken)
