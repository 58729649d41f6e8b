"""Tests of the fio JSON reader against the real fio outputs in tests/data/fio.

Expected values are copied from the corpus files (made by make_corpus.sh);
latency in µs is the file's nanoseconds / 1000.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest

from pytest_kvmio.perf.fio import (
    FioError,
    FioJobError,
    FioMetrics,
    check_plausibility,
    parse_fio,
    read_fio,
)

DATA = Path(__file__).parent / "data" / "fio"
REAL_RUNS = sorted(
    p.name
    for p in DATA.glob("*.json")
    if not p.name.startswith("malformed-") and "violation" not in p.name
)
METRIC_KEYS = {
    "iops", "bw_bytes", "clat_mean_us", "clat_p50_us", "clat_p90_us", "clat_p99_us",
    "clat_p99_9_us", "clat_p99_99_us", "tlat_mean_us", "tlat_p50_us", "tlat_p90_us", "tlat_p99_us",
    "tlat_p99_9_us", "tlat_p99_99_us", "runtime_s", "io_bytes", "total_ios", "errors",
    "cpu_usr_pct", "cpu_sys_pct", "rw", "bs", "iodepth", "numjobs", "ioengine", "filename",
    "hostname", "port",
}


def read(name: str):
    """Read one corpus file."""
    return read_fio(DATA / name)


def test_single_job_json_is_normalized_to_us_and_bytes() -> None:
    report = read("randread-iouring-qd8.json")
    assert report.version == "fio-3.33"
    assert len(report.snapshots) == 1
    assert report.preamble == ""
    (m,) = report.metrics
    assert (m.job, m.direction, m.groupid) == ("randread", "read", 0)
    assert m.iops == 34805.097451
    assert m.bw_bytes == 142561679
    assert m.clat_mean_us == 218963.471864 / 1000
    assert m.clat_p50_us == 201728 / 1000
    assert m.clat_p90_us == 272384 / 1000
    assert m.clat_p99_us == 618496 / 1000
    assert m.clat_p99_9_us == 1695744 / 1000
    assert m.clat_p99_99_us == 3424256 / 1000
    # Total latency (fio's lat_ns): its mean, no percentiles without lat_percentiles=1.
    assert m.tlat_mean_us == 228876.091737 / 1000
    assert [m.tlat_p50_us, m.tlat_p99_us, m.tlat_p99_99_us] == [None] * 3
    assert m.runtime_s == 2.001
    assert m.io_bytes == 285265920
    assert m.total_ios == 69645
    assert (m.errors, m.error_code) == (0, 0)
    assert (m.cpu_usr_pct, m.cpu_sys_pct) == (4.8, 43.6)
    assert (m.rw, m.bs, m.iodepth, m.numjobs) == ("randread", "4k", 8, 1)
    assert m.ioengine == "io_uring"
    assert m.filename == "/tmp/kvmio-fio-corpus/scratch.img"
    assert m.latency_known and m.notes == ()
    assert (m.hostname, m.port, m.client) == (None, None, None)
    assert report.get("randread", "read") is m
    assert report.job_errors() == [] and report.all_clients == ()


def test_as_dict_has_every_metric_key_and_is_json() -> None:
    m = read("randread-iouring-qd8.json").metrics[0]
    data = m.as_dict()
    assert METRIC_KEYS <= set(data)
    assert data["clat_p99_us"] == m.clat_p99_us
    assert json.loads(json.dumps(data)) == data


def test_fio2_layout_reads_us_latency_and_kib_io_bytes() -> None:
    """fio 2.x: clat/lat in µs, io_bytes in KiB, no bw_bytes (hand-made file)."""
    (m,) = read("fio2-randread-hand-made.json").metrics
    assert m.clat_mean_us == 218.96
    assert (m.clat_p50_us, m.clat_p99_us, m.clat_p99_9_us, m.clat_p99_99_us) == (
        201, 618, 1695, 3424,
    )
    assert m.io_bytes == 278580 * 1024
    assert m.bw_bytes == 139220 * 1024
    assert m.iops == 34805.097451
    assert m.total_ios == 69645
    # The same run read as fio 3.x agrees within fio 2's integer µs.
    (m3,) = read("randread-iouring-qd8.json").metrics
    assert m.io_bytes == m3.io_bytes
    assert m.clat_p99_us == pytest.approx(m3.clat_p99_us, abs=1)


def test_json_plus_bins_are_accepted() -> None:
    report = read("randread-libaio-jsonplus.json")
    raw = json.loads((DATA / "randread-libaio-jsonplus.json").read_text())
    assert raw["jobs"][0]["read"]["clat_ns"]["bins"]
    (m,) = report.metrics
    assert m.iops == 22587.412587
    assert m.clat_mean_us == 159816.508934 / 1000
    assert m.clat_p99_9_us == 2342912 / 1000
    assert m.ioengine == "libaio"


def test_group_reporting_merges_numjobs_into_one_entry() -> None:
    (m,) = read("randread-numjobs2-group.json").metrics
    assert m.iops == 30605.197401
    assert m.total_ios == 61241
    assert (m.numjobs, m.jobs_merged, m.max_in_flight) == (2, 2, 8)
    assert (m.cpu_usr_pct, m.cpu_sys_pct) == (3.675, 26.8)


def test_per_job_output_gives_one_entry_per_clone() -> None:
    metrics = read("randread-numjobs2-perjob.json").metrics
    assert [m.label for m in metrics] == ["randread/read", "randread/read"]
    assert [m.iops for m in metrics] == [16260.869565, 16216.391804]
    assert [m.jobs_merged for m in metrics] == [1, 1]
    assert all(m.numjobs == 2 and m.max_in_flight == 4 for m in metrics)


def test_job_sections_take_global_options() -> None:
    report = read("two-sections-perjob.json")
    reader, writer = report.metrics
    assert (reader.label, reader.iodepth, reader.rw) == ("reader/read", 4, "randread")
    assert (writer.label, writer.iodepth, writer.rw) == ("writer/write", 2, "randwrite")
    assert reader.ioengine == writer.ioengine == "libaio"
    assert reader.bs == writer.bs == "4k"
    assert writer.iops == 8479.76012
    assert writer.clat_p99_us == 749568 / 1000


def test_note_printed_before_the_json_is_kept_as_preamble() -> None:
    report = read("psync-note-before-json.json")
    assert report.preamble.startswith("note: both iodepth >= 1 and synchronous I/O engine")
    (m,) = report.metrics
    assert m.iops == 8721.13943
    assert m.clat_mean_us == 112772.103031 / 1000
    assert (m.ioengine, m.iodepth) == ("psync", 4)


def test_failed_job_in_a_2to1_capture_reports_its_error() -> None:
    report = read("stderr-then-json.json")
    assert "err=25" in report.preamble
    bad, good = report.metrics
    assert (bad.label, bad.error_code, bad.errors) == ("bad/trim", 25, 1)
    assert bad.iops == 0 and bad.clat_mean_us is None and not bad.latency_known
    assert (good.label, good.errors, good.iops) == ("good/read", 0, 8430.139721)
    assert good.clat_p99_us == 207872 / 1000


def test_trim_on_a_plain_file_is_a_job_error() -> None:
    report = read("randtrim-file-error.json")
    (m,) = report.metrics
    assert (m.direction, m.error_code, m.errors, m.io_bytes) == ("trim", 25, 1, 0)
    assert m.clat_p99_us is None
    assert check_plausibility(m) == []
    assert report.job_errors() == ["job randtrim: fio error 25 (ENOTTY: Inappropriate ioctl for device)"]


def test_job_errors_name_each_failed_job_once() -> None:
    report = read("stderr-then-json.json")
    assert report.job_errors() == ["job bad: fio error 25 (ENOTTY: Inappropriate ioctl for device)"]
    doc = json.loads((DATA / "randrw-mixed.json").read_text())
    doc["jobs"][0]["error"] = 5  # one job, two directions: one line
    assert parse_fio(json.dumps(doc), "eio.json").job_errors() == [
        "job randrw: fio error 5 (EIO: Input/output error)"
    ]
    doc["jobs"][0]["error"] = 100000  # not an errno: the number alone
    assert parse_fio(json.dumps(doc), "odd.json").job_errors() == ["job randrw: fio error 100000"]


def test_fio_job_error_is_a_fio_error() -> None:
    error = FioJobError("x.json", "job bad: fio error 25", ["job bad: fio error 25"])
    assert isinstance(error, FioError)
    assert str(error) == "x.json: job bad: fio error 25"
    assert error.job_errors == ["job bad: fio error 25"]


def test_status_interval_keeps_every_snapshot_and_uses_the_last() -> None:
    report = read("status-interval.json")
    assert len(report.snapshots) == 4
    assert report.metrics == report.snapshots[-1].metrics
    (m,) = report.metrics
    assert m.iops == 17924.691769
    assert m.total_ios == 53792
    assert m.runtime_s == 3.001
    ios = [s.metrics[0].total_ios for s in report.snapshots]
    assert ios == sorted(ios) and len(set(ios)) == 4
    stamps = [s.timestamp_ms for s in report.snapshots]
    assert stamps == sorted(stamps)


def test_gtod_reduce_latency_is_unknown_not_zero() -> None:
    (m,) = read("gtod-reduce.json").metrics
    assert m.iops == 15311.688312
    assert m.total_ios == 30654
    assert not m.latency_known
    assert m.clat_mean_us is None
    assert [m.clat_p50_us, m.clat_p90_us, m.clat_p99_us, m.clat_p99_9_us, m.clat_p99_99_us] == [
        None
    ] * 5
    assert any("gtod_reduce" in note for note in m.notes)
    assert check_plausibility(m) == []


def test_randrw_reports_read_and_write() -> None:
    read_m, write_m = read("randrw-mixed.json").metrics
    assert (read_m.direction, read_m.iops, read_m.total_ios) == ("read", 11540.729635, 23093)
    assert (write_m.direction, write_m.iops, write_m.total_ios) == ("write", 4935.032484, 9875)
    assert write_m.clat_mean_us == 229191.66481 / 1000
    assert read_m.rw == write_m.rw == "randrw"


def test_unified_rw_reporting_reports_mixed() -> None:
    (m,) = read("randrw-unified.json").metrics
    assert (m.direction, m.iops, m.total_ios) == ("mixed", 11628.185907, 23268)
    assert m.clat_p99_us == 1728512 / 1000


def test_trim_on_a_loop_device() -> None:
    (m,) = read("randtrim-loop.json").metrics
    assert (m.direction, m.bs, m.iops, m.bw_bytes) == ("trim", "64k", 4748.251748, 311181426)
    assert m.clat_mean_us == 208188.543867 / 1000


def test_lat_percentiles_keeps_completion_and_total_percentiles_apart() -> None:
    (m,) = read("randread-lat-percentiles.json").metrics
    assert m.clat_p99_us == 1957888 / 1000
    assert m.tlat_p99_us == 2113536 / 1000
    assert m.tlat_p50_us == 561152 / 1000
    assert m.tlat_mean_us == 555190.065769 / 1000
    assert m.notes == ()


def test_total_latency_percentiles_never_stand_in_for_completion_latency() -> None:
    """lat_percentiles=1 without clat percentiles: clat_p* unknown, tlat_p* filled, noted."""
    doc = json.loads((DATA / "randread-lat-percentiles.json").read_text())
    read_dir = doc["jobs"][0]["read"]
    del read_dir["clat_ns"]["percentile"]
    (m,) = parse_fio(json.dumps(doc), "lat-only.json").metrics
    assert m.clat_mean_us == read_dir["clat_ns"]["mean"] / 1000
    assert [m.clat_p50_us, m.clat_p90_us, m.clat_p99_us, m.clat_p99_9_us, m.clat_p99_99_us] == [None] * 5
    assert m.tlat_p99_us == read_dir["lat_ns"]["percentile"]["99.000000"] / 1000
    (note,) = m.notes
    assert "total latency only" in note and "clat percentiles unknown" in note
    assert m.latency_known and check_plausibility(m) == []


@pytest.mark.parametrize("name", REAL_RUNS)
def test_real_runs_are_plausible(name: str) -> None:
    assert read(name).problems() == []


def test_fio2_without_job_options_leaves_options_unknown() -> None:
    """No "job options": rw, iodepth, numjobs are None, and Little's law is not checked against a guess."""
    (m,) = read("fio2-no-job-options-hand-made.json").metrics
    assert (m.rw, m.iodepth, m.numjobs, m.bs, m.ioengine) == (None, None, None, None, None)
    assert m.jobs_merged is None and m.max_in_flight is None
    assert m.notes == ("fio reported no job options: rw, iodepth, numjobs unknown",)
    # 34,805 IOPS × 219 µs ≈ 7.6 in flight: impossible at the iodepth 1 fio defaults to,
    # right at the QD8 the run really had; with iodepth unknown nothing is flagged.
    assert m.clat_mean_us == 218.96
    assert check_plausibility(m) == []
    assert check_plausibility(_with(m, iodepth=1, jobs_merged=1)) != []


