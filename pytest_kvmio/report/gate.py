"""The pipeline gate: one outcome per test item, the exit code, and the line for the change ticket."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_kvmio.runconfig import run_config

#: Order in which counts appear in the ticket line.
SHOWN = ("failed", "error", "inconclusive", "waived", "passed", "skipped", "xfailed", "xpassed")
#: pytest exit codes the gate keeps as they are: the run itself did not complete.
NOT_A_RUN = {
    pytest.ExitCode.INTERRUPTED: "interrupted",
    pytest.ExitCode.INTERNAL_ERROR: "internal error",
    pytest.ExitCode.USAGE_ERROR: "usage error",
}


@dataclass
class Gate:
    """The decision: PASS or FAIL, why, and the exit code to leave with."""

    counts: Counter[str] = field(default_factory=Counter)
    fail_inconclusive: bool = False
    passed: bool = True
    reason: str = ""
    exitstatus: int = 0

    def decide(self, pytest_status: int) -> int:
        """Return the exit code: 0 only when no unwaived failure or error and something ran."""
        status = int(pytest_status)
        failures = self.counts["failed"] + self.counts["error"]
        if status in NOT_A_RUN:
            self.passed, self.reason, self.exitstatus = False, NOT_A_RUN[pytest.ExitCode(status)], status
        elif status == pytest.ExitCode.NO_TESTS_COLLECTED or not self.counts.total():
            # Nothing checked is not a pass: a wrong path or -k would otherwise turn the pipeline green.
            self.passed, self.reason = False, "no tests collected"
            self.exitstatus = int(pytest.ExitCode.NO_TESTS_COLLECTED)
        elif failures or status == pytest.ExitCode.TESTS_FAILED:
            self.passed, self.exitstatus = False, int(pytest.ExitCode.TESTS_FAILED)
        elif self.fail_inconclusive and self.counts["inconclusive"]:
            self.passed, self.reason = False, "inconclusive measurements (--kvmio-fail-inconclusive)"
            self.exitstatus = int(pytest.ExitCode.TESTS_FAILED)
        else:
            self.passed, self.exitstatus = True, int(pytest.ExitCode.OK)
        return self.exitstatus

    def counts_text(self) -> str:
        parts = [f"{self.counts[o]} {o if o != 'error' else 'errors' if self.counts[o] > 1 else 'error'}"
                 for o in SHOWN if self.counts[o]]
        return ", ".join(parts) or "nothing ran"

    def line(self, hosts: str, verdicts: str | None, waivers: str | None = None) -> str:
        """Return the one line a person pastes into the change ticket."""
        verdict = "PASS" if self.passed else "FAIL"
        text = f"kvmio: {verdict} — "
        if self.reason and self.reason != "no tests collected":
            text += f"{self.reason}; "
        text += "no tests collected" if self.reason == "no tests collected" else self.counts_text()
        if hosts:
            text += f" on {hosts}"
        if self.reason == "no tests collected" and self.counts.total():
            text += f" ({self.counts_text()})"
        if waivers:
            text += f"; waivers: {waivers}"
        if verdicts:
            text += f"; verdicts: {verdicts}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "exitstatus": self.exitstatus, "reason": self.reason or None,
            "fail_inconclusive": self.fail_inconclusive, "counts": {o: self.counts[o] for o in SHOWN},
        }


def describe_hosts(hosts: list[dict[str, Any]]) -> str:
    """Return `local (kernel 6.1, QEMU 7.2, libvirt 9.0)` for each host summary, comma-separated."""
    parts = []
    for host in hosts:
        if host.get("error"):
            parts.append(f"{host['host']} (unreachable)")
            continue
        versions = [f"{label} {host[key]}" for label, key in
                    (("kernel", "kernel"), ("QEMU", "qemu"), ("libvirt", "libvirt")) if host.get(key)]
        if host.get("host_facts_file"):  # `offline` or `offline@hv01`, judged on a `kvmio facts save` file
            parts.append(f"offline lint as {host.get('saved_from')} ({host['host_facts_file']}: {', '.join(versions)})")
            continue
        if host.get("offline"):
            parts.append("offline lint" + (f" (assumed {', '.join(versions)})" if versions else ""))
            continue
        parts.append(f"{host['host']} ({', '.join(versions)})" if versions else str(host["host"]))
    return ", ".join(parts)


def fail_inconclusive(config: pytest.Config) -> bool:
    """Resolve --kvmio-fail-inconclusive (CLI > KVMIO_FAIL_INCONCLUSIVE); a bad value is a usage error naming it."""
    return run_config(config).fail_inconclusive
