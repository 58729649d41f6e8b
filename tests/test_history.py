"""The results history: --fio-results series imported and appended, change points with the environment diff, the same
answer from SQLite and PostgreSQL, concurrent writers, the perf-history gate and its waivers, the command's errors.

PostgreSQL runs for real: a throwaway cluster started as the `postgres` user in a temporary directory
(tests/pgserver.py); if it can't start, the tests that need it are errors naming why, never skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.history.store import open_store
from tests import pgserver
from tests.conftest import SUITES, kvmio
from tests.history_data import PROFILE, write_runs, write_thresholds

TARGET = "hv01/vm01/vdb"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this module's tests (its socket directory)."""
    try:
        with pgserver.server() as socket_dir:
            yield socket_dir
    except pgserver.ServerError as exc:
        pytest.fail(f"the throwaway PostgreSQL server did not start: {exc}", pytrace=False)


@pytest.fixture
def thresholds(tmp_path: Path) -> Path:
    return write_thresholds(tmp_path / "thresholds")


def history(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `kvmio history ...` (in `cwd`)."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from pytest_kvmio.cli import main; sys.exit(main())", "history", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )


def import_runs(url: str, thresholds: Path, runs: list[Path]) -> subprocess.CompletedProcess[str]:
    done = history("import", "--history", url, "--thresholds", str(thresholds), *map(str, runs))
    assert done.returncode == 0, done.stderr
    return done