def test_listed_job_options_without_iodepth_mean_fio_defaults() -> None:
    """fio lists only the options a job set: with "job options" present, iodepth absent means 1."""
    doc = json.loads((DATA / "randtrim-loop.json").read_text())
    assert "iodepth" not in doc["jobs"][0]["job options"]
    (m,) = read("randtrim-loop.json").metrics
    assert (m.iodepth, m.numjobs, m.jobs_merged) == (1, 1, 1)


def test_campaign_unit_error_is_flagged() -> None:
    """171,816 IOPS at 743,970 µs at QD128 means ~127,826 I/Os in flight."""
    report = read("littles-law-violation-hand-made.json")
    (problem,) = report.problems()
    assert problem.startswith("randread/read: 171,816 IOPS × 743,970.00 µs")
    assert "127,826 I/Os in flight, but at most 128" in problem
    assert "units can't be right" in problem


def _with(m: FioMetrics, **changes: object) -> FioMetrics:
    """Return a copy of `m` with some fields changed."""
    return dataclasses.replace(m, **changes)  # type: ignore[arg-type]


def test_plausibility_bounds() -> None:
    m = read("randread-iouring-qd8.json").metrics[0]  # QD8: bound 8, margin 1.5
    assert check_plausibility(_with(m, iops=50_000.0, clat_mean_us=200.0)) == []  # 10
    assert check_plausibility(_with(m, iops=50_000.0, clat_mean_us=300.0)) != []  # 15
    # Far below the depth is legitimate (sync engine, TCG), not absurdly low.
    assert check_plausibility(_with(m, iops=100.0, clat_mean_us=20.0)) == []  # 0.002
    (low,) = check_plausibility(_with(m, iops=100.0, clat_mean_us=5.0))  # 0.0005
    assert "units can't be right" in low
    throttled = _with(m, iops=100.0, clat_mean_us=5.0, options={"rate_iops": "100"})
    assert check_plausibility(throttled) == []
    assert check_plausibility(_with(m, latency_known=False, clat_mean_us=None)) == []


