"""Issue 6's acceptance on the lab: ci/kvmio-gate.sh against the running lab, its Allure HTML report in headless
Chromium: the tree grouped by rule level → rule → host, a seeded failure with its attachments, a real perf
measurement's comparison table and chart. Screenshots go to test-results/lab-*.png (a CI artifact).

Kept short (about a minute): two domains (kvmio-lab-good, kvmio-lab-legacy), every non-perf rule, and one perf
profile on one scratch disk (kvmio-lab-good/vdc, storage class lab-tcg) with short fio runs. The -k expression
has spaces, so it reaches the gate through KVMIO_PYTEST_ARGS_FILE (one argument per line).
The offline variant, which needs no lab, is tests/test_allure_report_browser.py.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.report.allure import REPORT_NAME
from tests.conftest import REPO, SUITES
from tests.test_allure_report_browser import (
    ALLURE,
    ARTIFACTS,
    chromium,
    serve_report,
    text_of,
    tree_paths,
)

pytestmark = [pytest.mark.integration, pytest.mark.lab]

GOOD, LEGACY = "kvmio-lab-good", "kvmio-lab-legacy"
PROFILE = "randread-4k-qd32x4"  # lab-tcg limits: iops floor, lat_p99_us ceiling, errors ceiling
SCRATCH = f"local/{GOOD}/vdc"  # serial kvmio-scratch-0
FAILED = f"disk-cache-safe on local/{LEGACY}/vdd"  # seeded: cache='unsafe'
PERF = f"perf-{PROFILE} on {SCRATCH}"
#: Every non-perf rule; of the perf items only PROFILE on the good domain's scratch disk (test ids look like
#: test_profile_meets_the_class_limits[randread-4k-qd32x4-iops-local/kvmio-lab-good/vdc]); `not perf`
#: keeps exactly what `-m "not perf"` keeps (no other test name contains "perf").
SELECT = f"not perf or ({PROFILE} and {SCRATCH})"
SHORT_FIO = "--fio-runtime 2 --fio-ramp-time 1 --fio-repeat 3"


@pytest.fixture(scope="module")
def lab_gate(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if not ALLURE.exists():
        pytest.skip(f"Allure CLI not installed at {ALLURE} (bash scripts/setup.sh installs it)")
    for name in (GOOD, LEGACY):
        assert lab["domains"][name]["running"], f"{name} is not running after `kvmio lab up`"
    work = tmp_path_factory.mktemp("lab-gate")
    (work / "pytest-args").write_text(f"-k\n{SELECT}\n")
    out = work / "out"
    env = os.environ | {
        "KVMIO_HOST": "local", "KVMIO_SUITES": str(SUITES), "KVMIO_OUT": str(out),
        "KVMIO_PYTEST_ARGS": f"--domain={GOOD} --domain={LEGACY} {SHORT_FIO} -p no:randomly",
        "KVMIO_PYTEST_ARGS_FILE": str(work / "pytest-args"),
    }
    for name in ("KVMIO_DOMAIN_XML", "KVMIO_WAIVERS", "KVMIO_ALLURE", "KVMIO_ALLURE_CONFIG"):
        env.pop(name, None)
    proc = subprocess.run(["bash", str(REPO / "ci" / "kvmio-gate.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    return proc, out


@pytest.fixture(scope="module")
def lab_report(lab_gate) -> Path:
    proc, out = lab_gate
    report = out / "allure-report"
    assert (report / "index.html").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return report


@pytest.fixture(scope="module")
def lab_served(lab_report: Path) -> Iterator[str]:
    with serve_report(lab_report) as url:
        yield url


def _results(report: Path, title: str) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted((report / "data" / "test-results").glob("*.json"))]
    found = [r for r in found if r.get("name") == title]
    assert found, f"{title}: not in the report"
    return found


def _param(result: dict[str, Any], name: str) -> str | None:
    for p in result.get("parameters") or []:
        if p.get("name") == name:
            return str(p.get("value")).strip("'")
    return None


def _attachments(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map attachment name → its link ({id, ext, contentType, ...}), from the result's steps at any depth."""
    found: dict[str, dict[str, Any]] = {}

    def walk(steps: list[dict[str, Any]]) -> None:
        for step in steps:
            link = step.get("link")
            if step.get("type") == "attachment" and link:
                found[link["name"]] = link
            walk(step.get("steps") or [])

    walk(result.get("steps") or [])
    return found


