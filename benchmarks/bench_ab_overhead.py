"""Overhead of `kvmio ab` on the lab with the real guest transport: (wall time - fio time asked) / fio time asked.

Runs one `kvmio ab` (a subprocess, as a user would) and divides its wall time minus the ramp + runtime it asked
fio for, summed over every run, by that sum (the acceptance asks for <= 10 %). Side by side it times bare fio
runs of the same job through the guest agent (no checks, no CPU samples, no statistics) and `fio --version` in
the guest, which split the overhead into fio's own start-up under TCG and what kvmio adds.

    python benchmarks/bench_ab_overhead.py [--a kvmio-lab-ab/vdb] [--b kvmio-lab-ab/vdc] [--rounds 3] [--runtime 20] [--ramp 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_kvmio.facts.guest import agent_host
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.runner import fio_command


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="kvmio-lab-ab/vdb")
    parser.add_argument("--b", default="kvmio-lab-ab/vdc")
    parser.add_argument("--profile", default="randread-4k-qd32x4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", type=int, default=20)
    parser.add_argument("--ramp", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.10)
    args = parser.parse_args()

    domain = args.a.split("/")[0]
    guest = agent_host(domain, "qemu:///system", command_timeout=300)
    started = time.monotonic()
    guest.run("fio --version")
    fio_start = time.monotonic() - started
    profile = load_thresholds("thresholds").profile(args.profile).with_timing(runtime=args.runtime, ramp_time=args.ramp)
    device = guest.run("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = kvmio-scratch-native ] && echo ${d##*/}; done").stdout.strip()
    started = time.monotonic()
    bare = guest.run(fio_command(profile, f"/dev/{device}", readonly=True), timeout=args.runtime + args.ramp + 120)
    bare_s = time.monotonic() - started
    assert bare.rc == 0, bare.stderr

    with tempfile.TemporaryDirectory(prefix="kvmio-ab-overhead-") as tmp:
        out = Path(tmp, "ab.json")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest_kvmio.cli", "ab", "--a", args.a, "--b", args.b, "--profile", args.profile,
             "--rounds", str(args.rounds), "--fio-runtime", str(args.runtime), "--fio-ramp-time", str(args.ramp),
             "--json", str(out)],
            capture_output=True, text=True,
        )
        wall = time.monotonic() - started
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            return 1
        doc = json.loads(out.read_text())
    asked = doc["seconds"]["fio_asked"]
    runs = len(doc["order"])
    prepare = doc["seconds"]["prepare"]
    per_run = (wall - prepare - asked) / runs
    overhead = (wall - asked) / asked
    print(f"kvmio ab {args.a} vs {args.b}, {args.profile}, {args.rounds} rounds of {args.runtime}+{args.ramp} s")
    print(f"  wall {wall:.1f}s, fio asked {asked:.0f}s over {runs} runs: overhead {overhead:.1%} (target <= {args.target:.0%})")
    print(f"  of which start-up (process, facts, checks, pre-fill) {wall - doc['seconds']['wall'] + prepare:.1f}s, "
          f"per run {per_run:.2f}s")
    print(f"  side by side: one bare fio run of {args.runtime + args.ramp}s through the agent took {bare_s:.2f}s "
          f"(+{bare_s - args.runtime - args.ramp:.2f}s); `fio --version` in the guest {fio_start:.2f}s")
    print(f"  kvmio's own share per run (per-run overhead minus the bare run's): {per_run - (bare_s - args.runtime - args.ramp):.2f}s")
    return 0 if overhead <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