def test_wrong_type_names_file_and_json_path() -> None:
    path = DATA / "malformed-wrong-type.json"
    with pytest.raises(FioError) as info:
        read_fio(path)
    assert str(info.value) == f'{path}: jobs[0].read.iops: expected a number, got "fast"'
    assert info.value.path == "jobs[0].read.iops"
    assert isinstance(info.value, ValueError)


def test_nan_names_file_and_json_path() -> None:
    path = DATA / "malformed-nan.json"
    assert '"mean": NaN' in path.read_text()
    with pytest.raises(FioError) as info:
        read_fio(path)
    assert str(info.value) == f"{path}: jobs[0].read.clat_ns.mean: expected a finite number, got NaN"
    assert info.value.path == "jobs[0].read.clat_ns.mean"


@pytest.mark.parametrize("token", ["Infinity", "-Infinity"])
def test_infinity_names_the_document_and_json_path(token: str) -> None:
    text = (DATA / "randread-iouring-qd8.json").read_text()
    bad = text.replace('"iops" : 34805.097451', f'"iops" : {token}')
    assert bad != text
    with pytest.raises(FioError) as info:
        parse_fio(text + bad, "inf.json")
    assert str(info.value) == f"inf.json: document 2 of 2: jobs[0].read.iops: expected a finite number, got {token}"


