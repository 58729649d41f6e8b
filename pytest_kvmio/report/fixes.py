"""The `fix` of every failed rule verdict: computed from the target's model, shown in the terminal and Allure."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_kvmio.collect.targets import item_target
from pytest_kvmio.fix.patch import verdict_fix
from pytest_kvmio.report.record import REC_OUTCOME, record_of

#: The record key of a failed verdict's fix.
REC_FIX = "fix"


class FixPlugin:
    """Add `fix` to the record of a failed rule verdict; its summary to the failure, its diff to the Allure result."""

    def __init__(self, config: pytest.Config) -> None:
        self.allure = bool(config.pluginmanager.hasplugin("allure_pytest") and getattr(config.option, "allure_report_dir", None))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        record = record_of(report)
        if record is None or report.when != "call" or not report.failed or record.get(REC_OUTCOME) == "error":
            return
        target = item_target(item)
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