def show_json(url: str, *extra: str) -> dict[str, Any]:
    done = history("show", "--history", url, "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def iops_series(document: dict[str, Any]) -> dict[str, Any]:
    (series,) = [s for s in document["series"] if s["metric"] == "iops"]
    return series


# --- the acceptance series: io native → threads at run 20, IOPS -30 % ---------------------------------------------


def test_an_io_change_at_run_20_is_one_change_point_at_run_20_naming_the_io_change(tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 40, change_at=20, drop=0.30)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    import_runs(url, thresholds, runs)
    document = show_json(url, "--target", "hv01/*", "--profile", PROFILE)
    assert set(document) == {"series"}
    series = iops_series(document)
    assert set(series) == {"target", "profile", "metric", "points", "change_points"}
    assert (series["target"], series["profile"]) == (TARGET, PROFILE)
    assert [p["run"] for p in series["points"]] == [f"run-{n:02d}" for n in range(1, 41)]
    assert set(series["points"][0]) == {"run", "time", "value"}
    # fio's own timestamp, not the import's: run 1 was written at 1,780,086,400 s (2026-05-29).
    assert series["points"][0]["time"].startswith("2026-05-29T")
    (change,) = series["change_points"]
    assert set(change) == {"run", "index", "before", "after", "ratio", "p_value", "env_diff"}
    assert change["run"] == "run-20" and change["index"] == 19
    assert change["ratio"] == pytest.approx(0.70, abs=0.03)
    assert change["after"] == pytest.approx(change["before"] * change["ratio"])
    assert 0 < change["p_value"] <= 0.01
    assert change["env_diff"] == {"xml driver@io": {"before": "native", "after": "threads", "run": "run-20"}}
    text = history("show", "--history", url, "--metric", "iops")
    assert "change point at run run-20 (#19)" in text.stdout
    assert "domain XML: driver io native → threads at run run-20" in text.stdout


def test_an_unchanged_series_with_noise_has_no_change_point(tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 30, change_at=99, drop=0.0, noise=0.08)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    import_runs(url, thresholds, runs)
    assert iops_series(show_json(url))["change_points"] == []


def test_importing_the_same_results_twice_adds_nothing(tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 8, change_at=99, drop=0.0)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = import_runs(url, thresholds, runs)
    assert "run-01: 12 of 12 point(s) added" in first.stdout
    again = import_runs(url, thresholds, runs)
    assert again.stdout.count("0 of 12 point(s) added") == 8, again.stdout
    # A copy of the same results under another folder name is the same measurement too.
    shutil.copytree(runs[0], tmp_path / "copy")
    copied = import_runs(url, thresholds, [tmp_path / "copy"])
    assert "0 of 12 point(s) added" in copied.stdout
    store = open_store(url)
    assert len(store.points()) == 8 * 12
    store.close()


def test_postgresql_and_sqlite_give_the_same_show_json(tmp_path, thresholds, postgres):
    runs = write_runs(tmp_path / "runs", 26, change_at=20, drop=0.30)
    sqlite_url = f"sqlite:///{tmp_path / 'h.db'}"
    postgres_url = pgserver.new_database(postgres)
    import_runs(sqlite_url, thresholds, runs)
    # PostgreSQL gets them in another order: the series must not depend on it.
    import_runs(postgres_url, thresholds, list(reversed(runs)))
    from_sqlite = history("show", "--history", sqlite_url, "--json")
    from_postgres = history("show", "--history", postgres_url, "--json")
    assert from_sqlite.returncode == from_postgres.returncode == 0, from_postgres.stderr
    assert from_sqlite.stdout == from_postgres.stdout
    document = json.loads(from_postgres.stdout)
    assert len(document["series"]) == 12  # one per metric the runs measured
    assert [c["run"] for c in iops_series(document)["change_points"]] == ["run-20"]
    text = [history("show", "--history", url).stdout for url in (sqlite_url, postgres_url)]
    assert text[0] == text[1] and "run-20" in text[0]


# --- several writers at once ---------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from pytest_kvmio.history.series import Point
    from pytest_kvmio.history.store import open_store
    url, writer, own, shared, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    def point(run, value):
        return Point(host="hv01", target="hv01/vm01/vdb", profile="p", metric="iops", run=run,
                     time=f"2026-12-01T00:00:{value % 60:02d}+00:00", value=float(value), digest=run)
    store = open_store(url)
    while time.time() < start:  # every writer starts at the same moment
        time.sleep(0.005)
    added = 0
    for i in range(own):  # one transaction each: as interleaved as writers get
        added += store.add([point(f"w{writer}-{i}", i)])
        added += store.add([point(f"shared-{i % shared}", i % shared)])
    store.close()
    print(added)
""")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_nothing(tmp_path, backend, request):
    url = (f"sqlite:///{tmp_path / 'h.db'}" if backend == "sqlite"
           else pgserver.new_database(request.getfixturevalue("postgres")))
    writers, own, shared = 6, 40, 10
    import time

    start = time.time() + 3  # all opened (and the table made by one of them) before anyone writes
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(own), str(shared), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(writers)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    added = [int(out) for out, _ in outputs]
    store = open_store(url)
    points = store.points()
    store.close()
    runs = sorted(p.run for p in points)
    # Every writer's own points, and each shared point once (whoever wrote it first), nothing twice.
    assert len(points) == writers * own + shared == sum(added), (len(points), added)
    assert len(set(runs)) == len(runs)
    assert {f"w{w}-{i}" for w in range(writers) for i in range(own)} <= set(runs)
    print(f"kvmio-history-concurrency: {backend}: {writers} writers x ({own} own + {own} shared-key inserts): "
          f"{len(points)} points, added per writer {added}")


# --- pytest runs: --fio-results and the perf-history rule ------------------------------------------------------------


def suite(pytester: pytest.Pytester, thresholds: Path, run: Path, url: str, *extra: str) -> pytest.RunResult:
    if not (pytester.path / "test_perf.py").exists():
        shutil.copy(SUITES / "test_perf.py", pytester.path / "test_perf.py")
    return pytester.runpytest("-p", "no:cacheprovider", "--fio-results", str(run), "--thresholds", str(thresholds),
                              "--kvmio-history", url, "-rsf", "--kvmio-json", "v.json", *extra)


def history_verdict(pytester: pytest.Pytester) -> dict[str, Any]:
    found = [v for v in json.loads((pytester.path / "v.json").read_text())["verdicts"] if v["rule"] == "perf-history"]
    assert len(found) == 1, found
    return found[0]


def test_a_fio_results_run_appends_its_points_and_importing_it_again_adds_nothing(pytester, tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 2, change_at=99, drop=0.0)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    result = suite(pytester, thresholds, runs[0], url)
    result.stdout.fnmatch_lines(["*results history sqlite:///*h.db: run run-01, 12 point(s) added*"])
    store = open_store(url)
    points = store.points()
    store.close()
    assert {p.metric for p in points} >= {"iops", "bw_bytes", "clat_mean_us", "clat_p99_us"}
    iops = next(p for p in points if p.metric == "iops")
    assert (iops.host, iops.target, iops.profile, iops.run, iops.source) == ("hv01", TARGET, PROFILE, "run-01", "fio-results")
    assert iops.fingerprint["fio"] == "fio-3.33"
    assert iops.fingerprint["io_mode"] == "native" and 'io="native"' in iops.fingerprint["storage_xml"]
    assert len(iops.fingerprint["storage_xml_hash"]) == 64
    assert len(iops.samples) == 3 and iops.value == sorted(iops.samples)[1]
    # The pytest run and `kvmio history import` make the same points: importing the directory adds nothing.
    again = import_runs(url, thresholds, [runs[0]])
    assert "0 of 12 point(s) added" in again.stdout


def test_perf_history_is_inconclusive_while_the_series_is_short(pytester, tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 3, change_at=99, drop=0.0)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    import_runs(url, thresholds, runs[:2])
    result = suite(pytester, thresholds, runs[2], url)
    assert result.ret == 0
    verdict = history_verdict(pytester)
    assert verdict["outcome"] == "inconclusive"
    assert "the history has 3 point(s); change points need 6" in verdict["message"]


def test_perf_history_fails_on_the_drop_and_stays_failed_until_a_waiver_names_its_change_point(
        pytester, tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 44, change_at=20, drop=0.30)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    import_runs(url, thresholds, runs[:40])
    for run in runs[40:42]:  # later runs: the regression does not age out
        result = suite(pytester, thresholds, run, url)
        assert result.ret == 1
        verdict = history_verdict(pytester)
        assert verdict["outcome"] == "failed"
        message = verdict["message"]
        assert "since the change point at run run-20 (#19)" in message
        assert "domain XML: driver io native → threads at run run-20" in message
        assert "beyond the 15% tolerance" in message and "change_point: run-20" in message
        assert verdict["facts"]["history"]["change_point"]["run"] == "run-20"
        assert verdict["facts"]["history"]["change_point"]["ratio"] == pytest.approx(0.70, abs=0.03)
    waivers = pytester.path / "waivers.yaml"
    waivers.write_text(
        "- rule: perf-history\n  target: 'hv01/*/*'\n  change_point: run-20\n"
        "  justification: io=threads is the new standard template, accepted by CAB-1234\n  expires: 2099-12-31\n"
    )
    result = suite(pytester, thresholds, runs[42], url, "--waivers", str(waivers))
    assert result.ret == 0
    verdict = history_verdict(pytester)
    assert verdict["outcome"] == "waived" and verdict["waiver"]["change_point"] == "run-20"
    # A waiver for another change point covers nothing here.
    waivers.write_text(waivers.read_text().replace("run-20", "run-07"))
    result = suite(pytester, thresholds, runs[43], url, "--waivers", str(waivers))
    assert result.ret == 1 and history_verdict(pytester)["outcome"] == "failed"


def test_a_waived_change_point_does_not_cover_a_later_drop(pytester, tmp_path, thresholds):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    runs = write_runs(tmp_path / "runs", 30, change_at=20, drop=0.30)
    # From run 31 on at the new level, then a second drop (−35 %) at run 40.
    runs += write_runs(tmp_path / "runs", 16, change_at=40, drop=0.35, first=31, base=0.70, io_before="threads",
                       io_after="threads", seed=7)
    import_runs(url, thresholds, runs[:-1])
    waivers = pytester.path / "waivers.yaml"
    waivers.write_text(
        "- rule: perf-history\n  target: '*'\n  change_point: run-20\n"
        "  justification: io=threads is the new standard template, accepted by CAB-1234\n  expires: 2099-12-31\n"
    )
    result = suite(pytester, thresholds, runs[-1], url, "--waivers", str(waivers))
    assert result.ret == 1
    verdict = history_verdict(pytester)
    assert verdict["outcome"] == "failed"
    assert verdict["facts"]["history"]["change_point"]["run"] == "run-40", verdict["message"]
    assert "no environment change recorded" in verdict["message"]


def test_perf_history_passes_once_the_series_has_recovered(pytester, tmp_path, thresholds):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    runs = write_runs(tmp_path / "runs", 30, change_at=20, drop=0.30)
    # io=native again from run 31: back at the level before run 20.
    runs += write_runs(tmp_path / "runs", 6, change_at=99, drop=0.0, first=31, seed=9)
    import_runs(url, thresholds, runs[:-1])
    result = suite(pytester, thresholds, runs[-1], url)
    assert result.ret == 0
    verdict = history_verdict(pytester)
    assert verdict["outcome"] == "passed", verdict["message"]
    assert "2 change point(s)" in verdict["message"] and "no change for the worse beyond 15% stands" in verdict["message"]


def test_without_a_history_perf_history_concerns_nothing(pytester, tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 1, change_at=99, drop=0.0)
    shutil.copy(SUITES / "test_perf.py", pytester.path / "test_perf.py")
    result = pytester.runpytest("-p", "no:cacheprovider", "--fio-results", str(runs[0]), "--thresholds",
                                str(thresholds), "--kvmio-json", "v.json")
    assert result.ret == 0
    summary = json.loads((pytester.path / "v.json").read_text())
    assert not [v for v in summary["verdicts"] if v["rule"] == "perf-history"]
    assert summary["rules"]["perf-history"] == {"not_applicable": 1}, summary["rules"]


# --- the command: plots, perf results files, errors ------------------------------------------------------------------


def test_plot_writes_one_png_per_series(tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 24, change_at=20, drop=0.30)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    import_runs(url, thresholds, runs)
    done = history("plot", "--history", url, "--metric", "iops", "--out", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    (png,) = (tmp_path / "plots").iterdir()
    assert png.name == "hv01_vm01_vdb-randread-4k-qd128-iops.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_perf_results_file_imports_under_its_run(pytester, tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 1, change_at=99, drop=0.0)
    shutil.copy(SUITES / "test_perf.py", pytester.path / "test_perf.py")
    results = tmp_path / "perf-1.json"
    pytester.runpytest("-p", "no:cacheprovider", "--fio-results", str(runs[0]), "--thresholds", str(thresholds),
                       "--kvmio-perf-results", str(results))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = import_runs(url, thresholds, [results])
    assert "perf-1.json: 12 of 12 point(s) added" in first.stdout
    assert "0 of 12" in import_runs(url, thresholds, [results]).stdout
    series = iops_series(show_json(url))
    assert series["points"][0]["run"] == "perf-1"
    assert series["points"][0]["time"].startswith("2026-05-29T")  # fio's timestamp, kept in the file


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://db/kvmio", "unknown scheme 'mysql'"),
    ("sqlite://h.db", "expected sqlite:///PATH"),
    ("kvmio-history.db", "unknown scheme '(none)'"),
])
def test_a_bad_history_url_is_a_usage_error_naming_it(tmp_path, url, expected):
    done = history("show", "--history", url, cwd=tmp_path)
    assert done.returncode == 4
    assert expected in done.stderr and "sqlite:///PATH" in done.stderr


def test_a_bad_kvmio_history_variable_stops_pytest_naming_it(pytester, tmp_path, thresholds, monkeypatch):
    runs = write_runs(tmp_path / "runs", 1, change_at=99, drop=0.0)
    shutil.copy(SUITES / "test_perf.py", pytester.path / "test_perf.py")
    monkeypatch.setenv("KVMIO_HISTORY", "redis://cache/0")
    result = pytester.runpytest("-p", "no:cacheprovider", "--fio-results", str(runs[0]), "--thresholds", str(thresholds))
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*KVMIO_HISTORY='redis://cache/0': *unknown scheme 'redis'*"])


def test_an_unreachable_database_names_the_url_and_the_fix(pytester, tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 1, change_at=99, drop=0.0)
    shutil.copy(SUITES / "test_perf.py", pytester.path / "test_perf.py")
    url = f"postgresql://kvmio:s3cret@/kvmio?host={tmp_path}&connect_timeout=3"  # no server listens there
    result = pytester.runpytest("-p", "no:cacheprovider", "--fio-results", str(runs[0]), "--thresholds",
                                str(thresholds), "--kvmio-history", url)
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--kvmio-history: postgresql://kvmio:***@/kvmio*cannot connect*check that the "
                                 "server runs*"])
    assert "s3cret" not in result.stderr.str() + result.stdout.str()
    shown = history("show", "--history", url)
    assert shown.returncode == 1 and "cannot connect" in shown.stderr and "s3cret" not in shown.stderr


def test_show_without_a_history_file_says_how_to_make_one(tmp_path):
    done = history("show", cwd=tmp_path)
    assert done.returncode == 4
    assert "sqlite:///kvmio-history.db: no such history file" in done.stderr
    assert not (tmp_path / "kvmio-history.db").exists()


def test_kvmio_history_setting_comes_from_the_environment(tmp_path, thresholds):
    runs = write_runs(tmp_path / "runs", 1, change_at=99, drop=0.0)
    url = f"sqlite:///{tmp_path / 'env.db'}"
    done = kvmio("history", "import", "--thresholds", str(thresholds), str(runs[0]), env={"KVMIO_HISTORY": url})
    assert done.returncode == 0, done.stderr
    assert "12 of 12 point(s) added to " + url in done.stdout


def test_perf_history_attaches_the_series_plot_to_allure(pytester, tmp_path, thresholds):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (pip install '.[charts]', scripts/setup.sh)")
    runs = write_runs(tmp_path / "runs", 8, change_at=99, drop=0.0)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    import_runs(url, thresholds, runs[:-1])
    suite(pytester, thresholds, runs[-1], url, "--alluredir", "allure")
    results = [json.loads(p.read_text()) for p in (pytester.path / "allure").glob("*-result.json")]
    (history_result,) = [r for r in results if "worse_in_history" in r["fullName"]]
    (attachment,) = [a for a in history_result.get("attachments", []) if a["name"].startswith("history: ")]
    assert attachment["name"] == f"history: {TARGET} {PROFILE} iops" and attachment["type"] == "image/png"
    assert (pytester.path / "allure" / attachment["source"]).read_bytes()[:4] == b"\x89PNG"


def test_both_arms_of_an_ab_experiment_become_points_of_their_own_series():
    from types import SimpleNamespace

    from pytest_kvmio.history.measurements import points_of_ab
    from pytest_kvmio.model.domain import parse_domain
    from pytest_kvmio.perf.ab import Arm, parse_arm
    from tests.history_data import DOMAIN_XML

    domain = parse_domain(DOMAIN_XML.format(io="native"), source="vm01.xml", host="hv01")
    disk = domain.disks[0]
    facts = SimpleNamespace(host_uuid="4dcc4d31-87e1-4534-a514-f504be356ea2", kernel="6.1.0", qemu="7.2",
                            libvirt="9.0", cpu_model="EPYC")
    a = Arm("a", parse_arm("vm01/vdb", "--a"), disk)
    b = Arm("b", parse_arm("vm01/vdb@host", "--b"), disk)
    result = SimpleNamespace(a=a, b=b, profile=SimpleNamespace(name=PROFILE), samples={
        "a": {"iops": [100.0, 110.0, 90.0], "clat_mean_us": [5.0, None, 6.0], "runtime_s": [3.0, 3.0, 3.0]},
        "b": {"iops": [200.0, 210.0, 190.0]},
    })
    points = points_of_ab(result, SimpleNamespace(facts=facts), run="r1", time="2026-12-04T23:00:00+00:00")
    by_target = {(p.target, p.metric): p for p in points}
    # clat_mean_us missed a run and runtime_s has no direction: neither is a point.
    assert set(by_target) == {(TARGET, "iops"), (TARGET + "@host", "iops")}
    guest = by_target[(TARGET, "iops")]
    assert (guest.host, guest.value, guest.source, guest.run) == (facts.host_uuid, 100.0, "ab", "r1")
    assert guest.fingerprint["ab_arm"] == "vm01/vdb" and guest.fingerprint["kernel"] == "6.1.0"
    assert "io=\"native\"" in guest.fingerprint["storage_xml"]
    assert by_target[(TARGET + "@host", "iops")].value == 200.0