def test_missing_jobs_names_the_field() -> None:
    path = DATA / "malformed-missing-jobs.json"
    with pytest.raises(FioError, match=r"malformed-missing-jobs\.json: jobs: required field"):
        read_fio(path)


def test_truncated_json_says_so() -> None:
    path = DATA / "malformed-truncated.json"
    with pytest.raises(FioError) as info:
        read_fio(path)
    assert str(info.value).startswith(f"{path}: truncated fio JSON: the JSON document")


def test_text_output_says_no_json_and_shows_the_start() -> None:
    path = DATA / "normal-output.txt"
    with pytest.raises(FioError) as info:
        read_fio(path)
    message = str(info.value)
    assert message.startswith(f"{path}: no fio JSON document found")
    assert "'randread: (g=0): rw=randread" in message


def test_empty_input() -> None:
    with pytest.raises(FioError, match="x.json: no fio JSON document found.*empty input"):
        parse_fio("", "x.json")


def test_bad_snapshot_is_named_by_document_number() -> None:
    text = (DATA / "randread-iouring-qd8.json").read_text()
    bad = text.replace('"iodepth" : "8"', '"iodepth" : 8')
    with pytest.raises(FioError) as info:
        parse_fio(text + bad, "status.json")
    assert str(info.value) == (
        'status.json: document 2 of 2: jobs[0]["job options"].iodepth: '
        "expected a string, got 8"
    )


