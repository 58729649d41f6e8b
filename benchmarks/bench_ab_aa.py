"""A/A on the lab: the same disk as both arms of `kvmio ab`, repeated; the interval must hold 1 and never decide.

Each repeat is one `kvmio ab --a D/vdb --b D/vdb` (6 rounds of 3 s runs, 1 s ramp, by default). A sound
experiment finds no difference: IOPS never `better` or `worse`, and its 95 % interval contains 1 in most
repeats (the acceptance asks for 8 of 10). Prints one line per repeat and the summary; exits 1 when either
criterion fails. Also prints kvmio ab's own overhead at these short runs ((wall - fio asked) / fio asked).

    python benchmarks/bench_ab_aa.py [--repeats 10] [--arm kvmio-lab-ab/vdb] [--rounds 6] [--runtime 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--arm", default="kvmio-lab-ab/vdb")
    parser.add_argument("--profile", default="randread-4k-qd32x4")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runtime", type=int, default=3)
    parser.add_argument("--ramp", type=int, default=1)
    parser.add_argument("--min-contains-one", type=int, default=8)
    args = parser.parse_args()

    decided, contains_one, overheads = 0, 0, []
    with tempfile.TemporaryDirectory(prefix="kvmio-ab-aa-") as tmp:
        for i in range(1, args.repeats + 1):
            out = Path(tmp, f"aa-{i}.json")
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pytest_kvmio.cli", "ab", "--a", args.arm, "--b", args.arm, "--profile",
                 args.profile, "--rounds", str(args.rounds), "--fio-runtime", str(args.runtime), "--fio-ramp-time",
                 str(args.ramp), "--json", str(out)],
                capture_output=True, text=True,
            )
            wall = time.monotonic() - started
            if done.returncode != 0:
                print(f"repeat {i}: kvmio ab failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                return 1
            doc = json.loads(out.read_text())
            iops = next(c for c in doc["comparisons"] if c["metric"] == "iops")
            holds = iops["ci_low"] <= 1 <= iops["ci_high"]
            contains_one += holds
            decided += iops["verdict"] in ("better", "worse")
            asked = doc["seconds"]["fio_asked"]
            overheads.append((wall - asked) / asked)
            print(f"repeat {i}: IOPS B/A {iops['ratio']:.3f} [{iops['ci_low']:.3f}, {iops['ci_high']:.3f}] "
                  f"p={iops['p_value']:.2f} {iops['verdict']}; contains 1: {'yes' if holds else 'no'}; "
                  f"medians {iops['a_median']:,.0f} / {iops['b_median']:,.0f}; wall {wall:.0f}s for {asked:.0f}s of fio",
                  flush=True)
    ok = decided == 0 and contains_one >= args.min_contains_one
    print(f"A/A: {decided} of {args.repeats} repeats decided better/worse (want 0); interval contains 1 in "
          f"{contains_one} of {args.repeats} (want >= {args.min_contains_one}): {'PASS' if ok else 'FAIL'}")
    print(f"overhead at {args.runtime}+{args.ramp} s runs: median {statistics.median(overheads):.0%} "
          f"((wall - fio asked) / fio asked, whole command incl. facts and pre-fill)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
