"""Fleets under pytest-xdist: one machine's items stay on one worker, whatever spec reached it.

`local` and the lab's `ssh://root@127.0.0.1:2222` are two specs of one machine (one libvirtd, one
host UUID). Run with `-n 2`, every item of both must land on the same worker (so fio never runs twice
at once on that machine), the verdicts must equal a serial run, and the ticket line must still name
the hosts and their versions, which only the workers read.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pytest_kvmio.plugin.xdist_groups import GROUP_PREFIX
from tests.conftest import SUITES

pytestmark = [pytest.mark.integration, pytest.mark.lab]

#: `[gw1] [ 50%] PASSED path::test[id]@group` lines of pytest-xdist's verbose output.
WORKER_LINE = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (?:PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)")


def _run(pytester: pytest.Pytester, lab: dict[str, Any], *extra: str) -> tuple[pytest.RunResult, set[tuple]]:
    out = pytester.path / f"verdicts{len(extra)}.json"
    result = pytester.runpytest_subprocess(
        str(SUITES / "test_host.py"), str(SUITES / "test_domains.py"), str(SUITES / "test_disks.py"),
        "--host=local", f"--host={lab['ssh']['host_spec']}", "--libvirt-uri=qemu:///system",
        "--domain=kvmio-lab-*", "--kvmio-json", str(out), "-p", "no:cacheprovider", *extra, timeout=600,
    )
    verdicts = json.loads(out.read_text())["verdicts"]
    return result, {(v["rule"], v["target"], json.dumps(v["params"], sort_keys=True), v["outcome"]) for v in verdicts}


def test_two_specs_of_one_machine_run_on_one_worker_with_serial_verdicts(
    pytester: pytest.Pytester, lab: dict[str, Any]
) -> None:
    serial_result, serial = _run(pytester, lab)
    result, parallel = _run(pytester, lab, "-n", "2", "-v")
    placed = [m.groups() for line in result.stdout.lines if (m := WORKER_LINE.match(line))]
    assert len(placed) == len(serial) > 20
    groups = {nodeid.rsplit("@", 1)[-1] for _, nodeid in placed}
    assert len(groups) == 1 and groups.pop().startswith(GROUP_PREFIX), groups  # one machine, one group
    assert len({worker for worker, _ in placed}) == 1  # so one worker ran all its items
    assert "scheduling tests via LoadGroupScheduling" in result.stdout.str()
    assert parallel == serial
    ticket = result.stdout.lines[-1]
    assert ticket.split("; verdicts:")[0] == serial_result.stdout.lines[-1].split("; verdicts:")[0]
    assert re.search(r" on local \(kernel \S+, QEMU \S+, libvirt \S+\), 127\.0\.0\.1:2222 \(kernel ", ticket), ticket
