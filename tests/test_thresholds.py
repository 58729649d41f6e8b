"""Tests of loading, validating and looking up thresholds (profiles, classes, baselines)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.thresholds import (
    DEFAULT_NOISE_MULTIPLE,
    METRIC_DIRECTIONS,
    RENAMED_METRICS,
    Thresholds,
    ThresholdsError,
    direction_of,
    match_target,
    renamed_metric,
)

DATA = Path(__file__).parent / "data" / "thresholds"
REPO = Path(__file__).parent.parent
BAD_DIRS = sorted(p.name for p in DATA.glob("bad-*"))


@pytest.fixture
def good() -> Thresholds:
    return load_thresholds(DATA / "good")


def test_shipped_thresholds_load_and_cover_every_class_and_profile() -> None:
    thresholds = load_thresholds(REPO / "thresholds")
    assert {"randread-4k-qd32x4", "randread-4k-qd128", "randwrite-4k-qd128", "randread-4k-qd1", "seqread-1m"} <= set(
        thresholds.profiles
    )
    assert {"nvme-local", "ssd-iscsi", "fc-san", "ceph-rbd", "lab-tcg"} <= set(thresholds.classes)
    for storage_class in thresholds.classes.values():
        assert set(storage_class.limits) == set(thresholds.profiles), storage_class.name
    assert thresholds.baselines, "an example baseline is shipped"


def test_shipped_lab_scratch_disks_belong_to_lab_tcg_with_loose_limits() -> None:
    thresholds = load_thresholds(REPO / "thresholds")
    by_serial = thresholds.class_for("local/anything/vdc", "kvmio-scratch-0")
    assert by_serial is not None and by_serial.name == "lab-tcg"
    # The lab's other disks carry seeded misconfigurations, not performance questions.
    assert thresholds.class_for("local/kvmio-lab-good/vdb", "kvmio-good-data") is None
    floor = thresholds.limits("lab-tcg", "randread-4k-qd32x4")["iops"].floor
    assert floor is not None and floor <= 5000  # TCG guests manage ~5-25k IOPS
    # The example baseline must not apply to the lab, or a lab run would compare against made-up numbers.
    assert thresholds.baseline("local/kvmio-lab-good/vdb", "randread-4k-qd128", "iops") is None


def test_profiles_inherit_defaults_and_derive_write(good: Thresholds) -> None:
    read = good.profile("randread-4k-qd32x4")
    write = good.profile("randwrite-4k-qd128")
    seq = good.profile("seqread-1m")
    assert (read.runtime, read.ramp_time, read.repeat, read.write) == (5, 1, 3, False)
    assert (write.runtime, write.write) == (20, True)
    assert (seq.repeat, seq.bs_bytes) == (5, 1024 * 1024)
    assert read.bs_bytes == 4096
    assert "--numjobs=4" in read.fio_args() and "--group_reporting" in read.fio_args()


def test_with_timing_overrides_every_profile(good: Thresholds) -> None:
    short = good.with_timing(runtime=3, ramp_time=0, repeat=2)
    assert {(p.runtime, p.ramp_time, p.repeat) for p in short.profiles.values()} == {(3, 0, 2)}
    assert good.profile("randwrite-4k-qd128").runtime == 20, "the original is unchanged"
    assert short.profile("seqread-1m").total_seconds == 6


def test_unknown_profile_names_the_known_ones(good: Thresholds) -> None:
    with pytest.raises(ThresholdsError, match="no profile 'nope'; known: randread-4k-qd32x4"):
        good.profile("nope")


@pytest.mark.parametrize(
    ("target", "serial", "expected"),
    [
        ("local/kvmio-lab-good/vdb", None, "lab-tcg"),
        ("hv-nvme-01/db01/vdb", "kvmio-scratch-1", "lab-tcg"),  # first match wins: lab-tcg is listed first
        ("hv-nvme-01/db01/vdb", None, "nvme-local"),
        ("hv07/db01/vdb", "nvme-abc", "nvme-local"),  # target and serial rule: both match
        ("hv07/db01/vdb", None, None),  # the serial rule needs a serial
        ("hv07/db01/vdb", "sata-1", None),
    ],
)
def test_class_for_tries_classes_in_file_order(
    good: Thresholds, target: str, serial: str | None, expected: str | None
) -> None:
    found = good.class_for(target, serial)
    assert (found.name if found else None) == expected


def test_class_max_spread_falls_back_to_defaults(good: Thresholds) -> None:
    assert good.classes["lab-tcg"].max_spread == 0.5
    assert good.classes["nvme-local"].max_spread == 0.3


def test_target_globs_match_part_by_part() -> None:
    assert match_target("*/kvmio-lab-*/*", "local/kvmio-lab-a/vdb")
    assert not match_target("*/*", "local/kvmio-lab-a/vdb")
    assert not match_target("hv*/vm/vdb", "hv1/x/vm/vdb")
    assert not match_target("*/vm*/vdb", "hv1/vm1/vdc")


def test_limits(good: Thresholds) -> None:
    limits = good.limits("nvme-local", "randread-4k-qd32x4")
    assert limits["iops"].floor == 80000 and limits["iops"].ceiling is None
    assert limits["clat_p99_us"].ceiling == 5000
    assert good.limits("nvme-local", "seqread-1m") == {}
    with pytest.raises(ThresholdsError, match="no storage class 'hdd'"):
        good.limits("hdd", "seqread-1m")


def test_baseline_prefers_exact_target_then_first_glob(good: Thresholds) -> None:
    exact = good.baseline("hv-nvme-01/db01/vdb", "randread-4k-qd32x4", "iops")
    glob = good.baseline("hv-nvme-02/db01/vdb", "randread-4k-qd32x4", "iops")
    assert exact is not None and exact.median == 160000 and exact.tolerance == 0.15
    assert glob is not None and glob.median == 150000 and glob.tolerance == 0.2
    assert glob.samples == (148000, 150000, 151000) and glob.at == "2024-05-02"
    assert glob.fingerprint["storage_class"] == "nvme-local"
    latency = good.baseline("hv-nvme-02/db01/vdb", "randread-4k-qd32x4", "clat_p99_us")
    assert latency is not None and latency.direction == "lower-is-better" and latency.tolerance == 0.3
    # The exact entry has no latency baseline, so the glob entry provides it.
    assert good.baseline("hv-nvme-01/db01/vdb", "randread-4k-qd32x4", "clat_p99_us") == latency
    assert good.baseline("hv-nvme-01/db01/vdc", "randread-4k-qd32x4", "iops") is None
    assert good.baseline("hv-nvme-01/db01/vdb", "seqread-1m", "iops") is None
    assert set(good.baselines_for("hv-nvme-01/db01/vdb", "randread-4k-qd32x4")) == {"iops", "clat_p99_us"}


@pytest.mark.parametrize("name", BAD_DIRS)
def test_bad_files_name_file_path_and_expectation(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(DATA / name, tmp_path / "thresholds")
    expected = (tmp_path / "thresholds" / "expected.txt").read_text().strip()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ThresholdsError) as info:
        load_thresholds("thresholds")
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_type_error_message_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA / "bad-type", tmp_path / "thresholds")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ThresholdsError) as info:
        load_thresholds("thresholds")
    assert str(info.value) == (
        "thresholds/classes.yaml: classes.nvme-local.limits.randread-4k-qd32x4.iops.floor: "
        "expected a number, got 'fast'"
    )


def test_every_schema_problem_is_listed(tmp_path: Path) -> None:
    shutil.copytree(DATA / "good", tmp_path / "t")
    profiles = tmp_path / "t" / "profiles.yaml"
    text = profiles.read_text().replace("iodepth: 32", "iodepth: 0").replace("bs: 1m", "bs: huge")
    profiles.write_text(text + "  extra:\n    description: x\n    rw: randread\n    bs: 4k\n    iodepth: 1\n    numjobs: 1\n    bogus: 1\n")
    with pytest.raises(ThresholdsError) as info:
        load_thresholds(tmp_path / "t")
    lines = str(info.value).splitlines()
    assert any("profiles.randread-4k-qd32x4.iodepth: expected a number >= 1, got 0" in line for line in lines)
    assert any("profiles.seqread-1m.bs: expected a block size like 4k" in line and "got 'huge'" in line for line in lines)
    assert any("profiles.extra: unknown key 'bogus'; expected one of description, rw" in line for line in lines)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match="not a directory"):
        load_thresholds(tmp_path / "absent")


def test_baselines_directory_is_optional(tmp_path: Path) -> None:
    shutil.copytree(DATA / "good", tmp_path / "t")
    shutil.rmtree(tmp_path / "t" / "baselines")
    assert load_thresholds(tmp_path / "t").baselines == ()


def test_schema_metric_names_agree_with_the_code() -> None:
    schemas = REPO / "pytest_kvmio" / "schemas"
    classes = json.loads((schemas / "classes.schema.json").read_text())
    baselines = json.loads((schemas / "baselines.schema.json").read_text())
    assert set(classes["$defs"]["metric"]["enum"]) == set(METRIC_DIRECTIONS) | {"runtime_s"}
    entry = baselines["$defs"]["entry"]["properties"]["metrics"]
    assert set(entry["propertyNames"]["enum"]) == set(METRIC_DIRECTIONS)


def test_latency_metrics_have_a_direction_and_old_names_are_refused() -> None:
    for kind in ("clat", "tlat"):
        for stat in ("mean", "p50", "p90", "p99", "p99_9", "p99_99"):
            assert direction_of(f"{kind}_{stat}_us") == "lower-is-better"
    assert set(RENAMED_METRICS) == {f"lat_{s}_us" for s in ("mean", "p50", "p90", "p99", "p99_9", "p99_99")}
    assert not set(RENAMED_METRICS) & set(METRIC_DIRECTIONS)
    assert renamed_metric("lat_p99_us") == (
        "lat_p99_us was renamed: it meant completion latency; use clat_p99_us (or tlat_p99_us for total latency)"
    )
    assert renamed_metric("clat_p99_us") is None and renamed_metric("iops") is None
    with pytest.raises(KeyError, match="lat_p99_9_us was renamed.*use clat_p99_9_us"):
        direction_of("lat_p99_9_us")


def test_renamed_metric_in_classes_is_refused_with_file_path_and_new_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(DATA / "bad-renamed-metric-class", tmp_path / "thresholds")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ThresholdsError) as info:
        load_thresholds("thresholds")
    assert str(info.value) == (
        "thresholds/classes.yaml: classes.nvme-local.limits.randread-4k-qd32x4.lat_p99_us: lat_p99_us was renamed: "
        "it meant completion latency; use clat_p99_us (or tlat_p99_us for total latency)"
    )


def test_renamed_metric_schemas_list_no_old_names() -> None:
    schemas = REPO / "pytest_kvmio" / "schemas"
    results = json.loads((schemas / "perf-results.schema.json").read_text())
    names = results["$defs"]["result"]["properties"]["samples"]["propertyNames"]
    assert set(names["not"]["enum"]) == set(RENAMED_METRICS)
    for name in ("classes", "baselines"):
        assert '"lat_' not in (schemas / f"{name}.schema.json").read_text()


# --- recorded noise (kvmio baseline record from several sessions) -------------------------------

NOISY_BASELINES = """version: 1
noise_multiple: 4
baselines:
  - target: hv-nvme-01/db01/vdb
    profile: randread-4k-qd32x4
    at: "2024-05-02"
    fingerprint: {storage_class: nvme-local}
    metrics:
      iops: {median: 150000, tolerance: 0.15, noise: 0.05, sessions: 2, samples: [148000, 150000, 151000]}
  - target: hv-nvme-02/db01/vdb
    profile: randread-4k-qd32x4
    at: "2024-05-02"
    noise_multiple: 2
    fingerprint: {storage_class: nvme-local}
    metrics:
      iops: {median: 150000, noise: 0.12, sessions: 3}
      bw_bytes: {median: 600000000}
