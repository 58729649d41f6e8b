"""The perf suite offline: --fio-results files from the real corpus against thresholds, via pytester."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA, SUITES


def verdicts(path: Path) -> list[dict]:
    """Return every verdict of the JSON summary (several per rule and target: one per metric)."""
    return json.loads(path.read_text())["verdicts"]

CORPUS = DATA / "fio"
PROFILES = """version: 1
defaults: {runtime: 10, ramp_time: 2, repeat: 3}
profiles:
  randread-4k-qd128:
    description: campaign profile
    rw: randread
    bs: 4k
    iodepth: 128
    numjobs: 1
  randwrite-4k-qd128:
    description: writes
    rw: randwrite
    bs: 4k
    iodepth: 128
    numjobs: 1
"""
CLASSES = """version: 1
classes:
  lab:
    description: test class
    match:
      - target: "hv01/*/*"
    max_spread: 0.3
    limits:
      randread-4k-qd128:
        iops: {floor: %(floor)s}
        clat_mean_us: {ceiling: 100000}
"""
BASELINE = """version: 1
baselines:
  - target: hv01/vm01/vdb
    profile: randread-4k-qd128
    at: "2024-05-02"
    tolerance: 0.15
    fingerprint: {storage_class: lab}
    metrics:
      iops: {median: %(median)s}
