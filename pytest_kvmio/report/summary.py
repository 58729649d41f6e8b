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

from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest

from pytest_kvmio.report import cpucost
from pytest_kvmio.report.fixes import FixEnricher
from pytest_kvmio.report.gate import (
    Gate,
    describe_hosts,
    fail_inconclusive,
)
from pytest_kvmio.report.waivers import WaiverPlugin, resolve
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.state import STATE
from pytest_kvmio.verdict.record import Enricher, forced_outcome, write_json

STATUS = {
    "waived": ("waived", "W", ("WAIVED", {"yellow": True})),
    "inconclusive": ("inconclusive", "?", ("INCONCLUSIVE", {"yellow": True})),
}
#: A rule body that kvmio could not run to a verdict (a daemon died, the agent timed out, kvmio raised).
ERROR_STATUS = ("error", "E", ("ERROR", {"red": True}))


def register(config: pytest.Config) -> list[Enricher]:
    """Register kvmio's reporting plugins; return the verdict record's enrichers in the order they apply.

    The order is declared here, once: a waiver first (it turns a covered failure into a waived skip before the
    record is built), then the failure's fix, then Allure's labels and attachments (which show both). Allure's
    only when allure-pytest is present and enabled.
    """
    enrichers: list[Enricher] = []
    waivers = resolve(config)
    if waivers is not None:
        config.pluginmanager.register(waivers, "kvmio-waivers")
        enrichers.append(waivers)
    config.pluginmanager.register(ReportingPlugin(config, waivers), "kvmio-reporting")
    enrichers.append(FixEnricher(config))
    if config.pluginmanager.hasplugin("allure_pytest") and getattr(config.option, "allure_report_dir", None):
        # Imported here: only where allure-pytest is loaded and enabled.
        from pytest_kvmio.report.allure import AllureKvmio

        allure_kvmio = AllureKvmio(config, config.option.allure_report_dir)
        config.pluginmanager.register(allure_kvmio, "kvmio-allure")
        enrichers.append(allure_kvmio)
    return enrichers


class ReportingPlugin:
    """Count one outcome per item, gate the exit code, extend the JSON summary, print the ticket line."""

    def __init__(self, config: pytest.Config, waivers: WaiverPlugin | None) -> None:
        self.config = config
        self.waivers = waivers
        self.gate = Gate(fail_inconclusive=fail_inconclusive(config))

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Any:
        forced = forced_outcome(report)
        if report.failed:
            return ERROR_STATUS if report.when == "call" and forced == "error" else None
        if not (report.when == "call" or (report.when == "setup" and report.skipped)):
            return None
        return STATUS.get(str(forced)) if forced else None

    # Outer wrapper: gate before the other sessionfinish hooks run (they read session.exitstatus),
    # print the ticket line after the terminal reporter's own summary, so it is the last line.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:

        state = self.config.stash.get(STATE, None)
        # Runs that check nothing with kvmio (e.g. a project's own unit tests) keep pytest's behaviour.
        skip_gate = bool(self.config.getoption("collectonly", False)) or state is None or not state.in_use
        if not skip_gate and state is not None:
            self.gate.counts = Counter(state.collector.outcomes.values())
            session.exitstatus = self.gate.decide(int(session.exitstatus))
        try:
            return (yield)
        finally:
            if not skip_gate:
                self._finish()

    def _finish(self) -> None:
        try:
            self._write_json()
        except OSError as exc:
            self._write(f"kvmio: could not write the JSON summary: {exc}", red=True)
        self._write(self.ticket_line(), bold=True, red=not self.gate.passed, green=self.gate.passed)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.waivers.lines() if self.waivers is not None else []
        if lines:
            terminalreporter.section("kvmio waivers")
            for line in lines:
                terminalreporter.write_line(line)

    def ticket_line(self) -> str:

        state = self.config.stash.get(STATE, None)
        hosts = describe_hosts(state.host_summaries()) if state is not None else ""
        waivers = None
        if self.waivers is not None:
            s = self.waivers.summary()
            waivers = ", ".join(f"{len(s[k])} {k}" for k in ("applied", "expired", "unmatched"))
        return self.gate.line(hosts, run_config(self.config).json_path, waivers)

    def _write(self, line: str, **markup: bool) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line, **markup)

    def _write_json(self) -> None:
        """Write the JSON summary once, at the end: verdicts, hosts, the gate and the waivers."""

        path = run_config(self.config).json_path
        state = self.config.stash.get(STATE, None)
        if not path or state is None:
            return
        verdicts = state.collector.sorted()
        waived = self.waivers.waived_nodeids if self.waivers is not None else {}
        for verdict in verdicts:
            verdict.waiver = verdict.waiver or waived.get(verdict.nodeid)
        write_json(path, verdicts, state.host_summaries(), {
            "exitstatus": self.gate.exitstatus,
            "gate": self.gate.as_dict(),
            "host_cpu_per_io": cpucost.by_io_mode(cpucost.cpu_costs(verdicts)),
            "left_out": state.left_out(),
            "waivers": self.waivers.summary() if self.waivers is not None
            else {"file": None, "applied": [], "expired": [], "unmatched": []},
        }, state.collector.not_applicable)
