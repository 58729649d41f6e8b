"""The results history in a pytest run (`--kvmio-history URL`): every perf measurement appended, and the perf-history
rule of suites/test_perf.py judged on the series.

`HistoryPlugin` opens the store before collection (a bad or unreachable URL is a usage error, exit 4), appends each
measurement once (when a rule reads the series, else after the item that measured it; xdist workers write at the
same time, under the controller's run id) and says at the end how many points it added. The perf-history rule
records this run's points, reads the series, finds its change points and judges them (`decide`): a change for the
worse beyond the storage class's tolerance fails until the series recovers or a waiver names that change point
(`change_point: RUN` in the waivers file); a series too short to tell is inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.facts.targets import iter_targets
from pytest_kvmio.history.changepoints import DEFAULT_MIN_SEGMENT
from pytest_kvmio.history.measurements import (
    ci_metadata,
    disk_fingerprint,
    fio_results_run,
    new_run_id,
    points_of_ab,
    points_of_result,
    series_host,
)
from pytest_kvmio.history.plot import plot_png
from pytest_kvmio.history.series import HistoryDecision, Series, group, judge_series
from pytest_kvmio.history.store import HistoryError, Store, open_store
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.perf.results import PerfResult
from pytest_kvmio.perf.session import PERF
from pytest_kvmio.perf.session import state as perf_state
from pytest_kvmio.perf.thresholds import DEFAULT_TOLERANCE, direction_of
from pytest_kvmio.plugin import perfsuite
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.state import STATE

#: The run id a pytest-xdist controller hands its workers, so one session's points share it.
WORKER_RUN = "kvmio_history_run"
#: Fewest points before the perf-history rule judges a series: a change point needs min_segment on both sides.
MIN_POINTS = 2 * DEFAULT_MIN_SEGMENT
#: Metrics the perf-history rule judges besides those the class limits or baselines name.
ALWAYS_JUDGED = ("iops",)
HISTORY_PLUGIN = "kvmio-history"


class HistoryPlugin:
    """Append the run's measurements to the results history; serve the perf-history rule its series."""

    def __init__(self, config: pytest.Config, url: str, source: str) -> None:
        self.config = config
        self.url = url
        self.source = source
        workerinput = getattr(config, "workerinput", None)
        self.run = str(workerinput[WORKER_RUN]) if workerinput and workerinput.get(WORKER_RUN) else self._run_id()
        self.ci = ci_metadata()
        self._store: Store | None = None
        self.recorded: set[tuple[str, str]] = set()
        self.added = 0
        self._targets: dict[str, Any] | None = None
        self._guest_kernels: dict[str, str | None] = {}
        self.lost = 0  # points the store refused mid-run (said at the end)
        self.problem = ""

    def _run_id(self) -> str:
        run = run_config(self.config)
        return fio_results_run(run.fio_results) if run.fio_results else new_run_id()

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = open_store(self.url)
            except HistoryError as exc:
                raise pytest.UsageError(f"{self.source}: {exc}") from None
        return self._store

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Give every pytest-xdist worker this session's run id."""
        node.workerinput[WORKER_RUN] = self.run

    def pytest_collection(self, session: pytest.Session) -> None:
        """Open the store before collecting: a bad or unreachable URL stops the run (exit 4) naming it."""
        self.store  # noqa: B018 - opens and checks

    def _target(self, target_id: str) -> Any:
        if self._targets is None:
            hosts = self.config.stash[STATE].hosts()
            self._targets = {t.disk.id: t for t in iter_targets(hosts, "disk") if t.disk is not None}
        return self._targets.get(target_id)

    def _guest_kernel(self, target: Any) -> str | None:
        """Return the guest's kernel (`uname -r`), when this session already reached the guest; asked once."""
        domain = target.domain.id
        if domain not in self._guest_kernels:
            guest = self.config.stash[STATE].guests.get(domain)
            kernel = None
            if guest is not None and hasattr(guest, "run"):
                try:
                    out = guest.run("uname -r")
                    kernel = out.stdout.strip() or None if out.rc == 0 else None
                except Exception:  # noqa: BLE001 - a guest kernel is a nice-to-have fact, never a reason to stop
                    kernel = None
            self._guest_kernels[domain] = kernel
        return self._guest_kernels[domain]

    def record(self, result: PerfResult) -> None:
        """Append a measurement's points once per session (the unique key keeps a second writer's copy out)."""
        key = (result.target, result.profile)
        if key in self.recorded or not result.runs:
            return
        self.recorded.add(key)
        target = self._target(result.target)
        disk = target.disk if target is not None else None
        facts = target.host.facts if target is not None else None
        host_uuid = getattr(facts, "host_uuid", None)
        offline = run_config(self.config).offline
        fingerprint = disk_fingerprint(result, disk, host_uuid=host_uuid,
                                       guest_kernel=None if offline or target is None else self._guest_kernel(target))
        points = points_of_result(result, run=self.run, fingerprint=fingerprint,
                                  source="fio-results" if offline else "live", host_uuid=host_uuid, ci=self.ci)
        self.added += self._add(points)

    def record_ab(self, result: Any, host: Any) -> None:
        """Append both arms of an A/B experiment."""
        self.added += self._add(points_of_ab(result, host, run=self.run, ci=self.ci))

    def _add(self, points: list[Any]) -> int:
        """Add points; a store that fails now (the server went away) raises CouldNotJudge naming it."""
        try:
            return self.store.add(points)
        except HistoryError as exc:
            self.lost += len(points)
            self.problem = str(exc)
            raise CouldNotJudge(f"{self.source}: {exc}") from None

    def record_pending(self) -> None:
        """Append every measurement of the session not appended yet."""
        perf = self.config.stash.get(PERF, None)
        if perf is None:
            return
        for found in list(perf.results.values()):
            if isinstance(found, PerfResult):
                self.record(found)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        try:
            self.record_pending()
        except CouldNotJudge:
            pass  # counted in `lost` and said at the end of the session: a store failure is not this item's verdict

    def series(self, result: PerfResult, metric: str) -> Series:
        """Return the series of a measurement's metric (this run's point in it), analysed."""
        self.record(result)
        target = self._target(result.target)
        host_uuid = getattr(target.host.facts, "host_uuid", None) if target is not None else None
        host = series_host(result.target, host_uuid)
        try:
            points = self.store.points(host=host, target=result.target, profile=result.profile, metric=metric)
        except HistoryError as exc:
            raise CouldNotJudge(f"{self.source}: {exc}") from None
        found = group(points)
        return found[0].analyse() if found else Series((host, result.target, result.profile, metric), [])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self.record_pending()
        except CouldNotJudge:
            pass  # said below
        finally:
            if self._store is not None:
                self._store.close()
        if self.lost:
            perf_state(self.config).progress(
                f"kvmio: results history: {self.lost} point(s) NOT added: {self.problem}; import this run's "
                "--kvmio-perf-results file later with `kvmio history import`"
            )
        if getattr(self.config, "workerinput", None) is None:
            perf_state(self.config).progress(
                f"kvmio: results history {redact_uri(self.url)}: run {self.run}, {self.added} point(s) added"
                + (" here (the workers add theirs)" if self.config.pluginmanager.hasplugin("dsession") else "")
            )


