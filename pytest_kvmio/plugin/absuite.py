"""What suites/test_ab.py uses: the `--kvmio-ab` experiments, running one on a host, and judging it against `--kvmio-ab-expect`.

    pytest suites/test_ab.py --host=local --kvmio-ab=a=kvmio-lab-ab/vdb,b=kvmio-lab-ab/vdc,profile=randread-4k-qd32x4 \\
        --kvmio-ab-expect=not-worse

Each `--kvmio-ab` value is one experiment (keys a, b, profile; optional rounds, margin, metric) and makes one item
per host, rule `ab-expect`: `better` passes when B is better than A on the metric beyond the margin, `not-worse`
when the whole 95 % interval lies above A's −margin. An interval that can't decide is inconclusive (skipped, and a
failure with --kvmio-fail-inconclusive), never a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_kvmio.errors import CouldNotJudge, InputError
from pytest_kvmio.facts.targets import HostTarget
from pytest_kvmio.perf.ab import (
    DEFAULT_ROUNDS,
    AbResult,
    AbRunError,
    ArmSpec,
    attach_runners,
    parse_arm,
    parse_margin,
    plan,
    run_experiment,
)
from pytest_kvmio.perf.abstats import DEFAULT_MARGIN, direction_of
from pytest_kvmio.perf.session import state
from pytest_kvmio.perf.thresholds import ThresholdsError
from pytest_kvmio.plugin import historysuite
from pytest_kvmio.report import abreport
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.settings import key_values

EXPECTATIONS = ("better", "not-worse")
DEFAULT_EXPECT = "not-worse"
SPEC_KEYS = ("a", "b", "profile", "rounds", "margin", "metric")


@dataclass(frozen=True)
class AbSpec:
    """One `--kvmio-ab` experiment: arms, profile, rounds, margin and the metric the expectation is about."""

    a: ArmSpec
    b: ArmSpec
    profile: str
    rounds: int = DEFAULT_ROUNDS
    margin: float = DEFAULT_MARGIN
    metric: str = "iops"

    @property
    def id(self) -> str:
        return f"{self.a.text}-vs-{self.b.text}-{self.profile}-{self.metric}"

    def __str__(self) -> str:  # the item's parameter in the verdict record
        return f"a={self.a.text},b={self.b.text},profile={self.profile},rounds={self.rounds},margin={self.margin:g},metric={self.metric}"


def parse_spec(text: str) -> AbSpec:
    """Read `a=ARM,b=ARM,profile=P[,rounds=N][,margin=5%][,metric=iops]`; ValueError names the key."""
    values: dict[str, str] = key_values(text, SPEC_KEYS)
    missing = [k for k in ("a", "b", "profile") if k not in values]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}; expected a=DOMAIN/DISK[@host],b=DOMAIN/DISK[@host],profile=NAME")
    try:
        a, b = parse_arm(values["a"], "a"), parse_arm(values["b"], "b")
    except InputError as exc:
        raise ValueError(str(exc)) from None
    rounds = values.get("rounds", str(DEFAULT_ROUNDS))
    if not rounds.isdigit() or int(rounds) < 1:
        raise ValueError(f"rounds={rounds}: expected a whole number of at least 1")
    metric = values.get("metric", "iops")
    try:
        direction_of(metric)
    except KeyError as exc:
        raise ValueError(f"metric={metric}: {exc.args[0]}") from None
    margin = parse_margin(values["margin"]) if "margin" in values else DEFAULT_MARGIN
    return AbSpec(a, b, values["profile"], int(rounds), margin, metric)


def expectation(value: str) -> str:
    """Read --kvmio-ab-expect."""
    if value not in EXPECTATIONS:
        raise ValueError(f"expected one of {', '.join(EXPECTATIONS)}")
    return value


def specs(config: pytest.Config) -> list[AbSpec]:
    """Return the experiments asked for with --kvmio-ab (none: the rule concerns nothing)."""
    return list(run_config(config).ab)


def run(config: pytest.Config, host: HostTarget, spec: AbSpec) -> AbResult:
    """Run one experiment on a host; a bad arm or a failed run makes the item an error naming it."""
    perf = state(config)
    try:
        profile = perf.thresholds.profile(spec.profile)
    except ThresholdsError as exc:
        raise CouldNotJudge(f"--kvmio-ab {spec}: {exc}") from None
    run = run_config(config)
    try:
        a, b = plan(host, spec.a, spec.b, profile, run.scratch_serial)
        attach_runners(a, b, host, guest_spec=run.guest, scratch_pattern=run.scratch_serial,
                       progress=perf.progress, prefilled=perf.prefilled)
        result = run_experiment(a, b, profile, rounds=spec.rounds, margin=spec.margin, progress=perf.progress)
    except InputError as exc:
        raise CouldNotJudge(f"--kvmio-ab {spec}: nothing run: {exc}") from None
    except AbRunError as exc:
        raise CouldNotJudge(f"--kvmio-ab {spec}: {exc}") from None
    history = historysuite.plugin(config)
    if history is not None:  # --kvmio-history: both arms' measurements go into the results history
        history.record_ab(result, host)
    return result


def attach(config: pytest.Config, result: AbResult) -> None:
    """Attach the table and the chart to the item's Allure result (when Allure records this run)."""
    if not config.pluginmanager.hasplugin("allure_pytest") or not config.getoption("allure_report_dir", None):
        return
    import allure  # allure-pytest is loaded: its API is importable

    allure.attach(abreport.table_html(result), "A/B table", allure.attachment_type.HTML)
    png = abreport.chart_png(result)
    if png is not None:
        allure.attach(png, "A/B chart", allure.attachment_type.PNG)


def judge(result: AbResult, spec: AbSpec, expect: str, record: Callable[[str, object], None]) -> None:
    """Pass when B meets the expectation on the spec's metric, fail when it surely does not, else inconclusive."""
    __tracebackhide__ = True
    comparison = result.comparison(spec.metric)
    what = f"{spec.b.text} vs {spec.a.text}, {spec.profile}, {result.rounds} rounds: {comparison.explain()}"
    record("kvmio_note", what)
    if expect == "better":
        decided_bad = comparison.verdict in ("worse", "same")
        met = comparison.verdict == "better"
    else:
        decided_bad = comparison.verdict == "worse"
        met = comparison.not_worse
    if met:
        return
    wanted = "B better than A" if expect == "better" else f"B not worse than A by more than {spec.margin:.0%}"
    if decided_bad:
        pytest.fail(f"expected {wanted}: {what}", pytrace=False)
    record("kvmio_outcome", "inconclusive")
    pytest.skip(f"inconclusive: expected {wanted}: {what}")


def facts(result: AbResult) -> dict[str, Any]:
    """Return the verdict facts of an experiment (the `kvmio ab --json` document)."""
    return result.document()
