"""ci/kvmio-gate.sh for real, then its Allure HTML report in headless Chromium: the tree grouped by our labels
(rule level → rule → host, not by file), our categories, a failed rule with attachments, a perf chart.
Offline --domain-xml run with a synthetic perf verdict fact (no lab needed). Screenshots go to test-results/."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_kvmio.report.allure import REPORT_NAME
from tests.conftest import REPO, SUITES, write_domain
from tests.test_allure import PERF_RULE

ALLURE = REPO / ".kvmio" / "node" / "node_modules" / ".bin" / "allure"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-results"


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if not ALLURE.exists():
        pytest.skip(f"Allure CLI not installed at {ALLURE} (bash scripts/setup.sh installs it)")
    work = tmp_path_factory.mktemp("gate")
    xml_dir = work / "domains"
    xml_dir.mkdir()
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'", "vdb": "cache='none' io='native'"})
    (work / "test_perf_rules.py").write_text(PERF_RULE)
    out = work / "out"
    env = os.environ | {
        "KVMIO_DOMAIN_XML": str(xml_dir), "KVMIO_SUITES": f"{SUITES / 'test_disks.py'} {work / 'test_perf_rules.py'}",
        "KVMIO_OUT": str(out), "KVMIO_PYTEST_ARGS": f"--assume kernel=6.1,qemu=7.2,libvirt=9.0 --rootdir {work}",
    }
    for name in ("KVMIO_HOST", "KVMIO_ALLURE", "KVMIO_ALLURE_CONFIG"):  # the shipped defaults are under test
        env.pop(name, None)
    proc = subprocess.run(["bash", str(REPO / "ci" / "kvmio-gate.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, out


#: A stand-in Allure CLI: prints $FAKE_VERSION for --version, logs its arguments, exits $FAKE_STATUS.
FAKE_ALLURE = """#!/bin/sh
if [ "$1" = --version ]; then echo "$FAKE_VERSION"; exit 0; fi
echo "$@" >"$FAKE_LOG"
exit "$FAKE_STATUS"
"""


@pytest.mark.parametrize("version, status", [("2.29.0", 0), ("3.18.0", 1)], ids=["allure2", "allure3-fails"])
def test_the_gate_passes_the_config_to_allure3_only_and_ignores_report_failures(
    tmp_path: Path, version: str, status: int
) -> None:
    fake = tmp_path / "allure"
    fake.write_text(FAKE_ALLURE)
    fake.chmod(0o755)
    xml_dir = tmp_path / "domains"
    xml_dir.mkdir()
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'"})
    env = os.environ | {
        "KVMIO_DOMAIN_XML": str(xml_dir), "KVMIO_SUITES": str(SUITES / "test_disks.py"), "KVMIO_OUT": str(tmp_path / "out"),
        "KVMIO_PYTEST_ARGS": f"--assume kernel=6.1,qemu=7.2,libvirt=9.0 --rootdir {tmp_path}", "KVMIO_ALLURE": str(fake),
        "FAKE_VERSION": version, "FAKE_STATUS": str(status), "FAKE_LOG": str(tmp_path / "allure-args"),
    }
    for name in ("KVMIO_HOST", "KVMIO_ALLURE_CONFIG"):
        env.pop(name, None)
    proc = subprocess.run(["bash", str(REPO / "ci" / "kvmio-gate.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    args = (tmp_path / "allure-args").read_text().split()
    assert args[:2] == ["generate", str(tmp_path / "out" / "allure-results")]
    if version.startswith("2."):  # Allure 2's --config is its own; it reads categories.json from the results
        assert "--config" not in args
        assert "kvmio-gate: Allure report in" in proc.stdout
    else:
        assert args[-2:] == ["--config", "ci/allurerc.yaml"]
        assert "allure generate failed" in proc.stderr and "the gate is unaffected" in proc.stderr
    assert proc.returncode == 1 and "kvmio-gate: exit 1" in proc.stdout, proc.stdout[-2000:] + proc.stderr


def test_the_gate_script_runs_the_suites_and_writes_every_report(gate_run) -> None:
    proc, out = gate_run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^kvmio: FAIL — \d+ failed, .* on offline lint \(assumed kernel 6.1, QEMU 7.2, libvirt 9.0\); "
                     r"verdicts: .*verdicts.json$", proc.stdout, re.M), proc.stdout[-2000:]
    assert (out / "junit.xml").is_file()
    assert json.loads((out / "verdicts.json").read_text())["gate"]["exitstatus"] == 1
    assert (out / "allure-report" / "index.html").is_file(), proc.stdout + proc.stderr
    assert "kvmio-gate: exit 1" in proc.stdout


@contextlib.contextmanager
def serve_report(report: Path) -> Iterator[str]:
    """Serve an Allure HTML report over loopback HTTP (it fetches its data, so file:// won't do); yield its URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(report))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def served(gate_run) -> Iterator[str]:
    with serve_report(gate_run[1] / "allure-report") as url:
        yield url


def chromium(url: str, tmp_path: Path, *mode: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (bash scripts/setup.sh installs it)")
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--window-size=1400,1800", *mode, url,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return proc.stdout


def text_of(dom: str) -> str:
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_report_shows_rule_groups(served: str, tmp_path: Path) -> None:
    text = text_of(chromium(served, tmp_path, "--dump-dom"))
    assert REPORT_NAME in text  # ci/allurerc.yaml reached Allure 3
    assert "disk rules" in text and "disk-cache-safe" in text and "disk-iothread-assigned" in text
    assert "kvmio.version" in text  # environment.properties
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(served, tmp_path, f"--screenshot={ARTIFACTS / 'allure-overview.png'}")
    assert (ARTIFACTS / "allure-overview.png").stat().st_size > 10_000


def tree_paths(report: Path) -> dict[str, list[str]]:
    """Map each result's title in the report's tree to the group names above it."""
    tree = json.loads((report / "widgets" / "tree.json").read_text())
    paths: dict[str, list[str]] = {}

    def walk(node: dict, above: list[str]) -> None:
        for leaf in node.get("leaves") or []:
            paths[tree["leavesById"][leaf]["name"]] = above
        for group_id in node.get("groups") or []:
            group = tree["groupsById"][group_id]
            walk(group, [*above, group["name"]])

    walk(tree["root"], [])
    return paths


def test_report_tree_is_grouped_by_rule_level_rule_and_host_not_by_file(gate_run, served: str, tmp_path: Path) -> None:
    paths = tree_paths(gate_run[1] / "allure-report")
    assert paths["disk-cache-safe on offline/vm01.xml:vm01/vda"] == ["disk rules", "disk-cache-safe", "offline"]
    assert paths["perf-randread-4k on offline/vm01.xml:vm01/vdb"] == ["disk rules", "perf-randread-4k", "offline"]
    assert all(path[0] in ("host rules", "domain rules", "disk rules") for path in paths.values()), paths
    # As rendered: Allure opens the groups holding failures, so the failed rule shows under level → rule → host.
    text = text_of(chromium(served, tmp_path, "--dump-dom"))
    assert "test_disks.py" not in text and "test_perf_rules.py" not in text  # Allure 3's default: by file
    assert re.search(r"disk rules [\d ]+ .*? disk-cache-safe [\d ]+ offline [\d ]+ "
                     r"disk-cache-safe on offline/vm01.xml:vm01/vda", text), text[:3000]


def test_report_categories_name_our_failures(served: str, tmp_path: Path) -> None:
    url = f"{served}#categories"
    text = text_of(chromium(url, tmp_path, "--dump-dom"))
    assert "Product errors" not in text and "Test errors" not in text  # Allure's defaults: nothing left over
    # category → rule → message (target and finding) → result; ours are expanded
    violation = re.search(r"Configuration violation \d+ kvmio_rule disk-cache-safe \d+ AssertionError: "
                          r"offline/vm01.xml:vm01/vda: cache='unsafe' ignores guest flushes.*? disk-cache-safe on offline/vm01.xml:vm01/vda",
                          text)
    assert violation, text[:3000]
    regression = re.search(r"Performance regression \d+ kvmio_rule perf-randread-4k \d+ AssertionError: "
                           r"offline/vm01.xml:vm01/vda: randread-4k iops: median 8,200 .*? perf-randread-4k on offline/vm01.xml:vm01/vda",
                           text)
    assert regression, text[:3000]
    # in the order of ci/allurerc.yaml; the perf failures are not also counted as configuration violations
    assert regression.start() < violation.start()
    perf_section = text[regression.start():text.index("Configuration violation", regression.start())]
    assert "perf-randread-4k on offline/vm01.xml:vm01/vdb" in perf_section and "disk-cache-safe on" not in perf_section
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(url, tmp_path, f"--screenshot={ARTIFACTS / 'allure-categories.png'}")
    assert (ARTIFACTS / "allure-categories.png").stat().st_size > 10_000


def _result_id(gate_run, title: str) -> str:
    for path in (gate_run[1] / "allure-report" / "data" / "test-results").glob("*.json"):
        if json.loads(path.read_text()).get("name") == title:
            return path.stem
    raise AssertionError(f"{title}: not in the report")


def test_a_failed_rule_shows_its_attachments_and_perf_chart(gate_run, served: str, tmp_path: Path) -> None:
    url = f"{served}#{_result_id(gate_run, 'perf-randread-4k on offline/vm01.xml:vm01/vda')}"
    text = text_of(chromium(url, tmp_path, "--dump-dom"))
    assert "Failed" in text and "Critical" in text and "Performance regression" in text  # its category
    for name in ("kvmio_target.domain.xml", "host facts", "verdict facts",
                 "perf: measured vs threshold vs baseline", "perf chart image/png"):
        assert name in text, name
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(url, tmp_path, f"--screenshot={ARTIFACTS / 'allure-failed-perf-rule.png'}")
    assert (ARTIFACTS / "allure-failed-perf-rule.png").stat().st_size > 10_000
