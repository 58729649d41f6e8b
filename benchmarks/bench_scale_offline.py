"""Offline lint at fleet scale: kvmio over N generated domains vs a plain pytest file of as many items.

For each size (default 10, 100, 1000 domains × 4 disks, written by `scale_domains.py`), in one run and
interleaved, R times: `pytest suites/ --domain-xml=DIR -p no:cacheprovider -q` and a plain pytest file
with the same number of trivial parametrized items (as many as kvmio ran, read from its summary line),
each in its own process, measuring wall time and peak RSS (GNU time's maximum resident set size of that child).
Medians are reported, with the targets of issue 12:

- at the largest size, kvmio / plain wall time ≤ 1.5 and kvmio's peak RSS ≤ 500 MB;
- growth: time per domain at the largest size ≤ 1.3 × time per domain at the middle size;
- linearity over all sizes (time per domain at each size, and the fitted slope of log time over log N).

    python benchmarks/bench_scale_offline.py [--sizes 10,100,1000] [--repeats 3] [--keep DIR]

Not a unit test (the machine is shared and noisy); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_domains import write_fleet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PLAIN_TEST = """import pytest


@pytest.mark.parametrize("i", range({count}))
def test_item(i):
    assert i >= 0
"""
SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|skipped|error|errors|xfailed|xpassed|waived|inconclusive)\b")


@dataclass
class Measure:
    wall: float
    rss_mb: float
    items: int
    output: str


def run(argv: list[str], cwd: Path) -> Measure:
    """Run one pytest process; return its wall time, its own peak RSS and the items its summary counts."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
    out, _ = proc.communicate()
    wall = time.monotonic() - started
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out)
    summary = [line for line in out.splitlines() if re.search(r" in [\d.]+s", line)]
    items = sum(int(n) for n, _ in SUMMARY_COUNT.findall(summary[-1])) if summary else 0
    return Measure(wall, int(rss.group(1)) / 1024 if rss else float("nan"), items, out)


def timed(argv: list[str]) -> list[str]:
    """Wrap argv with GNU time so the child's own peak RSS is printed (not the maximum over all children)."""
    return ["/usr/bin/time", "-v", *argv]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="domain counts, comma-separated (ascending)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="directory for the generated XML and the plain test files (kept)")
    parser.add_argument("--extra", default="", help="extra pytest arguments for the kvmio run (e.g. '-n 2')")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kvmio-bench-scale-"))
    kvmio: dict[int, list[Measure]] = {n: [] for n in sizes}
    plain: dict[int, list[Measure]] = {n: [] for n in sizes}
    try:
        for n in sizes:
            list(write_fleet(n, work / f"xml-{n}", Path("/var/lib/libvirt/images/fleet")))
        for r in range(args.repeats):
            for n in sizes:  # interleaved: kvmio, then plain of as many items, size by size
                m = run(timed([sys.executable, "-m", "pytest", str(REPO / "suites"), f"--domain-xml={work / f'xml-{n}'}",
                               "-p", "no:cacheprovider", "-q", *args.extra.split()]), REPO)
                if m.items == 0:
                    print(m.output[-3000:])
                    raise SystemExit(f"kvmio run at {n} domains counted no items")
                kvmio[n].append(m)
                plain_dir = work / f"plain-{n}"
                plain_dir.mkdir(exist_ok=True)
                (plain_dir / "test_plain.py").write_text(PLAIN_TEST.format(count=m.items))
                p = run(timed([sys.executable, "-m", "pytest", "test_plain.py", "-p", "no:cacheprovider",
                               "-p", "no:kvmio", "-q"]), plain_dir)
                plain[n].append(p)
                print(f"repeat {r + 1} n={n}: kvmio {m.wall:.2f}s {m.rss_mb:.0f} MB ({m.items} items), "
                      f"plain {p.wall:.2f}s {p.rss_mb:.0f} MB ({p.items} items)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report(sizes, kvmio, plain)


def report(sizes: list[int], kvmio: dict[int, list[Measure]], plain: dict[int, list[Measure]]) -> int:
    med = {n: statistics.median(m.wall for m in kvmio[n]) for n in sizes}
    print("\ndomains  items  kvmio s  plain s  ratio  kvmio MB  plain MB  kvmio ms/domain")
    for n in sizes:
        k, p = kvmio[n], plain[n]
        ratio = statistics.median(a.wall / b.wall for a, b in zip(k, p))
        print(f"{n:>7}  {k[0].items:>5}  {med[n]:>7.2f}  {statistics.median(m.wall for m in p):>7.2f}  {ratio:>5.2f}"
              f"  {max(m.rss_mb for m in k):>8.0f}  {max(m.rss_mb for m in p):>8.0f}  {1000 * med[n] / n:>15.2f}")
    big, missed = sizes[-1], []
    ratio = statistics.median(a.wall / b.wall for a, b in zip(kvmio[big], plain[big]))
    rss = max(m.rss_mb for m in kvmio[big])
    print(f"\nkvmio / plain at {big} domains: {ratio:.2f}x (target <= 1.5x)")
    print(f"kvmio peak RSS at {big} domains: {rss:.0f} MB (target <= 500 MB)")
    if ratio > 1.5:
        missed.append("ratio")
    if rss > 500:
        missed.append("rss")
    if len(sizes) >= 2:
        mid = sizes[-2]
        # Start-up (interpreter, imports, plugin loading) is paid once; growth compares the marginal time.
        growth = (med[big] / big) / (med[mid] / mid)
        marginal = (med[big] - med[mid]) / (big - mid)
        print(f"time per domain at {big} / at {mid}: {growth:.2f} (target <= 1.3); "
              f"marginal {1000 * marginal:.2f} ms/domain between them")
        if growth > 1.3:
            missed.append("growth")
        steps = [
            f"{a}->{b}: {1000 * (med[b] - med[a]) / (b - a):.2f}" for a, b in zip(sizes, sizes[1:])
        ]
        print(f"linearity: marginal ms/domain {', '.join(steps)} (linear when they agree)")
    print("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