"""


def setup(pytester: pytest.Pytester, floor: float = 1000, baseline: float | None = None) -> tuple[Path, Path]:
    thresholds = pytester.path / "thresholds"
    (thresholds / "baselines").mkdir(parents=True)
    (thresholds / "profiles.yaml").write_text(PROFILES)
    (thresholds / "classes.yaml").write_text(CLASSES % {"floor": floor})
    if baseline is not None:
        (thresholds / "baselines" / "lab.yaml").write_text(BASELINE % {"median": baseline})
    results = pytester.path / "results"
    disk = results / "hv01" / "vm01" / "vdb"
    disk.mkdir(parents=True)
    for n in (1, 2, 3):  # the same real fio run three times: median = its IOPS
        shutil.copy(CORPUS / "randread-qd128.json", disk / f"randread-4k-qd128.{n}.json")
    shutil.copy(SUITES / "test_perf.py", pytester.path / "test_perf.py")
    return thresholds, results


def run(pytester: pytest.Pytester, *extra: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--fio-results", "results", "-rsf", *extra)


def test_results_within_the_class_limits_pass(pytester):
    setup(pytester, floor=1000)
    result = run(pytester, "--kvmio-json", "v.json")
    # Skipped: host CPU (no .hostcpu files) and the write profile (no results file). No baseline: not applicable.
    result.assert_outcomes(passed=2, skipped=2)
    iops = next(
        v for v in verdicts(pytester.path / "v.json")
        if v["rule"] == "perf-randread-4k-qd128" and v["facts"]["perf"]["metric"] == "iops"
    )
    perf = iops["facts"]["perf"]
    assert perf["median"] == pytest.approx(54655, rel=1e-3) and perf["unit"] == "IOPS"
    assert perf["limit"]["floor"] == 1000 and len(perf["samples"]) == 3


def test_a_floor_above_the_median_fails_naming_profile_metric_and_limit(pytester):
    setup(pytester, floor=80000)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*hv01/vm01/vdb: randread-4k-qd128 iops: median 54,655 *below floor 80,000*(lab)*"])


def test_regression_against_the_baseline_names_baseline_measured_and_tolerance(pytester):
    setup(pytester, baseline=110000)
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*randread-4k-qd128 iops: median 54,655*50% below baseline 110,000 (tolerance 15%)*"])


def test_within_the_baseline_tolerance_passes(pytester):
    setup(pytester, baseline=56000)
    run(pytester).assert_outcomes(passed=3, skipped=2)


def test_straddling_noisy_runs_are_inconclusive_and_skipped(pytester):
    _, results = setup(pytester, floor=40000)
    disk = results / "hv01" / "vm01" / "vdb"
    # Runs from the corpus at ~54.7k, ~30.6k and ~54.7k IOPS: they straddle the 40k floor, spread > 30%.
    shutil.copy(CORPUS / "randread-numjobs2-group.json", disk / "randread-4k-qd128.2.json")
    result = run(pytester, "--kvmio-json", "v.json")
    assert result.ret == 0  # inconclusive fails the run only with --kvmio-fail-inconclusive
    (iops,) = [v for v in verdicts(pytester.path / "v.json") if v["facts"].get("perf", {}).get("metric") == "iops"]
    assert iops["outcome"] == "inconclusive"
    assert "straddle floor 40,000" in iops["message"] and "spread of" in iops["message"]


def test_perf_results_file_feeds_baseline_record(pytester):
    setup(pytester)
    run(pytester, "--kvmio-perf-results", "perf.json").assert_outcomes(passed=2, skipped=2)
    document = json.loads((pytester.path / "perf.json").read_text())
    (entry,) = document["results"]
    assert entry["target"] == "hv01/vm01/vdb" and entry["profile"] == "randread-4k-qd128"
    assert entry["fingerprint"]["storage_class"] == "lab" and len(entry["samples"]["iops"]) == 3
    from pytest_kvmio.cli.baseline import record

    summary, _ = record(pytester.path / "perf.json", pytester.path / "thresholds" / "baselines" / "lab.yaml", at="2024-05-02")
    assert "1 new" in summary
    # Every recorded metric now has a baseline rule: iops, bw_bytes, clat mean and 5 percentiles, tlat mean
    # (no tlat percentiles without lat_percentiles=1), errors, cpu_usr_pct, cpu_sys_pct.
    run(pytester).assert_outcomes(passed=2 + 12, skipped=2)


def test_write_profile_files_are_evaluated_offline_but_a_missing_profile_skips(pytester):
    setup(pytester)
    result = run(pytester)
    result.stdout.fnmatch_lines(["*no randwrite-4k-qd128.json or randwrite-4k-qd128.<n>.json in *vdb*"])


def test_domain_xml_next_to_the_results_supplies_the_serial(pytester):
    _, results = setup(pytester)
    (results / "hv01" / "vm01" / "domain.xml").write_text(
        "<domain type='kvm'><name>vm01</name><vcpu>2</vcpu><devices><disk type='file' device='disk'>"
        "<driver name='qemu' type='raw' cache='none' io='io_uring'/><source file='/x.raw'/>"
        "<target dev='vdb' bus='virtio'/><serial>kvmio-scratch-0</serial></disk></devices></domain>"
    )
    run(pytester, "--kvmio-perf-results", "perf.json")
    (entry,) = json.loads((pytester.path / "perf.json").read_text())["results"]
    assert entry["serial"] == "kvmio-scratch-0"
    assert entry["fingerprint"]["io_mode"] == "io_uring" and entry["fingerprint"]["device_model"] == "virtio-blk"


def test_bad_thresholds_file_is_a_usage_error_naming_file_and_path(pytester):
    thresholds, _ = setup(pytester)
    (thresholds / "classes.yaml").write_text((CLASSES % {"floor": "'fast'"}))
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*thresholds/classes.yaml: classes.lab.limits.randread-4k-qd128.iops.floor: expected a number, got 'fast'*"])


def test_fio_results_with_host_is_a_usage_error(pytester):
    setup(pytester)
    result = run(pytester, "--host", "local")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--fio-results evaluates fio files offline and --host runs fio on live hosts; pass one of them*"])


def _profile(name: str = "randread-4k-qd128", rw: str = "randread"):
    from pytest_kvmio.perf.thresholds import Profile

    return Profile(name=name, description="", rw=rw, bs="4k", iodepth=128, numjobs=1, runtime=10, ramp_time=2,
                   write=rw != "randread")


def test_a_job_error_raises_fio_job_error_naming_target_profile_job_and_error():
    from pytest_kvmio.perf.fio import FioJobError, read_fio
    from pytest_kvmio.perf.results import metrics_of

    path = CORPUS / "randtrim-file-error.json"
    with pytest.raises(FioJobError) as info:
        metrics_of(read_fio(path), _profile("randtrim-64k", "randtrim"), target="hv01/vm01/vdb")
    assert str(info.value) == (
        f"{path}: hv01/vm01/vdb: profile randtrim-64k: fio reported job randtrim: fio error 25 "
        "(ENOTTY: Inappropriate ioctl for device)"
    )
    assert info.value.job_errors == ["job randtrim: fio error 25 (ENOTTY: Inappropriate ioctl for device)"]


def test_per_job_entries_combine_completion_and_total_latency():
    import dataclasses

    from pytest_kvmio.perf.fio import read_fio
    from pytest_kvmio.perf.results import metrics_of

    report = read_fio(CORPUS / "randread-numjobs2-perjob.json")
    first, second = report.metrics
    combined = metrics_of(report, _profile())
    assert combined.iops == first.iops + second.iops and combined.jobs_merged == 2
    for kind in ("clat", "tlat"):
        means = [getattr(m, f"{kind}_mean_us") for m in (first, second)]
        assert min(means) <= getattr(combined, f"{kind}_mean_us") <= max(means)
    assert combined.clat_p99_us == max(first.clat_p99_us, second.clat_p99_us)
    assert combined.tlat_p99_us is None  # no lat_percentiles: unknown, not 0
    # A job count fio did not report stays unknown when entries are combined.
    unknown = dataclasses.replace(report, snapshots=(dataclasses.replace(
        report.final, metrics=(dataclasses.replace(first, jobs_merged=None), second)),))
    assert metrics_of(unknown, _profile()).jobs_merged is None


def test_a_job_error_in_the_results_is_not_a_measurement(pytester):
    _, results = setup(pytester)
    doc = json.loads((CORPUS / "randread-qd128.json").read_text())
    doc["jobs"][0]["error"] = 5
    (results / "hv01" / "vm01" / "vdb" / "randread-4k-qd128.2.json").write_text(json.dumps(doc))
    result = run(pytester)
    assert result.parseoutcomes().get("passed", 0) == 0
    result.stdout.fnmatch_lines(
        ["*hv01/vm01/vdb: profile randread-4k-qd128: fio reported job randread: fio error 5 (EIO: Input/output error)*"]
    )


def test_a_baseline_for_a_disk_without_a_storage_class_is_judged(pytester):
    """No class matches the disk: the baseline rule still judges it (with the default max spread)."""
    thresholds, _ = setup(pytester, baseline=110000)
    (thresholds / "classes.yaml").write_text((CLASSES % {"floor": 1000}).replace('"hv01/*/*"', '"hv02/*/*"'))
    result = run(pytester, "--kvmio-json", "v.json")
    assert "AttributeError" not in result.stdout.str()
    (judged,) = [v for v in verdicts(pytester.path / "v.json") if "perf" in v["facts"] and v["rule"] == "perf-baseline"]
    assert judged["outcome"] == "failed", judged["message"]
    assert "randread-4k-qd128 iops: median 54,655" in judged["message"]
    assert "50% below baseline 110,000 (tolerance 15%)" in judged["message"]


NOISY_BASELINE = BASELINE.replace("iops: {median: %(median)s}", "iops: {median: %(median)s, noise: 0.1, sessions: 2}")


@pytest.mark.parametrize(("median", "outcome"), [(70000, "passed"), (110000, "failed")])
def test_recorded_noise_widens_the_baseline_band_in_the_suite(pytester, median, outcome):
    thresholds, _ = setup(pytester)
    (thresholds / "baselines" / "lab.yaml").write_text(NOISY_BASELINE % {"median": median})
    run(pytester, "--kvmio-json", "v.json", "-k", "baseline")
    (judged,) = [v for v in verdicts(pytester.path / "v.json") if "perf" in v["facts"] and v["rule"] == "perf-baseline"]
    perf = judged["facts"]["perf"]
    assert judged["outcome"] == outcome  # 22% below passes the 26% band (1 - e^(-3 × 10%)); 50% below fails it
    assert (perf["tolerance"], perf["band"], perf["baseline_noise"]) == (0.15, pytest.approx(0.2592, abs=1e-4), 0.1)
    assert perf["noise"] == 0  # the same fio file three times
    if outcome == "failed":
        assert judged["message"].endswith(
            "50% below baseline 110,000 (tolerance 15%); band widened from 15% to 26% by the recorded noise (3 × 10%)"
        )


def test_perf_verdicts_are_unique_by_rule_target_and_params(pytester):
    """One disk has several metrics per profile: their verdicts differ by `params` (profile, metric)."""
    setup(pytester, baseline=56_000)
    run(pytester, "--kvmio-json", "v.json")
    found = verdicts(pytester.path / "v.json")
    keys = [(v["rule"], v["target"], tuple(sorted(v["params"].items()))) for v in found]
    assert len(keys) == len(set(keys)) == len(found)
    assert {"profile": "randread-4k-qd128", "metric": "iops"} in [v["params"] for v in found if v["rule"] == "perf-baseline"]
