"""The suites on domain XML from other projects (tests/data/domains-world/): hand-judged verdicts, no crash.

The corpus is what management stacks, provisioning tools and cloud templates generate or ship (sources and
licenses in its SOURCE.md), none of it written here and none of it libvirt's own test suite. `expected.yaml`
beside it holds a hand-judged sample of verdicts, each citing the rule text or the libvirt/QEMU source it
follows, grouped by the blind spot it covers (issue 18). The whole folder is linted the way a user would:
`pytest suites/ --domain-xml=tests/data/domains-world`, with a current host assumed and with no host facts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SUITES

CORPUS = Path(__file__).resolve().parent / "data" / "domains-world"
EXPECTED: dict[str, Any] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
RUNS: dict[str, str | None] = EXPECTED["runs"]
OUTCOMES = ("passed", "failed", "skipped", "not-applicable", "left-out", "error")
_CACHE: dict[str, dict[str, Any]] = {}


def lint(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, run: str) -> dict[str, Any]:
    """Lint the whole corpus once per run; return the JSON summary with the exit code and output."""
    if run not in _CACHE:
        out = tmp_path_factory.mktemp(f"world-{run}") / "verdicts.json"
        args = [str(SUITES), "--domain-xml", str(CORPUS), "--kvmio-json", str(out), "-p", "no:cacheprovider",
                "-m", "not perf"]
        if RUNS[run]:
            args += ["--assume", str(RUNS[run])]
        result = pytester.runpytest(*args)
        assert out.exists(), "\n".join(result.outlines[-60:] + result.errlines[-20:])
        doc = json.loads(out.read_text())
        doc["_ret"], doc["_output"] = result.ret, "\n".join(result.outlines + result.errlines)
        _CACHE[run] = doc
    return _CACHE[run]


@pytest.fixture(params=list(RUNS))
def run(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def summary(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, run: str) -> dict[str, Any]:
    return lint(pytester, tmp_path_factory, run)


def _actual(summary: dict[str, Any], entry: dict[str, Any]) -> tuple[str, str]:
    """Return (outcome, message) of a sample entry's rule on its target in a run."""
    target, rule = entry["target"], entry.get("rule")
    if entry["outcome"] == "left-out":
        found = [d for d in summary["left_out"] if d["domain"] == target]
        return ("left-out", found[0]["reason"]) if found else ("judged", "")
    found = [v for v in summary["verdicts"] if v["rule"] == rule and v["target"] == target]
    if found:
        return found[0]["outcome"], str(found[0]["message"])
    return "not-applicable", ""


# --- the corpus and its sample ------------------------------------------------------------------


def test_the_corpus_is_large_and_from_many_projects() -> None:
    files = sorted(p for p in CORPUS.rglob("*.xml"))
    projects = {p.relative_to(CORPUS).parts[0] for p in files}
    assert len(files) >= 60 and len(projects) >= 4, (len(files), projects)
    source = (CORPUS / "SOURCE.md").read_text()
    missing = [str(p.relative_to(CORPUS)) for p in files if str(p.relative_to(CORPUS)) not in source]
    assert not missing, f"files without provenance in SOURCE.md: {missing}"


def test_the_sample_is_hand_judged_cited_and_covers_every_blind_spot() -> None:
    """At least 100 verdicts (an entry is judged in each run it names), 10 or more per blind spot, each cited."""
    sample = EXPECTED["sample"]
    for entry in sample:
        assert entry["outcome"] in OUTCOMES, entry
        assert entry.get("why") and entry.get("cite"), f"no reason or citation: {entry}"
        assert (CORPUS / entry["file"]).is_file(), entry
        assert set(entry.get("runs", RUNS)) <= set(RUNS), entry
    verdicts = Counter(spot for entry in sample for spot in entry["spots"] for _ in entry.get("runs", RUNS))
    assert sum(len(entry.get("runs", RUNS)) for entry in sample) >= 100
    assert all(verdicts[spot] >= 10 for spot in range(1, 6)), verdicts


# --- verdicts -------------------------------------------------------------------------------------


def test_the_sample_verdicts_are_the_hand_judged_ones(summary: dict[str, Any], run: str) -> None:
    wrong = []
    for entry in EXPECTED["sample"]:
        if run not in entry.get("runs", RUNS):
            continue
        outcome, text = _actual(summary, entry)
        says = entry.get("says")
        if outcome != entry["outcome"] or (says and says not in text):
            wrong.append(f"  {entry['target']} {entry.get('rule', '')}: {outcome} ({text[:160]}), "
                         f"expected {entry['outcome']}{f' saying {says!r}' if says else ''} — {entry['why']}")
    assert not wrong, f"run {run}: {len(wrong)} verdict(s) differ from the hand judgement:\n" + "\n".join(wrong)


def test_no_crash_and_only_the_unreadable_files_are_errors(summary: dict[str, Any]) -> None:
    errors = {v["target"] for v in summary["verdicts"] if v["outcome"] == "error"}
    assert errors == set(EXPECTED["unreadable"]), errors ^ set(EXPECTED["unreadable"])
    assert all(v["rule"] == "domain-xml-readable" for v in summary["verdicts"] if v["outcome"] == "error")
    assert "Traceback" not in summary["_output"] and "INTERNALERROR" not in summary["_output"]
    assert summary["_ret"] == pytest.ExitCode.TESTS_FAILED


def test_every_verdict_names_its_file(summary: dict[str, Any]) -> None:
    for verdict in summary["verdicts"]:
        if verdict["target"] == "offline":
            continue  # the host rules: judged on --assume, no file
        assert verdict["source"] and (CORPUS / verdict["source"]).exists() or Path(verdict["source"]).exists()
        if verdict["outcome"] != "passed" or verdict["message"]:
            assert verdict["source"] in verdict["message"], verdict


def test_every_file_is_judged_or_accounted_for(summary: dict[str, Any]) -> None:
    """A folder with unnamed, multi-domain and broken files still judges every other file."""
    seen = {v["source"] for v in summary["verdicts"] if v.get("source")}
    from pytest_kvmio.model.xmlfiles import XmlFile, read_xml_file  # the model reads what the files hold

    seen |= {d["source"] for d in summary["left_out"]}
    unseen = {str(p) for p in CORPUS.rglob("*.xml")} - seen
    for path in sorted(unseen):  # only files that give no rule anything to judge: no data disk, no IOThread
        for domain in read_xml_file(XmlFile(Path(path), Path(path).name)):
            assert not domain.iothread_ids and not [d for d in domain.disks if d.is_storage], path
