"""Sample the CPU time of a domain's QEMU process on the hypervisor (all threads, IOThreads included).

The pid comes from libvirt's `/run/libvirt/qemu/<domain>.pid`; the times from `/proc/<pid>/stat`,
whose utime and stime sum every thread of the process, living and exited (vCPU threads, IOThreads,
the main loop, the io_uring/AIO workers). `/proc/<pid>/task/*/stat` adds a per-thread breakdown by
thread name (`IO iothread1`, `CPU 0/TCG`, ...). Everything is read in one host command through the
testinfra `host`, so it works locally and over SSH alike.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

PID_DIR = "/run/libvirt/qemu"
TIMEOUT = 30


class HostCpuError(Exception):
    """The QEMU process or its CPU times could not be read; the message names the host step."""


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of one QEMU process at one moment."""

    pid: int
    total_s: float
    threads_s: dict[str, float] = field(default_factory=dict)

    def minus(self, before: CpuSample) -> CpuDelta:
        """Return the CPU time used since `before` (same process)."""
        if before.pid != self.pid:
            raise HostCpuError(f"QEMU pid changed from {before.pid} to {self.pid} during the run (domain restarted?)")
        names = set(self.threads_s) | set(before.threads_s)
        per = {n: max(0.0, self.threads_s.get(n, 0.0) - before.threads_s.get(n, 0.0)) for n in sorted(names)}
        return CpuDelta(self.pid, max(0.0, self.total_s - before.total_s), {n: v for n, v in per.items() if v > 0})


@dataclass(frozen=True)
class CpuDelta:
    """CPU seconds a QEMU process used between two samples, in total and per thread name."""

    pid: int
    seconds: float
    threads_s: dict[str, float] = field(default_factory=dict)

    @property
    def iothread_s(self) -> float:
        """Return the CPU seconds of the IOThreads alone."""
        return sum(v for n, v in self.threads_s.items() if n.startswith("IO ") or "iothread" in n.lower())


def sample_script(domain: str) -> str:
    """Return the host shell script printing CLK_TCK, the pid, the process stat and every thread's stat."""
    pidfile = shlex.quote(f"{PID_DIR}/{domain}.pid")
    return (
        f"pid=$(cat {pidfile}) || exit 3; "
        'echo "tck=$(getconf CLK_TCK)"; echo "pid=$pid"; '
        'echo "proc=$(cat /proc/$pid/stat)" || exit 4; '
        'for t in /proc/$pid/task/*/stat; do echo "task=$(cat $t 2>/dev/null)"; done'
    )


def parse_stat(line: str) -> tuple[str, int, int]:
    """Return (comm, utime, stime) in clock ticks from one /proc stat line (comm may hold spaces)."""
    open_, close = line.find("("), line.rfind(")")
    if open_ < 0 or close < 0:
        raise HostCpuError(f"not a /proc stat line: {line[:120]!r}")
    comm = line[open_ + 1 : close]
    rest = line[close + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return comm, int(rest[11]), int(rest[12])


def parse_sample(output: str) -> CpuSample:
    """Parse the output of sample_script."""
    tck, pid, total = 100, None, None
    threads: dict[str, float] = {}
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key == "tck" and value.strip().isdigit():
            tck = int(value)
        elif key == "pid" and value.strip().isdigit():
            pid = int(value)
        elif key == "proc" and value.strip():
            _, utime, stime = parse_stat(value)
            total = utime + stime
        elif key == "task" and value.strip():
            comm, utime, stime = parse_stat(value)
            threads[comm] = threads.get(comm, 0.0) + (utime + stime) / tck
    if pid is None or total is None:
        raise HostCpuError(f"no QEMU pid or stat in the output: {output[:200]!r}")
    return CpuSample(pid, total / tck, threads)


class QemuCpu:
    """Read the QEMU process CPU time of one domain through a testinfra host."""

    def __init__(self, host: Any, domain: str) -> None:
        self.host = host
        self.domain = domain

    def sample(self) -> CpuSample:
        """Return the current CPU time of the domain's QEMU process."""
        command = f"timeout {TIMEOUT} sh -c {shlex.quote(sample_script(self.domain))}"
        result = self.host.run(command)
        if result.rc != 0:
            why = {3: f"no pid file {PID_DIR}/{self.domain}.pid (domain not running, or not a local QEMU domain)",
                   4: "the QEMU process is gone"}.get(result.rc, result.stderr.strip()[:300])
            raise HostCpuError(f"{self.domain}: cannot read the QEMU process CPU time on the host: {why}")
        return parse_sample(result.stdout)
