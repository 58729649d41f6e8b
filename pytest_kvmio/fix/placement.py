"""Where a domain's IOThreads go: host CPUs apart from its vCPUs, near them, one each while free CPUs remain.

A pure function of the host's CPUs by NUMA node and the domain's pins (and, live, the pins of the host's other
domains), so every topology can be tested without a host. It places by `domain-iothread-pinned` (every IOThread
pinned, no vCPU may run where an IOThread is pinned):

- an existing IOThread pin that already keeps apart from every pinned vCPU (and names host CPUs) is kept;
- the others go to *free* CPUs: ones no pinned vCPU and no emulator pin of the domain uses, those of the NUMA node
  that holds most of the domain's pinned vCPUs first, the CPUs the host's other domains pin least next, the highest
  CPU ids first (CPU 0 usually serves the host's own interrupts); one CPU per IOThread while free CPUs remain;
- vCPUs not pinned keep one free CPU each where the host has enough (at least one CPU is left to the IOThreads),
  and are pinned to every host CPU no IOThread uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pytest_kvmio.model.cpuset import format_cpuset
from pytest_kvmio.model.hostcpus import HostCpus

RULE = "domain-iothread-pinned"


@dataclass(frozen=True)
class Placement:
    """Where IOThreads (and floating vCPUs) go; `needs` says what is missing when nothing could be placed."""

    iothreads: dict[int, frozenset[int]] = field(default_factory=dict)  # new pins only
    kept: dict[int, frozenset[int]] = field(default_factory=dict)
    vcpus: dict[int, frozenset[int]] = field(default_factory=dict)  # pins for vCPUs that floated
    node: int | None = None  # the NUMA node preferred (that of the pinned vCPUs)
    shared: bool = False  # some IOThreads share a CPU: there were fewer free CPUs than IOThreads
    needs: str | None = None

    def describe(self, host: HostCpus) -> str:
        """Say what was placed, where and by which rule."""
        parts = []
        if self.iothreads:
            where = ", ".join(f"{t} on CPU {format_cpuset(set(c))}" for t, c in sorted(self.iothreads.items()))
            parts.append(f"pin IOThread {where}")
        if self.vcpus:
            sets = {format_cpuset(set(c)) for c in self.vcpus.values()}
            parts.append(f"vCPU(s) {sorted(self.vcpus)} on {', '.join(sorted(sets))}")
        if self.kept:
            parts.append("keep IOThread " + ", ".join(f"{t} on {format_cpuset(set(c))}"
                                                      for t, c in sorted(self.kept.items())) + " (already apart)")
        nodes = f"{len(host.nodes)} NUMA node(s)" + (f", node {self.node} first (the vCPUs')"
                                                     if self.node is not None and len(host.nodes) > 1 else "")
        share = "; fewer free CPUs than IOThreads, so some share one" if self.shared else ", one CPU each"
        return (" and ".join(parts) + f" (placed by {RULE}: host CPUs no vCPU or emulator pin uses; "
                f"host has {host.count} CPUs, {nodes}{share})")


def place_iothreads(host: HostCpus, iothreads: Sequence[int], vcpus: Mapping[int, frozenset[int] | None], *,
                    emulator: frozenset[int] | None = None, pinned: Mapping[int, frozenset[int]] | None = None,
                    crowd: Mapping[int, float] | None = None) -> Placement:
    """Place a domain's IOThreads (ids `iothreads`) given its vCPUs' CPU sets (None: not pinned) and existing pins.

    `crowd`: how busy other domains' pins make each host CPU (live, where known); less crowded CPUs are chosen first.
    """
    every = host.cpus
    pinned = dict(pinned or {})
    crowd = crowd or {}
    held = frozenset().union(*(c for c in vcpus.values() if c is not None))
    kept = {t: p for t, p in pinned.items() if t in iothreads and p and p <= every and not p & held}
    kept_cpus = frozenset().union(*kept.values())
    floating = sorted(v for v, c in vcpus.items() if c is None)
    todo = [t for t in iothreads if t not in kept]
    node = _preferred_node(host, held)
    free = every - held - kept_cpus - (emulator or frozenset())
    if not free:
        free = every - held - kept_cpus  # the emulator's CPUs rather than none
    if not todo:
        vcpu_pins = _floating_pins(every, kept_cpus, floating)
        if floating and not vcpu_pins:
            return Placement(kept=kept, needs="a host CPU for the vCPUs besides the IOThreads'")
        return Placement(kept=kept, vcpus=vcpu_pins, node=node)
    if not free:
        return Placement(kept=kept, needs="a host CPU no vCPU is pinned to")
    order = sorted(free, key=lambda c: (host.node_of(c) != node, crowd.get(c, 0.0), -c))
    room = len(order) - len(floating) if floating else len(order)
    count = max(1, min(len(todo), room))
    chosen = order[:count]
    new = {t: frozenset({chosen[i % count]}) for i, t in enumerate(todo)}
    io_cpus = kept_cpus | frozenset(chosen)
    vcpu_pins = _floating_pins(every, io_cpus, floating)
    if floating and not vcpu_pins:
        return Placement(kept=kept, needs=f"a host CPU for the vCPUs besides the IOThreads' (the host has {host.count})")
    return Placement(new, kept, vcpu_pins, node, shared=count < len(todo))


def _preferred_node(host: HostCpus, held: frozenset[int]) -> int | None:
    """Return the NUMA node holding most of the pinned vCPUs' CPUs (ties: the lowest id); None when none is pinned."""
    counts: dict[int, int] = {}
    for cpu in held:
        found = host.node_of(cpu)
        if found is not None:
            counts[found] = counts.get(found, 0) + 1
    if not counts:
        return min(host.nodes) if host.nodes else None
    return min(counts, key=lambda n: (-counts[n], n))


def _floating_pins(every: frozenset[int], io_cpus: frozenset[int], floating: list[int]) -> dict[int, frozenset[int]]:
    rest = every - io_cpus
    return {v: rest for v in floating} if rest else {}


def crowding(pins: Sequence[frozenset[int]]) -> dict[int, float]:
    """Return how crowded each host CPU is by other domains' pins: a pin to n CPUs adds 1/n to each."""
    out: dict[int, float] = {}
    for pin in pins:
        for cpu in pin:
            out[cpu] = out.get(cpu, 0.0) + 1.0 / len(pin)
    return out
