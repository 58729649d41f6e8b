"""Verdicts: one record per rule per target, gathered from test reports."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypedDict, cast

import pytest

from pytest_kvmio import __version__
from pytest_kvmio.files.atomic import write_atomically

OUTCOMES = ("passed", "failed", "error", "skipped", "inconclusive", "waived")
#: Column of the rules table and key of the JSON summary for targets a rule does not concern (no item).
NOT_APPLICABLE = "not_applicable"
#: Keys a rule (or kvmio's own code) sets on its item's record during the run, see `item_record`.
REC_OUTCOME: Final = "outcome"
REC_NOTE: Final = "note"
REC_WAIVER: Final = "waiver"


class VerdictRecord(TypedDict, total=False):
    """An item's verdict record: built once per report (plugin.pytest_runtest_makereport), read by every reporter."""

    rule: str
    severity: str
    target: str
    source: str | None  # the domain XML file of an offline verdict
    facts: dict[str, Any]
    params: dict[str, Any]  # parameters besides the target (a perf rule's profile and metric)
    outcome: str  # set when kvmio decides it: waived, inconclusive, error
    message: str
    note: str  # shown for a pass (e.g. cache=writeback)
    waiver: dict[str, Any]
    fix: dict[str, Any]  # a failed verdict's fix: summary, xml_patch, virt_xml, host_commands, takes_effect
#: The test report attribute that carries an item's verdict record. A plain JSON-able dict, so it
#: travels from pytest-xdist workers to the controller with the report, and it stays out of JUnit
#: (whose xunit2 family allows no per-testcase properties) and out of `user_properties`.
REPORT_ATTR = "kvmio"

#: Per item: values a rule's verdict used (`kvmio_facts` fixture).
EXTRA_FACTS = pytest.StashKey[dict[str, Any]]()
#: Per item: outcome/note/waiver set while the item runs (`kvmio_record` fixture, waivers, perf).
ITEM_RECORD = pytest.StashKey[dict[str, Any]]()


class Enricher:
    """One step of building a verdict record, applied in the order report.plugin.register declares.

    `adjust` runs on the report before the record is built (a waiver turns a failure into a waived skip);
    `enrich` adds to the built record (a failure's fix, Allure's labels and attachments). `target` is the item's
    kvmio target (None for items that have none), looked up once per report.
    """

    def adjust(self, item: pytest.Item, call: pytest.CallInfo[Any], report: pytest.TestReport, target: Any) -> None:
        """Change the report before its record is built (default: nothing)."""

    def enrich(self, item: pytest.Item, report: pytest.TestReport, record: VerdictRecord, target: Any) -> None:
        """Add to the item's record (default: nothing)."""


def item_record(item: pytest.Item) -> dict[str, Any]:
    """Return the item's mutable record of outcome/note/waiver (created on first use)."""
    return item.stash.setdefault(ITEM_RECORD, {})


#: kvmio's own code: the pytest_kvmio package (this module is pytest_kvmio/verdict/record.py).
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: The suites installed inside the package (pytest_kvmio.suites; in a checkout they are suites/, outside it):
#: rules, whose assertions are verdicts, not kvmio's own.
_SUITES_DIR = _PACKAGE_DIR / "suites"


def is_rule_failure(call: pytest.CallInfo[Any]) -> bool:
    """Return True when a failed call is the rule's own verdict: its assertion or pytest.fail.

    Anything else means kvmio could not judge: an exception of another type (a daemon died, the
    agent timed out, a libvirt error) or an assertion raised inside kvmio's own code (the package,
    except the suites installed in it).
    """
    excinfo = call.excinfo
    if excinfo is None:
        return False
    if excinfo.errisinstance(pytest.fail.Exception):
        return True
    if not excinfo.errisinstance(AssertionError):
        return False
    return _rule_file(str(excinfo.traceback[-1].path)) if excinfo.traceback else True


@functools.lru_cache(maxsize=256)
def _rule_file(raised_in: str) -> bool:
    """Return True for an assertion raised in a file outside kvmio's own code (or in its suites); once per file."""
    path = Path(raised_in).resolve()
    return path.is_relative_to(_SUITES_DIR) or not path.is_relative_to(_PACKAGE_DIR)


def record_of(report: Any) -> VerdictRecord | None:
    """Return the verdict record a test report carries, or None for items that are no kvmio rule."""
    value = getattr(report, REPORT_ATTR, None)
    return cast(VerdictRecord, value) if isinstance(value, dict) else None


def forced_outcome(report: Any) -> str | None:
    """Return the outcome kvmio set for this report (waived, inconclusive, error), if any."""
    record = record_of(report)
    return str(record[REC_OUTCOME]) if record and record.get(REC_OUTCOME) else None


