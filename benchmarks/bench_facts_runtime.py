"""What the host facts command's runtime part costs per running domain, on the lab's running domains.

The one host facts command (`facts/host.py` `host_script`) reads, for each running domain it is given, its QEMU
process: every thread's name, affinity and cgroup cpuset, and the command line. This runs the command locally with
`sh -c`, interleaved and repeated, for no running domain, for one, and for every running lab domain (no images, no
vhost-user sockets: those parts are the same in each), and prints the medians and the cost per running domain and
per QEMU thread read:

    python benchmarks/bench_facts_runtime.py [--repeats 15]

Needs the lab up (`kvmio lab up`) and root (QEMU's /proc entries belong to the qemu user). Not a unit test: it has
no target, it prints what a host pays per running domain.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_kvmio.facts.host import COMMAND_TIMEOUT, HostFacts, host_script, parse_host_output  # noqa: E402
from pytest_kvmio.lab.paths import DOMAIN_PREFIX  # noqa: E402

URI = "qemu:///system"


def running_lab_domains() -> list[str]:
    """Return the names of the lab's running domains, sorted."""
    conn = libvirt.openReadOnly(URI)
    try:
        active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        return sorted(d.name() for d in active if d.name().startswith(DOMAIN_PREFIX))
    finally:
        conn.close()


def run_once(script: str) -> tuple[float, str]:
    """Run the facts command as kvmio does on a local host; return its wall time and output."""
    started = time.monotonic()
    done = subprocess.run(["timeout", str(COMMAND_TIMEOUT), "sh", "-c", script], capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the facts command failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return took, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    names = running_lab_domains()
    if not names:
        raise SystemExit("no running lab domain (kvmio lab up)")
    cases = {"none": [], "one": names[:1], "all": names}
    threads: dict[str, int] = {}
    for case, running in cases.items():  # what each case reads, checked once
        _, out = run_once(host_script([], [], running))
        facts = HostFacts(name="local")
        parse_host_output(facts, out, running)
        missing = [n for n in running if n not in facts.runtime or facts.runtime[n].error]
        if missing:
            raise SystemExit(f"{case}: the runtime part read no QEMU process of {missing}: "
                             f"{[facts.runtime[n].error for n in missing if n in facts.runtime]}")
        threads[case] = sum(len(facts.runtime[n].threads) for n in running)
    times: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case, running in cases.items():
            times[case].append(run_once(host_script([], [], running))[0])
    med = {case: statistics.median(values) for case, values in times.items()}
    for case, running in cases.items():
        values = times[case]
        print(f"{case:>4}: {len(running)} running domain(s), {threads[case]} QEMU threads: "
              f"median {med[case] * 1000:.1f} ms "
              f"(range {min(values) * 1000:.1f}-{max(values) * 1000:.1f} ms, {args.repeats} runs)")
    n = len(names)
    per_domain = (med["all"] - med["none"]) / n
    print(f"\nruntime part: {per_domain * 1000:.1f} ms per running domain ({n} lab domains; "
          f"one domain alone: {(med['one'] - med['none']) * 1000:.1f} ms), "
          f"{(med['all'] - med['none']) / max(threads['all'], 1) * 1000:.2f} ms per QEMU thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
