"""Pooled percentiles from fio's json+ latency histograms, against real fio output (tests/data/fio, make_corpus.sh).

A percentile of one run's histogram must be what fio itself reported for that run (fio computes its percentiles from
the same buckets); two runs merged give a histogram whose percentiles lie between the runs' and which a verdict and a
recorded baseline name as their estimator.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pytest_kvmio.cli.baseline import record
from pytest_kvmio.perf.decide import decide_baseline, decide_limit
from pytest_kvmio.perf.fio import PERCENTILES, FioError, parse_fio, read_fio
from pytest_kvmio.perf.histogram import (
    MEDIAN_OF_RUNS,
    POOLED,
    HistogramError,
    LatencyHistogram,
    bucket_bounds,
    bucket_index,
    bucket_value,
    merge,
    parse_bins,
)
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.results import PerfResult, metrics_of, pooled_value
from pytest_kvmio.perf.thresholds import Baseline, Limit, Profile

DATA = Path(__file__).parent / "data" / "fio"
REPO = Path(__file__).resolve().parent.parent
RUNS = ("randread-jsonplus-run1.json", "randread-jsonplus-run2.json")
PROFILE = Profile("randread-4k-qd1", "r", "randread", "4k", 4, 1, 2, 0, write=False)
TARGET = "local/kvmio-lab-good/vdc"


def clat_block(name: str) -> dict:
    return json.loads((DATA / name).read_text())["jobs"][0]["read"]["clat_ns"]


def histogram(name: str) -> LatencyHistogram:
    (m,) = read_fio(DATA / name).metrics
    return m.histograms["clat"]


# --- fio's buckets -------------------------------------------------------------------------------


def test_buckets_tile_the_line_and_are_at_most_a_64th_of_their_value_wide():
    previous_high = 0
    for index in range(29 * 64):  # fio 3's FIO_IO_U_PLAT_NR
        low, high = bucket_bounds(index)
        assert low == previous_high, index
        assert high - low <= max(1, low // 64), index
        assert bucket_index(low) == bucket_index(high - 1) == index
        assert low <= bucket_value(index) < high
        previous_high = high


def test_every_bin_fio_wrote_is_the_value_of_its_bucket():
    for name in (*RUNS, "randread-libaio-jsonplus.json"):
        for key in clat_block(name)["bins"]:
            assert bucket_value(bucket_index(int(key))) == int(key), (name, key)


def test_the_histogram_holds_every_completion_fio_counted():
    for name in RUNS:
        block = clat_block(name)
        assert histogram(name).total == block["N"] == sum(block["bins"].values())


# --- one run: the pooled percentile is fio's ------------------------------------------------------


@pytest.mark.parametrize("name", [*RUNS, "randread-libaio-jsonplus.json"])
def test_percentiles_of_one_run_are_fios_own_within_a_bucket(name):
    block, hist = clat_block(name), histogram(name)
    exact = 0
    for key, fio_ns in block["percentile"].items():
        ours_us = hist.percentile(float(key))
        assert ours_us == pytest.approx(fio_ns / 1000, abs=hist.precision(float(key))), key
        exact += ours_us == fio_ns / 1000
    assert exact == len(block["percentile"])  # same buckets, same rule: to the nanosecond


def test_pooled_value_of_one_run_is_the_reported_metric():
    (m,) = read_fio(DATA / RUNS[0]).metrics
    for name in PERCENTILES:
        metric = f"clat_{name}_us"
        assert pooled_value([m], metric) == getattr(m, metric), metric
    assert pooled_value([m], "iops") is None and pooled_value([m], "tlat_p99_us") is None  # no lat_ns bins


# --- several runs: merged -------------------------------------------------------------------------


def test_two_runs_merged_hold_both_and_their_percentiles_lie_between():
    one, two = histogram(RUNS[0]), histogram(RUNS[1])
    both = merge([one, two])
    assert both.total == one.total + two.total
    assert merge([two, one]) == both
    for pct in (1.0, 50.0, 90.0, 99.0, 99.9):
        low, high = sorted((one.percentile(pct), two.percentile(pct)))
        assert low <= both.percentile(pct) <= high, pct
    # A run merged with itself has its own percentiles: pooling weighs I/Os, not files.
    assert [merge([one, one]).percentile(p) for p in (50.0, 99.0)] == [one.percentile(p) for p in (50.0, 99.0)]


def test_pooled_percentile_counts_each_io_once_not_each_run():
    """A run with many I/Os weighs more: the pooled p50 is the percentile of all I/Os, checked by brute force."""
    one, two = histogram(RUNS[0]), histogram(RUNS[1])
    latencies = sorted(
        bucket_value(i) for h in (one, two) for i, n in h.counts.items() for _ in range(n)
    )
    for pct in (50.0, 99.0):
        rank = next(k for k in range(1, len(latencies) + 1) if k >= pct / 100 * len(latencies))
        assert merge([one, two]).percentile(pct) == latencies[rank - 1] / 1000


def test_per_job_histograms_of_one_run_are_merged_into_the_profiles_entry():
    report = read_fio(DATA / "randread-numjobs2-perjob-jsonplus.json")
    jobs = report.metrics
    assert len(jobs) == 2
    combined = metrics_of(report, PROFILE.with_timing())
    assert combined.histograms["clat"].total == sum(j.histograms["clat"].total for j in jobs)
    assert combined.histograms["clat"].total == sum(j.total_ios or 0 for j in jobs)


def test_a_perf_result_pools_its_runs_and_says_so_in_the_verdict():
    result = PerfResult(TARGET, PROFILE.name)
    result.runs = [metrics_of(read_fio(DATA / name), PROFILE) for name in RUNS]
    pooled = result.pooled("clat_p99_us")
    assert pooled == merge([histogram(n) for n in RUNS]).percentile(99.0)
    assert result.estimator("clat_p99_us") == POOLED and result.estimator("iops") == MEDIAN_OF_RUNS
    limit = Limit("lab", PROFILE.name, "clat_p99_us", ceiling=10 * pooled)
    decision = decide_limit(result.samples("clat_p99_us"), limit, pooled=pooled)
    assert decision.passed and decision.estimator == POOLED and decision.median == pooled
    assert "pooled" in decision.message and "merged latency histogram" in decision.message
    by_median = decide_limit(result.samples("clat_p99_us"), limit)
    assert by_median.estimator == MEDIAN_OF_RUNS and by_median.message.split(": ", 1)[1].startswith("median")


def test_a_results_file_carries_the_merged_histogram_and_the_baseline_pools_its_sessions(tmp_path):
    files = []
    for n, name in enumerate(RUNS, 1):  # each run its own session
        result = PerfResult(TARGET, PROFILE.name, fingerprint={"storage_class": "lab"})
        result.runs = [metrics_of(read_fio(DATA / name), PROFILE)]
        path = tmp_path / f"perf-{n}.json"
        path.write_text(json.dumps({"fingerprint": {}, "results": [result.as_result()]}))
        files.append(path)
    assert json.loads(files[0].read_text())["results"][0]["histograms"]["clat"]["unit_ns"] == 1
    thresholds = tmp_path / "thresholds"
    shutil.copytree(REPO / "thresholds", thresholds)
    out = thresholds / "baselines" / "pooled.yaml"
    record(files, out, tolerance=0.15)
    written = yaml.safe_load(out.read_text())["baselines"][0]["metrics"]
    both = merge([histogram(n) for n in RUNS])
    assert written["clat_p99_us"]["estimator"] == POOLED
    assert written["clat_p99_us"]["median"] == pytest.approx(both.percentile(99.0), abs=1e-3)
    assert "estimator" not in written["iops"]  # IOPS has no histogram: the median of the runs
    baseline = load_thresholds(thresholds).baseline(TARGET, PROFILE.name, "clat_p99_us")
    assert baseline is not None and baseline.estimator == POOLED
    p99 = both.percentile(99.0)
    decision = decide_baseline([p99 * 0.98, p99, p99 * 1.02], baseline, pooled=p99)
    assert decision.estimator == POOLED and decision.passed, decision.message
    assert "pooled histogram" in decision.message
    # Without histograms the run is judged on its median, and the verdict says why.
    fallback = decide_baseline([both.percentile(99.0)] * 3, baseline)
    assert fallback.estimator == MEDIAN_OF_RUNS and "no json+ histogram" in fallback.warnings[0]


def test_a_median_baseline_is_compared_like_for_like():
    baseline = Baseline(TARGET, PROFILE.name, "clat_p99_us", 100.0, 0.15, "lower-is-better", "2026-12-01", {})
    decision = decide_baseline([100.0, 101.0, 99.0], baseline, pooled=400.0)
    assert decision.estimator == MEDIAN_OF_RUNS and decision.passed


# --- refused input --------------------------------------------------------------------------------


def test_a_bin_that_is_not_a_fio_bucket_is_refused_naming_it():
    doc = json.loads((DATA / RUNS[0]).read_text())
    bins = doc["jobs"][0]["read"]["clat_ns"]["bins"]
    key = next(iter(bins))
    bins[str(int(key) + 1)] = bins.pop(key)
    with pytest.raises(FioError, match=r'src: jobs\[0\]\.read\.clat_ns\.bins\["\d+"\]: \d+ is not one of fio'):
        parse_fio(json.dumps(doc), "src")


def test_a_bin_that_is_not_a_number_is_refused_by_the_schema():
    doc = json.loads((DATA / RUNS[0]).read_text())
    doc["jobs"][0]["read"]["clat_ns"]["bins"]["fast"] = 3
    with pytest.raises(FioError, match=r"src: jobs\[0\]\.read\.clat_ns\.bins: 'fast' does not match"):
        parse_fio(json.dumps(doc), "src")


def test_fio2_index_keyed_bins_and_their_layout():
    hist = parse_bins({"FIO_IO_U_PLAT_BITS": 6, "FIO_IO_U_PLAT_VAL": 64, "FIO_IO_U_PLAT_NR": 1216,
                       "100": 5, "700": 5}, unit_ns=1000)
    assert hist.percentile(50.0) == 100.0  # µs: index 100 < 128 is the value itself
    assert hist.percentile(99.0) == bucket_value(700)
    with pytest.raises(HistogramError, match="expected 6"):
        parse_bins({"FIO_IO_U_PLAT_BITS": 5, "3": 1}, unit_ns=1000)
    with pytest.raises(HistogramError, match="can't merge a histogram in ns with one in µs"):
        merge([histogram(RUNS[0]), hist])


# --- the suite, offline ---------------------------------------------------------------------------

SUITE_PROFILES = """version: 1
profiles:
  randread-4k-qd1:
    description: json+ runs of the corpus
    rw: randread
    bs: 4k
    iodepth: 4
    numjobs: 1
