"""ci/kvmio-gate.sh for real, then its Allure HTML report in headless Chromium: rule groups, a failed rule
with attachments, a perf chart. Offline --domain-xml run with a synthetic perf verdict fact (no lab needed)."""

from __future__ import annotations

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
    env.pop("KVMIO_HOST", None)
    proc = subprocess.run(["bash", str(REPO / "ci" / "kvmio-gate.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, out


def test_the_gate_script_runs_the_suites_and_writes_every_report(gate_run) -> None:
    proc, out = gate_run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^kvmio: FAIL — \d+ failed, .* on offline lint \(assumed kernel 6.1, QEMU 7.2, libvirt 9.0\); "
                     r"verdicts: .*verdicts.json$", proc.stdout, re.M), proc.stdout[-2000:]
    assert (out / "junit.xml").is_file()
    assert json.loads((out / "verdicts.json").read_text())["gate"]["exitstatus"] == 1
    assert (out / "allure-report" / "index.html").is_file(), proc.stdout + proc.stderr
    assert "kvmio-gate: exit 1" in proc.stdout


@pytest.fixture(scope="module")
def served(gate_run) -> Iterator[str]:
    report = gate_run[1] / "allure-report"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(report))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


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
    assert "disk rules" in text and "disk-cache-safe" in text and "disk-iothread-assigned" in text
    assert "kvmio.version" in text  # environment.properties
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(served, tmp_path, f"--screenshot={ARTIFACTS / 'allure-overview.png'}")
    assert (ARTIFACTS / "allure-overview.png").stat().st_size > 10_000


def _result_id(gate_run, title: str) -> str:
    for path in (gate_run[1] / "allure-report" / "data" / "test-results").glob("*.json"):
        if json.loads(path.read_text()).get("name") == title:
            return path.stem
    raise AssertionError(f"{title}: not in the report")


def test_a_failed_rule_shows_its_attachments_and_perf_chart(gate_run, served: str, tmp_path: Path) -> None:
    url = f"{served}#{_result_id(gate_run, 'perf-randread-4k on offline/vm01/vda')}"
    text = text_of(chromium(url, tmp_path, "--dump-dom"))
    assert "Failed" in text and "Critical" in text
    for name in ("kvmio_target.domain.xml", "host facts", "verdict facts",
                 "perf: measured vs threshold vs baseline", "perf chart image/png"):
        assert name in text, name
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(url, tmp_path, f"--screenshot={ARTIFACTS / 'allure-failed-perf-rule.png'}")
    assert (ARTIFACTS / "allure-failed-perf-rule.png").stat().st_size > 10_000
