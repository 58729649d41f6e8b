"""Allure results of an offline --domain-xml run: labels, attachments, environment, categories; and no Allure."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_kvmio.report.allure import CATEGORIES, REPORT_NAME, executor_from_env
from tests.conftest import REPO, SUITES, write_domain

ALLURE_RC = REPO / "ci" / "allurerc.yaml"
NODE_MODULES = REPO / ".kvmio" / "node" / "node_modules"

#: A perf rule with a synthetic verdict fact (offline: no fio runs), failing below its floor.
PERF_RULE = '''
import pytest

@pytest.mark.rule("perf-randread-4k", severity="critical")
def test_randread_4k_reaches_the_floor(disk, kvmio_facts):
    """Random 4 KiB reads must reach the storage class floor; databases live on them."""
    kvmio_facts["perf"] = {"metric": "iops", "median": 8200, "samples": [8000, 8200, 8500],
                           "limit": 10000, "baseline": 12000, "tolerance": 0.1, "outcome": "failed"}
    assert False, (f"{disk.id}: randread-4k iops: median 8,200 (samples 8,000 8,200 8,500) "
                   "is below floor 10,000 by 18% (nvme-local)")
'''


def allure_run(pytester: pytest.Pytester, xml_dir: Path, *extra: str) -> tuple[pytest.RunResult, Path]:
    """Run the disk suite plus a perf rule against vm01 (cache='unsafe' fails) with --alluredir."""
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'", "vdb": "cache='none' io='native'"})
    (pytester.path / "test_perf_rules.py").write_text(PERF_RULE)
    results = pytester.path / "allure-results"
    result = pytester.runpytest(
        str(SUITES / "test_disks.py"), str(pytester.path / "test_perf_rules.py"), "--domain-xml", str(xml_dir),
        "--assume", "kernel=6.1,qemu=7.2,libvirt=9.0", f"--alluredir={results}", *extra,
    )
    return result, results


def results_by_title(results: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in results.glob("*-result.json"):
        document = json.loads(path.read_text())
        out[document["name"]] = document
    return out


def labels(result: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for label in result["labels"]:
        found.setdefault(label["name"], []).append(label.get("value"))
    return found


def test_rule_results_carry_labels_description_and_attachments(pytester: pytest.Pytester, xml_dir) -> None:
    result, results = allure_run(pytester, xml_dir)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    by_title = results_by_title(results)
    unsafe = by_title["disk-cache-safe on offline/vm01.xml:vm01/vda"]
    assert unsafe["status"] == "failed"
    found = labels(unsafe)
    assert found["epic"] == ["offline"] and found["feature"] == ["vm01"] and found["story"] == ["disk-cache-safe"]
    assert found["suite"] == ["disk-cache-safe"] and found["parentSuite"] == ["disk rules"]
    assert found["severity"] == ["critical"]
    assert "disk-cache-safe" in found["tag"] and found["kvmio_target"] == ["offline/vm01.xml:vm01/vda"]
    assert unsafe["description"].startswith("cache='unsafe' ignores guest flushes")
    attachments = {a["name"]: results / a["source"] for a in unsafe["attachments"]}
    assert {"kvmio_target.domain.xml", "host facts", "verdict facts"} <= set(attachments)
    assert "<name>vm01</name>" in attachments["kvmio_target.domain.xml"].read_text()
    assert json.loads(attachments["host facts"].read_text())["kernel"] == "6.1"
    assert json.loads(attachments["verdict facts"].read_text())["cache"] == "unsafe"

    perf = by_title["perf-randread-4k on offline/vm01.xml:vm01/vda"]
    perf_attachments = {a["name"]: results / a["source"] for a in perf["attachments"]}
    table = perf_attachments["perf: measured vs threshold vs baseline"].read_text()
    assert "8,200" in table and "10,000" in table and "12,000 ± 10%" in table
    assert perf_attachments["perf chart"].read_bytes().startswith(b"\x89PNG")


def test_results_dir_gets_environment_executor_and_categories(pytester: pytest.Pytester, xml_dir, monkeypatch) -> None:
    for name in ("GITLAB_CI", "JENKINS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/hv-acceptance")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    monkeypatch.setenv("GITHUB_RUN_NUMBER", "17")
    monkeypatch.setenv("GITHUB_WORKFLOW", "kvmio")
    _, results = allure_run(pytester, xml_dir)
    env = dict(
        line.split("=", 1) for line in (results / "environment.properties").read_text().splitlines() if line
    )
    assert env["host.offline.kernel"] == "6.1 (assumed)" and env["host.offline.qemu"] == "7.2 (assumed)"
    assert "kvmio.version" in env and env["host.offline.mode"].startswith("offline lint of ")
    executor = json.loads((results / "executor.json").read_text())
    assert executor["type"] == "github" and executor["buildUrl"] == "https://github.com/acme/hv-acceptance/actions/runs/4242"
    categories = json.loads((results / "categories.json").read_text())
    assert [c["name"] for c in categories] == [c["name"] for c in CATEGORIES]


def _category(status: str, message: str) -> str | None:
    for category in CATEGORIES:
        regex = category.get("messageRegex")
        if status in category["matchedStatuses"] and (regex is None or re.fullmatch(str(regex), message)):
            return str(category["name"])
    return None


def test_categories_match_the_messages_kvmio_writes(pytester: pytest.Pytester, xml_dir) -> None:
    _, results = allure_run(pytester, xml_dir)
    by_title = results_by_title(results)

    def category_of(title: str) -> str | None:
        result = by_title[title]
        return _category(result["status"], result["statusDetails"]["message"])

    assert category_of("disk-cache-safe on offline/vm01.xml:vm01/vda") == "Configuration violation"
    assert category_of("perf-randread-4k on offline/vm01.xml:vm01/vda") == "Performance regression"
    assert _category("failed", "Failed: 127.0.0.1:9: cannot run commands via ssh://nobody@127.0.0.1:9 (exit 255): "
                               "ssh: connect to host 127.0.0.1 port 9: Connection refused") == (
        "Unreachable host / infrastructure"
    )
    assert _category("skipped", "randread-4k iops: samples 8,000 12,000 (median 10,000) straddle 10,000 with a spread "
                                "of 40%, over the 25% that allows a verdict; rerun") == "Inconclusive measurement"


def test_allure3_config_carries_the_same_categories_and_groups_by_our_labels() -> None:
    config = yaml.safe_load(ALLURE_RC.read_text())
    assert config["name"] == REPORT_NAME
    # the tree: rule level → rule id → host, i.e. the labels _decorate sets (not the file Allure 3 defaults to)
    assert config["plugins"]["awesome"]["options"]["groupBy"] == ["parentSuite", "suite", "subSuite"]
    rules = config["categories"]
    assert [r["name"] for r in rules] == [c["name"] for c in CATEGORIES]
    for rule, category in zip(rules, CATEGORIES):
        assert rule["matchers"]["statuses"] == category["matchedStatuses"], rule["name"]
        expected = f"^(?:{category['messageRegex']})$" if "messageRegex" in category else None
        assert rule["matchers"].get("message") == expected, rule["name"]


def _allure3_categories(cases: list[tuple[str, str]]) -> tuple[str, list[str | None]]:
    """Load ci/allurerc.yaml with the installed Allure 3 and match (status, message) cases with its own code."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@allurereport" / "core").is_dir():
        pytest.skip("Allure 3 (node + .kvmio/node) not installed; bash scripts/setup.sh installs it")
    script = """
        import { readConfig } from "@allurereport/core";
        import { normalizeCategoriesConfig, matchCategory } from "@allurereport/core-api";
        const config = await readConfig(process.cwd(), process.argv[1], {});
        const categories = normalizeCategoriesConfig(config.categories);
        const names = JSON.parse(process.argv[2]).map(([status, message]) =>
            matchCategory(categories, { status, message, labels: [], flaky: false })?.name ?? null);
        console.log(JSON.stringify({ name: config.name, names }));
    """
    proc = subprocess.run([node, "--input-type=module", "-e", script, str(ALLURE_RC), json.dumps(cases)],
                          cwd=NODE_MODULES.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return out["name"], out["names"]


def test_allure3_puts_each_message_in_the_same_category_as_allure2(pytester: pytest.Pytester, xml_dir) -> None:
    _, results = allure_run(pytester, xml_dir)
    cases = [(r["status"], r.get("statusDetails", {}).get("message", "")) for r in results_by_title(results).values()]
    cases += [
        ("failed", "Failed: 127.0.0.1:9: cannot run commands via ssh://nobody@127.0.0.1:9 (exit 255): Connection refused"),
        ("broken", "hv01: cannot connect to libvirt at qemu+ssh://hv01/system: timed out"),
        ("skipped", "randread-4k iops: samples 8,000 12,000 straddle 10,000; rerun"),
        ("failed", "AssertionError: randread-4k iops: median 8,200\nis below baseline 12,000 by 32%"),
        ("failed", "AssertionError: hv01: vm.swappiness is 60\nassert 60 <= 10"),
        ("failed", "TimeoutError: AssertionError raised later"),  # Allure 2 matches from the start: no category
        ("broken", "KeyError: 'disk'"),
        ("skipped", "Skipped: offline/vm01.xml:vm01/vda: io is not native"),
        ("passed", ""),
    ]
    name, allure3 = _allure3_categories(cases)
    assert name == REPORT_NAME
    defaults = {"failed": "Product errors", "broken": "Test errors"}  # Allure's own, for what matches nothing
    allure2 = [_category(status, message) or defaults.get(status) for status, message in cases]
    assert allure3 == allure2, [c for c, a, b in zip(cases, allure3, allure2) if a != b]
    assert "Configuration violation" in allure3 and "Performance regression" in allure3


def test_a_waived_failure_is_skipped_and_tagged_in_allure(pytester: pytest.Pytester, xml_dir) -> None:
    waivers = pytester.path / "waivers.yaml"
    waivers.write_text(
        "- {rule: disk-cache-safe, target: 'offline/vm01.xml:vm01/vda', justification: scratch VM with disposable data,"
        " expires: 2099-01-01, ticket: CHG-1}\n"
    )
    _, results = allure_run(pytester, xml_dir, "--waivers", str(waivers))
    waived = results_by_title(results)["disk-cache-safe on offline/vm01.xml:vm01/vda"]
    assert waived["status"] == "skipped"
    assert labels(waived)["kvmio_outcome"] == ["waived"] and "waived" in labels(waived)["tag"]
    assert "Waived" in waived["description"] and "CHG-1" in waived["description"]
    assert "waiver" in {a["name"] for a in waived["attachments"]}


def test_no_charts_without_matplotlib_said_once(pytester: pytest.Pytester, xml_dir) -> None:
    (pytester.path / "conftest.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    result, results = allure_run(pytester, xml_dir)
    perf = results_by_title(results)["perf-randread-4k on offline/vm01.xml:vm01/vda"]
    assert "perf chart" not in {a["name"] for a in perf["attachments"]}
    assert result.stdout.str().count("matplotlib is not installed; perf charts were left out") == 1


@pytest.mark.parametrize("args", [["-p", "no:allure_pytest"], []], ids=["allure-pytest-disabled", "no-alluredir"])
def test_without_allure_nothing_breaks(pytester: pytest.Pytester, xml_dir, args: list[str]) -> None:
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'"})
    result = pytester.runpytest_subprocess(str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), *args)
    result.assert_outcomes(passed=1, skipped=1, failed=2)  # four disk rules do not concern vda: no item
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert not (pytester.path / "allure-results").exists()


def test_executor_is_read_from_each_ci() -> None:
    gitlab = executor_from_env({"GITLAB_CI": "true", "CI_JOB_URL": "https://gl/j/1", "CI_PIPELINE_IID": "5"})
    assert gitlab is not None and gitlab["type"] == "gitlab" and gitlab["buildUrl"] == "https://gl/j/1"
    jenkins = executor_from_env({"JENKINS_URL": "https://ci/", "BUILD_URL": "https://ci/job/k/3/", "BUILD_NUMBER": "3"})
    assert jenkins is not None and jenkins["reportUrl"] == "https://ci/job/k/3/allure/"
    assert executor_from_env({}) is None


def test_class_limits_show_as_floor_or_ceiling_in_the_table() -> None:
    from pytest_kvmio.report.allure import comparison_html, limit_edges

    assert limit_edges({"floor": 1000, "ceiling": None, "class": "lab-tcg"}) == [("floor", 1000.0)]
    assert limit_edges(250.0) == [("threshold", 250.0)]
    assert limit_edges(None) == []
    page = comparison_html([{"metric": "iops", "median": 900.0, "samples": [880.0, 900.0, 950.0],
                             "limit": {"floor": 1000, "ceiling": None, "class": "lab-tcg"}, "outcome": "failed"}])
    assert "<td>floor 1,000 (lab-tcg)</td>" in page and "<meta charset='utf-8'>" in page