def _screenshot(url: str, tmp_path: Path, name: str, min_size: int = 10_000) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(url, tmp_path, f"--screenshot={ARTIFACTS / name}")
    assert (ARTIFACTS / name).stat().st_size > min_size, name


def test_the_gate_checks_the_lab_and_fails_on_its_seeded_findings(lab_gate) -> None:
    proc, out = lab_gate
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^kvmio: FAIL — \d+ failed, .* on local \(kernel .*\); verdicts: .*verdicts\.json$",
                     proc.stdout, re.M), proc.stdout[-3000:]
    verdicts = json.loads((out / "verdicts.json").read_text())["verdicts"]
    outcomes = {(v["rule"], v["target"]): v["outcome"] for v in verdicts}
    assert outcomes[("disk-cache-safe", f"local/{LEGACY}/vdd")] == "failed"
    assert outcomes[("disk-cache-safe", f"local/{GOOD}/vdb")] == "passed"
    assert not [v for v in verdicts if v["outcome"] == "error"], [v for v in verdicts if v["outcome"] == "error"]
    # The selection: only the two domains, and fio measured one profile on one disk.
    assert {v["target"].split("/")[1] for v in verdicts if v["target"].count("/") >= 1} == {GOOD, LEGACY}
    perf = {(v["rule"], v["target"]) for v in verdicts if v["rule"].startswith("perf-")}
    assert perf and all(target == SCRATCH for _, target in perf), perf
    assert ("perf-baseline", SCRATCH) not in perf or outcomes[("perf-baseline", SCRATCH)] == "skipped"
    assert outcomes[(f"perf-{PROFILE}", SCRATCH)] in ("passed", "failed"), outcomes[(f"perf-{PROFILE}", SCRATCH)]
    assert "kvmio-gate: exit 1" in proc.stdout


def test_lab_report_tree_shows_the_rule_groups(lab_report: Path, lab_served: str, tmp_path: Path) -> None:
    paths = tree_paths(lab_report)
    assert paths[FAILED] == ["disk rules", "disk-cache-safe", "local"]
    assert paths[PERF] == ["disk rules", f"perf-{PROFILE}", "local"]
    assert paths[f"domain-iothread-pinned on local/{GOOD}"] == ["domain rules", "domain-iothread-pinned", "local"]
    assert {path[0] for path in paths.values()} == {"host rules", "domain rules", "disk rules"}, paths
    # As rendered: Allure opens the groups holding failures, so the seeded failure shows under level → rule → host.
    text = text_of(chromium(lab_served, tmp_path, "--dump-dom"))
    assert REPORT_NAME in text
    assert "test_disks.py" not in text and "test_perf.py" not in text  # not Allure 3's default tree by file
    assert re.search(rf"disk rules [\d ]+ .*? disk-cache-safe [\d ]+ local [\d ]+ .*?{re.escape(FAILED)}", text), text[:3000]
    assert "host.local.qemu" in text  # environment.properties from the real host
    _screenshot(lab_served, tmp_path, "lab-allure-overview.png")


