"""The rule suites on the domain XML corpus: every verdict is asserted exactly.

`tests/data/domains/expected.json` holds, per file, target and rule, the outcome worked out from
the rules (see its "about" list and the README beside it). The suites run three times through
pytester: with host facts assumed (a current host), without them (host-dependent rules skip) and
with an old host assumed (io_uring unsupported, QEMU's single-queue default).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITES_DIR = REPO / "suites"
CORPUS = Path(__file__).resolve().parent / "data" / "domains"
BAD_CORPUS = Path(__file__).resolve().parent / "data" / "domains-bad"
EXPECTED: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text())
RUNS: dict[str, str | None] = EXPECTED["runs"]
DISK_DOMAIN_RULES = (
    "disk-io-mode-valid", "disk-direct-io-for-async", "disk-native-not-sparse", "disk-io-uring-supported",
    "disk-iothread-assigned", "domain-iothread-pinned", "disk-multiqueue", "disk-discard-unmap", "disk-cache-safe",
)
#: Rules that need host image facts to fail; offline they can only pass (block devices) or skip.
NEEDS_IMAGE_FACTS_TO_FAIL = {"disk-native-not-sparse"}

#: pytester runs are slow-ish (the whole suite); each run is made once per session.
_RUN_CACHE: dict[str, dict[str, Any]] = {}


def _split(value: str) -> tuple[str, str | None]:
    """'failed: io=...' -> ('failed', "io=..."); 'passed' -> ('passed', None)."""
    outcome, sep, mention = value.partition(": ")
    return outcome, (mention if sep else None)


def _outcome_in(value: str | dict[str, str], run: str) -> str:
    return value[run] if isinstance(value, dict) else value


def expected_verdicts(run: str, *, apply_disputes: bool = True) -> dict[tuple[str, str], str]:
    """Return {(rule, target): 'outcome[: mention]'} for one run."""
    out: dict[tuple[str, str], str] = {}
    for target, rules in EXPECTED["host"].items():
        for rule, value in rules.items():
            out[(rule, target)] = _outcome_in(value, run)
    for targets in EXPECTED["files"].values():
        for target, rules in targets.items():
            for rule, value in rules.items():
                out[(rule, target)] = _outcome_in(value, run)
    if apply_disputes:  # rule bugs recorded under "disputed" until they are fixed
        for dispute in EXPECTED["disputed"]:
            out[(dispute["rule"], dispute["target"])] = _outcome_in(dispute["rule_gives"], run)
    return out


def run_suites(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, run: str) -> dict[str, Any]:
    """Run suites/ on the corpus once per run name; return the JSON summary plus exit code and output."""
    if run not in _RUN_CACHE:
        out = tmp_path_factory.mktemp(f"kvmio-{run}") / "verdicts.json"
        args = [str(SUITES_DIR), "--domain-xml", str(CORPUS), "--kvmio-json", str(out), "-p", "no:cacheprovider"]
        if RUNS[run] is not None:
            args += ["--assume", RUNS[run]]
        result = pytester.runpytest(*args)
        assert out.exists(), f"run {run}: no JSON summary written\n" + "\n".join(result.outlines[-40:])
        doc = json.loads(out.read_text())
        doc["_ret"] = result.ret
        doc["_output"] = "\n".join(result.outlines + result.errlines)
        _RUN_CACHE[run] = doc
    return _RUN_CACHE[run]


@pytest.fixture(params=list(RUNS))
def run(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def summary(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, run: str) -> dict[str, Any]:
    return run_suites(pytester, tmp_path_factory, run)


def _offline_skipped(rule: str) -> bool:
    return any(fnmatch.fnmatchcase(rule, glob) for glob in EXPECTED["offline_skipped"]["rules"])


def _diff(actual: set[tuple[str, str, str]], expected: set[tuple[str, str, str]]) -> str:
    lines = [f"  missing    {t} {r}: {o}" for r, t, o in sorted(expected - actual, key=lambda x: (x[1], x[0]))]
    lines += [f"  unexpected {t} {r}: {o}" for r, t, o in sorted(actual - expected, key=lambda x: (x[1], x[0]))]
    return "\n".join(lines)


# --- the corpus itself ------------------------------------------------------------------------


def test_every_corpus_file_has_expectations_and_vice_versa() -> None:
    on_disk = {p.name for p in CORPUS.glob("*.xml")}
    assert on_disk == set(EXPECTED["files"]), (
        f"files without expectations: {sorted(on_disk - set(EXPECTED['files']))}; "
        f"expectations without files: {sorted(set(EXPECTED['files']) - on_disk)}"
    )


def test_every_failed_expectation_names_the_offending_value() -> None:
    for run in RUNS:
        for (rule, target), value in expected_verdicts(run).items():
            outcome, mention = _split(value)
            assert outcome in ("passed", "failed", "skipped", "not-applicable"), f"{target} {rule}: {value!r}"
            assert (outcome == "failed") == bool(mention), f"{target} {rule} ({run}): {value!r}"


@pytest.mark.parametrize("rule", DISK_DOMAIN_RULES)
def test_each_rule_has_a_compliant_and_a_violating_case(rule: str) -> None:
    seen = {_split(v)[0] for run in RUNS for (r, _), v in expected_verdicts(run).items() if r == rule}
    wanted = {"passed", "skipped"} if rule in NEEDS_IMAGE_FACTS_TO_FAIL else {"passed", "failed"}
    assert wanted <= seen, f"{rule}: corpus only gives {sorted(seen)}"


def test_host_dependent_outcomes_differ_only_where_host_facts_matter() -> None:
    """Per-run outcomes are for io_uring support and for QEMU's queue default on unversioned machines."""
    for targets in EXPECTED["files"].values():
        for target, rules in targets.items():
            for rule, value in rules.items():
                if isinstance(value, dict):
                    assert set(value) == set(RUNS), f"{target} {rule}: {sorted(value)}"
                    assert rule in ("disk-io-uring-supported", "disk-multiqueue"), f"{target} {rule}"
                    assert _split(value["no-assume"])[0] == "skipped", f"{target} {rule}"


