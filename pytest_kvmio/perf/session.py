"""The perf half's session state and hooks: thresholds loaded once, measurements cached, the perf results file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from pytest_kvmio.files.atomic import write_atomically
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.results import HOST_FIELDS, PerfResult
from pytest_kvmio.perf.thresholds import Profile, Thresholds, ThresholdsError
from pytest_kvmio.runconfig import run_config

# --- session state --------------------------------------------------------------------------


@dataclass
class PerfState:
    """Per session: the thresholds, the measurements, which scratch disks were pre-filled."""

    config: pytest.Config
    results: dict[tuple[str, str], PerfResult | BaseException] = field(default_factory=dict)
    prefilled: set[str] = field(default_factory=set)
    _thresholds: Thresholds | None = None

    @property
    def thresholds(self) -> Thresholds:
        """Load the thresholds directory once; a bad file is a usage error naming it."""
        if self._thresholds is None:
            self._thresholds = _load(self.config)
        return self._thresholds

    def repeat(self, profile: Profile) -> int:
        """Return the runs per profile: --fio-repeat > KVMIO_FIO_REPEAT > ini > profiles.yaml (validated in settings)."""
        value = run_config(self.config).fio_repeat
        return profile.repeat if value is None else value

    def progress(self, line: str) -> None:
        """Write a progress line to the terminal (fio runs are long)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.config.get_verbosity() < -1:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            reporter.ensure_newline()
            reporter.write_line(line)
            return
        with capture.global_and_fixture_disabled():  # a test is running: its output is captured
            reporter.ensure_newline()
            reporter.write_line(line)

    def write_results(self, path: str) -> int:
        """Write the perf results file for `kvmio baseline record`; return the number of results."""
        done = [r for r in self.results.values() if isinstance(r, PerfResult) and r.runs]
        host = next((r.fingerprint for r in done), {})
        document = {
            "fingerprint": {k: host.get(k) for k in HOST_FIELDS},
            "results": [r.as_result() for r in sorted(done, key=lambda r: (r.target, r.profile))],
        }
        write_atomically(path, json.dumps(document, indent=2) + "\n")
        return len(done)


PERF = pytest.StashKey[PerfState]()


def _load(config: pytest.Config) -> Thresholds:
    run = run_config(config)
    directory, source = run.thresholds_directory()
    try:
        thresholds = load_thresholds(directory)
    except ThresholdsError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None
    if run.fio_runtime is not None or run.fio_ramp_time is not None:
        thresholds = thresholds.with_timing(runtime=run.fio_runtime, ramp_time=run.fio_ramp_time)
    return thresholds


def state(config: pytest.Config) -> PerfState:
    """Return the session's perf state (created on first use)."""
    found = config.stash.get(PERF, None)
    if found is None:
        found = config.stash[PERF] = PerfState(config)
    return found


class PerfPlugin:
    """Hooks of the perf half: thresholds validated before collection, the results file at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config  # option conflicts (--fio-results with --host/--domain-xml): runconfig decides the mode

    def pytest_collection(self, session: pytest.Session) -> None:
        """Read explicitly named thresholds before collecting, so a bad file is a usage error (exit 4)."""

        run = run_config(self.config)
        if run.thresholds is not None or run.fio_results:
            state(self.config).thresholds  # noqa: B018 - loads and validates

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = run_config(self.config).perf_results
        perf = self.config.stash.get(PERF, None)
        if path and perf is not None:
            count = perf.write_results(path)
            perf.progress(f"kvmio: {count} perf result(s) written to {path} (kvmio baseline record --results {path})")

