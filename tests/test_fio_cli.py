"""Tests of `kvmio fio show`."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from pytest_kvmio.cli import fio as fio_cli
from pytest_kvmio.errors import CommandError

DATA = Path(__file__).parent / "data" / "fio"


def parse(*argv: str) -> argparse.Namespace:
    """Parse `kvmio fio ...` with only the fio subcommand registered."""
    parser = argparse.ArgumentParser(prog="kvmio")
    fio_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["fio", *argv])


def show(*argv: str, status: int = 0) -> str:
    """Run `kvmio fio show ARGV...`, check its exit status and return what it printed."""
    args = parse("show", *argv)
    out = io.StringIO()
    assert args.func(args, out=out) == status
    return out.getvalue()


def test_table_shows_metrics_per_job_and_direction() -> None:
    text = show(str(DATA / "randrw-mixed.json"))
    lines = text.splitlines()
    assert lines[0] == f"{DATA / 'randrw-mixed.json'} (fio-3.33)"
    assert lines[1].split() == [
        "job", "dir", "IOPS", "MiB/s", "clat", "mean", "µs", "clat", "p99", "µs", "clat", "p99.9", "µs",
        "tlat", "mean", "µs", "tlat", "p99", "µs", "runtime", "s",
    ]
    assert lines[2].split() == [
        "randrw", "read", "11,541", "45.1", "198.4", "700.4", "2,768.9", "232.1", "unknown", "2.001",
    ]
    assert lines[3].split() == [
        "randrw", "write", "4,935", "19.3", "229.2", "847.9", "2,900.0", "262.4", "unknown", "2.001",
    ]


def test_unknown_latency_is_printed_as_unknown() -> None:
    text = show(str(DATA / "gtod-reduce.json"))
    assert "randread  read  15,312   59.8       unknown      unknown        unknown       unknown" in text
    assert "gtod_reduce" in text


def test_total_latency_percentiles_are_shown_apart() -> None:
    line = show(str(DATA / "randread-lat-percentiles.json")).splitlines()[2]
    assert line.split()[-3:] == ["555.2", "2,113.5", "2.001"]


def test_plausibility_warning_is_printed() -> None:
    text = show(str(DATA / "littles-law-violation-hand-made.json"))
    assert "warning: randread/read: 171,816 IOPS" in text
    assert "units can't be right" in text


def test_fio_text_and_job_errors_are_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """A job error: the metrics are printed, the job and error named, the exit status 1 (as fio's)."""
    path = DATA / "stderr-then-json.json"
    text = show(str(path), status=1)
    assert "fio said: fio: pid=" in text
    assert "good  read  8,430" in text
    assert "error: bad/trim: 1 error(s), fio error code 25" in text
    assert "  error: job bad: fio error 25 (ENOTTY: Inappropriate ioctl for device)" in text
    assert capsys.readouterr().err == (
        f"kvmio fio: error: {path}: job bad: fio error 25 (ENOTTY: Inappropriate ioctl for device)\n"
    )


def test_job_error_in_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    (data,) = json.loads(show("--json", str(DATA / "randtrim-file-error.json"), status=1))
    assert data["job_errors"] == ["job randtrim: fio error 25 (ENOTTY: Inappropriate ioctl for device)"]
    assert data["metrics"][0]["error_code"] == 25
    assert "job randtrim: fio error 25" in capsys.readouterr().err


def test_client_server_output_shows_the_host() -> None:
    lines = show(str(DATA / "client-server-group.json")).splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["host", "job"])
    rows = [line.split()[:5] for line in lines[header + 1 : header + 4]]
    assert rows == [
        ["localhost", "randread", "read", "32,002", "125.0"],
        ["127.0.0.1", "randread", "read", "32,087", "125.3"],
        ["(all)", "All", "clients", "read", "64,089"],
    ]
    assert "  note: All clients/read: fio reported no job options: rw, iodepth, numjobs unknown" in lines
    assert not any("warning" in line for line in lines)


def test_client_server_json_lists_hosts_and_the_sum() -> None:
    (data,) = json.loads(show("--json", str(DATA / "client-server-perjob.json")))
    assert [m["hostname"] for m in data["metrics"]] == ["localhost", "localhost", "127.0.0.1", "127.0.0.1"]
    assert [m["port"] for m in data["metrics"]] == [8765] * 4
    (total,) = data["all_clients"]
    assert (total["job"], total["hostname"], total["total_ios"]) == ("All clients", None, 61955)
    assert data["problems"] == [] and data["job_errors"] == []


def test_several_files_and_snapshots() -> None:
    text = show(str(DATA / "status-interval.json"), str(DATA / "randread-iouring-qd8.json"))
    assert "(fio-3.33, 4 snapshots, the last shown)" in text
    assert "randread-iouring-qd8.json (fio-3.33)" in text


def test_json_output_has_normalized_metrics() -> None:
    data = json.loads(show("--json", str(DATA / "gtod-reduce.json"), str(DATA / "randrw-unified.json")))
    gtod, unified = data
    assert gtod["source"] == str(DATA / "gtod-reduce.json")
    assert gtod["fio_version"] == "fio-3.33"
    (m,) = gtod["metrics"]
    assert m["iops"] == 15311.688312
    assert m["clat_mean_us"] is None and m["clat_p99_us"] is None
    assert m["tlat_mean_us"] is None and "lat_mean_us" not in m
    assert unified["metrics"][0]["direction"] == "mixed"
    assert unified["problems"] == []


def test_json_output_lists_problems() -> None:
    (data,) = json.loads(show("--json", str(DATA / "littles-law-violation-hand-made.json")))
    assert len(data["problems"]) == 1


def test_bad_file_is_a_command_error_with_file_and_path() -> None:
    path = DATA / "malformed-wrong-type.json"
    args = parse("show", str(path))
    with pytest.raises(CommandError) as info:
        args.func(args)
    assert str(info.value) == f'{path}: jobs[0].read.iops: expected a number, got "fast"'


def test_show_needs_a_file() -> None:
    with pytest.raises(SystemExit):
        parse("show")


def test_kvmio_main_runs_fio_show(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real `kvmio` entry point, once every subcommand module exists."""
    cli = pytest.importorskip("pytest_kvmio.cli")
    pytest.importorskip("pytest_kvmio.cli.lab")
    pytest.importorskip("pytest_kvmio.cli.baseline")
    assert cli.main(["fio", "show", str(DATA / "randread-iouring-qd8.json")]) == 0
    assert "34,805" in capsys.readouterr().out
    assert cli.main(["fio", "show", str(DATA / "normal-output.txt")]) == 4  # not fio JSON: a bad input, as pytest's usage errors
    err = capsys.readouterr().err
    assert err.startswith("ERROR: kvmio fio: ")
    assert "no fio JSON document found" in err
    assert cli.main(["fio", "show", str(DATA / "stderr-then-json.json")]) == 1
    captured = capsys.readouterr()
    assert "good  read  8,430" in captured.out
    assert "job bad: fio error 25" in captured.err
