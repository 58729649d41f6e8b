"""Sample the CPU time of a domain's QEMU process on the hypervisor (all threads, IOThreads included).

The pid comes from libvirt's `/run/libvirt/qemu/<domain>.pid`; the times from `/proc/<pid>/stat`,
whose utime and stime sum every thread of the process, living and exited (vCPU threads, IOThreads,
the main loop, the io_uring/AIO workers). `/proc/<pid>/task/*/stat` adds a per-thread breakdown by
thread name (`IO iothread1`, `CPU 0/TCG`, ...). Everything is read in one host command through the
testinfra `host`, so it works locally and over SSH alike.

A vhost-user disk's I/O runs in the backend process serving its socket (SPDK, qemu-storage-daemon), not in QEMU:
for such a disk the backend's pid is sampled in the same command and its CPU added, and `counted` says which
processes the figure holds, so vhost-user never looks free.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PID_DIR = "/run/libvirt/qemu"
TIMEOUT = 30


class HostCpuError(Exception):
    """The QEMU process or its CPU times could not be read; the message names the host step."""


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of one QEMU process (and of the vhost-user backends counted with it) at one moment."""

    pid: int
    total_s: float
    threads_s: dict[str, float] = field(default_factory=dict)
    #: Backend pid -> its CPU seconds (every thread), for vhost-user disks.
    backends_s: dict[int, float] = field(default_factory=dict)

    def minus(self, before: CpuSample) -> CpuDelta:
        """Return the CPU time used since `before` (same processes)."""
        if before.pid != self.pid:
            raise HostCpuError(f"QEMU pid changed from {before.pid} to {self.pid} during the run (domain restarted?)")
        if set(before.backends_s) != set(self.backends_s):
            raise HostCpuError(f"vhost-user backend pids changed from {sorted(before.backends_s)} to "
                               f"{sorted(self.backends_s)} during the run (backend restarted?)")
        names = set(self.threads_s) | set(before.threads_s)
        per = {n: max(0.0, self.threads_s.get(n, 0.0) - before.threads_s.get(n, 0.0)) for n in sorted(names)}
        backends = {p: max(0.0, s - before.backends_s[p]) for p, s in self.backends_s.items()}
        return CpuDelta(self.pid, max(0.0, self.total_s - before.total_s), {n: v for n, v in per.items() if v > 0},
                        backends)


@dataclass(frozen=True)
class CpuDelta:
    """CPU seconds used between two samples: QEMU in total and per thread name, plus the vhost-user backends."""

    pid: int
    qemu_s: float
    threads_s: dict[str, float] = field(default_factory=dict)
    backends_s: dict[int, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Return the CPU seconds of every counted process: QEMU and the backends."""
        return self.qemu_s + sum(self.backends_s.values())

    @property
    def iothread_s(self) -> float:
        """Return the CPU seconds of the IOThreads alone."""
        return sum(v for n, v in self.threads_s.items() if n.startswith("IO ") or "iothread" in n.lower())


def sample_script(domain: str, backends: tuple[int, ...] = ()) -> str:
    """Return the host shell script printing CLK_TCK, the pid, the process stat, every thread's stat, and each
    backend's stat (`backend=PID STAT`; exit 5 when a backend is gone)."""
    pidfile = shlex.quote(f"{PID_DIR}/{domain}.pid")
    script = (
        f"pid=$(cat {pidfile}) || exit 3; "
        'echo "tck=$(getconf CLK_TCK)"; echo "pid=$pid"; '
        'echo "proc=$(cat /proc/$pid/stat)" || exit 4; '
        'for t in /proc/$pid/task/*/stat; do echo "task=$(cat $t 2>/dev/null)"; done'
    )
    for pid in backends:
        script += f'; b=$(cat /proc/{int(pid)}/stat 2>/dev/null) || exit 5; echo "backend={int(pid)} $b"'
    return script


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
    backends: dict[int, int] = {}
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
        elif key == "backend" and value.strip():
            bpid, _, stat = value.partition(" ")
            _, utime, stime = parse_stat(stat)
            backends[int(bpid)] = utime + stime
    if pid is None or total is None:
        raise HostCpuError(f"no QEMU pid or stat in the output: {output[:200]!r}")
    return CpuSample(pid, total / tck, threads, {p: t / tck for p, t in backends.items()})


class QemuCpu:
    """Read the CPU time of one domain's QEMU process, plus the vhost-user backends given, through a testinfra host."""

    def __init__(self, host: Any, domain: str, backends: Mapping[int, str] | None = None) -> None:
        self.host = host
        self.domain = domain
        #: Backend pid -> what it is ("qemu-storage-daemon pid 42 serving /run/vhost.sock").
        self.backends = dict(backends or {})
        self._qemu_pid: int | None = None

    def sample(self) -> CpuSample:
        """Return the current CPU time of the domain's QEMU process and of the backends."""
        script = sample_script(self.domain, tuple(self.backends))
        result = self.host.run(f"timeout {TIMEOUT} sh -c {shlex.quote(script)}")
        if result.rc != 0:
            why = {3: f"no pid file {PID_DIR}/{self.domain}.pid (domain not running, or not a local QEMU domain)",
                   4: "the QEMU process is gone",
                   5: f"a vhost-user backend is gone ({'; '.join(self.backends.values())})"}.get(
                       result.rc, result.stderr.strip()[:300])
            raise HostCpuError(f"{self.domain}: cannot read the QEMU process CPU time on the host: {why}")
        found = parse_sample(result.stdout)
        self._qemu_pid = found.pid
        return found

    def counted(self) -> list[str]:
        """Return the processes whose CPU the samples count, in words."""
        qemu = f"QEMU pid {self._qemu_pid}" if self._qemu_pid is not None else "QEMU"
        return [f"{qemu} (domain {self.domain})", *self.backends.values()]
