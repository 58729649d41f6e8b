"""Tests of `kvmio baseline record` through its parser and `func`, without the other subcommands."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_kvmio.cli import baseline as baseline_cli
from pytest_kvmio.errors import CommandError
from pytest_kvmio.perf.loading import load_thresholds

REPO = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data" / "thresholds"

RESULTS: dict[str, Any] = {
    "fingerprint": {"cpu_model": "QEMU TCG", "kernel": "6.1.0-21-amd64", "qemu": "7.2.9", "libvirt": "9.0.0"},
    "results": [
        {
            "target": "local/kvmio-lab-good/vdb",
            "profile": "randread-4k-qd32x4",
            "serial": "kvmio-scratch-1",
            "fingerprint": {"device_model": "virtio-blk", "io_mode": "io_uring", "cache": "none"},
            "samples": {
                "iops": [10100.5, 9800, 10400],
                "clat_p99_us": [None, None, None],
                "runtime_s": [10, 10, 10],
                "host_cpu_us_per_io": [310.0, 305.5, 320.0],
            },
        },
        {
            "target": "local/kvmio-lab-good/vdc",
            "profile": "randread-4k-qd1",
            "fingerprint": {"device_model": "virtio-scsi", "io_mode": "native", "cache": "none"},
            "samples": {"iops": [900, 950, 1000], "clat_p99_us": [2100, 2000, 2200]},
        },
    ],
}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kvmio")
    sub = parser.add_subparsers(dest="command", required=True)
    baseline_cli.add_parser(sub)
    return parser.parse_args(list(argv))


def run(*argv: str) -> int:
    args = parse(*argv)
    return int(args.func(args))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


@pytest.fixture
def thresholds(tmp_path: Path) -> Path:
    """A copy of the shipped thresholds directory, so recording into baselines/ is safe."""
    target = tmp_path / "thresholds"
    shutil.copytree(REPO / "thresholds", target)
    return target


def test_record_writes_medians_samples_and_fingerprint(
    results: Path, thresholds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = thresholds / "baselines" / "lab-tcg.yaml"
    assert run("baseline", "record", "--results", str(results), "--out", str(out),
               "--thresholds", str(thresholds), "--at", "2024-05-02") == 0
    captured = capsys.readouterr()
    assert f"{out}: recorded 2 entries (2 new, 0 replaced), 2 in the file" in captured.out
    assert "clat_p99_us: not measured in every run (None); skipped" in captured.err

    loaded = load_thresholds(thresholds)  # the written file validates and is found by lookups
    iops = loaded.baseline("local/kvmio-lab-good/vdb", "randread-4k-qd32x4", "iops")
    assert iops is not None
    assert (iops.median, iops.samples, iops.tolerance, iops.at) == (10100.5, (10100.5, 9800, 10400), 0.15, "2024-05-02")
    assert iops.direction == "higher-is-better"
    assert dict(iops.fingerprint) == {
        "cpu_model": "QEMU TCG", "kernel": "6.1.0-21-amd64", "qemu": "7.2.9", "libvirt": "9.0.0",
        "device_model": "virtio-blk", "io_mode": "io_uring", "cache": "none", "storage_class": "lab-tcg",
    }
    cpu = loaded.baseline("local/kvmio-lab-good/vdb", "randread-4k-qd32x4", "host_cpu_us_per_io")
    assert cpu is not None and cpu.median == 310 and cpu.direction == "lower-is-better"
    assert loaded.baseline("local/kvmio-lab-good/vdb", "randread-4k-qd32x4", "clat_p99_us") is None
    assert loaded.baseline("local/kvmio-lab-good/vdb", "randread-4k-qd32x4", "runtime_s") is None
    latency = loaded.baseline("local/kvmio-lab-good/vdc", "randread-4k-qd1", "clat_p99_us")
    assert latency is not None and latency.median == 2100
    assert "samples: [10100.5, 9800, 10400]" in out.read_text()


def test_record_merges_without_losing_other_entries(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "baselines" / "mixed.yaml"
    out.parent.mkdir()
    existing: dict[str, Any] = {
        "version": 1,
        "baselines": [
            {"target": "hv01/db01/vdb", "profile": "seqread-1m", "at": "2023-01-01", "fingerprint": {"kernel": "5.10"},
             "metrics": {"bw_bytes": {"median": 2e9}}},
            {"target": "local/kvmio-lab-good/vdb", "profile": "randread-4k-qd32x4", "at": "2023-01-01",
             "fingerprint": {}, "metrics": {"iops": {"median": 1, "tolerance": 0.3}}},
        ],
    }
    out.write_text("# Hand-written header, kept by record.\n# Second line.\n\n" + yaml.safe_dump(existing, sort_keys=False))
    assert run("baseline", "record", "--results", str(results), "--out", str(out), "--class", "lab-tcg") == 0
    text = out.read_text()
    assert text.startswith("# Hand-written header, kept by record.\n# Second line.\n")
    document = yaml.safe_load(text)
    entries = {(e["target"], e["profile"]): e for e in document["baselines"]}
    assert list(entries) == [
        ("hv01/db01/vdb", "seqread-1m"),
        ("local/kvmio-lab-good/vdb", "randread-4k-qd32x4"),
        ("local/kvmio-lab-good/vdc", "randread-4k-qd1"),
    ]
    assert entries[("hv01/db01/vdb", "seqread-1m")] == existing["baselines"][0]  # untouched
    replaced = entries[("local/kvmio-lab-good/vdb", "randread-4k-qd32x4")]
    assert replaced["metrics"]["iops"]["median"] == 10100.5
    assert replaced["metrics"]["iops"]["tolerance"] == 0.3  # a hand-tuned tolerance survives re-recording
    assert replaced["fingerprint"]["storage_class"] == "lab-tcg"


def test_explicit_tolerance_applies_everywhere(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.yaml"
    run("baseline", "record", "--results", str(results), "--out", str(out), "--tolerance", "20%")
    document = yaml.safe_load(out.read_text())
    assert {m["tolerance"] for e in document["baselines"] for m in e["metrics"].values()} == {0.2}


@pytest.mark.parametrize("value", ["0", "1.5", "fast", "-0.1"])
def test_bad_tolerance_is_rejected_by_the_parser(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("baseline", "record", "--results", "r.json", "--out", "o.yaml", "--tolerance", value)
    assert "--tolerance" in capsys.readouterr().err


def test_noisy_or_short_samples_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"fingerprint": {}, "results": [
        {"target": "a/b/c", "profile": "p", "samples": {"iops": [5000, 10000, 9000], "clat_mean_us": [100]}}
    ]}))
    run("baseline", "record", "--results", str(results), "--out", str(tmp_path / "o.yaml"))
    err = capsys.readouterr().err
    # One session: noise is its own dispersion, the standard deviation of the log samples: 37.4%.
    assert "one results file: the recorded noise is that session's own dispersion" in err
    assert "a/b/c p iops: noise 37% over 1 session(s) widens the gate's band from 15% to 67% (3 × noise)" in err
    assert "a/b/c p clat_mean_us: only 1 run(s)" in err
    assert "a/b/c p: no storage class in the fingerprint; pass --class or --thresholds" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "--results {results}:1:2: not JSON: Expecting property name"),
        (json.dumps({"results": []}), "--results {results}: missing required key 'fingerprint'"),
        (json.dumps({"fingerprint": {}, "results": [{"target": "vm01", "profile": "p", "samples": {}}]}),
         "--results {results}: results[0].target: expected a target id host/domain/disk"),
        (json.dumps({"fingerprint": {}, "results": [{"target": "a/b/c", "profile": "p",
                                                      "samples": {"iops": ["fast"]}}]}),
         "--results {results}: results[0].samples.iops[0]: expected a number or nothing, got 'fast'"),
        (json.dumps({"fingerprint": {}, "results": [{"target": "a/b/c", "profile": "p",
                                                      "samples": {"clat_p99_us": [None]}}]}),
         "no result with a recordable metric; nothing was written"),
        (json.dumps({"fingerprint": {}, "results": [{"target": "a/b/c", "profile": "p",
                                                      "samples": {"iops": [1], "lat_p99_us": [2100]}}]}),
         "--results {results}: results[0].samples.lat_p99_us: lat_p99_us was renamed: it meant completion "
         "latency; use clat_p99_us (or tlat_p99_us for total latency)"),
        (json.dumps({"fingerprint": {"storage_class": "nvme-local"}, "results": [
            {"target": "a/b/c", "profile": "p", "samples": {"iops": [1, 1, 1]}}]}),
         "the results say storage class 'nvme-local' for a/b/c, --class says 'lab-tcg'"),
        (json.dumps({"fingerprint": {}, "results": [
            {"target": "a/b/c", "profile": "p", "samples": {"iops": [1]}},
            {"target": "a/b/c", "profile": "p", "samples": {"iops": [2]}}]}),
         "results[1]: a second result for a/b/c p"),
    ],
)
def test_bad_results_are_command_errors(tmp_path: Path, content: str, message: str) -> None:
    results = tmp_path / "results.json"
    results.write_text(content)
    out = tmp_path / "out.yaml"
    with pytest.raises(CommandError) as info:
        run("baseline", "record", "--results", str(results), "--out", str(out), "--class", "lab-tcg")
    assert message.format(results=results) in str(info.value)
    assert not out.exists()


def test_missing_results_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="file not found; pass the JSON the perf suite wrote"):
        run("baseline", "record", "--results", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o.yaml"))


def test_unknown_profile_with_thresholds(results: Path, thresholds: Path, tmp_path: Path) -> None:
    data = json.loads(results.read_text())
    data["results"][0]["profile"] = "randread-8k"
    results.write_text(json.dumps(data))
    with pytest.raises(CommandError, match=r"results\[0\]\.profile: unknown profile 'randread-8k'"):
        run("baseline", "record", "--results", str(results), "--out", str(tmp_path / "o.yaml"),
            "--thresholds", str(thresholds))


def test_invalid_existing_baseline_file_is_left_alone(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.yaml"
    out.write_text("version: 1\nbaselines:\n  - target: a/b/c\n    profile: p\n")
    with pytest.raises(CommandError) as info:
        run("baseline", "record", "--results", str(results), "--out", str(out))
    assert f"--out {out}: baselines[0]: missing required key 'at', 'fingerprint', 'metrics'" in str(info.value)
    assert "nothing was written" in str(info.value)
    assert out.read_text() == "version: 1\nbaselines:\n  - target: a/b/c\n    profile: p\n"


def test_existing_baseline_file_with_a_renamed_metric_is_refused(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.yaml"
    old = (
        "version: 1\nbaselines:\n  - target: a/b/c\n    profile: p\n    at: 2024-05-02\n    fingerprint: {}\n"
        "    metrics:\n      lat_mean_us: {median: 900}\n"
    )
    out.write_text(old)
    with pytest.raises(CommandError) as info:
        run("baseline", "record", "--results", str(results), "--out", str(out))
    assert (
        f"--out {out}: baselines[0].metrics.lat_mean_us: lat_mean_us was renamed: it meant completion latency; "
        "use clat_mean_us (or tlat_mean_us for total latency)"
    ) in str(info.value)
    assert out.read_text() == old


def test_shipped_perf_results_schema_accepts_the_documented_example(results: Path) -> None:
    from pytest_kvmio.perf.documents import validate

    validate("perf-results", json.loads(results.read_text()), "example")  # no exception


def test_fixture_baselines_validate() -> None:
    assert load_thresholds(DATA / "good").baselines


# --- several sessions: median over all samples, noise from their drift and their own spread ------

SESSION_1: dict[str, Any] = {
    "fingerprint": {"cpu_model": "QEMU TCG", "kernel": "6.1.0-21-amd64"},
    "results": [
        {"target": "local/kvmio-lab-good/vdc", "profile": "randread-4k-qd32x4",
         "fingerprint": {"storage_class": "lab-tcg"},
         "samples": {"iops": [9_000, 10_000, 11_000], "host_cpu_us_per_io": [300, 300, 300]}},
        {"target": "local/kvmio-lab-good/vdd", "profile": "randread-4k-qd32x4",
         "fingerprint": {"storage_class": "lab-tcg"}, "samples": {"iops": [5_000, 5_000, 5_000]}},
    ],
}
SESSION_2: dict[str, Any] = {
    "fingerprint": {"cpu_model": "QEMU TCG", "kernel": "6.1.0-21-amd64"},
    "results": [
        {"target": "local/kvmio-lab-good/vdc", "profile": "randread-4k-qd32x4",
         "fingerprint": {"storage_class": "lab-tcg"},
         "samples": {"iops": [12_600, 14_000, 15_400], "host_cpu_us_per_io": [300, 300, 300]}},
    ],
}


@pytest.fixture
def sessions(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "perf-1.json", tmp_path / "perf-2.json"
    first.write_text(json.dumps(SESSION_1))
    second.write_text(json.dumps(SESSION_2))
    return first, second


def test_several_results_files_record_one_median_noise_and_session_count(
    sessions: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_kvmio.perf.decide import dispersion, session_noise

    out = tmp_path / "baselines" / "lab-tcg.yaml"
    first, second = sessions
    assert run("baseline", "record", "--results", str(first), "--results", str(second), "--out", str(out),
               "--at", "2024-05-02") == 0
    captured = capsys.readouterr()
    assert f"{out}: recorded 2 entries (2 new, 0 replaced), 2 in the file; noise from 2 sessions" in captured.out
    assert "one results file" not in captured.err
    assert "local/kvmio-lab-good/vdd randread-4k-qd32x4: in 1 of 2 results files; its noise covers that session only" in captured.err

    document = yaml.safe_load(out.read_text())
    vdc = document["baselines"][0]["metrics"]
    assert vdc["iops"]["median"] == 11_800  # over all six samples, not a median of medians
    assert vdc["iops"]["samples"] == [9_000, 10_000, 11_000, 12_600, 14_000, 15_400]
    assert vdc["iops"]["sessions"] == 2
    # The standard deviation of all six log samples: the drift between the sessions counts with the spread in each.
    expected = session_noise([[9_000, 10_000, 11_000], [12_600, 14_000, 15_400]])
    assert expected == pytest.approx(dispersion([9_000, 10_000, 11_000, 12_600, 14_000, 15_400]))
    assert vdc["iops"]["noise"] == round(expected, 3) == 0.205
    assert vdc["host_cpu_us_per_io"]["noise"] == 0 and vdc["host_cpu_us_per_io"]["sessions"] == 2
    vdd = document["baselines"][1]["metrics"]["iops"]
    assert (vdd["noise"], vdd["sessions"]) == (0, 1)
    assert ("local/kvmio-lab-good/vdc randread-4k-qd32x4 iops: noise 20% over 2 session(s) widens the gate's "
            "band from 15% to 46% (3 × noise)") in captured.err


def test_recorded_noise_widens_the_gate_band_end_to_end(sessions: tuple[Path, Path], thresholds: Path) -> None:
    from pytest_kvmio.perf.decide import decide_baseline

    out = thresholds / "baselines" / "lab-tcg.yaml"
    first, second = sessions
    run("baseline", "record", "--results", str(first), "--results", str(second), "--out", str(out))
    reference = load_thresholds(thresholds).baseline("local/kvmio-lab-good/vdc", "randread-4k-qd32x4", "iops")
    assert reference is not None and reference.noise == 0.205 and reference.sessions == 2
    drifted = decide_baseline([8_000, 8_100, 7_900], reference, max_spread=0.5)  # 32% below: in the 46% band
    assert drifted.passed, drifted.message
    assert drifted.message.endswith("band widened from 15% to 46% by the recorded noise (3 × 20%)")
    throttled = decide_baseline([1_000, 1_000, 1_001], reference, max_spread=0.5)
    assert throttled.failed, throttled.message


def test_sessions_from_another_environment_are_refused(sessions: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = sessions
    other = dict(SESSION_2, fingerprint={"cpu_model": "QEMU TCG", "kernel": "6.6.13-amd64"})
    second.write_text(json.dumps(other))
    out = tmp_path / "o.yaml"
    with pytest.raises(CommandError) as info:
        run("baseline", "record", "--results", str(first), "--results", str(second), "--out", str(out))
    assert str(info.value) == (
        f"--results {second}: results[0]: local/kvmio-lab-good/vdc randread-4k-qd32x4 was measured on another "
        f"environment than in --results {first}: results[0] (kernel: recorded '6.1.0-21-amd64', now "
        "'6.6.13-amd64'); record sessions of one environment into one baseline"
    )
    assert not out.exists()


def test_a_second_result_in_one_file_is_still_an_error_but_one_per_file_is_a_session(
    sessions: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = sessions
    run("baseline", "record", "--results", str(first), "--results", str(first), "--out", str(tmp_path / "o.yaml"))
    recorded = yaml.safe_load((tmp_path / "o.yaml").read_text())["baselines"][0]["metrics"]["iops"]
    assert recorded["sessions"] == 2 and recorded["median"] == 10_000


def test_noise_multiple_of_the_file_and_of_a_replaced_entry_survive_re_recording(
    sessions: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.yaml"
    out.write_text(
        "version: 1\nnoise_multiple: 2\nbaselines:\n"
        "  - target: local/kvmio-lab-good/vdc\n    profile: randread-4k-qd32x4\n    at: 2023-01-01\n"
        "    noise_multiple: 1.5\n    fingerprint: {}\n    metrics:\n      iops: {median: 1}\n"
    )
    first, second = sessions
    run("baseline", "record", "--results", str(first), "--results", str(second), "--out", str(out))
    document = yaml.safe_load(out.read_text())
    assert document["noise_multiple"] == 2
    assert document["baselines"][0]["noise_multiple"] == 1.5
    err = capsys.readouterr().err
    assert "vdc randread-4k-qd32x4 iops: noise 20% over 2 session(s) widens the gate's band from 15% to 26% (1.5 × noise)" in err


def test_results_is_repeatable_in_the_parser() -> None:
    args = parse("baseline", "record", "--results", "a.json", "--results", "b.json", "--out", "o.yaml")
    assert args.results == [Path("a.json"), Path("b.json")]


def test_recording_says_how_far_few_samples_leave_quiet_runs_inconclusive(
    sessions: tuple[Path, Path], thresholds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = thresholds / "baselines" / "lab-tcg.yaml"
    first, second = sessions
    assert run("baseline", "record", "--results", str(first), "--results", str(second), "--out", str(out)) == 0
    err = capsys.readouterr().err
    # vdc iops: noise 20.5% over 6 samples, bound 20.5% x 2.09 = 43% -> band 1 - e^(-3 x 0.428) = 72%.
    assert ("local/kvmio-lab-good/vdc randread-4k-qd32x4 iops: with 6 samples the noise may be up to 43% (95% bound): "
            "quiet runs out to 72% are inconclusive, not failed; more sessions narrow it") in err
    loaded = load_thresholds(thresholds).baseline("local/kvmio-lab-good/vdc", "randread-4k-qd32x4", "iops")
    assert loaded is not None and loaded.undecided_band == pytest.approx(0.723, abs=1e-3)
