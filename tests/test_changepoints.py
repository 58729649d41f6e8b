"""The change-point detector (E-divisive with a permutation test) and the environment diff between segments."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from pytest_kvmio.history.changepoints import ChangePoint, detect
from pytest_kvmio.history.fingerprint import describe_diff, segment_diff, storage_xml, xml_hash
from pytest_kvmio.history.series import Point, Series, judge_series


def noisy(n: int, sigma: float, seed: int, level: float = 20_000.0) -> list[float]:
    rng = random.Random(seed)
    return [level * math.exp(rng.gauss(0, sigma)) for _ in range(n)]


def test_a_30_percent_drop_is_found_where_it_happened_with_segment_medians():
    values = noisy(20, 0.05, 1) + noisy(20, 0.05, 2, level=14_000.0)
    (change,) = detect(values)
    assert change.index == 20
    assert change.before == pytest.approx(20_000, rel=0.05) and change.after == pytest.approx(14_000, rel=0.05)
    assert change.ratio == pytest.approx(change.after / change.before)
    assert 0 < change.p_value <= 0.01


def test_the_detector_is_deterministic_for_a_seed():
    values = noisy(15, 0.15, 3) + noisy(15, 0.15, 4, level=15_000.0)
    assert detect(values, seed=5) == detect(values, seed=5)
    assert [c.index for c in detect(values, seed=5)] == [c.index for c in detect(values, seed=6)]


def test_one_spike_is_not_a_change():
    values = noisy(40, 0.05, 7)
    values[25] *= 0.4
    values[10] *= 1.8
    assert detect(values) == []


def test_a_change_needs_min_segment_points_on_each_side():
    values = noisy(30, 0.03, 8) + noisy(2, 0.03, 9, level=10_000.0)
    assert detect(values, min_segment=3) == []  # two low runs at the end: not yet a level
    assert [c.index for c in detect(values, min_segment=2)] == [30]


def test_two_changes_are_both_found():
    values = noisy(20, 0.05, 10) + noisy(20, 0.05, 11, level=13_000.0) + noisy(20, 0.05, 12)
    assert [c.index for c in detect(values)] == [20, 40]


def test_short_constant_and_zero_series_have_no_change():
    assert detect([]) == [] and detect([1.0] * 5) == [] and detect([5.0] * 40) == []
    assert detect([0.0] * 10 + [3.0] * 10)[0].index == 10  # zeros: the raw scale, not the log


def test_unchanged_series_rarely_raise_a_false_alarm():
    alarms = sum(1 for seed in range(300) if detect(noisy(30, 0.10, 1000 + seed), seed=seed))
    assert alarms <= 6, f"{alarms} of 300 unchanged series had a change point (alpha 1 %)"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="min_segment"):
        detect([1.0, 2.0], min_segment=0)
    with pytest.raises(ValueError, match="alpha"):
        detect([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="finite"):
        detect([1.0, math.nan])


def test_a_change_point_is_a_frozen_dataclass_with_the_contract_fields():
    names = {f.name for f in dataclasses.fields(ChangePoint)}
    assert {"index", "before", "after", "ratio", "p_value"} <= names
    with pytest.raises(dataclasses.FrozenInstanceError):
        ChangePoint(1, 1.0, 1.0, 1.0, None).index = 2  # type: ignore[misc]


# --- the environment diff ---------------------------------------------------------------------------------------

DOMAIN = """<domain type='kvm'><name>vm01</name><iothreads>{threads}</iothreads><devices>
  <disk type='file' device='disk'>
    <driver {driver}/>
    <source file='/var/lib/libvirt/images/vm01.qcow2'/>
    <target dev='vdb' bus='virtio'/><alias name='virtio-disk1'/>
  </disk>
  <disk type='file' device='disk'><driver name='qemu' io='native'/><target dev='vdc' bus='virtio'/></disk>
