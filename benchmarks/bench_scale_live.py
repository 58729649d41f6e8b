"""Live collection at fleet scale: kvmio over N defined (not running) domains on the lab's libvirtd.

Defines N domains `kvmio-bench-scale-NNN` (4 disks each, written by `scale_domains.py` without what
libvirt refuses) on qemu:///system, their file images small `qemu-img create` files in a temp dir,
then measures side by side, R times, each in its own process:

(a) `pytest suites/ --host=local --domain='kvmio-bench-scale-*' --collect-only -q` against a bare script
    that opens libvirt read-only, lists the domains, reads their XML and runs one batched
    `qemu-img info` over their images (target: at most 3x);
(b) the whole run `-m "not perf"` (the domains do not run: guest rules make no item, fio can't run)
    against a plain pytest file with as many trivial items (target: at most 1.5x).

The domains are undefined and the images deleted at the end, also on Ctrl-C or SIGTERM.

    python benchmarks/bench_scale_live.py [--count 200] [--repeats 3]

Not a unit test; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale_offline import PLAIN_TEST, REPO, SUMMARY_COUNT  # noqa: E402
from scale_domains import DISKS_PER_DOMAIN, domain_xml, image_format, image_paths  # noqa: E402

URI = "qemu:///system"
PREFIX = "kvmio-bench-scale"

BARE_SCRIPT = '''
import json, subprocess, sys
import libvirt
from lxml import etree

conn = libvirt.openReadOnly(sys.argv[1])
paths = []
for dom in conn.listAllDomains(0):
    if not dom.name().startswith(sys.argv[2]):
        continue
    root = etree.fromstring(dom.XMLDesc(0).encode())
    paths += [s.get("file") for s in root.iterfind("devices/disk/source") if s.get("file")]
script = "for f in \\"$@\\"; do qemu-img info -U --output=json -- \\"$f\\"; done"
out = subprocess.run(["sh", "-c", script, "sh", *paths], capture_output=True, text=True, check=True).stdout
print(len(paths), "images", out.count('"virtual-size"'), "read")
'''


def define(conn: libvirt.virConnect, count: int, image_dir: Path) -> list[str]:
    """Create the images and define the domains; return their names."""
    names = []
    for i in range(count):
        for n, path in enumerate(image_paths(i, image_dir)):
            if path.startswith("/dev/"):
                continue  # a multipath LUN in the XML; libvirt does not open disks at define time
            fmt = image_format(i, n, libvirt_safe=True)
            subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, "16M"], check=True)
        dom = conn.defineXML(domain_xml(i, image_dir, prefix=PREFIX, libvirt_safe=True))
        names.append(dom.name())
    return names


def undefine(conn: libvirt.virConnect) -> int:
    """Undefine every domain of this benchmark (by prefix); return how many."""
    gone = 0
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(PREFIX + "-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
            gone += 1
    return gone


def timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    started = time.monotonic()
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True).stdout
    return time.monotonic() - started, out


def items_of(output: str) -> int:
    last = [line for line in output.splitlines() if " in " in line and ("passed" in line or "tests collected" in line
                                                                       or "failed" in line or "skipped" in line)]
    if not last:
        return 0
    if "collected" in last[-1]:
        return int(last[-1].split()[0].split("/")[0])
    return sum(int(n) for n, _ in SUMMARY_COUNT.findall(last[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally block on kill
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    work.chmod(0o755)
    conn = libvirt.open(URI)
    collect: list[tuple[float, float]] = []
    whole: list[tuple[float, float]] = []
    try:
        undefine(conn)  # leftovers of an interrupted run
        started = time.monotonic()
        (work / "images").mkdir()
        names = define(conn, args.count, work / "images")
        print(f"defined {len(names)} domains x {DISKS_PER_DOMAIN} disks in {time.monotonic() - started:.1f}s")
        (work / "bare.py").write_text(BARE_SCRIPT)
        plain_dir = work / "plain"
        plain_dir.mkdir()
        kvmio = [sys.executable, "-m", "pytest", str(REPO / "suites"), "--host=local", f"--domain={PREFIX}-*",
                 "-p", "no:cacheprovider", "-q"]
        for r in range(args.repeats):
            k, out = timed([*kvmio, "--collect-only"], REPO)
            b, bare = timed([sys.executable, str(work / "bare.py"), URI, PREFIX + "-"], work)
            collect.append((k, b))
            items = items_of(out)
            w, out = timed([*kvmio, "-m", "not perf"], REPO)
            ran = items_of(out)
            if not ran:
                print(out[-3000:])
                raise SystemExit("the kvmio run counted no items")
            (plain_dir / "test_plain.py").write_text(PLAIN_TEST.format(count=ran))
            p, _ = timed([sys.executable, "-m", "pytest", "test_plain.py", "-p", "no:cacheprovider", "-p", "no:kvmio",
                          "-q"], plain_dir)
            whole.append((w, p))
            print(f"repeat {r + 1}: collect-only {k:.2f}s ({items} items) vs bare {b:.2f}s ({bare.strip()}); "
                  f"run {w:.2f}s ({ran} items) vs plain {p:.2f}s", flush=True)
    finally:
        print(f"undefined {undefine(conn)} benchmark domains", flush=True)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    c = statistics.median(a / b for a, b in collect)
    w = statistics.median(a / b for a, b in whole)
    print(f"\ncollection kvmio / bare script at {args.count} domains: {c:.2f}x (target <= 3x)")
    print(f"whole run kvmio / plain pytest at {args.count} domains: {w:.2f}x (target <= 1.5x)")
    missed = [name for name, ratio, target in (("collection", c, 3.0), ("run", w, 1.5)) if ratio > target]
    print("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