# --- verdicts of the suites -------------------------------------------------------------------


def test_verdicts_equal_expected(summary: dict[str, Any], run: str) -> None:
    verdicts = [v for v in summary["verdicts"] if not _offline_skipped(v["rule"])]
    actual = {(v["rule"], v["target"], v["outcome"]) for v in verdicts}
    judged = {k: v for k, v in expected_verdicts(run).items() if _split(v)[0] != "not-applicable"}
    expected = {(rule, target, _split(value)[0]) for (rule, target), value in judged.items()}
    assert actual == expected, f"run {run} (--assume {RUNS[run]}):\n{_diff(actual, expected)}"
    assert len(verdicts) == len(actual), "one verdict per rule per target"


def test_domains_of_other_drivers_are_left_out_and_listed(summary: dict[str, Any], run: str) -> None:
    """A domain QEMU does not run (here libvirt's test driver's, linted offline) makes no item; the summary lists it."""
    listed = {entry["domain"]: entry for entry in summary["left_out"]}
    assert set(listed) == set(EXPECTED["left_out"])
    for domain, why in EXPECTED["left_out"].items():
        assert listed[domain]["reason"].startswith(why), listed[domain]
        assert listed[domain]["source"].endswith(domain.split("/")[1].split(":")[0])
        assert not [v for v in summary["verdicts"] if v["target"].startswith(domain)]
    assert "left out: 1 domain(s) not run by QEMU" in summary["_output"]


def test_not_applicable_rules_make_no_item_and_are_counted(summary: dict[str, Any], run: str) -> None:
    """A rule that does not concern a target has no verdict; the summary counts it per rule."""
    absent = [k for k, v in expected_verdicts(run).items() if _split(v)[0] == "not-applicable"]
    assert absent, "the corpus has targets some rule does not concern"
    wanted: dict[str, int] = {}
    for rule, _ in absent:
        wanted[rule] = wanted.get(rule, 0) + 1
    counted = {rule: c.get("not_applicable", 0) for rule, c in summary["rules"].items() if not _offline_skipped(rule)}
    assert {r: n for r, n in counted.items() if n} == wanted
    assert summary["totals"]["not_applicable"] == sum(c.get("not_applicable", 0) for c in summary["rules"].values())


def test_guest_and_perf_rules_make_no_item_offline(summary: dict[str, Any], run: str) -> None:
    """Offline there is no guest and no fio: those rules don't concern any target, so nothing is skipped for them."""
    others = [f"{v['target']} {v['rule']}: {v['outcome']}" for v in summary["verdicts"] if _offline_skipped(v["rule"])]
    assert not others, "\n".join(others)
    disks = sum(1 for targets in EXPECTED["files"].values() for t in targets if t.count("/") == 2)
    for rule in ("guest-scheduler-none", "guest-queues-active", "guest-irq-spread"):
        assert summary["rules"][rule] == {"not_applicable": disks}, rule


def test_exit_code_reports_failed_rules(summary: dict[str, Any], run: str) -> None:
    assert summary["_ret"] == pytest.ExitCode.TESTS_FAILED
    assert summary["exitstatus"] == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in summary["_output"]


def test_failed_verdicts_name_target_and_offending_value(summary: dict[str, Any], run: str) -> None:
    expected = expected_verdicts(run)
    problems = []
    for verdict in summary["verdicts"]:
        if verdict["outcome"] != "failed":
            continue
        _, mention = _split(expected.get((verdict["rule"], verdict["target"]), ""))
        message = verdict["message"]
        if verdict["target"] not in message:
            problems.append(f"{verdict['target']} {verdict['rule']}: message does not name the target: {message!r}")
        if mention is None or mention not in message:
            problems.append(f"{verdict['target']} {verdict['rule']}: {mention!r} not in {message!r}")
    assert not problems, "\n".join(problems)