def register(config: pytest.Config) -> None:
    """Register the history plugin when the run has a results history (`--kvmio-history`, KVMIO_HISTORY, ini)."""
    run = run_config(config)
    if run.history and run.mode != "domain_xml":  # linting XML measures nothing: no store to open
        config.pluginmanager.register(HistoryPlugin(config, run.history, run.sources.get("history", "--kvmio-history")),
                                      HISTORY_PLUGIN)


def plugin(config: pytest.Config) -> HistoryPlugin | None:
    """Return the run's history plugin, None without a results history."""
    found = config.pluginmanager.get_plugin(HISTORY_PLUGIN)
    return found if isinstance(found, HistoryPlugin) else None


# --- the perf-history rule ---------------------------------------------------------------------------------------


def history_metrics(config: pytest.Config, profile: str) -> list[str]:
    """Return the metrics perf-history judges for a profile: iops, and those the class limits or baselines name."""
    wanted = set(ALWAYS_JUDGED) | set(perfsuite.limit_metrics(config, profile)) | set(perfsuite.baseline_metrics(config, profile))
    return sorted(wanted, key=lambda m: (m not in ALWAYS_JUDGED, m))


def tolerance_of(fio: Any) -> float:
    """Return how much worse a metric may get before perf-history fails: the storage class's tolerance."""
    storage_class = getattr(fio, "storage_class", None)
    value = getattr(storage_class, "tolerance", None)
    return float(value) if value is not None else DEFAULT_TOLERANCE


def waived_change_points(config: pytest.Config, target: str) -> Callable[[str], bool]:
    """Return whether a change point's run is named by a valid perf-history waiver for this target."""
    waivers = config.pluginmanager.get_plugin("kvmio-waivers")
    if waivers is None:
        return lambda run: False
    valid = [w for w in waivers.waivers if not w.expired(waivers.today)]
    runs = {w.change_point for w in valid if w.change_point and w.matches("perf-history", target, w.change_point)}
    return lambda run: run in runs


def decide(config: pytest.Config, fio: Any, result: PerfResult, metric: str) -> tuple[HistoryDecision, Series]:
    """Record this run's points, read the series of `metric` and judge it."""
    history = plugin(config)
    if history is None:
        raise pytest.UsageError("perf-history needs a results history: pass --kvmio-history URL")
    series = history.series(result, metric)
    decision = judge_series(series, direction=direction_of(metric), tolerance=tolerance_of(fio), min_points=MIN_POINTS,
                            waived=waived_change_points(config, result.target))
    return decision, series


def attach(config: pytest.Config, series: Series) -> None:
    """Attach the series' plot (change points and environment changes marked) to the item's Allure result."""
    if not config.pluginmanager.hasplugin("allure_pytest") or not config.getoption("allure_report_dir", None):
        return
    import allure  # allure-pytest is loaded: its API is importable

    png = plot_png(series)
    if png is not None:
        allure.attach(png, f"history: {series.target} {series.profile} {series.metric}", allure.attachment_type.PNG)


def judge(decision: HistoryDecision, target: str, record: Callable[[str, object], None]) -> None:
    """Pass, fail with the change point, its ratio and the environment diff, or mark inconclusive and skip."""
    __tracebackhide__ = True
    if decision.outcome == "inconclusive":
        record("kvmio_outcome", "inconclusive")
        pytest.skip(f"{target}: inconclusive: {decision.message}")
    if decision.outcome == "failed":
        pytest.fail(f"{target}: {decision.message}", pytrace=False)
    record("kvmio_note", f"{target}: {decision.message}")