def test_lab_report_failed_rule_shows_its_message_and_attachments(lab_report: Path, lab_served: str,
                                                                  tmp_path: Path) -> None:
    (result,) = _results(lab_report, FAILED)
    assert result["status"] == "failed"
    attachments = _attachments(result)
    assert {"kvmio_target.domain.xml", "host facts", "verdict facts"} <= set(attachments), attachments
    link = attachments["kvmio_target.domain.xml"]
    xml = (lab_report / "data" / "attachments" / f"{link['id']}{link['ext']}").read_text()
    assert f"<name>{LEGACY}</name>" in xml and "cache='unsafe'" in xml.replace('"', "'"), xml[:2000]
    url = f"{lab_served}#{result['id']}"
    text = text_of(chromium(url, tmp_path, "--dump-dom"))
    assert FAILED in text and "Failed" in text and "Configuration violation" in text  # its category
    assert f"local/{LEGACY}/vdd: cache='unsafe' ignores guest flushes" in html.unescape(text), text[:3000]
    for name in ("kvmio_target.domain.xml application/xml", "host facts application/json",
                 "verdict facts application/json"):
        assert name in text, name
    _screenshot(url, tmp_path, "lab-allure-failed-rule.png")


def _perf_result(report: Path) -> dict[str, Any]:
    (result,) = [r for r in _results(report, PERF) if _param(r, "metric") == "iops"]
    return result


def _table_row(served: str, table: dict[str, Any], tmp_path: Path) -> re.Match[str]:
    """The iops row of the comparison table as headless Chromium shows the attachment the report serves."""
    url = f"{served.rsplit('/', 1)[0]}/data/attachments/{table['id']}{table['ext']}"
    text = text_of(chromium(url, tmp_path, "--dump-dom"))
    # metric | measured (median) | samples (3 runs) | threshold | baseline | outcome; "—" is an empty cell
    row = re.search(r"measured \(median\) samples threshold baseline outcome "
                    r"iops (?P<median>[\d,]+) (?P<samples>[\d,]+, [\d,]+, [\d,]+) (?P<threshold>.+?) (?P<baseline>\S+) "
                    r"(?P<outcome>passed|failed)", text)
    assert row, text
    return row


def test_lab_report_perf_rule_has_its_comparison_table_and_chart(lab_report: Path, lab_served: str,
                                                                 tmp_path: Path) -> None:
    result = _perf_result(lab_report)
    assert result["status"] in ("passed", "failed"), result["status"]
    attachments = _attachments(result)
    chart, table = attachments["perf chart"], attachments["perf: measured vs threshold vs baseline"]
    assert chart["contentType"] == "image/png" and table["contentType"] == "text/html"
    png = lab_report / "data" / "attachments" / f"{chart['id']}{chart['ext']}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000

    url = f"{lab_served}#{result['id']}"
    text = text_of(chromium(url, tmp_path, "--dump-dom"))
    assert PERF in text and result["status"].capitalize() in text
    for name in ("verdict facts application/json", "perf: measured vs threshold vs baseline text/html",
                 "perf chart image/png"):
        assert name in text, name
    _screenshot(url, tmp_path, "lab-allure-perf-rule.png")

    # The attachments as the report serves them (Allure shows them collapsed): the table of the real fio runs, the chart.
    row = _table_row(lab_served, table, tmp_path)
    assert row["outcome"] == result["status"]
    assert int(row["median"].replace(",", "")) > 0
    base = lab_served.rsplit("/", 1)[0]
    _screenshot(f"{base}/data/attachments/{table['id']}{table['ext']}", tmp_path, "lab-allure-perf-table.png", 2_000)
    _screenshot(f"{base}/data/attachments/{chart['id']}{chart['ext']}", tmp_path, "lab-allure-perf-chart.png", 5_000)


def test_lab_report_perf_table_shows_the_class_floor(lab_report: Path, lab_served: str, tmp_path: Path) -> None:
    table = _attachments(_perf_result(lab_report))["perf: measured vs threshold vs baseline"]
    # lab-tcg: randread-4k-qd32x4 iops floor (perf facts carry the class limit as {floor, ceiling, class}).
    assert _table_row(lab_served, table, tmp_path)["threshold"] == "floor 1,000 (lab-tcg)"