@dataclass
class Verdict:
    """The outcome of one rule on one target, with the facts it used."""

    rule: str
    target: str
    outcome: str
    message: str
    severity: str = "normal"
    source: str | None = None
    #: Parameters besides the target (a perf rule's profile and metric): (rule, target, params) is unique.
    params: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    nodeid: str = ""
    duration: float = 0.0
    waiver: dict[str, Any] | None = None
    #: A failed verdict's fix (report/fixes.py): summary, xml_patch, virt_xml, host_commands, takes_effect.
    fix: dict[str, Any] | None = None


def message_of(report: pytest.TestReport) -> str:
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
    """Turn test reports of rule-marked items into verdicts (one per test item), count not-applicable targets."""

    def __init__(self) -> None:
        self.verdicts: dict[str, Verdict] = {}
        #: nodeid -> the item's outcome as its phases so far decide it, for every item (rule or not): the one fold
        #: of phases into an outcome, read by the verdicts below and by the gate.
        self.outcomes: dict[str, str] = {}
        #: rule id -> number of targets the rule does not concern (no item was made).
        self.not_applicable: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        previous = self.outcomes.get(report.nodeid)
        outcome = item_outcome(report, previous)  # the gate counts these too
        if outcome is not None:
            self.outcomes[report.nodeid] = outcome
        record = record_of(report)
        if record is None:
            return
        verdict = self.verdicts.get(report.nodeid)
        if verdict is None:
            verdict = self.verdicts[report.nodeid] = Verdict(
                rule=str(record["rule"]),
                target=str(record.get("target", "")),
                outcome="passed",
                message="",
                severity=str(record.get("severity", "normal")),
                source=record.get("source"),
                params=dict(record.get("params") or {}),
                nodeid=report.nodeid,
            )
        verdict.facts = dict(record.get("facts") or {})
        verdict.duration += report.duration
        if outcome is not None and outcome != previous:
            verdict.outcome = outcome
            verdict.message = str(record.get("message") or message_of(report))
            if record.get(REC_WAIVER):
                verdict.waiver = dict(record[REC_WAIVER])
            verdict.fix = dict(record["fix"]) if outcome == "failed" and record.get("fix") else None
        if report.when == "call" and report.passed and record.get(REC_NOTE):
            verdict.message = str(record[REC_NOTE])

    def sorted(self) -> list[Verdict]:
        return sorted(self.verdicts.values(), key=lambda v: (v.target, v.rule))


def item_outcome(report: pytest.TestReport, previous: str | None) -> str | None:
    """Fold one phase report into the item's outcome (None: this report does not decide it)."""
    forced = forced_outcome(report)
    if report.failed:
        if previous in ("failed", "error"):
            return previous  # a teardown error after a failed call is still one failed item
        return "failed" if report.when == "call" and forced != "error" else "error"
    if previous is not None:
        return previous
    if report.when == "call" or (report.when == "setup" and report.skipped):
        if forced in ("waived", "inconclusive"):
            return str(forced)
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return "skipped" if report.skipped else "passed"
    return None

def summary_counts(verdicts: list[Verdict], not_applicable: Mapping[str, int] | None = None) -> dict[str, dict[str, int]]:
    """Count outcomes per rule, and the targets each rule does not concern."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for verdict in verdicts:
        table[verdict.rule][verdict.outcome] += 1
    for rule, count in (not_applicable or {}).items():
        if count:
            table[rule][NOT_APPLICABLE] += count
    return {rule: dict(counts) for rule, counts in sorted(table.items())}


def write_json(
    path: str, verdicts: list[Verdict], hosts: list[dict[str, Any]], extra: dict[str, Any],
    not_applicable: Mapping[str, int] | None = None,
) -> None:
    """Write the machine-readable summary; the parent directory is created."""
    totals = Counter(v.outcome for v in verdicts)
    document = {
        "kvmio_version": __version__,
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hosts": hosts,
        "totals": {o: totals.get(o, 0) for o in OUTCOMES} | {NOT_APPLICABLE: sum((not_applicable or {}).values())},
        "rules": summary_counts(verdicts, not_applicable),
        "verdicts": [
            {k: v for k, v in asdict(verdict).items() if k != "duration" and (k != "fix" or v is not None)}
            for verdict in verdicts
        ],
        **extra,
    }
    write_atomically(path, json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


def format_table(verdicts: list[Verdict], not_applicable: Mapping[str, int] | None = None) -> list[str]:
    """Return the rules × outcomes table (with a not-applicable column) as lines for the terminal."""
    counts = summary_counts(verdicts, not_applicable)
    if not counts:
        return []
    shown = [o for o in (*OUTCOMES, NOT_APPLICABLE) if any(o in c for c in counts.values())]
    width = max(len("rule"), *(len(r) for r in counts))
    lines = ["rule".ljust(width) + "".join(f"  {o.replace('_', ' '):>14}" for o in shown)]
    for rule, c in counts.items():
        lines.append(rule.ljust(width) + "".join(f"  {c.get(o, 0):>14}" for o in shown))
    return lines
