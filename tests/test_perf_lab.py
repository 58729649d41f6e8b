"""The perf suite against the running kvmio lab: safety refusal, baseline → throttle → fail → pass.

The `lab` fixture (tests/conftest.py) brings the lab up first.
TCG guests on a shared 2-core host are noisy (runs of one profile spread 30-70 %, and drift between
minutes), so no test here tunes a band: each records its baseline from two short sessions
(`kvmio baseline record --results perf-1.json --results perf-2.json`) and the gate widens the 15 %
tolerance to 3 x the noise it measured; six samples can under-state a drifting host's noise, so a quiet run
beyond the band fails only beyond the band of the noise's 95 % upper bound (inconclusive between the two;
on 2026-11-30 CI met a 34 % drift against a 25 % band). An unchanged disk may come out passed or
inconclusive, never failed; a disk throttled well below the outer edge must fail. Lines starting `kvmio-lab-stability:`
are read by benchmarks/bench_lab_stability.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.thresholds import Baseline
from tests.conftest import REPO, SUITES

pytestmark = pytest.mark.lab

URI = "qemu:///system"
DOMAIN = "kvmio-lab-good"
SCRATCH = "vdc"  # serial kvmio-scratch-0 in the lab's domain XML
PROFILE = "randread-4k-qd32x4"
SHORT = ["--fio-runtime", "3", "--fio-ramp-time", "1", "--fio-repeat", "3"]


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module", autouse=True)
def lab_running(lab: dict[str, Any]) -> None:
    state = virsh("domstate", DOMAIN, check=False)
    assert state.stdout.strip() == "running", f"{DOMAIN} is not running after `kvmio lab up`: {state.stderr.strip()}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    thresholds = tmp_path / "thresholds"
    shutil.copytree(REPO / "thresholds", thresholds)
    for old in (thresholds / "baselines").glob("*.yaml"):
        old.unlink()
    shutil.copy(SUITES / "test_perf.py", tmp_path / "test_perf.py")
    return tmp_path


def suite(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "pytest", "test_perf.py", "-p", "no:cacheprovider", "-p", "no:randomly", "-rsf",
        "--rootdir", str(workdir), "--host", "local", "--domain", DOMAIN,
        "--thresholds", str(workdir / "thresholds"), *SHORT, *args,
    ]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)


SELECT = ["-k", f"{SCRATCH} and {PROFILE} and iops"]
UNCHANGED = ("passed", "inconclusive")


def record_from_two_sessions(workdir: Path) -> Baseline:
    """Run the suite twice (two sessions, a run apart) and record one baseline from both results files."""
    for n in (1, 2):
        session = suite(workdir, *SELECT, "--kvmio-perf-results", f"perf-{n}.json")
        assert session.returncode == 0, session.stdout[-3000:]
    record = subprocess.run(
        [sys.executable, "-m", "pytest_kvmio.cli", "baseline", "record", "--results", "perf-1.json",
         "--results", "perf-2.json", "--out", "thresholds/baselines/lab-tcg.yaml", "--thresholds", "thresholds"],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )
    assert record.returncode == 0, record.stderr
    baseline = load_thresholds(workdir / "thresholds").baseline(f"local/{DOMAIN}/{SCRATCH}", PROFILE, "iops")
    assert baseline is not None and baseline.sessions == 2 and baseline.noise is not None, record.stderr
    print(
        f"kvmio-lab-stability: baseline iops {baseline.median:.0f} from samples {list(baseline.samples)}, "
        f"noise {baseline.noise:.0%}, band {baseline.band:.0%}, inconclusive to {baseline.undecided_band:.0%}"
    )
    return baseline


def baseline_verdict(workdir: Path) -> dict[str, Any]:
    """Run the selected rules once against the recorded baseline; return the perf-baseline verdict."""
    summary = workdir / "v.json"
    summary.unlink(missing_ok=True)
    run = suite(workdir, *SELECT, "--kvmio-json", str(summary))
    assert summary.exists(), run.stdout[-3000:]
    found = [v for v in json.loads(summary.read_text())["verdicts"] if v["rule"] == "perf-baseline"]
    assert len(found) == 1, run.stdout[-3000:]
    return found[0]


def test_baseline_then_throttle_fails_then_unthrottled_passes(workdir):
    baseline = record_from_two_sessions(workdir)
    # However noisy the recording, the outer edge stays above zero (the noise is multiplicative),
    # so a throttle to half of it is clearly beyond where a quiet run is still inconclusive.

    unchanged = baseline_verdict(workdir)
    print(f"kvmio-lab-stability: unchanged {unchanged['outcome']}: {unchanged['message']}")
    assert unchanged["outcome"] in UNCHANGED, unchanged["message"]

    # Half the outer edge: clearly beyond it however wide the recorded noise and its bound made it.
    limit = max(50, int(baseline.median * (1 - baseline.undecided_band) / 2))
    virsh("blkdeviotune", DOMAIN, SCRATCH, "--total-iops-sec", str(limit), "--live")
    try:
        throttled = baseline_verdict(workdir)
    finally:
        virsh("blkdeviotune", DOMAIN, SCRATCH, "--total-iops-sec", "0", "--live")
    print(f"kvmio-lab-stability: throttled to {limit} IOPS: {throttled['outcome']}: {throttled['message']}")
    assert throttled["outcome"] == "failed", throttled["message"]
    assert re.search(rf"{PROFILE} iops: median [\d,]+ .*% below baseline [\d,]+ \(tolerance 15%\)",
                     throttled["message"]), throttled["message"]

    again = baseline_verdict(workdir)
    print(f"kvmio-lab-stability: unthrottled {again['outcome']}: {again['message']}")
    assert again["outcome"] in UNCHANGED, again["message"]


def test_unchanged_runs_raise_no_false_alarm(workdir):
    """Record from two sessions, then N unchanged runs against the baseline: none fails (target 0)."""
    runs = int(os.environ.get("KVMIO_FALSE_ALARM_RUNS", "3"))
    record_from_two_sessions(workdir)
    verdicts = [baseline_verdict(workdir) for _ in range(runs)]
    outcomes = [v["outcome"] for v in verdicts]
    print(f"kvmio-lab-stability: unchanged outcomes {outcomes}; false alarms {outcomes.count('failed')} of {runs}")
    assert all(o in UNCHANGED for o in outcomes), "\n".join(v["message"] for v in verdicts)


def test_a_live_run_with_a_results_history_appends_its_points(workdir):
    """One short live session with --kvmio-history: the scratch disk's points land in the history, with the host's
    UUID as the series' host and the environment (kernel, QEMU, libvirt, fio, guest kernel, storage XML) on each."""
    from pytest_kvmio.history.store import open_store

    url = f"sqlite:///{workdir / 'history.db'}"
    session = suite(workdir, *SELECT, "--kvmio-history", url, "--kvmio-json", "v.json")
    assert session.returncode == 0, session.stdout[-3000:]
    assert re.search(r"results history sqlite:///\S+history.db: run \S+, (\d+) point\(s\) added", session.stdout), \
        session.stdout[-2000:]
    store = open_store(url)
    points = store.points()
    store.close()
    iops = [p for p in points if p.metric == "iops"]
    assert len(iops) == 1 and {p.profile for p in points} == {PROFILE}, points
    point = iops[0]
    assert point.target == f"local/{DOMAIN}/{SCRATCH}" and point.source == "live"
    assert point.host != "local" and len(point.host) == 36, point.host  # libvirt's host UUID
    assert point.value > 0 and len(point.samples) == 3
    fingerprint = point.fingerprint
    for name in ("kernel", "qemu", "libvirt", "fio", "cpu_model", "storage_xml", "storage_xml_hash"):
        assert fingerprint.get(name), (name, fingerprint)
    assert "kvmio-scratch-0" in fingerprint["storage_xml"]
    assert fingerprint.get("guest_kernel"), fingerprint
    verdict = [v for v in json.loads((workdir / "v.json").read_text())["verdicts"] if v["rule"] == "perf-history"]
    assert [v["outcome"] for v in verdict] == ["inconclusive"], verdict  # one point: too short to judge
    print(f"kvmio-history-lab: {len(points)} point(s) appended, iops {point.value:.0f} {point.samples}, "
          f"host {point.host}, guest kernel {fingerprint['guest_kernel']}")


