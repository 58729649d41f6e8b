"""The `fix` of every failed rule verdict: computed from the target's model, shown in the terminal and Allure."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_kvmio.fix.patch import verdict_fix
from pytest_kvmio.verdict.record import REC_OUTCOME, Enricher, VerdictRecord

#: The record key of a failed verdict's fix.
REC_FIX = "fix"


class FixEnricher(Enricher):
    """Add `fix` to the record of a failed rule verdict; its summary to the failure, its diff to the Allure result."""

    def __init__(self, config: pytest.Config) -> None:
        self.allure = bool(config.pluginmanager.hasplugin("allure_pytest") and getattr(config.option, "allure_report_dir", None))

    def enrich(self, item: pytest.Item, report: pytest.TestReport, record: VerdictRecord, target: Any) -> None:
        if report.when != "call" or not report.failed or record.get(REC_OUTCOME) == "error":
            return
        if target is None or hasattr(report, "wasxfail"):
            return
        fix = verdict_fix(str(record["rule"]), target)
        record[REC_FIX] = fix  # type: ignore[literal-required]
        report.sections.append(("kvmio fix", _text(fix)))
        if self.allure and fix.get("xml_patch"):
            import allure  # here: only where allure-pytest is loaded and enabled

            allure.attach(fix["xml_patch"], "fix.diff", allure.attachment_type.TEXT)


def _text(fix: dict[str, Any]) -> str:
    lines = [f"fix: {fix['summary']}" + (f" (takes effect: {fix['takes_effect']})" if fix.get("takes_effect") else "")]
    lines += [f"  {cmd}" for cmd in (fix.get("virt_xml") or "").splitlines()]
    lines += [f"  host: {cmd}" for cmd in fix.get("host_commands") or []]
    lines += [f"  guest: {cmd}" for cmd in fix.get("guest_commands") or []]
    lines += [f"  or: {alt['summary']}" for alt in fix.get("alternatives") or []]
    return "\n".join(lines)
