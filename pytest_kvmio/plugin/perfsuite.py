"""What suites/test_perf.py uses: the profiles and metrics it parametrizes over, and how a decision becomes a verdict.

Inconclusive decisions mark the verdict inconclusive (`kvmio_record("kvmio_outcome", "inconclusive")`)
and SKIP the test with the decision's message, so a plain pytest run does not fail on noise;
`--kvmio-fail-inconclusive` turns them into a failing exit status (the gate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_kvmio.facts.targets import iter_targets
from pytest_kvmio.perf.decide import Decision, Outcome
from pytest_kvmio.perf.results import HOST_CPU, PerfResult, unit_of
from pytest_kvmio.perf.session import state
from pytest_kvmio.perf.thresholds import (
    METRIC_DIRECTIONS,
    Limit,
)
from pytest_kvmio.state import STATE

# --- parametrization of the suite ------------------------------------------------------------

def profile_names(config: pytest.Config) -> list[str]:
    """Return the profiles of the thresholds directory, in file order."""
    return list(state(config).thresholds.profiles)

def _disk_targets(config: pytest.Config) -> list[Any]:

    return [t for t in iter_targets(config.stash[STATE].hosts(), "disk") if t.disk is not None]

def limit_metrics(config: pytest.Config, profile: str) -> list[str]:
    """Return the metrics (host CPU aside) with a limit for `profile` in a class some disk belongs to."""
    thresholds = state(config).thresholds
    found = (thresholds.class_for(t.disk.id, t.disk.serial) for t in _disk_targets(config))
    classes = {c.name for c in found if c is not None}
    metrics = {m for c in classes for m in thresholds.limits(c, profile)}
    metrics.discard(HOST_CPU)
    return sorted(metrics, key=_metric_order)

def baseline_metrics(config: pytest.Config, profile: str) -> list[str]:
    """Return the metrics some disk has a baseline for, for `profile`."""
    thresholds = state(config).thresholds
    found: set[str] = set()
    for t in _disk_targets(config):
        found.update(thresholds.baselines_for(t.disk.id, profile))
    return sorted(found, key=_metric_order)

def _metric_order(metric: str) -> tuple[int, str]:
    order = list(METRIC_DIRECTIONS)
    return (order.index(metric) if metric in order else len(order), metric)

def io_path(disk: Any) -> str:
    """Return how a disk's I/O is served, for host CPU tables: the AIO mode QEMU uses, or vhost-user."""
    return "vhost-user" if getattr(disk, "is_vhost_user", False) else str(disk.effective_io)

# --- verdicts -------------------------------------------------------------------------------

def perf_facts(decision: Decision, result: PerfResult, *, limit: Limit | None = None) -> dict[str, Any]:
    """Return the `perf` verdict facts of one decision (for the Allure table and chart)."""
    return {
        "profile": decision.profile,
        "metric": decision.metric,
        "median": decision.median,
        "estimator": decision.estimator,
        "samples": list(decision.samples),
        "limit": None if limit is None else {"floor": limit.floor, "ceiling": limit.ceiling, "class": limit.storage_class},
        "baseline": decision.reference if decision.kind == "baseline" else None,
        "tolerance": decision.tolerance,
        "band": decision.band,
        "undecided_band": decision.undecided_band,
        "noise": decision.noise,
        "baseline_noise": decision.baseline_noise,
        "unit": unit_of(decision.metric),
        "outcome": str(decision.outcome),
        "spread": decision.spread,
        "readonly": result.readonly,
        "device": result.device,
        "notes": result.notes,
    }

def judge(decision: Decision, target: str, record_property: Callable[[str, object], None]) -> None:
    """Pass, fail with the decision's message, or mark inconclusive and skip."""
    __tracebackhide__ = True
    for warning in decision.warnings:
        record_property("kvmio_note", warning)
    if decision.outcome is Outcome.INCONCLUSIVE:
        record_property("kvmio_outcome", "inconclusive")
        pytest.skip(f"{target}: inconclusive: {decision.message}")
    if decision.outcome is Outcome.FAILED:
        extra = f" ({'; '.join(decision.warnings)})" if decision.warnings else ""
        pytest.fail(f"{target}: {decision.message}{extra}", pytrace=False)