def test_skipped_verdicts_say_why(summary: dict[str, Any], run: str) -> None:
    silent = [f"{v['target']} {v['rule']}" for v in summary["verdicts"] if v["outcome"] == "skipped" and not v["message"]]
    assert not silent


def test_offline_host_facts_are_the_assumed_ones(summary: dict[str, Any], run: str) -> None:
    (host,) = summary["hosts"]
    assert host["host"] == "offline" and host["offline"] is True
    assumed = dict(item.split("=") for item in RUNS[run].split(",")) if RUNS[run] else {}
    for key in ("kernel", "qemu", "libvirt"):
        assert host[key] == assumed.get(key)


def test_writeback_is_reported_not_failed(summary: dict[str, Any]) -> None:
    """Ceph recommends writeback for RBD: the verdict passes with a note naming the disk."""
    (verdict,) = [
        v for v in summary["verdicts"]
        if v["rule"] == "disk-cache-safe" and v["target"] == "offline/libvirt-nova-rbd.xml:kvmio-corpus-instance-000001f3/vda"
    ]
    assert verdict["outcome"] == "passed"
    assert "cache=writeback" in verdict["message"] and verdict["target"] in verdict["message"]
    assert verdict["facts"]["source"].startswith("rbd:vms/")


def test_disk_verdicts_carry_the_disk_facts(summary: dict[str, Any]) -> None:
    (verdict,) = [
        v for v in summary["verdicts"]
        if v["rule"] == "disk-multiqueue" and v["target"] == "offline/libvirt-san-drift.xml:kvmio-corpus-san-drift/sda"
    ]
    assert verdict["facts"]["controller"] == {"model": "virtio-scsi", "queues": 2, "iothread": None}
    assert verdict["facts"]["vcpus"] == 4


# --- unusable input ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", sorted(p.name for p in BAD_CORPUS.glob("*.xml")))
def test_bad_domain_xml_is_a_usage_error_naming_the_file(pytester: pytest.Pytester, bad: str) -> None:
    path = BAD_CORPUS / bad
    result = pytester.runpytest(str(SUITES_DIR), "--domain-xml", str(path), "-p", "no:cacheprovider")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert str(path) in output
    assert "Traceback" not in output


def test_a_bad_file_in_a_directory_is_an_error_item_and_the_others_are_judged(pytester: pytest.Pytester) -> None:
    """A directory with one malformed file among good ones: that file is an error item naming file and line, the
    good one keeps all its verdicts, and the gate fails (exit 1, not the usage error of a lint that read nothing)."""
    corpus = pytester.mkdir("templates")
    (corpus / "good.xml").write_text((CORPUS / "libvirt-virtmanager.xml").read_text())
    (corpus / "zz-broken.xml").write_text((BAD_CORPUS / "truncated.xml").read_text())
    out = pytester.path / "v.json"
    result = pytester.runpytest(str(SUITES_DIR), "--domain-xml", str(corpus), "--kvmio-json", str(out),
                                "-p", "no:cacheprovider")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in output
    verdicts = json.loads(out.read_text())["verdicts"]
    (error,) = [v for v in verdicts if v["outcome"] == "error"]
    assert (error["rule"], error["target"]) == ("domain-xml-readable", "offline/zz-broken.xml")
    assert error["source"] == str(corpus / "zz-broken.xml")
    assert "zz-broken.xml: line " in error["message"] and "malformed XML" in error["message"]
    good = [v for v in verdicts if v["target"].startswith("offline/good.xml:kvmio-corpus-virtmanager")]
    alone = pytester.runpytest(str(SUITES_DIR), "--domain-xml", str(corpus / "good.xml"), "--kvmio-json",
                               str(pytester.path / "alone.json"), "-p", "no:cacheprovider")
    assert alone.ret == pytest.ExitCode.TESTS_FAILED
    assert good and sorted((v["rule"], v["target"], v["outcome"]) for v in good) == sorted(
        (v["rule"], v["target"], v["outcome"]) for v in json.loads((pytester.path / "alone.json").read_text())["verdicts"]
        if v["target"] != "offline")


def test_a_lint_where_no_file_can_be_read_is_a_usage_error(pytester: pytest.Pytester) -> None:
    corpus = pytester.mkdir("templates")
    (corpus / "a.xml").write_text((BAD_CORPUS / "truncated.xml").read_text())
    (corpus / "b.xml").write_text("<domain type='kvm'>")
    result = pytester.runpytest(str(SUITES_DIR), "--domain-xml", str(corpus), "-p", "no:cacheprovider")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no file could be read" in output and "a.xml" in output and "b.xml" in output
    assert "Traceback" not in output
