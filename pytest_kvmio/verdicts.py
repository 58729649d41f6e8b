"""Verdicts: one record per rule per target, gathered from test reports."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

OUTCOMES = ("passed", "failed", "error", "skipped", "inconclusive", "waived")
#: user_properties keys that carry kvmio data from the worker/test to the report.
PROP_RULE, PROP_SEVERITY, PROP_TARGET, PROP_FACTS, PROP_OUTCOME = (
    "kvmio_rule", "kvmio_severity", "kvmio_target", "kvmio_facts", "kvmio_outcome",
)


@dataclass
class Verdict:
    """The outcome of one rule on one target, with the facts it used."""

    rule: str
    target: str
    outcome: str
    message: str
    severity: str = "normal"
    facts: dict[str, Any] = field(default_factory=dict)
    nodeid: str = ""
    duration: float = 0.0
    waiver: dict[str, Any] | None = None


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # skip: (path, lineno, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    for prefix in ("AssertionError: ", "Failed: "):
        text = text.removeprefix(prefix)
    # pytest appends the introspected expression after the message ("\nassert not True"); drop it.
    return text.split("\nassert ")[0].strip()


class VerdictCollector:
    """Turn test reports of rule-marked items into verdicts (one per test item)."""

    def __init__(self) -> None:
        self.verdicts: dict[str, Verdict] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        rule = props.get(PROP_RULE)
        if rule is None:
            return
        verdict = self.verdicts.get(report.nodeid)
        if verdict is None:
            verdict = self.verdicts[report.nodeid] = Verdict(
                rule=str(rule),
                target=str(props.get(PROP_TARGET, "")),
                outcome="passed",
                message="",
                severity=str(props.get(PROP_SEVERITY, "normal")),
                nodeid=report.nodeid,
            )
        raw_facts = props.get(PROP_FACTS) or {}
        verdict.facts = json.loads(raw_facts) if isinstance(raw_facts, str) else dict(raw_facts)  # type: ignore[call-overload]
        verdict.duration += report.duration
        if report.when == "call" or (report.when == "setup" and not report.passed):
            verdict.outcome = _outcome(report, props)
            verdict.message = _message(report)
        elif report.when == "teardown" and report.failed and verdict.outcome == "passed":
            verdict.outcome, verdict.message = "error", _message(report)
        if report.when == "call" and report.passed and props.get("kvmio_note"):
            verdict.message = str(props["kvmio_note"])

    def sorted(self) -> list[Verdict]:
        return sorted(self.verdicts.values(), key=lambda v: (v.target, v.rule))


def _outcome(report: pytest.TestReport, props: dict[str, Any]) -> str:
    if props.get(PROP_OUTCOME):
        return str(props[PROP_OUTCOME])
    if report.skipped:
        return "skipped"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    return "passed"


def summary_counts(verdicts: list[Verdict]) -> dict[str, dict[str, int]]:
    """Count outcomes per rule."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for verdict in verdicts:
        table[verdict.rule][verdict.outcome] += 1
    return {rule: dict(counts) for rule, counts in sorted(table.items())}


def write_json(path: str, verdicts: list[Verdict], hosts: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """Write the machine-readable summary; the parent directory is created."""
    from pytest_kvmio import __version__

    totals = Counter(v.outcome for v in verdicts)
    document = {
        "kvmio_version": __version__,
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hosts": hosts,
        "totals": {o: totals.get(o, 0) for o in OUTCOMES},
        "rules": summary_counts(verdicts),
        "verdicts": [
            {k: v for k, v in asdict(verdict).items() if k != "duration"} for verdict in verdicts
        ],
        **extra,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(target)


def format_table(verdicts: list[Verdict]) -> list[str]:
    """Return the rules × outcomes table as lines for the terminal."""
    counts = summary_counts(verdicts)
    if not counts:
        return []
    shown = [o for o in OUTCOMES if any(o in c for c in counts.values())]
    width = max(len("rule"), *(len(r) for r in counts))
    lines = ["rule".ljust(width) + "".join(f"  {o:>12}" for o in shown)]
    for rule, c in counts.items():
        lines.append(rule.ljust(width) + "".join(f"  {c.get(o, 0):>12}" for o in shown))
    return lines