def test_job_without_any_direction_is_rejected() -> None:
    doc = json.loads((DATA / "randread-iouring-qd8.json").read_text())
    for direction in ("read", "write", "trim"):
        del doc["jobs"][0][direction]
    with pytest.raises(FioError, match=r"d\.json: jobs\[0\]: expected at least one of read"):
        parse_fio(json.dumps(doc), "d.json")


def test_unreadable_file_is_a_fio_error(tmp_path: Path) -> None:
    with pytest.raises(FioError, match="missing.json: can't read"):
        read_fio(tmp_path / "missing.json")


def test_shipped_schema_is_valid_2020_12() -> None:
    from importlib import resources

    text = resources.files("pytest_kvmio").joinpath("schemas/fio.schema.json").read_text()
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_corpus_is_small_and_documented() -> None:
    script = (DATA / "make_corpus.sh").read_text()
    for path in DATA.iterdir():
        if path.name == "make_corpus.sh":
            continue
        assert path.stat().st_size < 200_000, path.name
        assert path.name in script, f"{path.name} is not made by make_corpus.sh"


def test_text_lines_starting_with_a_brace_are_not_documents() -> None:
    text = (DATA / "randread-iouring-qd8.json").read_text()
    report = parse_fio("{not json} from a wrapper script\n" + text, "wrapped.json")
    assert report.preamble == "{not json} from a wrapper script\n"
    assert report.metrics[0].iops == 34805.097451


def test_compact_json_on_one_line_is_read() -> None:
    doc = json.loads((DATA / "randread-iouring-qd8.json").read_text())
    report = parse_fio("warning: x\n" + json.dumps(doc, separators=(",", ":")), "jq-c.json")
    assert report.metrics[0].clat_p99_us == 618496 / 1000