"""


def test_noise_fields_load_and_widen_the_band(tmp_path: Path) -> None:
    shutil.copytree(DATA / "good", tmp_path / "t")
    (tmp_path / "t" / "baselines" / "nvme-local.yaml").write_text(NOISY_BASELINES)
    loaded = load_thresholds(tmp_path / "t")
    file_level = loaded.baseline("hv-nvme-01/db01/vdb", "randread-4k-qd32x4", "iops")
    assert file_level is not None
    assert (file_level.noise, file_level.sessions, file_level.noise_multiple) == (0.05, 2, 4)
    assert file_level.band == pytest.approx(1 - math.exp(-0.20))  # max(15%, 1 - e^(-4 × 5%)): 18%
    entry_level = loaded.baseline("hv-nvme-02/db01/vdb", "randread-4k-qd32x4", "iops")
    assert entry_level is not None and entry_level.noise_multiple == 2 and entry_level.band == pytest.approx(1 - math.exp(-0.24))  # its own noise, 12%
    no_noise = loaded.baseline("hv-nvme-02/db01/vdb", "randread-4k-qd32x4", "bw_bytes")
    assert no_noise is not None and (no_noise.noise, no_noise.sessions, no_noise.band) == (None, None, 0.15)


def test_baselines_without_noise_default_to_the_tolerance(good: Thresholds) -> None:
    assert good.baselines
    for baseline in good.baselines:
        assert baseline.noise is None and baseline.noise_multiple == DEFAULT_NOISE_MULTIPLE
        assert baseline.band == baseline.tolerance


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("noise: 0.05", "noise: -0.05", "baselines[0].metrics.iops.noise: expected a number >= 0, got -0.05"),
        ("sessions: 2", "sessions: 0", "baselines[0].metrics.iops.sessions: expected a number >= 1, got 0"),
        ("sessions: 2", "sessions: two", "baselines[0].metrics.iops.sessions: expected an integer, got 'two'"),
        ("noise_multiple: 4", "noise_multiple: 0", "noise_multiple: expected a number > 0, got 0"),
        ("    noise_multiple: 2", "    noise_multiple: lots",
         "baselines[1].noise_multiple: expected a number, got 'lots'"),
    ],
)
def test_bad_noise_fields_name_the_file_and_path(tmp_path: Path, old: str, new: str, message: str) -> None:
    shutil.copytree(DATA / "good", tmp_path / "t")
    (tmp_path / "t" / "baselines" / "nvme-local.yaml").write_text(NOISY_BASELINES.replace(old, new, 1))
    with pytest.raises(ThresholdsError) as info:
        load_thresholds(tmp_path / "t")
    assert f"t/baselines/nvme-local.yaml: {message}" in str(info.value)


def test_every_citation_in_thresholds_resolves_to_the_data_shipped_beside_it() -> None:
    """The example limits cite reference/...: the files are in thresholds/reference/ and the cited lines exist."""
    root = REPO / "thresholds"
    csv_lines = (root / "reference" / "guest-fio-4k-qd128.csv").read_text().splitlines()
    cited_files, cited_lines = set(), []
    for path in [*root.glob("*.yaml"), *root.glob("baselines/*.yaml"), root / "README.md"]:
        text = path.read_text()
        cited_files.update(re.findall(r"reference/([\w.-]+\.(?:csv|md))", text))
        for block in re.findall(r"lines? ([\d, -]+)", text):
            cited_lines += [int(n) for n in re.findall(r"\d+", block)]
    assert cited_files == {"guest-fio-4k-qd128.csv", "storage-facts.md"}
    assert all((root / "reference" / name).is_file() for name in cited_files)
    assert cited_lines and all(1 <= n <= len(csv_lines) for n in cited_lines), sorted(set(cited_lines))
