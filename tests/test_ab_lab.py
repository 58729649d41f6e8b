"""kvmio ab and rule ab-expect on the lab's kvmio-lab-ab: a throttled B is worse, the host arm shows the tax, bad arms exit 4.

Short runs (2 s + 1 s ramp, few rounds): the lab runs under TCG on a shared 2-core machine, so only large effects
are asserted (B throttled to 30 % of A; fio on the host against fio in an emulated guest).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, kvmio

pytestmark = pytest.mark.lab

DOMAIN = "kvmio-lab-ab"
PROFILE = "randread-4k-qd32x4"
SHORT = ("--fio-runtime", "2", "--fio-ramp-time", "1")


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=60)


def comparison(document: dict, metric: str) -> dict:
    return next(c for c in document["comparisons"] if c["metric"] == metric)


def test_a_b_throttled_to_30_percent_of_a_is_worse_and_fails_not_worse(tmp_path: Path) -> None:
    calibration = tmp_path / "a.json"
    done = kvmio("ab", "--a", f"{DOMAIN}/vdb", "--b", f"{DOMAIN}/vdb", "--profile", PROFILE, "--rounds", "1", *SHORT,
                 "--json", str(calibration), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    samples = json.loads(calibration.read_text())["samples"]
    a_median = statistics.median(samples["a"]["iops"] + samples["b"]["iops"])
    limit = max(1, int(a_median * 0.3))
    throttle = virsh("blkdeviotune", DOMAIN, "vdc", "--total-iops-sec", str(limit), "--live")
    assert throttle.returncode == 0, throttle.stderr
    verdicts = tmp_path / "verdicts.json"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "suites/test_ab.py", "-p", "no:cacheprovider", "--host=local",
             f"--kvmio-ab=a={DOMAIN}/vdb,b={DOMAIN}/vdc,profile={PROFILE},rounds=4", "--kvmio-ab-expect=not-worse",
             *SHORT, f"--kvmio-json={verdicts}", f"--alluredir={tmp_path / 'allure'}"],
            cwd=REPO, capture_output=True, text=True, timeout=400,
        )
    finally:
        restored = virsh("blkdeviotune", DOMAIN, "vdc", "--total-iops-sec", "0", "--live")
    assert restored.returncode == 0, restored.stderr
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    verdict = json.loads(verdicts.read_text())["verdicts"][0]
    assert (verdict["rule"], verdict["target"], verdict["outcome"]) == ("ab-expect", "local", "failed")
    iops = comparison(verdict["facts"]["ab"], "iops")
    assert iops["verdict"] == "worse", iops
    assert iops["ci_high"] < 0.6, iops
    assert "expected B not worse than A by more than 5%" in verdict["message"]
    assert verdict["facts"]["ab"]["order"] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert "kvmio ab: round 4/4" in run.stdout  # a progress line per round
    allure = [json.loads(p.read_text()) for p in (tmp_path / "allure").glob("*-result.json")]
    attached = {a["name"] for r in allure for a in r.get("attachments", [])}
    assert {"A/B table", "A/B chart"} <= attached, attached


def test_the_host_arm_shows_the_virtualization_tax(tmp_path: Path) -> None:
    out = tmp_path / "tax.json"
    done = kvmio("ab", "--a", f"{DOMAIN}/vdb@host", "--b", f"{DOMAIN}/vdb", "--profile", PROFILE, "--rounds", "3",
                 *SHORT, "--json", str(out), "--chart", str(tmp_path / "tax.png"), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert document["a"]["kind"] == "host" and document["b"]["kind"] == "guest"
    assert document["a"]["source"] == document["b"]["source"]
    iops = comparison(document, "iops")
    assert iops["ratio"] < 1, iops
    assert "host_cpu_us_per_io" not in [c["metric"] for c in document["comparisons"]]
    assert "guest arms only" in document["not_compared"]["host_cpu_us_per_io"]
    assert "IOPS" in done.stdout and "B/A [95% interval]" in done.stdout
    assert (tmp_path / "tax.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("args", "message"), [
    (["--a", "kvmio-lab-nope/vdb", "--b", f"{DOMAIN}/vdc"], "--a kvmio-lab-nope/vdb: no domain 'kvmio-lab-nope' on local"),
    (["--a", f"{DOMAIN}/vdb", "--b", f"{DOMAIN}/vdz"], f"--b {DOMAIN}/vdz: {DOMAIN} has no disk 'vdz'"),
    (["--a", "kvmio-lab-good/vdb", "--b", f"{DOMAIN}/vdc", "--profile", "randwrite-4k-qd128"],
     "--a kvmio-lab-good/vdb: randwrite-4k-qd128 writes .* does not match the scratch pattern"),
    (["--a", f"{DOMAIN}/vdb", "--b", f"{DOMAIN}/vdb", "--profile", "randwrite-4k-qd128"],
     f"--a {DOMAIN}/vdb and --b {DOMAIN}/vdb: .*both arms write the same scratch disk"),
    (["--a", f"{DOMAIN}/vdb@host", "--b", f"{DOMAIN}/vdc", "--profile", "randwrite-4k-qd128"],
     f"--a {DOMAIN}/vdb@host: .*fio on the hypervisor runs read profiles only"),
    (["--host", "ssh://nobody@127.0.0.1:1", "--a", f"{DOMAIN}/vdb", "--b", f"{DOMAIN}/vdc"], "--host 127.0.0.1:1: "),
])
def test_bad_arms_exit_4_and_run_nothing(args: list[str], message: str) -> None:
    full = args if "--profile" in args else [*args, "--profile", PROFILE]
    done = kvmio("ab", *full, *SHORT, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert re.search(f"^ERROR: kvmio ab: {message}", done.stderr), done.stderr
    assert "round" not in done.stdout and "pre-filling" not in done.stdout
