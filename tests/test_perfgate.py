"""Tests of the perf gate: catch real regressions, no false alarms on noise, never pass the unknown."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvmio.perfgate import Outcome, decide_baseline, decide_limit, fingerprint_diff, spread
from pytest_kvmio.thresholds import Baseline, Direction, Limit

FINGERPRINT = MappingProxyType(
    {"cpu_model": "EPYC 7402P", "kernel": "6.1.0-21-amd64", "qemu": "7.2.9", "libvirt": "9.0.0",
     "storage_class": "nvme-local", "device_model": "virtio-blk", "io_mode": "io_uring", "cache": "none"}
)

medians = st.floats(min_value=10, max_value=1e7)
tolerances = st.floats(min_value=0.05, max_value=0.3)
directions = st.sampled_from(["higher-is-better", "lower-is-better"])


def baseline(median: float, tolerance: float = 0.15, direction: Direction = "higher-is-better",
             metric: str | None = None) -> Baseline:
    metric = metric or ("iops" if direction == "higher-is-better" else "clat_p99_us")
    return Baseline("hv01/db01/vdb", "randread-4k-qd32x4", metric, median, tolerance, direction,
                    "2024-05-02", FINGERPRINT)


def noise(bound: float) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(min_value=-bound, max_value=bound), min_size=3, max_size=7)


@settings(max_examples=300)
@given(medians, tolerances, directions, st.data())
def test_samples_within_tolerance_pass(median: float, tolerance: float, direction: Direction,
                                       data: st.DataObject) -> None:
    errors = data.draw(noise(tolerance * 0.95))
    decision = decide_baseline([median * (1 + e) for e in errors], baseline(median, tolerance, direction))
    assert decision.outcome is Outcome.PASSED, decision.message


@settings(max_examples=300)
@given(medians, tolerances, directions, st.data())
def test_one_wild_run_among_good_runs_never_fails(median: float, tolerance: float, direction: Direction,
                                                  data: st.DataObject) -> None:
    good = [median * (1 + e) for e in data.draw(st.lists(st.floats(-tolerance * 0.95, tolerance * 0.95),
                                                         min_size=2, max_size=2))]
    outlier = median * data.draw(st.floats(min_value=0.01, max_value=5))
    samples = data.draw(st.permutations([*good, outlier]))
    decision = decide_baseline(samples, baseline(median, tolerance, direction))
    # The median ignores one outlier; when the outlier crosses the edge the range-based spread may
    # make it inconclusive (asks for a rerun), but it is never reported as a regression.
    assert decision.outcome is not Outcome.FAILED, decision.message


@settings(max_examples=300)
@given(medians, tolerances, st.data())
def test_halved_iops_fails(median: float, tolerance: float, data: st.DataObject) -> None:
    samples = [median * 0.5 * (1 + e) for e in data.draw(noise(0.2))]
    decision = decide_baseline(samples, baseline(median, tolerance))
    assert decision.outcome is Outcome.FAILED, decision.message
    assert "below baseline" in decision.message


@settings(max_examples=300)
@given(medians, tolerances, st.data())
def test_doubled_latency_fails_and_lower_latency_passes(median: float, tolerance: float,
                                                        data: st.DataObject) -> None:
    reference = baseline(median, tolerance, "lower-is-better")
    worse = decide_baseline([median * 2 * (1 + e) for e in data.draw(noise(0.2))], reference)
    better = decide_baseline([median * 0.5 * (1 + e) for e in data.draw(noise(0.2))], reference)
    assert worse.outcome is Outcome.FAILED, worse.message
    assert "above baseline" in worse.message
    assert better.outcome is Outcome.PASSED, better.message


@settings(max_examples=300)
@given(medians, st.floats(min_value=0.2, max_value=0.6), st.floats(min_value=0, max_value=1), directions)
def test_noisy_samples_straddling_the_edge_are_inconclusive(median: float, width: float, where: float,
                                                            direction: Direction) -> None:
    reference = baseline(median, 0.15, direction)
    edge = median * (0.85 if direction == "higher-is-better" else 1.15)
    low, high = edge * (1 - width), edge * (1 + width)
    samples = [low, low + (high - low) * where, high]
    decision = decide_baseline(samples, reference, max_spread=0.25)
    assert decision.outcome is Outcome.INCONCLUSIVE, decision.message
    assert "straddle" in decision.message and "over the 25%" in decision.message


def test_straddling_with_a_narrow_spread_is_decided_on_the_median() -> None:
    reference = baseline(10_000)  # edge 8,500
    assert decide_baseline([8_400, 8_600, 8_700], reference).outcome is Outcome.PASSED
    assert decide_baseline([8_300, 8_400, 8_600], reference).outcome is Outcome.FAILED


def test_a_wide_spread_entirely_below_the_edge_still_fails() -> None:
    decision = decide_baseline([2_000, 5_000, 6_000], baseline(10_000))
    assert decision.outcome is Outcome.FAILED
    assert decision.spread is not None and decision.spread > 0.25


@pytest.mark.parametrize("samples", [[None, None, None], [1_000.0, None, 1_100.0], []])
@pytest.mark.parametrize("direction", ["higher-is-better", "lower-is-better"])
def test_missing_values_are_inconclusive_never_passed(samples: list[float | None], direction: Direction) -> None:
    decision = decide_baseline(samples, baseline(1_000, direction=direction))
    assert decision.outcome is Outcome.INCONCLUSIVE
    assert decision.median is None
    assert "cannot judge against baseline 1,000" in decision.message
    limit = Limit("nvme-local", "randread-4k-qd1", "clat_p99_us", None, 2_000)
    assert decide_limit(samples, limit).outcome is Outcome.INCONCLUSIVE


def test_none_message_says_why() -> None:
    decision = decide_baseline([None, None, None], baseline(900, direction="lower-is-better"))
    assert decision.message == (
        "randread-4k-qd32x4 clat_p99_us: not measured in 3 of 3 runs (fio reported no value: gtod_reduce, "
        "no percentiles, or no I/O in that direction); cannot judge against baseline 900 µs (tolerance 15%)"
    )


def test_regression_message_names_profile_metric_baseline_samples_and_tolerance() -> None:
    decision = decide_baseline([5_100, 5_210, 5_400], baseline(10_020))
    assert decision.message == (
        "randread-4k-qd32x4 iops: median 5,210 (samples 5,100 5,210 5,400) is 48% below baseline 10,020 "
        "(tolerance 15%)"
    )
    assert (decision.median, decision.reference, decision.edge, decision.tolerance) == (5_210, 10_020, 8_517, 0.15)
    assert decision.outcome == "failed"  # a StrEnum: serializes as the plain word


def test_latency_message_has_units() -> None:
    decision = decide_baseline([400, 412, 430], baseline(298, direction="lower-is-better"))
    assert decision.failed
    assert decision.message == (
        "randread-4k-qd32x4 clat_p99_us: median 412 µs (samples 400 412 430) is 38% above baseline 298 µs "
        "(tolerance 15%)"
    )


@pytest.mark.parametrize(
    ("samples", "floor", "ceiling", "outcome", "text"),
    [
        ([90_000, 95_000, 99_000], 80_000, None, Outcome.PASSED, "is at or above floor 80,000 (nvme-local)"),
        ([40_000, 41_000, 42_000], 80_000, None, Outcome.FAILED, "is below floor 80,000 by 49% (nvme-local)"),
        ([60_000, 85_000, 110_000], 80_000, None, Outcome.INCONCLUSIVE, "straddle floor 80,000 (nvme-local)"),
        ([3_000, 3_100, 2_900], None, 5_000, Outcome.PASSED, "is at or below ceiling 5,000"),
        ([9_000, 9_100, 9_200], None, 5_000, Outcome.FAILED, "is above ceiling 5,000 by 82%"),
        ([70_000, 95_000, 130_000], 60_000, 96_000, Outcome.INCONCLUSIVE, "straddle ceiling 96,000"),
        ([90_000, 95_000, 99_000], 80_000, 200_000, Outcome.PASSED, "floor 80,000"),
        ([190_000, 195_000, 199_000], 80_000, 150_000, Outcome.FAILED, "is above ceiling 150,000"),
    ],
)
def test_decide_limit(samples: list[float], floor: float | None, ceiling: float | None, outcome: Outcome,
                      text: str) -> None:
    decision = decide_limit(samples, Limit("nvme-local", "randread-4k-qd32x4", "iops", floor, ceiling),
                            max_spread=0.25)
    assert decision.outcome is outcome, decision.message
    assert text in decision.message
    assert decision.message.startswith("randread-4k-qd32x4 iops: ")


def test_limit_without_bounds_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="neither floor nor ceiling"):
        decide_limit([1.0], Limit("c", "p", "iops"))


def test_unchanged_noisy_system_gives_no_false_alarms_and_halved_iops_is_always_caught() -> None:
    """Simulate 2,000 gate runs of 3 fio runs each with 5 % run-to-run noise (seeded, deterministic)."""
    rng = random.Random(20240502)
    reference = baseline(10_000, tolerance=0.15)
    unchanged = [decide_baseline([rng.gauss(10_000, 500) for _ in range(3)], reference) for _ in range(2_000)]
    halved = [decide_baseline([rng.gauss(5_000, 250) for _ in range(3)], reference) for _ in range(2_000)]
    assert sum(d.failed for d in unchanged) == 0
    assert sum(d.failed for d in halved) == 2_000


def test_spread() -> None:
    assert spread([5.0, 5.0, 5.0]) == 0
    assert spread([90.0, 100.0, 110.0]) == pytest.approx(0.2)
    assert spread([0.0, 0.0, 1.0]) == float("inf")


def test_fingerprint_diff_names_fields_that_differ() -> None:
    current = {**FINGERPRINT, "kernel": "6.6.13-amd64", "io_mode": "native"}
    del current["libvirt"]
    assert fingerprint_diff(FINGERPRINT, current) == [
        "kernel: recorded '6.1.0-21-amd64', now '6.6.13-amd64'",
        "libvirt: recorded '9.0.0', now unknown",
        "io_mode: recorded 'io_uring', now 'native'",
    ]
    assert fingerprint_diff(FINGERPRINT, dict(FINGERPRINT)) == []
    assert fingerprint_diff({"site": "a"}, {"site": "b"}) == ["site: recorded 'a', now 'b'"]


def test_baseline_decision_warns_about_a_different_environment() -> None:
    decision = decide_baseline([10_000, 10_100, 9_900], baseline(10_000),
                               fingerprint={**FINGERPRINT, "qemu": "8.2.0"})
    assert decision.passed
    assert decision.warnings == (
        "baseline of hv01/db01/vdb randread-4k-qd32x4 was recorded on 2024-05-02 on a different environment: "
        "qemu: recorded '7.2.9', now '8.2.0'",
    )
    assert decide_baseline([10_000], baseline(10_000), fingerprint=dict(FINGERPRINT)).warnings == ()