def test_client_server_output_is_read_per_host() -> None:
    """fio --client=127.0.0.1 --client=localhost, group_reporting: one entry per client, then the sum."""
    report = read("client-server-group.json")
    assert report.preamble.startswith("<vm> randread: (g=0)")
    first, second = report.metrics
    assert (first.label, first.hostname, first.port, first.client) == (
        "randread/read on localhost", "localhost", 8765, "localhost",
    )
    assert (second.label, second.client) == ("randread/read on 127.0.0.1", "127.0.0.1")
    assert (first.iops, first.total_ios) == (32001.998002, 32034)
    assert (second.iops, second.total_ios) == (32086.913087, 32119)
    assert first.clat_mean_us == 242846.480271 / 1000
    # Each client's group merges its own numjobs=2, global options apply to every client.
    assert (first.numjobs, first.jobs_merged, first.max_in_flight) == (2, 2, 8)
    assert first.ioengine == second.ioengine == "libaio"
    (total,) = report.all_clients
    assert (total.job, total.hostname, total.label) == ("All clients", None, "All clients/read")
    assert (total.iops, total.total_ios) == (64088.911089, 64153)
    assert total.iodepth is None and total.jobs_merged == 4
    assert report.problems() == [] and report.job_errors() == []
    assert report.get("randread", "read") is first


def test_client_server_per_job_entries_count_per_client() -> None:
    report = read("client-server-perjob.json")
    assert [m.client for m in report.metrics] == ["localhost", "localhost", "127.0.0.1", "127.0.0.1"]
    assert [m.jobs_merged for m in report.metrics] == [1, 1, 1, 1]
    assert [m.max_in_flight for m in report.metrics] == [4, 4, 4, 4]
    (total,) = report.all_clients
    assert total.total_ios == sum(m.total_ios or 0 for m in report.metrics) == 61955


def test_client_global_options_listed_per_client() -> None:
    """Newer fio clients list "global options" once per client, with hostname and port."""
    text = (DATA / "client-server-group.json").read_text()
    doc = json.loads(text[text.index("\n{") :])
    shared = doc["global options"]
    doc["global options"] = [
        {"hostname": "127.0.0.1", "port": 8765, **shared, "ioengine": "io_uring"},
        {"hostname": "localhost", "port": 8765, **shared},
    ]
    report = parse_fio(json.dumps(doc), "clients.json")
    assert [(m.client, m.ioengine) for m in report.metrics] == [("localhost", "libaio"), ("127.0.0.1", "io_uring")]
    (total,) = report.all_clients  # the sum gets the options all clients share
    assert total.ioengine is None and total.bs == "4k"


def test_client_job_error_names_the_host() -> None:
    text = (DATA / "client-server-group.json").read_text()
    doc = json.loads(text[text.index("\n{") :])
    doc["client_stats"][1]["error"] = 5
    doc["client_stats"][1]["port"] = 8766
    report = parse_fio(json.dumps(doc), "clients.json")
    assert report.job_errors() == ["job randread on 127.0.0.1:8766: fio error 5 (EIO: Input/output error)"]
    assert report.metrics[1].label == "randread/read on 127.0.0.1:8766"


def test_client_output_without_entries_names_the_field() -> None:
    doc = {"fio version": "fio-3.43", "global options": {}, "client_stats": [], "disk_util": []}
    with pytest.raises(FioError, match=r"^empty\.json: client_stats: expected at least one entry, got none$"):
        parse_fio(json.dumps(doc), "empty.json")


def test_client_global_options_of_the_wrong_type_are_named() -> None:
    text = (DATA / "client-server-group.json").read_text()
    doc = json.loads(text[text.index("\n{") :])
    doc["global options"] = [{"hostname": "h", "port": "8765"}]
    with pytest.raises(FioError, match=r'g\.json: \["global options"\]\[0\]\.port: expected an integer, got "8765"'):
        parse_fio(json.dumps(doc), "g.json")
