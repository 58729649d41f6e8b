"""IOThread placement (issue 21): apart from the vCPUs and the emulator, near the vCPUs' NUMA node, one CPU each while
free CPUs remain, existing good pins kept; on assumed and recorded topologies, and over the corpora."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.fix.patch import fix_document
from pytest_kvmio.fix.placement import Placement, crowding, place_iothreads
from pytest_kvmio.model.domain import DomainXMLError, parse_domain
from pytest_kvmio.model.hostcpus import HostCpus
from pytest_kvmio.model.xmlfiles import xml_files
from tests.conftest import DATA

FLAT16 = HostCpus.flat(16)
TWO_BY_8 = HostCpus({0: frozenset(range(8)), 1: frozenset(range(8, 16))})
#: A dual-socket host as libvirt's capabilities describe it (hyperthreads interleaved: 0,2,4.. on node 0).
CAPABILITIES = """<capabilities><host><topology><cells num='2'>
<cell id='0'><cpus num='4'><cpu id='0'/><cpu id='2'/><cpu id='4'/><cpu id='6'/></cpus></cell>
<cell id='1'><cpus num='4'><cpu id='1'/><cpu id='3'/><cpu id='5'/><cpu id='7'/></cpus></cell>
</cells></topology></host></capabilities>"""


def _cpus(*ids: int) -> frozenset[int]:
    return frozenset(ids)


def _assert_sound(host: HostCpus, placed: Placement, vcpus: dict[int, frozenset[int] | None],
                  emulator: frozenset[int] = frozenset()) -> None:
    """No IOThread shares a CPU with a vCPU; two IOThreads share a CPU only when no free CPU remains on its node."""
    vcpu_cpus = frozenset().union(*(c for c in vcpus.values() if c is not None), *placed.vcpus.values())
    io = {t: c for t, c in {**placed.kept, **placed.iothreads}.items()}
    assert all(not c & vcpu_cpus for c in io.values()), (io, vcpu_cpus)
    used = Counter(cpu for c in placed.iothreads.values() for cpu in c)
    for cpu, n in used.items():
        if n > 1:
            node = host.node_of(cpu)
            assert node is not None
            spare = host.nodes[node] - frozenset(used) - vcpu_cpus - emulator - frozenset().union(*placed.kept.values())
            assert not spare, f"CPU {cpu} has {n} IOThreads while {sorted(spare)} are free on node {node}"


def test_one_node_of_16_cpus_spreads_five_iothreads_over_five_cpus() -> None:
    vcpus: dict[int, frozenset[int] | None] = dict.fromkeys(range(4))
    placed = place_iothreads(FLAT16, (1, 2, 3, 4, 5), vcpus)
    assert placed.iothreads == {1: _cpus(15), 2: _cpus(14), 3: _cpus(13), 4: _cpus(12), 5: _cpus(11)}
    assert placed.vcpus == dict.fromkeys(range(4), frozenset(range(11)))
    assert not placed.shared and "placed by domain-iothread-pinned" in placed.describe(FLAT16)
    _assert_sound(FLAT16, placed, vcpus)


def test_two_nodes_prefer_the_node_of_the_vcpus() -> None:
    vcpus: dict[int, frozenset[int] | None] = {0: _cpus(8), 1: _cpus(9)}
    placed = place_iothreads(TWO_BY_8, (1, 2, 3), vcpus)
    assert placed.iothreads == {1: _cpus(15), 2: _cpus(14), 3: _cpus(13)} and placed.node == 1
    assert "node 1 first (the vCPUs')" in placed.describe(TWO_BY_8)
    low = place_iothreads(TWO_BY_8, (1,), {0: _cpus(0), 1: _cpus(1)})
    assert low.iothreads == {1: _cpus(7)}  # node 0's highest free CPU, not the host's


def test_a_full_node_spills_over_to_the_next_one_cpu_each() -> None:
    vcpus: dict[int, frozenset[int] | None] = {v: _cpus(v) for v in range(6)}  # node 0: 6 and 7 are left
    placed = place_iothreads(TWO_BY_8, (1, 2, 3, 4), vcpus)
    assert placed.iothreads == {1: _cpus(7), 2: _cpus(6), 3: _cpus(15), 4: _cpus(14)}
    _assert_sound(TWO_BY_8, placed, vcpus)


def test_cpus_other_domains_pin_are_chosen_last() -> None:
    crowd = crowding([_cpus(15), _cpus(15), _cpus(14), frozenset(range(16))])
    placed = place_iothreads(FLAT16, (1, 2), {0: _cpus(0), 1: _cpus(1)}, crowd=crowd)
    assert placed.iothreads == {1: _cpus(13), 2: _cpus(12)}


def test_more_iothreads_than_free_cpus_share_them_evenly() -> None:
    host = HostCpus.flat(8)
    vcpus: dict[int, frozenset[int] | None] = {v: frozenset(range(6)) for v in range(4)}
    placed = place_iothreads(host, (1, 2, 3, 4), vcpus)
    assert placed.shared and Counter(c for p in placed.iothreads.values() for c in p) == {7: 2, 6: 2}
    assert "some share one" in placed.describe(host)
    _assert_sound(host, placed, vcpus)


def test_existing_pins_apart_from_the_vcpus_stay_and_are_avoided() -> None:
    vcpus: dict[int, frozenset[int] | None] = {0: _cpus(0, 1), 1: _cpus(2, 3)}
    placed = place_iothreads(FLAT16, (1, 2, 3), vcpus, pinned={1: _cpus(5), 2: _cpus(3), 7: _cpus(9)})
    assert placed.kept == {1: _cpus(5)}  # 2 overlaps vCPU 1, 7 is no IOThread of the domain
    assert placed.iothreads == {2: _cpus(15), 3: _cpus(14)}
    assert "keep IOThread 1 on 5 (already apart)" in placed.describe(FLAT16)


def test_the_emulator_pin_is_avoided_while_other_cpus_are_free() -> None:
    placed = place_iothreads(HostCpus.flat(4), (1,), {0: _cpus(0), 1: _cpus(1)}, emulator=_cpus(3))
    assert placed.iothreads == {1: _cpus(2)}
    cramped = place_iothreads(HostCpus.flat(3), (1,), {0: _cpus(0), 1: _cpus(1)}, emulator=_cpus(2))
    assert cramped.iothreads == {1: _cpus(2)}  # the emulator's CPU rather than none


def test_a_host_without_room_says_what_is_missing() -> None:
    placed = place_iothreads(HostCpus.flat(2), (1,), {0: _cpus(0), 1: _cpus(1)})
    assert placed.needs == "a host CPU no vCPU is pinned to" and not placed.iothreads


def test_recorded_numa_topology_from_libvirt_capabilities() -> None:
    from pytest_kvmio.model.hostcpus import host_cpus_from_capabilities

    host = host_cpus_from_capabilities(CAPABILITIES)
    assert host is not None
    placed = place_iothreads(host, (1, 2), {0: _cpus(1), 1: _cpus(3)})
    assert placed.iothreads == {1: _cpus(7), 2: _cpus(5)}  # node 1's CPUs, interleaved ids


@settings(max_examples=300, deadline=None)
@given(nodes=st.integers(1, 3), per_node=st.integers(1, 8), threads=st.integers(1, 8), data=st.data())
def test_no_placement_doubles_up_while_a_free_cpu_remains(nodes: int, per_node: int, threads: int, data: st.DataObject) -> None:
    host = HostCpus({n: frozenset(range(n * per_node, (n + 1) * per_node)) for n in range(nodes)})
    cpus = sorted(host.cpus)
    vcpus: dict[int, frozenset[int] | None] = {
        v: (frozenset(data.draw(st.sets(st.sampled_from(cpus), min_size=1, max_size=3))) if data.draw(st.booleans()) else None)
        for v in range(data.draw(st.integers(1, 4)))}
    pinned = {t: frozenset({data.draw(st.sampled_from(cpus))}) for t in range(1, threads + 1) if data.draw(st.booleans())}
    placed = place_iothreads(host, tuple(range(1, threads + 1)), vcpus, pinned=pinned)
    held = frozenset().union(*(c for c in vcpus.values() if c is not None))
    assert placed.kept == {t: p for t, p in pinned.items() if not p & held}  # good pins stay, bad ones go
    if placed.needs is None:
        assert set(placed.iothreads) | set(placed.kept) == set(range(1, threads + 1))
        _assert_sound(host, placed, vcpus)


def test_host_facts_with_numa_nodes_place_on_one_node() -> None:
    head = "<vcpu placement='static'>2</vcpu><iothreads>3</iothreads>"
    xml = (f"<domain type='kvm'><name>vm</name>{head}<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>"
           "<devices/></domain>")
    flat = fix_document(xml.encode(), HostFacts(name="h", offline=True, cpu_count=16), ["domain-iothread-pinned"],
                        source="t.xml")
    numa = fix_document(xml.encode(), HostFacts(name="h", offline=True, cpu_count=16, host_cpus=TWO_BY_8),
                        ["domain-iothread-pinned"], source="t.xml")
    for fixed, cpus in ((flat, [13, 14, 15]), (numa, [5, 6, 7])):  # vCPUs unpinned: NUMA node 0 first
        pins = parse_domain(fixed.data, source="t.xml").iothread_pins
        assert sorted(pins.values(), key=min) == [_cpus(c) for c in cpus], fixed.text
    (finding,) = numa.result.fixed
    assert finding.applied is not None and "placed by domain-iothread-pinned" in finding.applied.summary


CORPORA = [DATA / "domains", DATA / "libvirt-qemuxml", DATA / "domains-world"]


@pytest.mark.parametrize("host", [FLAT16, TWO_BY_8, HostCpus.flat(4)], ids=["1x16", "2x8", "1x4"])
def test_no_corpus_fix_doubles_up_iothreads_while_a_free_cpu_remains(host: HostCpus) -> None:
    facts = HostFacts(name="offline", offline=True, cpu_count=host.count, host_cpus=host)
    placed_domains = 0
    for corpus in CORPORA:
        for file in xml_files([str(corpus)]):
            data = file.path.read_bytes()
            try:
                before = parse_domain(data, source=str(file.path))
                fixed = fix_document(data, facts, ["domain-iothread-pinned", "disk-iothread-assigned"], source=str(file.path))
            except DomainXMLError:
                continue
            if not fixed.result.fixed:
                continue
            after = parse_domain(fixed.data, source=str(file.path))
            kept = {t: p for t, p in before.iothread_pins.items() if after.iothread_pins.get(t) == p}
            good_before = {t: p for t, p in before.iothread_pins.items() if t in before.iothread_ids
                           and not p & frozenset().union(*(c for v in range(before.vcpus)
                                                            if (c := before.vcpu_cpus(v)) is not None))
                           and p <= host.cpus}
            assert good_before.items() <= kept.items(), f"{file.rel}: a good pin was moved"
            new = {t: p for t, p in after.iothread_pins.items() if t not in kept}
            if not new:
                continue
            placed_domains += 1
            vcpus = frozenset().union(*(c for v in range(after.vcpus) if (c := after.vcpu_cpus(v)) is not None))
            taken = vcpus | frozenset().union(*kept.values()) | (after.emulator_pin or frozenset())
            used = Counter(c for p in new.values() for c in p)
            for cpu, n in used.items():
                node = host.node_of(cpu)
                assert node is not None
                spare = host.nodes[node] - taken - frozenset(used)
                assert n == 1 or not spare, f"{file.rel}: {n} IOThreads on CPU {cpu}, {sorted(spare)} free on node {node}"
    assert placed_domains > 10, placed_domains


def test_the_lab_host_places_on_its_two_cpus() -> None:
    """The lab has 2 CPUs: one for the floating vCPUs, one for the IOThread (what kvmio-lab-fix gets)."""
    placed = place_iothreads(HostCpus.flat(2), (1,), {0: None, 1: None})
    assert placed.iothreads == {1: _cpus(1)} and placed.vcpus == {0: _cpus(0), 1: _cpus(0)}

