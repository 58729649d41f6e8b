"""The rule catalogue is the one list: the suites, the README and `kvmio rules` agree with it."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re

import pytest
import yaml

from pytest_kvmio.verdict.catalogue import RULES, lookup
from tests.conftest import REPO, SUITES, kvmio

ROW = re.compile(
    r"^\| `(?P<id>[^`]+)` \| (?P<level>\w+) \| (?P<severity>\w+) \| (?P<summary>.+?) \| (?P<applies>.+?) \| (?P<cites>.+?) \|$"
)


def suite_rules() -> dict[str, object]:
    """Return rule id -> test function of every rule-marked test in suites/ (perf ids by their pattern)."""
    found: dict[str, object] = {}
    for path in sorted(SUITES.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"kvmio_suite_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_"):
                continue
            marks = [m for m in getattr(func, "pytestmark", []) if m.name == "rule"]
            if marks:
                found[marks[0].args[0]] = func
            elif path.name == "test_perf.py":  # its rule id is set per profile parameter
                found["perf-<profile>"] = func
    return found


def test_every_suite_rule_is_in_the_catalogue_and_every_catalogue_rule_has_a_test() -> None:
    suites = suite_rules()
    assert set(suites) == {rule.id for rule in RULES}


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_the_rules_docstring_is_its_catalogue_reason(rule) -> None:
    func = suite_rules()[rule.id]
    assert inspect.getdoc(func) == rule.reason
    assert lookup(rule.id) is rule


def test_the_readme_tables_are_the_catalogue() -> None:
    rows = [m.groupdict() for line in (REPO / "README.md").read_text().splitlines() if (m := ROW.match(line))]
    assert [r["id"] for r in rows] == [rule.id for rule in RULES]
    for row, rule in zip(rows, RULES):
        assert (row["level"], row["severity"], row["summary"], row["applies"], row["cites"]) == (
            rule.level, rule.severity, rule.summary, rule.applies_when, rule.cites
        ), rule.id


def test_kvmio_rules_prints_the_catalogue() -> None:
    listed = kvmio("rules", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [rule.as_dict() for rule in RULES]
    table = kvmio("rules")
    assert table.returncode == 0 and all(rule.id in table.stdout for rule in RULES)
    assert "applies to: io='native' on a disk QEMU's block layer serves" in table.stdout
    assert "scope from: libvirt src/qemu/qemu_validate.c" in table.stdout


def test_lookup_matches_profile_rules_by_pattern() -> None:
    assert lookup("perf-randread-4k-qd128") is lookup("perf-<profile>")
    assert lookup("perf-baseline").id == "perf-baseline"
    assert lookup("site-own-rule") is None


def test_the_lab_manifest_and_the_corpus_expectations_name_catalogue_rules() -> None:
    """Rule ids in the lab's expected findings and the corpora's expected verdicts all exist in the catalogue."""
    known = {rule.id for rule in RULES}
    manifest = set(re.findall(r"[\"'](\b(?:host|disk|domain|guest)-[a-z0-9-]+)[\"']",
                              (REPO / "pytest_kvmio" / "lab" / "manifest.py").read_text()))
    expected = json.loads((REPO / "tests" / "data" / "domains" / "expected.json").read_text())
    corpus = {rule for targets in [*expected["files"].values(), expected["host"]] for rules in targets.values()
              for rule in rules}
    sample = yaml.safe_load((REPO / "tests" / "data" / "libvirt-qemuxml" / "expected-sample.yaml").read_text())
    libvirt = {rule for targets in sample.values() for rules in targets.values() for rule in rules}
    for name, found in (("lab/manifest.py", manifest), ("expected.json", corpus), ("expected-sample.yaml", libvirt)):
        assert found and found <= known, f"{name}: not in the catalogue: {sorted(found - known)}"
