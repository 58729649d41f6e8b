"""A/B experiments without a lab: the run order, the statistics and verdicts, arm checks, reports, usage errors."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_kvmio.errors import InputError
from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.facts.targets import HostTarget
from pytest_kvmio.model.domain import parse_domain
from pytest_kvmio.perf.ab import (
    HOST_CPU,
    Arm,
    RunSample,
    fio_cpu_us_per_io,
    host_fio_command,
    parse_arm,
    parse_margin,
    plan,
    run_experiment,
)
from pytest_kvmio.perf.abstats import balanced_order, compare, more_rounds, verdict_of
from pytest_kvmio.perf.fio import FioMetrics
from pytest_kvmio.perf.thresholds import Profile
from pytest_kvmio.plugin.absuite import parse_spec
from pytest_kvmio.report import abreport
from tests.conftest import SUITES, kvmio, write_domain

READ = Profile("randread-4k", "", "randread", "4k", 32, 4, runtime=3, ramp_time=1, write=False)
WRITE = Profile("randwrite-4k", "", "randwrite", "4k", 32, 1, runtime=3, ramp_time=1, write=True)

DOMAIN_XML = """<domain type='kvm'>
  <name>{name}</name>
  <vcpu>2</vcpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='/images/{name}-native.raw'/>
      <target dev='vdb' bus='virtio'/>
      <serial>kvmio-scratch-native</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='io_uring'/>
      <source file='/images/{name}-uring.raw'/>
      <target dev='vdc' bus='virtio'/>
      <serial>kvmio-scratch-uring</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='io_uring'/>
      <source file='/images/{name}-data.raw'/>
      <target dev='vdd' bus='virtio'/>
      <serial>data-1</serial>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source protocol='rbd' name='pool/img'/>
      <target dev='vde' bus='virtio'/>
      <serial>kvmio-scratch-rbd</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='/images/{name}-native.raw'/>
      <target dev='vdf' bus='virtio'/>
      <serial>kvmio-scratch-alias</serial>
    </disk>
  </devices>