</devices></domain>"""


def fingerprint(kernel: str, driver: str, threads: int = 1) -> dict[str, str | None]:
    xml = storage_xml(DOMAIN.format(driver=driver, threads=threads), "vdb")
    return {"kernel": kernel, "qemu": "7.2", "io_mode": "x", "storage_xml": xml, "storage_xml_hash": xml_hash(xml)}


def test_the_storage_xml_is_compared_by_meaning_not_text():
    a = storage_xml(DOMAIN.format(driver="name='qemu' type='qcow2' io='native' cache='none'", threads=1), "vdb")
    b = storage_xml(DOMAIN.format(driver="cache='none'   io='native' type='qcow2' name='qemu'", threads=1), "vdb")
    assert a is not None and "vdc" not in a and "alias" not in a and "<iothreads>1</iothreads>" in a
    assert xml_hash(a) == xml_hash(b)
    assert segment_diff([{"storage_xml": a}], [{"storage_xml": b}]) == {}


def test_the_diff_names_the_kernel_and_the_io_mode_and_the_run_they_changed():
    before = [fingerprint("6.1.0", "name='qemu' io='native' cache='none'")] * 5
    after = [fingerprint("6.1.0", "name='qemu' io='threads' cache='none'")] + [
        fingerprint("6.1.5", "name='qemu' io='threads' cache='none'")] * 4
    diff = segment_diff(before, after, [f"run-{n}" for n in range(36, 41)])
    assert diff == {
        "kernel": {"before": "6.1.0", "after": "6.1.5", "run": "run-37"},
        "xml driver@io": {"before": "native", "after": "threads", "run": "run-36"},
    }
    assert describe_diff(diff) == "kernel 6.1.0 → 6.1.5 at run run-37; domain XML: driver io native → threads at run run-36"


def test_one_odd_point_does_not_make_a_segment_differ():
    before = [fingerprint("6.1.0", "io='native'")] * 6
    after = [fingerprint("6.1.0", "io='native'")] * 5 + [fingerprint("6.9.9", "io='native'")]
    assert segment_diff(before, after) == {}


# --- the gate on an analysed series -------------------------------------------------------------------------------


def series_of(values: list[float]) -> Series:
    points = [Point("hv01", "hv01/vm01/vdb", "p", "iops", f"r{i:02d}", f"2026-01-{i + 1:02d}T00:00:00+00:00", v,
                    digest=str(i)) for i, v in enumerate(values)]
    return Series(("hv01", "hv01/vm01/vdb", "p", "iops"), points).analyse()


def test_a_latency_that_rises_fails_and_one_that_falls_passes():
    up = series_of(noisy(15, 0.03, 20, level=100.0) + noisy(10, 0.03, 21, level=140.0))
    down = series_of(noisy(15, 0.03, 22, level=100.0) + noisy(10, 0.03, 23, level=60.0))
    assert judge_series(up, direction="lower-is-better", tolerance=0.15, min_points=6).outcome == "failed"
    assert judge_series(down, direction="lower-is-better", tolerance=0.15, min_points=6).outcome == "passed"
    assert judge_series(down, direction="higher-is-better", tolerance=0.15, min_points=6).outcome == "failed"


def test_a_change_within_the_tolerance_passes_but_two_that_add_up_beyond_it_fail():
    small = series_of(noisy(15, 0.01, 24) + noisy(15, 0.01, 25, level=18_000.0))
    assert [c.run for c in small.changes] == ["r15"]
    assert judge_series(small, direction="higher-is-better", tolerance=0.15, min_points=6).outcome == "passed"
    steps = series_of(noisy(15, 0.01, 26) + noisy(15, 0.01, 27, level=18_000.0) + noisy(15, 0.01, 28, level=16_000.0))
    decision = judge_series(steps, direction="higher-is-better", tolerance=0.15, min_points=6)
    assert decision.outcome == "failed" and decision.change is not None and decision.change.run == "r15"
    assert decision.current / decision.reference == pytest.approx(0.8, abs=0.02)  # type: ignore[operator]
