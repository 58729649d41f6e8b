"""Domain rules: how a domain's CPUs and IOThreads are laid out on the host."""

from __future__ import annotations

import pytest

from pytest_kvmio.model.checks import iothread_pinning
from pytest_kvmio.model.cpuset import format_cpuset


@pytest.mark.rule("domain-iothread-pinned")
def test_iothreads_are_pinned_apart_from_vcpus(domain):
    """An IOThread that shares host CPUs with vCPUs competes with the guest it serves; I/O waits on scheduling."""
    pinning = iothread_pinning(domain)
    assert not pinning.unpinned, (
        f"{domain.id}: IOThread(s) {pinning.unpinned} not pinned; add <iothreadpin iothread='N' cpuset='...'/> "
        "on host CPUs no vCPU uses"
    )
    overlaps = [
        f"vCPU {o.vcpu} is not pinned (may run on any host CPU, including IOThread {o.iothread}'s {format_cpuset(o.pin)})"
        if o.cpus is None else
        f"vCPU {o.vcpu} on {format_cpuset(o.cpus)} overlaps IOThread {o.iothread} on {format_cpuset(o.pin)}"
        for o in pinning.overlaps
    ]
    assert pinning.holds, f"{domain.id}: " + "; ".join(overlaps) + "; pin vCPUs and IOThreads to disjoint host CPUs"