</domain>"""


def lab_host(running: bool = True) -> HostTarget:
    dom = parse_domain(DOMAIN_XML.format(name="vm1"), source="test", host="hv01")
    dom.running = running
    return HostTarget(name="hv01", spec=None, facts=HostFacts(name="hv01"), domains=[dom])


def lognormal(median: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0, spread)) for _ in range(n)]


# --- order ----------------------------------------------------------------------------------------


def test_rounds_interleave_the_arms_in_a_balanced_order() -> None:
    assert balanced_order(1) == ["a", "b"]
    assert balanced_order(4) == ["a", "b", "b", "a", "a", "b", "b", "a"]
    order = balanced_order(6)
    assert order.count("a") == order.count("b") == 6
    # A linear drift cancels: the mean run position of each arm is the same over every two rounds.
    positions = {arm: [i for i, x in enumerate(balanced_order(6)) if x == arm] for arm in "ab"}
    assert sum(positions["a"]) == sum(positions["b"])
    with pytest.raises(ValueError, match="rounds"):
        balanced_order(0)


# --- statistics and verdicts --------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high", "higher", "expected"), [
    (1.10, 1.30, True, "better"), (1.10, 1.30, False, "worse"),
    (0.40, 0.55, True, "worse"), (0.40, 0.55, False, "better"),
    (0.97, 1.03, True, "same"), (0.97, 1.03, False, "same"),
    (0.90, 1.02, True, "inconclusive"), (1.02, 1.20, True, "inconclusive"), (0.5, 2.0, False, "inconclusive"),
])
def test_the_verdict_needs_the_whole_interval_beyond_or_inside_the_margin(low, high, higher, expected) -> None:
    assert verdict_of(low, high, 0.05, higher) == expected


def test_a_throttled_b_is_worse_in_iops_and_better_nowhere() -> None:
    a = lognormal(9000, 0.05, 6, 1)
    b = lognormal(2700, 0.05, 6, 2)
    iops = compare("iops", a, b)
    assert iops.verdict == "worse"
    assert iops.ci_high < 0.6 and iops.ci_low > 0
    assert iops.ratio == pytest.approx(iops.b_median / iops.a_median)
    assert iops.p_value < 0.01
    assert not iops.not_worse
    # The same numbers as latencies: B's lower values are better.
    assert compare("clat_mean_us", a, b).verdict == "better"


def test_identical_arms_give_an_interval_around_one_and_never_better_or_worse() -> None:
    contains_one = 0
    for seed in range(20):
        a, b = lognormal(9000, 0.03, 6, seed), lognormal(9000, 0.03, 6, 100 + seed)
        c = compare("iops", a, b)
        assert c.verdict in ("same", "inconclusive"), c.explain()
        contains_one += c.ci_low <= 1 <= c.ci_high
    assert contains_one >= 16


def test_an_undecided_comparison_says_how_many_more_rounds_would_decide() -> None:
    c = compare("iops", [100, 104, 96, 101], [108, 112, 103, 111])
    assert c.verdict == "inconclusive"
    assert c.more_rounds is not None and c.more_rounds >= 1
    assert f"about {c.more_rounds} more rounds" in c.explain()
    # An effect right on the margin's edge can't be decided by more rounds.
    assert more_rounds(6, 1.05, 0.9, 1.2, 0.05) is None


def test_not_worse_is_the_bad_side_of_the_interval_within_the_margin() -> None:
    c = compare("iops", [100, 101, 99, 100, 102, 98], [99, 100, 101, 99, 100, 98])
    assert c.not_worse
    assert compare("clat_p99_us", [100, 101, 99, 100], [160, 170, 150, 165]).not_worse is False


def test_too_few_samples_or_unknown_metrics_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        compare("iops", [1, 2], [1, 2, 3])
    with pytest.raises(KeyError, match="no known direction"):
        compare("made_up", [1, 2, 3], [1, 2, 3])
    # Runs that could not measure a metric are left out, not read as zero.
    assert compare("iops", [10, None, 11, 12], [10, 11, 12]).a_samples == (10.0, 11.0, 12.0)


def test_the_interval_is_reproducible_from_the_samples() -> None:
    a, b = lognormal(100, 0.1, 6, 3), lognormal(110, 0.1, 6, 4)
    assert compare("iops", a, b) == compare("iops", a, b)


# --- arms ---------------------------------------------------------------------------------------------


def test_arms_are_domain_slash_disk_optionally_at_host() -> None:
    assert parse_arm("vm1/vdb").kind == "guest"
    spec = parse_arm("vm1/vdb@host")
    assert (spec.domain, spec.disk, spec.kind) == ("vm1", "vdb", "host")
    for bad in ("vm1", "vm1/", "/vdb", "vm1/vdb/x", "vm1/vdb@guest", ""):
        with pytest.raises(InputError, match="expected DOMAIN/DISK"):
            parse_arm(bad, "--a")


def test_margins_are_percentages_or_fractions() -> None:
    assert parse_margin("5%") == pytest.approx(0.05)
    assert parse_margin("0.1") == pytest.approx(0.1)
    for bad in ("five", "100%", "-1%"):
        with pytest.raises(ValueError, match="expected"):
            parse_margin(bad)


@pytest.mark.parametrize(("a", "b", "profile", "message"), [
    ("nope/vdb", "vm1/vdc", READ, "no domain 'nope' on hv01 \\(domains there: vm1\\)"),
    ("vm1/vdb", "vm1/vdz", READ, "--b vm1/vdz: vm1 has no disk 'vdz' \\(its disks: vdb, vdc, vdd, vde, vdf\\)"),
    ("vm1/vdd", "vm1/vdc", WRITE, "--a vm1/vdd: randwrite-4k writes .* serial 'data-1' does not match"),
    ("vm1/vdb@host", "vm1/vdc", WRITE, "--a vm1/vdb@host: randwrite-4k writes .* read profiles only"),
    ("vm1/vde@host", "vm1/vdc", READ, "--a vm1/vde@host: @host needs a file or block device .* network disk"),
    ("vm1/vdb", "vm1/vdb", WRITE, "both arms write the same scratch disk"),
    ("vm1/vdb", "vm1/vdf", WRITE, "both arms write the same scratch disk \\(/images/vm1-native.raw\\)"),
])
def test_bad_arms_are_refused_before_anything_runs(a, b, profile, message) -> None:
    with pytest.raises(InputError, match=message):
        plan(lab_host(), parse_arm(a), parse_arm(b), profile, "kvmio-scratch*")


def test_a_guest_arm_needs_a_running_domain_and_a_host_arm_does_not() -> None:
    with pytest.raises(InputError, match="not running; start it"):
        plan(lab_host(running=False), parse_arm("vm1/vdb"), parse_arm("vm1/vdc"), READ, "kvmio-scratch*")
    a, b = plan(lab_host(running=False), parse_arm("vm1/vdb@host"), parse_arm("vm1/vdc@host"), READ, "kvmio-scratch*")
    assert (a.kind, b.kind) == ("host", "host")


def test_the_same_disk_may_be_both_arms_of_a_read_profile_and_arms_carry_their_config() -> None:
    a, b = plan(lab_host(), parse_arm("vm1/vdb"), parse_arm("vm1/vdb"), READ, "kvmio-scratch*")
    facts = a.facts()
    assert facts | {"arm": "vm1/vdb", "kind": "guest", "io": "native", "cache": "none", "bus": "virtio"} == facts
    assert b.disk is a.disk


def test_the_host_arm_runs_fio_read_only_on_the_backing_source() -> None:
    command = host_fio_command(READ, "/images/vm 1.raw")
    assert "'--filename=/images/vm 1.raw'" in command and command.endswith("--readonly")
    assert command.startswith("timeout -s KILL ")
    with pytest.raises(ValueError, match="read profiles only"):
        host_fio_command(WRITE, "/images/x.raw")


def _metrics(iops: float, usr: float | None = 10.0, sys_: float | None = 20.0) -> FioMetrics:
    return FioMetrics(
        job="j", direction="read", groupid=0, iops=iops, bw_bytes=iops * 4096, clat_mean_us=1e6 / iops,
        clat_p50_us=None, clat_p90_us=None, clat_p99_us=2e6 / iops, clat_p99_9_us=None, clat_p99_99_us=None,
        tlat_mean_us=None, tlat_p50_us=None, tlat_p90_us=None, tlat_p99_us=None, tlat_p99_9_us=None,
        tlat_p99_99_us=None, runtime_s=3.0, io_bytes=0, total_ios=None, errors=0, error_code=0, cpu_usr_pct=usr,
        cpu_sys_pct=sys_, rw="randread", bs="4k", iodepth=32, numjobs=4, ioengine="libaio", filename=None,
        jobs_merged=4, latency_known=True,
    )


def test_fio_cpu_per_io_counts_every_job() -> None:
    assert fio_cpu_us_per_io(_metrics(1000.0), numjobs=4) == pytest.approx(0.3 * 4 * 1e6 / 1000)
    assert fio_cpu_us_per_io(_metrics(1000.0, usr=None), numjobs=4) is None


# --- the experiment with fake runners -------------------------------------------------------------------


@dataclass
class FakeRunner:
    name: str
    iops: list[float]
    log: list[str]
    cpu: float | None = 100.0
    refuse: str | None = None
    runs: int = field(default=0)

    def check(self) -> None:
        self.log.append(f"check {self.name}")
        if self.refuse:
            raise InputError(self.refuse)

    def prefill(self) -> None:
        self.log.append(f"prefill {self.name}")

    def run(self, profile: Profile) -> RunSample:
        self.log.append(f"run {self.name}")
        value = self.iops[self.runs % len(self.iops)]
        self.runs += 1
        return RunSample(_metrics(value), self.cpu, profile.runtime + profile.ramp_time)


def _arms(host_a: bool = False) -> tuple[Arm, Arm]:
    return plan(lab_host(), parse_arm("vm1/vdb@host" if host_a else "vm1/vdb"), parse_arm("vm1/vdc"), READ,
                "kvmio-scratch*")


def test_an_experiment_runs_the_rounds_in_order_and_compares_every_metric() -> None:
    log: list[str] = []
    a, b = _arms()
    a.runner = FakeRunner("a", [9000, 9100, 8900], log)
    b.runner = FakeRunner("b", [2700, 2750, 2650], log)
    lines: list[str] = []
    result = run_experiment(a, b, READ, rounds=4, progress=lines.append)
    assert log[:4] == ["check a", "check b", "prefill a", "prefill b"]
    assert [entry.split()[1] for entry in log[4:]] == result.order == balanced_order(4)
    assert len(lines) == 8 and lines[0].startswith("kvmio ab: round 1/4 A vm1/vdb: 9,000 IOPS")
    assert result.comparison("iops").verdict == "worse"
    assert result.comparison("clat_mean_us").verdict == "worse"  # 1/IOPS: B's latency is higher
    assert result.comparison(HOST_CPU).verdict == "same"
    doc = result.document()
    assert doc["a"]["kind"] == "guest" and doc["b"]["io"] == "io_uring" and doc["rounds"] == 4
    assert doc["order"] == balanced_order(4)
    first = doc["comparisons"][0]
    assert set(first) >= {"metric", "a_samples", "b_samples", "a_median", "b_median", "ratio", "ci_low", "ci_high",
                          "p_value", "verdict"}
    assert doc["samples"]["b"]["iops"] == [2700.0, 2750.0, 2650.0, 2700.0]
    assert doc["seconds"]["fio_asked"] == 8 * (READ.runtime + READ.ramp_time)
    json.dumps(doc)


def test_host_cpu_is_compared_between_guest_arms_only() -> None:
    a, b = _arms(host_a=True)
    a.runner = FakeRunner("a", [9000, 9100], [], cpu=5.0)
    b.runner = FakeRunner("b", [8000, 8100], [], cpu=150.0)
    result = run_experiment(a, b, READ, rounds=3)
    assert HOST_CPU not in [c.metric for c in result.comparisons]
    assert "guest arms only" in result.skipped[HOST_CPU]
    assert result.document()["a"]["kind"] == "host"


def test_a_refused_arm_stops_the_experiment_before_anything_is_written() -> None:
    log: list[str] = []
    a, b = _arms()
    a.runner = FakeRunner("a", [1], log)
    b.runner = FakeRunner("b", [1], log, refuse="--b vm1/vdc: carries an ext4 filesystem")
    with pytest.raises(InputError, match="ext4"):
        run_experiment(a, b, READ, rounds=2)
    assert log == ["check a", "check b"]


# --- reports -----------------------------------------------------------------------------------------


def _result():
    a, b = _arms()
    a.runner = FakeRunner("a", [9000, 9100, 8900], [])
    b.runner = FakeRunner("b", [9050, 9000, 8950], [])
    return run_experiment(a, b, READ, rounds=4)


def test_the_table_shows_medians_the_interval_and_the_verdict() -> None:
    lines = abreport.format_table(_result())
    assert lines[0] == "A: vm1/vdb (guest: io=native, cache=none, bus=virtio)"
    assert "A B B A A B B A" in lines[2]
    iops = next(line for line in lines if line.strip().startswith("IOPS"))
    assert "9,000" in iops and "[" in iops and iops.rstrip().endswith(("same", "rounds)", "margin)"))


def test_allure_gets_one_result_per_comparison_with_the_table_and_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _result()
    written = abreport.allure_results(result, tmp_path, host="hv01")
    assert len(written) == len(result.comparisons)
    for path, comparison in zip(written, result.comparisons):
        entry = json.loads(path.read_text())
        assert entry["status"] == abreport.ALLURE_STATUS[comparison.verdict]
        assert entry["statusDetails"]["message"].startswith(comparison.metric)
        kinds = {att["type"] for att in entry["attachments"]}
        assert kinds == {"text/html", "image/png", "application/json"}
        for att in entry["attachments"]:
            assert (tmp_path / att["source"]).stat().st_size > 0
    png = abreport.chart_png(result)
    assert png is not None and png.startswith(b"\x89PNG")


# --- the command's usage errors (before any host is asked) ----------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--a", "vm1", "--b", "vm1/vdc", "--profile", "randread-4k-qd1"], "--a: 'vm1' is not an arm"),
    (["--a", "vm1/vdb", "--b", "vm1/vdc", "--profile", "nope"], "--profile nope: .*no profile 'nope'"),
    (["--a", "vm1/vdb", "--b", "vm1/vdc", "--profile", "randread-4k-qd1", "--margin", "lots"], "--margin 'lots'"),
    (["--a", "vm1/vdb", "--b", "vm1/vdc", "--profile", "randread-4k-qd1", "--rounds", "0"], "--rounds '0'"),
    (["--a", "vm1/vdb", "--profile", "randread-4k-qd1"], "the following arguments are required: --b"),
])
def test_usage_errors_exit_4_naming_the_option(args, message) -> None:
    done = kvmio("ab", *args)
    assert done.returncode == 4, done.stderr
    assert re.search(f"^ERROR: kvmio ab: {message}", done.stderr), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# --- rule ab-expect through pytest (no lab: offline targets and option errors) ------------------------


def test_rule_ab_expect_makes_no_item_without_an_experiment_or_a_host(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vdb": ""})
    pytester.makepyfile(test_ab_suite=(SUITES / "test_ab.py").read_text())
    for extra in ([], ["--kvmio-ab=a=vm01/vdb,b=vm01/vdb,profile=randread-4k-qd1"]):
        result = pytester.runpytest("--domain-xml", str(xml_dir), *extra)
        result.assert_outcomes()
        result.stdout.fnmatch_lines(["*ab-expect*1*"])  # counted as not applicable


@pytest.mark.parametrize(("option", "message"), [
    ("--kvmio-ab=a=vm1/vdb,profile=p", "*--kvmio-ab: 'a=vm1/vdb,profile=p': missing b*"),
    ("--kvmio-ab=a=vm1/vdb,b=vm1,profile=p", "*--kvmio-ab: *b: 'vm1' is not an arm*"),
    ("--kvmio-ab=a=vm1/vdb,b=vm1/vdc,profile=p,rounds=0", "*rounds=0: expected a whole number of at least 1*"),
    ("--kvmio-ab=a=vm1/vdb,b=vm1/vdc,profile=p,metric=speed", "*metric=speed: speed: no known direction*"),
    ("--kvmio-ab-expect=faster", "*--kvmio-ab-expect: 'faster': expected one of better, not-worse*"),
])
def test_a_bad_experiment_option_is_a_usage_error(pytester: pytest.Pytester, option: str, message: str) -> None:
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_spec_reads_every_key() -> None:
    spec = parse_spec("a=vm1/vdb@host,b=vm1/vdb,profile=randread-4k-qd1,rounds=8,margin=10%,metric=clat_p99_us")
    assert (spec.a.kind, spec.b.kind, spec.rounds, spec.margin, spec.metric) == ("host", "guest", 8, 0.1, "clat_p99_us")
    assert str(spec) == "a=vm1/vdb@host,b=vm1/vdb,profile=randread-4k-qd1,rounds=8,margin=0.1,metric=clat_p99_us"