# --- (a) a write profile against a disk with a filesystem -------------------------------------

FS_DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>768</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>console=ttyS0 quiet</cmdline></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{image}'/>
      <target dev='vdb' bus='virtio'/>
      <serial>kvmio-scratch-fs</serial>
    </disk>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>
"""


def test_write_profile_on_a_disk_with_a_filesystem_is_refused_and_content_unchanged(tmp_path):
    """A throwaway transient domain gets an ext4 image made on the host: no lab disk is touched.

    Its serial matches the scratch glob, so only the content check stands between fio and the data.
    """
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed on the host")
    import xml.etree.ElementTree as ET

    good = ET.fromstring(virsh("dumpxml", DOMAIN).stdout)
    kernel, initrd = good.findtext("./os/kernel"), good.findtext("./os/initrd")
    image = Path("/var/lib/kvmio-lab/images") / f"perftest-fs-{uuid.uuid4().hex[:8]}.raw"
    name = f"kvmio-perftest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "precious", str(image)], check=True)
    xml = tmp_path / f"{name}.xml"
    xml.write_text(FS_DOMAIN_XML.format(name=name, kernel=kernel, initrd=initrd, image=image))
    try:
        virsh("create", str(xml))  # transient: gone when destroyed
        import libvirt

        libvirt.registerErrorHandler(lambda *a: None, None)
        from pytest_kvmio.facts.guest import agent_host
        from pytest_kvmio.facts.guest_errors import GuestUnavailable
        from pytest_kvmio.perf.loading import load_thresholds
        from pytest_kvmio.perf.runner import GuestFio, ScratchRefused

        deadline, guest = time.monotonic() + 120, None
        while guest is None:
            try:
                guest = agent_host(name, URI, agent_timeout=10, command_timeout=60)
            except GuestUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        dev = guest.run("for d in /sys/block/*; do [ \"$(cat $d/serial 2>/dev/null)\" = kvmio-scratch-fs ] && echo ${d##*/}; done").stdout.strip()
        assert dev, "scratch-fs disk not visible in the guest"
        checksum = f"md5sum /dev/{dev}"
        before = guest.run(checksum).stdout.split()[0]
        profile = load_thresholds(REPO / "thresholds").profile("randwrite-4k-qd128").with_timing(runtime=2, ramp_time=0)
        runner = GuestFio(guest, dev, label=f"local/{name}/vdb", serial="kvmio-scratch-fs", scratch_pattern="kvmio-scratch*")
        with pytest.raises(ScratchRefused) as refused:
            runner.prefill()
        with pytest.raises(ScratchRefused):
            runner.run_once(profile)
        print(refused.value)
        assert "ext2/3/4 filesystem" in str(refused.value) and "refused before fio started" in str(refused.value)
        assert "pgrep" not in str(refused.value)
        assert guest.run(checksum).stdout.split()[0] == before
    finally:
        virsh("destroy", name, check=False)
        image.unlink(missing_ok=True)
