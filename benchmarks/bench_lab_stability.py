"""False alarms of the lab verdicts under CPU contention, over repeated runs. Not a unit test, not run in CI.

With the lab up (`kvmio lab up`): starts a Python busy loop pinned to one core (killed at the end),
then N times in a row runs the lab perf tests (unchanged runs against a baseline recorded from two
sessions, and the throttle) and the guest rule suite against the lab's domains. Per run it counts:

- perf: failed lab tests, the perf-baseline outcomes of unchanged runs (a `failed` one is a false
  alarm) and whether the throttled disk failed (anything else is a missed regression);
- guest: failed verdicts, split into those the lab manifest expects (seeded misconfigurations) and
  the rest (false alarms), and verdicts in error (kvmio could not observe).

Prints a table and exits 1 on any false alarm or missed throttle, 0 otherwise.

    python benchmarks/bench_lab_stability.py [--runs 10] [--busy-core N | --no-busy] [--keep DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PERF_TESTS = ["tests/test_perf_lab.py", "-k", "unchanged or throttle"]
GUEST_SUITE = ["suites/test_guest.py", "--host=local", "--domain=kvmio-lab-*"]
LINE = re.compile(r"kvmio-lab-stability: (?P<what>unchanged|unthrottled|throttled)(?: to \d+ IOPS)?:? (?P<rest>.*)")


@dataclass
class Run:
    """What one iteration saw."""

    perf_failed: int = 0
    perf_tests: int = 0
    unchanged: list[str] = field(default_factory=list)  # perf-baseline outcomes of unchanged disks
    throttled: str = "not reached"
    guest_expected: int = 0
    guest_unexpected: list[str] = field(default_factory=list)
    guest_errors: int = 0
    seconds: float = 0.0

    @property
    def false_alarms(self) -> int:
        """Return failed verdicts on configurations that did not change or are not misconfigured."""
        return self.unchanged.count("failed") + len(self.guest_unexpected)


def run_pytest(args: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def expected_guest_findings() -> set[tuple[str, str]]:
    """Return (rule, domain/disk) of every guest finding the lab manifest expects."""
    status = subprocess.run(
        [sys.executable, "-m", "pytest_kvmio.cli", "lab", "status", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    manifest: dict[str, Any] = json.loads(status.stdout)
    return {
        (rule, target)
        for entry in manifest["domains"].values()
        for target, rules in (entry.get("expected_guest_failures") or {}).items()
        for rule in rules
    }


def perf_run(run: Run, work: Path, n: int) -> None:
    junit = work / f"perf-{n}.xml"
    result = run_pytest([*PERF_TESTS, "-rA", f"--junitxml={junit}"], timeout=3600)
    (work / f"perf-{n}.log").write_text(result.stdout + result.stderr)
    if junit.exists():
        suite = ET.parse(junit).getroot().find("testsuite")
        if suite is not None:
            run.perf_tests = int(suite.get("tests", 0))
            run.perf_failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    for line in result.stdout.splitlines():
        if line.startswith("kvmio-lab-stability: unchanged outcomes "):
            listed = line.split("outcomes ", 1)[1].split("]", 1)[0] + "]"
            run.unchanged.extend(ast.literal_eval(listed))
            continue
        match = LINE.match(line)
        if match is None:
            continue
        outcome = match["rest"].split(":", 1)[0].strip()
        if match["what"] == "throttled":
            run.throttled = outcome
        else:
            run.unchanged.append(outcome)


def guest_run(run: Run, work: Path, n: int, expected: set[tuple[str, str]]) -> None:
    summary = work / f"guest-{n}.json"
    result = run_pytest([*GUEST_SUITE, "-q", f"--kvmio-json={summary}"], timeout=1800)
    (work / f"guest-{n}.log").write_text(result.stdout + result.stderr)
    if not summary.exists():
        run.guest_errors += 1  # the suite did not get as far as writing its verdicts
        return
    for verdict in json.loads(summary.read_text())["verdicts"]:
        target = verdict["target"].split("/", 1)[-1]
        if verdict["outcome"] == "error":
            run.guest_errors += 1
        elif verdict["outcome"] == "failed":
            if (verdict["rule"], target) in expected:
                run.guest_expected += 1
            else:
                run.guest_unexpected.append(f"{verdict['rule']} {target}: {verdict['message']}")


def start_busy_loop(core: int) -> subprocess.Popen[bytes]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(busy.pid, {core})
    return busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--busy-core", type=int, default=(os.cpu_count() or 1) - 1,
                        help="core the busy loop spins on (default: the last)")
    parser.add_argument("--no-busy", action="store_true", help="measure without the busy loop")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="write logs and verdicts here (default: a new temporary directory)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="kvmio-lab-stability-"))
    work.mkdir(parents=True, exist_ok=True)
    expected = expected_guest_findings()
    busy = None if args.no_busy else start_busy_loop(args.busy_core)
    runs: list[Run] = []
    try:
        for n in range(1, args.runs + 1):
            run, started = Run(), time.monotonic()
            perf_run(run, work, n)
            guest_run(run, work, n, expected)
            run.seconds = time.monotonic() - started
            runs.append(run)
            print(f"run {n}/{args.runs}: {run.false_alarms} false alarm(s), throttled {run.throttled}, "
                  f"{run.seconds:.0f} s", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()

    load = "no busy loop" if args.no_busy else f"busy loop on core {args.busy_core}"
    print(f"\nlab stability over {len(runs)} runs ({load}); logs in {work}")
    print(f"{'run':>3}  {'perf failed':>11}  {'unchanged outcomes':<40}  {'throttled':<12}  "
          f"{'guest failed (expected/other)':>29}  {'errors':>6}  {'false alarms':>12}")
    for n, run in enumerate(runs, 1):
        guest = f"{run.guest_expected}/{len(run.guest_unexpected)}"
        print(f"{n:>3}  {run.perf_failed:>5} of {run.perf_tests:<3}  {' '.join(run.unchanged) or '-':<40}  "
              f"{run.throttled:<12}  {guest:>29}  {run.guest_errors:>6}  {run.false_alarms:>12}")
        for finding in run.guest_unexpected:
            print(f"     unexpected: {finding}")
    false_alarms = sum(r.false_alarms for r in runs)
    missed = sum(1 for r in runs if r.throttled != "failed")
    print(f"\nfalse alarms: {false_alarms}; throttled disk failed in {len(runs) - missed} of {len(runs)} runs")
    return 1 if false_alarms or missed else 0


if __name__ == "__main__":
    sys.exit(main())
