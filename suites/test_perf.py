"""Performance rules: fio in the guest (or --fio-results files) against class limits and baselines.

Profiles come from the thresholds directory (`--thresholds`, default thresholds/). Each profile
runs `repeat` times per disk (--fio-repeat, default 3) once per session; the rules below judge
the median (a latency percentile: the percentile of the runs' pooled fio json+ histograms, where fio wrote them). Write profiles run only on scratch disks; read profiles use fio --readonly.
An inconclusive result (runs straddle the edge with too wide a spread) is recorded as
"inconclusive" and the test is SKIPPED with the reason; --kvmio-fail-inconclusive fails the run.
"""

from __future__ import annotations

import pytest

from pytest_kvmio.perf.decide import (
    DEFAULT_MAX_SPREAD,
    decide_baseline,
    decide_limit,
    format_value,
)
from pytest_kvmio.plugin import historysuite as history
from pytest_kvmio.plugin import perfsuite as perf
from pytest_kvmio.state import parametrize_with_targets

pytestmark = pytest.mark.perf


def pytest_generate_tests(metafunc):
    if "profile" not in metafunc.fixturenames:
        return
    config = metafunc.config
    params = []
    for name in perf.profile_names(config):
        if "metric" not in metafunc.fixturenames:
            params.append(pytest.param(name, id=name))
            continue
        function = metafunc.function.__name__
        wanted = (history.history_metrics if "history" in function else perf.baseline_metrics if "baseline" in function
                  else perf.limit_metrics)
        for metric in wanted(config, name) or ["-"]:
            rule = ("perf-history" if "history" in function else "perf-baseline" if "baseline" in function
                    else f"perf-{name}")
            params.append(pytest.param(name, metric, id=f"{name}-{metric}", marks=pytest.mark.rule(rule)))
    names = "profile" if "metric" not in metafunc.fixturenames else "profile,metric"
    parametrize_with_targets(metafunc, names, params)  # with the disks, so pairs no rule concerns make no item


# The rule id, perf-<profile>, is set per parameter in pytest_generate_tests.
def test_profile_meets_the_class_limits(disk, fio, profile, metric, kvmio_facts, kvmio_record):
    """The storage class promises a floor or ceiling for this profile; a median beyond it is broken storage."""
    limit = fio.limit(profile, metric)
    result = fio.run(profile)
    decision = decide_limit(
        result.samples(metric), limit, max_spread=fio.storage_class.max_spread, pooled=result.pooled(metric)
    )
    kvmio_facts["perf"] = perf.perf_facts(decision, result, limit=limit)
    perf.judge(decision, disk.id, kvmio_record)


@pytest.mark.rule("perf-baseline")
def test_profile_has_not_regressed_from_the_baseline(disk, fio, profile, metric, kvmio_facts, kvmio_record):
    """A change (kernel, QEMU, io mode, template) must not make a disk slower than its recorded baseline."""
    baseline = fio.thresholds.baseline(disk.id, profile, metric)
    if baseline is None:
        pytest.skip(f"{disk.id}: no {metric} baseline for {profile}; record one with `kvmio baseline record`")
    result = fio.run(profile)
    max_spread = fio.storage_class.max_spread if fio.storage_class else DEFAULT_MAX_SPREAD
    decision = decide_baseline(
        result.samples(metric), baseline, max_spread=max_spread, fingerprint=fio.fingerprint(),
        pooled=result.pooled(metric),
    )
    kvmio_facts["perf"] = perf.perf_facts(decision, result)
    perf.judge(decision, disk.id, kvmio_record)


@pytest.mark.rule("perf-history")
def test_profile_has_no_standing_change_for_the_worse_in_history(disk, fio, profile, metric, kvmio_facts, kvmio_record):
    """A disk that got slower at some run stays flagged until it recovers or the change is accepted: the nightly history shows when it happened and what changed in the environment then."""
    result = fio.run(profile)
    decision, series = history.decide(fio.request.config, fio, result, metric)
    kvmio_facts["history"] = decision.facts() | {"points": len(series.points), "tolerance": history.tolerance_of(fio)}
    history.attach(fio.request.config, series)
    history.judge(decision, disk.id, kvmio_record)


@pytest.mark.rule("perf-host-cpu")
def test_host_cpu_cost_per_io(disk, fio, profile, kvmio_facts, kvmio_record):
    """CPU the hypervisor spends per guest I/O is what io_uring saves over native and threads; bound it per class."""
    storage_class = fio.require_class()
    result = fio.run(profile)
    samples = result.samples(perf.HOST_CPU)
    if all(s is None for s in samples):
        pytest.skip(f"{disk.id}: {profile}: host CPU not measured ({'; '.join(result.notes) or 'no .hostcpu files'})")
    io_mode = perf.io_path(disk)
    counted = {"io_mode": io_mode, "counted": result.host_cpu_counted}
    kvmio_facts["perf"] = {
        "profile": profile, "metric": perf.HOST_CPU, "median": result.median(perf.HOST_CPU), "samples": samples,
        "limit": None, "baseline": None, "tolerance": None, "unit": "µs/IO",
    } | counted
    limit = fio.thresholds.limits(storage_class.name, profile).get(perf.HOST_CPU)
    if limit is None:
        median = result.median(perf.HOST_CPU)
        shown = "not measured" if median is None else f"{format_value(median)} µs per I/O"
        processes = f"; counted: {', '.join(result.host_cpu_counted)}" if result.host_cpu_counted else ""
        kvmio_record("kvmio_note", f"{disk.id}: {profile}: host CPU {shown} (io={io_mode}; no limit in {storage_class.name}{processes})")
        return
    decision = decide_limit(samples, limit, max_spread=storage_class.max_spread)
    kvmio_facts["perf"] = perf.perf_facts(decision, result, limit=limit) | counted
    perf.judge(decision, disk.id, kvmio_record)
