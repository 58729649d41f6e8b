"""Error items for domain XML files that offline lint could not read: one per file, naming file, line and why.

A lint of a template tree judges every file it can; a file that can't be read or parsed (malformed XML,
entities refused, no <domain>, a value libvirt would refuse to parse) becomes one item whose outcome is
*error* (kvmio could not judge it), so the gate fails and the JSON summary, JUnit and Allure list it,
while every other file still gets its verdicts.
"""

from __future__ import annotations

import pytest

from pytest_kvmio.model.xmlfiles import FileProblem

#: The rule id of these items in verdicts, waivers (not waivable: an error) and `--kvmio-rule`.
RULE_ID = "domain-xml-readable"


class UnreadableXml(Exception):
    """A domain XML file could not be read; the message names file, line and reason."""


class UnreadableXmlItem(pytest.Item):
    """One unreadable domain XML file, reported as an error."""

    def __init__(self, *, problem: FileProblem, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.problem = problem
        self.add_marker(pytest.mark.rule(RULE_ID, severity="blocker"))
        self.extra_keyword_matches.add(RULE_ID)

    def runtest(self) -> None:
        raise UnreadableXml(f"{self.problem.reason}; fix the file (every other file was judged)")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: object = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return self.problem.path, None, f"{RULE_ID}[{self.target}]"

    @property
    def target(self) -> str:
        return f"offline/{self.problem.rel}"


def items_for(session: pytest.Session, problems: list[FileProblem]) -> list[pytest.Item]:
    """Return one error item per unreadable file."""
    return [
        UnreadableXmlItem.from_parent(  # type: ignore[arg-type]
            session, name=f"{RULE_ID}[offline/{p.rel}]", nodeid=f"{p.path}::{RULE_ID}[offline/{p.rel}]", problem=p)
        for p in problems
    ]