"""
SUITE_CLASSES = """version: 1
classes:
  lab:
    description: test class
    match:
      - target: "hv01/*/*"
    max_spread: 0.5
    limits:
      randread-4k-qd1:
        clat_p99_us: {ceiling: 50}
        iops: {floor: 1}
"""


def test_fio_results_written_with_json_plus_are_judged_on_the_pooled_percentile(pytester):
    thresholds = pytester.path / "thresholds"
    (thresholds / "baselines").mkdir(parents=True)
    (thresholds / "profiles.yaml").write_text(SUITE_PROFILES)
    (thresholds / "classes.yaml").write_text(SUITE_CLASSES)
    disk = pytester.path / "results" / "hv01" / "vm01" / "vdb"
    disk.mkdir(parents=True)
    for n, name in enumerate(RUNS, 1):
        shutil.copy(DATA / name, disk / f"randread-4k-qd1.{n}.json")
    shutil.copy(REPO / "suites" / "test_perf.py", pytester.path / "test_perf.py")
    result = pytester.runpytest("-p", "no:cacheprovider", "--fio-results", "results", "--kvmio-json", "v.json",
                                "-k", "not host_cpu")
    result.assert_outcomes(passed=1, failed=1)  # the runs' p99 is about 100 µs, over the 50 µs ceiling
    verdicts = {v["facts"]["perf"]["metric"]: v for v in json.loads((pytester.path / "v.json").read_text())["verdicts"]}
    p99 = verdicts["clat_p99_us"]
    pooled = merge([histogram(n) for n in RUNS]).percentile(99.0)
    assert p99["facts"]["perf"]["estimator"] == POOLED and p99["facts"]["perf"]["median"] == pooled
    assert p99["outcome"] == "failed"
    assert f"pooled {pooled:,.0f} µs (the percentile of the 2 runs' merged latency histogram" in p99["message"]
    assert verdicts["iops"]["facts"]["perf"]["estimator"] == MEDIAN_OF_RUNS
