"""Waivers: accepted deviations from a rule on matching targets, each valid until an expiry date.

A waiver applies to a *failed call* of a rule-marked test whose rule id equals the waiver's rule
and whose target id (`hv01`, `hv01/vm01`, `hv01/vm01/vdb`) matches the waiver's glob (`fnmatch`,
so `*` also matches `/`). The waiver is valid through its `expires` day. A waived report is turned
into a skip whose reason names the waiver, and the item's verdict record gets outcome `waived` and
the waiver, so pytest, JUnit (the skip message), the JSON summary and Allure all show "waived" and the
gate does not count it as a failure. Errors (unreachable hosts, broken fixtures, a daemon that died
during the rule) are never waived: only a rule's own failed check is.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.files.yamldoc import YamlFileError, read_yaml, schema_errors
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.verdict.catalogue import rule_of
from pytest_kvmio.verdict.record import (
    EXTRA_FACTS,
    REC_OUTCOME,
    REC_WAIVER,
    Enricher,
    is_rule_failure,
    item_record,
    message_of,
)

WAIVED = "waived"


@dataclass
class Waiver:
    """One accepted deviation: rule, target glob, why, until when, and the ticket that tracks it."""

    rule: str
    target: str
    justification: str
    expires: dt.date
    ticket: str | None = None
    #: perf-history: the run id of the one change point it accepts (None: any failure of the rule on the target).
    change_point: str | None = None
    where: str = ""  # "waivers.yaml[2]"
    waived: list[str] = field(default_factory=list)  # targets whose failure it waived
    would_waive: list[str] = field(default_factory=list)  # failures it would cover were it not expired

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def matches(self, rule: str, target: str, change_point: str | None = None) -> bool:
        """Return True when the waiver covers a failure of `rule` on `target` (at `change_point`, when it names one)."""
        if self.change_point is not None and change_point != self.change_point:
            return False
        return rule == self.rule and fnmatch.fnmatchcase(target, self.target)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule, "target": self.target, "justification": self.justification,
            "expires": self.expires.isoformat(), "where": self.where,
        }
        if self.ticket:
            out["ticket"] = self.ticket
        if self.change_point:
            out["change_point"] = self.change_point
        return out

    def describe(self) -> str:
        ticket = f", {self.ticket}" if self.ticket else ""
        if self.change_point:
            ticket += f", change point at run {self.change_point}"
        return f"{self.rule} on {self.target} (until {self.expires.isoformat()}{ticket})"


def _format_path(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text or "(top level)"


def _dates_to_text(document: Any) -> Any:
    """YAML reads unquoted 2026-01-31 as a date; the schema checks text, so give it text."""
    if isinstance(document, list):
        return [_dates_to_text(v) for v in document]
    if isinstance(document, dict):
        return {k: _dates_to_text(v) for k, v in document.items()}
    if isinstance(document, dt.date):
        return document.isoformat()
    return document


def load_waivers(path: str | Path, source: str = "--waivers") -> list[Waiver]:
    """Read and validate a waivers file; any problem is a UsageError naming the file and the path in it."""
    label = f"{source}: {path}"
    try:
        document = read_yaml(path)  # dates stay text: an impossible one is reported below, with its entry
    except YamlFileError as exc:
        cause = exc.cause
        if isinstance(cause, (OSError, UnicodeError)):
            raise pytest.UsageError(f"{label}: cannot read: {getattr(cause, 'strerror', None) or cause}") from None
        mark = getattr(cause, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(cause, "problem", None) or str(cause)
        raise pytest.UsageError(f"{label}: not valid YAML{where}: {problem}") from None
    if document is None:
        document = []
    document = _dates_to_text(document)
    errors = schema_errors("waivers", document)
    if errors:
        error = errors[0]
        raise pytest.UsageError(
            f"{label}: {_format_path(error.absolute_path)}: {error.message}"
            " (expected a list of {rule, target, justification, expires: YYYY-MM-DD, ticket})"
        )
    waivers = []
    for index, entry in enumerate(document):
        try:
            expires = dt.date.fromisoformat(entry["expires"])
        except ValueError:
            raise pytest.UsageError(
                f"{label}: [{index}].expires: {entry['expires']!r} is not a calendar date (YYYY-MM-DD)"
            ) from None
        waivers.append(
            Waiver(
                rule=entry["rule"], target=entry["target"], justification=entry["justification"].strip(),
                expires=expires, ticket=entry.get("ticket"), where=f"{Path(path).name}[{index}]",
                change_point=entry.get("change_point"),
            )
        )
    return waivers


def _change_point(item: pytest.Item) -> str | None:
    """Return the run of the change point a failed perf-history item names (its verdict facts), else None."""
    history = item.stash.get(EXTRA_FACTS, {}).get("history")
    change = history.get("change_point") if isinstance(history, dict) else None
    return str(change["run"]) if isinstance(change, dict) and change.get("run") is not None else None


class WaiverPlugin(Enricher):
    """Apply waivers to failed rule reports and remember which waivers applied, expired or matched nothing."""

    def __init__(self, waivers: list[Waiver], path: str, today: dt.date | None = None) -> None:
        self.waivers = waivers
        self.path = path
        self.today = today or dt.date.today()
        self.waived_nodeids: dict[str, dict[str, Any]] = {}

    def find(self, rule: str, target: str, change_point: str | None = None) -> Waiver | None:
        """Return the first valid waiver for (rule, target[, change point]); note expired ones that would have matched."""
        found = None
        for waiver in self.waivers:
            if not waiver.matches(rule, target, change_point):
                continue
            if waiver.expired(self.today):
                waiver.would_waive.append(target)
            elif found is None:
                found = waiver
        return found

    def adjust(self, item: pytest.Item, call: pytest.CallInfo[Any], report: pytest.TestReport, target: Any) -> None:
        """Turn a failed rule check that a waiver covers into a waived skip (before the record is built, so every
        reporter, allure-pytest and JUnit included, sees the waived report)."""
        if report.when != "call" or not report.failed or hasattr(report, "wasxfail"):
            return
        if not is_rule_failure(call):
            return  # kvmio could not judge: an error, not a deviation to accept
        rule = rule_of(item)
        if rule is None or target is None:
            return
        waiver = self.find(rule[0], target.id, _change_point(item))
        if waiver is None:
            return
        waiver.waived.append(target.id)
        failure = report.longreprtext.strip()
        message = message_of(report)
        record = waiver.as_dict() | {"failure": message}
        self.waived_nodeids[report.nodeid] = record
        path, lineno, _ = report.location
        report.outcome = "skipped"
        report.longrepr = (str(path), (lineno or 0) + 1, f"Skipped: waived by {waiver.where} ({waiver.describe()}): {message}")
        report.sections.append(("kvmio waived failure", failure))
        item_record(item).update({REC_OUTCOME: WAIVED, REC_WAIVER: record})

    def summary(self) -> dict[str, Any]:
        """Return the waivers section of the JSON summary."""
        applied = [w.as_dict() | {"targets": sorted(set(w.waived))} for w in self.waivers if w.waived]
        expired = [
            w.as_dict() | {"would_waive": sorted(set(w.would_waive))} for w in self.waivers if w.expired(self.today)
        ]
        unmatched = [w.as_dict() for w in self.waivers if not w.waived and not w.expired(self.today)]
        return {"file": self.path, "applied": applied, "expired": expired, "unmatched": unmatched}

    def lines(self) -> list[str]:
        """Return the terminal lines about waivers (applied, expired, matched nothing)."""
        out = []
        for w in self.waivers:
            if w.waived:
                out.append(f"waived   {w.describe()}: {', '.join(sorted(set(w.waived)))} — {w.justification}")
        for w in self.waivers:
            if w.expired(self.today):
                hit = f"; it would cover {', '.join(sorted(set(w.would_waive)))}" if w.would_waive else ""
                out.append(f"EXPIRED  {w.describe()} [{w.where}] no longer applies{hit}")
        for w in self.waivers:
            if not w.waived and not w.expired(self.today):
                out.append(f"unused   {w.describe()} [{w.where}] matched no failure; remove it if the deviation is fixed")
        return out


def resolve(config: pytest.Config) -> WaiverPlugin | None:
    """Load the waivers named by --waivers (or KVMIO_WAIVERS); None when there are none."""
    run = run_config(config)
    value, source = run.waivers, run.sources["waivers"]
    if not value:
        return None
    path = str(value)
    if not Path(path).is_file():
        raise pytest.UsageError(f"{source}: {path}: no such file")
    return WaiverPlugin(load_waivers(path, source), path)
