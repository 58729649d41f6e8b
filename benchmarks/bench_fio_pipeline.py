"""Overhead of the kvmio fio pipeline over fio's own runtime, measured side by side on the lab.

For each of N runs: wall time of the whole pipeline (scratch probe, guest-exec round trips and
polling, fio, parsing, host CPU samples, a decision) against fio's own elapsed time as fio reports
it (job runtime + ramp). Prints the ratio pipeline / fio (1.00 = no overhead). Not a unit test.

    python benchmarks/bench_fio_pipeline.py [--domain kvmio-lab-good] [--serial kvmio-scratch-0] [--runs 3] [--runtime 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import testinfra

from pytest_kvmio.facts.guest import agent_host
from pytest_kvmio.facts.hostcpu import QemuCpu
from pytest_kvmio.perf.decide import decide_limit
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.results import host_cpu_us_per_io, metrics_of
from pytest_kvmio.perf.runner import GuestFio
from pytest_kvmio.perf.thresholds import Limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--domain", default="kvmio-lab-good")
    parser.add_argument("--serial", default="kvmio-scratch-0")
    parser.add_argument("--profile", default="randread-4k-qd32x4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime", type=int, default=3)
    parser.add_argument("--thresholds", default="thresholds")
    args = parser.parse_args()

    guest = agent_host(args.domain, args.uri, command_timeout=120)
    dev = guest.run(
        f"for d in /sys/block/*; do [ \"$(cat $d/serial 2>/dev/null)\" = {args.serial} ] && echo ${{d##*/}}; done"
    ).stdout.strip()
    profile = load_thresholds(args.thresholds).profile(args.profile).with_timing(runtime=args.runtime, ramp_time=1)
    runner = GuestFio(guest, dev, label=args.domain, serial=args.serial, scratch_pattern="kvmio-scratch*")
    cpu = QemuCpu(testinfra.get_host("local://"), args.domain)
    limit = Limit("lab-tcg", profile.name, "iops", floor=1.0)
    t0 = time.monotonic()
    guest.run("true")
    t1 = time.monotonic()
    guest.run("fio --version")
    t2 = time.monotonic()
    print(f"guest-exec round trip {t1 - t0:.2f}s; fio process start (fio --version) {t2 - t1:.2f}s")
    ratios, fio_s, total_s = [], [], []
    for i in range(args.runs):
        started = time.monotonic()
        before = cpu.sample()
        out = runner.run_once(profile)  # read profile: --readonly, no probe needed
        metrics = metrics_of(out.report, profile)
        cost = host_cpu_us_per_io(cpu.sample().minus(before).seconds, metrics, profile.ramp_time)
        decide_limit([metrics.iops], limit)
        pipeline = time.monotonic() - started
        fio_own = metrics.runtime_s + profile.ramp_time
        ratios.append(pipeline / fio_own)
        fio_s.append(fio_own)
        total_s.append(pipeline)
        print(f"run {i + 1}: pipeline {pipeline:.2f}s, fio {fio_own:.2f}s, ratio {pipeline / fio_own:.2f}, "
              f"{metrics.iops:,.0f} IOPS, host CPU {cost:,.0f} µs/IO")
    print(f"median overhead ratio (pipeline / fio runtime): {statistics.median(ratios):.2f} "
          f"(pipeline {statistics.median(total_s):.2f}s vs fio {statistics.median(fio_s):.2f}s)")


if __name__ == "__main__":
    main()
