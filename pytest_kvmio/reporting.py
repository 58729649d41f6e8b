"""Reports for people and pipelines: waived/inconclusive statuses, the gate, the ticket line, Allure.

Registered from plugin.py's pytest_configure with `reporting.register(config)`:
- waivers (`--waivers`, or KVMIO_WAIVERS) are loaded at once, so a bad file exits 4 before collection;
- the gate sets `session.exitstatus` in pytest_sessionfinish (0 only with no unwaived failure or
  error, something ran, and, with --kvmio-fail-inconclusive, nothing inconclusive);
- the JSON summary (--kvmio-json) gains `gate`, `waivers` and each verdict's `waiver`;
- the very last line of the terminal output is the line for the change ticket;
- Allure labels, attachments and result-directory files only when allure-pytest is loaded and enabled.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.gate import Gate, describe_hosts, fail_inconclusive, item_outcome
from pytest_kvmio.verdicts import PROP_OUTCOME
from pytest_kvmio.waivers import WaiverPlugin, resolve

STATUS = {
    "waived": ("waived", "W", ("WAIVED", {"yellow": True})),
    "inconclusive": ("inconclusive", "?", ("INCONCLUSIVE", {"yellow": True})),
}


def register(config: pytest.Config) -> None:
    """Register kvmio's reporting plugins; Allure's only when allure-pytest is present and enabled."""
    waivers = resolve(config)
    if waivers is not None:
        config.pluginmanager.register(waivers, "kvmio-waivers")
    config.pluginmanager.register(ReportingPlugin(config, waivers), "kvmio-reporting")
    if config.pluginmanager.hasplugin("allure_pytest") and getattr(config.option, "allure_report_dir", None):
        from pytest_kvmio.allure_support import AllureKvmio

        config.pluginmanager.register(AllureKvmio(config, config.option.allure_report_dir), "kvmio-allure")


class ReportingPlugin:
    """Count one outcome per item, gate the exit code, extend the JSON summary, print the ticket line."""

    def __init__(self, config: pytest.Config, waivers: WaiverPlugin | None) -> None:
        self.config = config
        self.waivers = waivers
        self.outcomes: dict[str, str] = {}
        self.gate = Gate(fail_inconclusive=fail_inconclusive(config))

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Any:
        if report.failed or not (report.when == "call" or (report.when == "setup" and report.skipped)):
            return None
        forced = dict(report.user_properties).get(PROP_OUTCOME)
        return STATUS.get(str(forced)) if forced else None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = item_outcome(report, self.outcomes.get(report.nodeid))
        if outcome is not None:
            self.outcomes[report.nodeid] = outcome

    # Outer wrapper: gate before the other sessionfinish hooks run (they read session.exitstatus),
    # print the ticket line after the terminal reporter's own summary, so it is the last line.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
        collect_only = bool(self.config.getoption("collectonly", False))
        if not collect_only:
            self.gate.counts = Counter(self.outcomes.values())
            session.exitstatus = self.gate.decide(int(session.exitstatus))
        try:
            return (yield)
        finally:
            if not collect_only:
                self._finish()

    def _finish(self) -> None:
        try:
            self._rewrite_json()
        except (OSError, ValueError) as exc:
            self._write(f"kvmio: could not add the gate and waivers to the JSON summary: {exc}")
        self._write(self.ticket_line(), bold=True, red=not self.gate.passed, green=self.gate.passed)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.waivers.lines() if self.waivers is not None else []
        if lines:
            terminalreporter.section("kvmio waivers")
            for line in lines:
                terminalreporter.write_line(line)

    def ticket_line(self) -> str:
        from pytest_kvmio.plugin import STATE

        state = self.config.stash.get(STATE, None)
        hosts = describe_hosts(state.loaded_hosts) if state is not None else ""
        waivers = None
        if self.waivers is not None:
            s = self.waivers.summary()
            waivers = ", ".join(f"{len(s[k])} {k}" for k in ("applied", "expired", "unmatched"))
        return self.gate.line(hosts, self.config.getoption("kvmio_json", None), waivers)

    def _write(self, line: str, **markup: bool) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line, **markup)

    def _rewrite_json(self) -> None:
        """Add the gate and waivers to the summary plugin.py wrote (same file, replaced atomically)."""
        path = self.config.getoption("kvmio_json", None)
        if not path or not Path(path).is_file():
            return
        target = Path(path)
        document = json.loads(target.read_text())
        document["exitstatus"] = self.gate.exitstatus
        document["gate"] = self.gate.as_dict()
        waived = self.waivers.waived_nodeids if self.waivers is not None else {}
        for record in document.get("verdicts", []):
            record["waiver"] = waived.get(record.get("nodeid", ""))
        document["waivers"] = (
            self.waivers.summary() if self.waivers is not None
            else {"file": None, "applied": [], "expired": [], "unmatched": []}
        )
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
        tmp.replace(target)
