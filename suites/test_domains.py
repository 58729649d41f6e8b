"""Domain rules: how a domain's CPUs and IOThreads are laid out on the host."""

from __future__ import annotations

import pytest

from pytest_kvmio.model.cpuset import format_cpuset


@pytest.mark.rule("domain-iothread-pinned")
def test_iothreads_are_pinned_apart_from_vcpus(domain):
    """An IOThread that shares host CPUs with vCPUs competes with the guest it serves; I/O waits on scheduling."""
    unpinned = [t for t in domain.iothread_ids if t not in domain.iothread_pins]
    assert not unpinned, (
        f"{domain.id}: IOThread(s) {unpinned} not pinned; add <iothreadpin iothread='N' cpuset='...'/> "
        "on host CPUs no vCPU uses"
    )
    overlaps = []
    for vcpu in range(domain.vcpus):
        cpus = domain.vcpu_cpus(vcpu)
        for tid, pin in sorted(domain.iothread_pins.items()):
            if cpus is None:
                overlaps.append(f"vCPU {vcpu} is not pinned (may run on any host CPU, including IOThread {tid}'s {format_cpuset(pin)})")
            elif cpus & pin:
                overlaps.append(f"vCPU {vcpu} on {format_cpuset(cpus)} overlaps IOThread {tid} on {format_cpuset(pin)}")
    assert not overlaps, f"{domain.id}: " + "; ".join(overlaps) + "; pin vCPUs and IOThreads to disjoint host CPUs"
