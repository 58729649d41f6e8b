"""parse_domain / parse_cpuset / default_queues on the corpus (real libvirt dumps first) and on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_kvmio.model.cpuset import format_cpuset, parse_cpuset
from pytest_kvmio.model.domain import (
    DomainXMLError,
    configured_queues,
    default_queues,
    parse_domain,
)
from pytest_kvmio.model.xmlfiles import load_domain_files
from pytest_kvmio.model.versions import Version

CORPUS = Path(__file__).resolve().parent / "data" / "domains"
BAD = Path(__file__).resolve().parent / "data" / "domains-bad"


def load(name: str):
    path = CORPUS / name
    return parse_domain(path.read_bytes(), source=str(path))


def disk(dom, dev):
    (found,) = [d for d in dom.disks if d.target == dev]
    return found


# --- cpusets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,^2,8", {0, 1, 3, 8}),
        ("^2,0-3,8", {0, 1, 3, 8}),  # exclusions apply wherever they stand
        ("0-1,3,8", {0, 1, 3, 8}),  # what libvirt writes back for 0-3,^2,8
        ("5", {5}),
        (" 4 , 6-7 ", {4, 6, 7}),
    ],
)
def test_parse_cpuset(text: str, cpus: set[int]) -> None:
    assert parse_cpuset(text) == frozenset(cpus)


def test_format_cpuset_round_trips_libvirt_normal_form() -> None:
    assert format_cpuset(parse_cpuset("0-3,^2,8")) == "0-1,3,8"


@pytest.mark.parametrize("text", ["4-2", "a", "0,,1", "1-", "", "^", "0-3,^0-3"])
def test_bad_cpuset_names_the_source_and_the_text(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_cpuset(text, source="tmpl.xml: <vcpupin vcpu='0'>")
    assert str(exc.value).startswith("tmpl.xml: <vcpupin vcpu='0'>: ")
    assert repr(text) in str(exc.value)


# --- real libvirt dumps -----------------------------------------------------------------------


def test_virt_manager_q35_dump() -> None:
    dom = load("libvirt-virtmanager.xml")
    assert dom.id == "offline/kvmio-corpus-virtmanager"
    assert dom.type == "kvm"
    assert dom.machine == "pc-q35-7.2" and dom.machine_version == (7, 2)
    assert (dom.vcpus, dom.max_vcpus) == (2, 2)
    assert dom.iothread_ids == () and dom.iothread_pins == {} and dom.vcpu_pins == {}
    assert [(d.target, d.device, d.bus) for d in dom.disks] == [("vda", "disk", "virtio"), ("sda", "cdrom", "sata")]
    vda, cdrom = dom.disks
    assert (vda.driver_name, vda.format, vda.cache, vda.io, vda.discard) == ("qemu", "qcow2", None, None, "unmap")
    assert vda.effective_cache == "writeback"
    assert vda.source_file == "/tmp/kvmio-corpus/vm-manager.qcow2" and vda.source == vda.source_file
    assert vda.address is not None and vda.address["type"] == "pci"
    assert vda.is_virtio_blk and vda.is_storage and vda.controller is None
    # the cdrom virt-install adds has no <source>: not storage, no source, but a sata controller
    assert cdrom.source is None and cdrom.readonly and not cdrom.is_storage
    assert cdrom.address == {"type": "drive", "controller": "0", "bus": "0", "target": "0", "unit": "0"}
    assert cdrom.controller is not None and cdrom.controller.type == "sata"


def test_san_tuned_dump_iothreadids_pins_and_virtio_scsi() -> None:
    dom = load("libvirt-san-tuned.xml")
    assert dom.iothread_ids == (1, 4)  # ids from <iothreadids>, not 1..<iothreads>
    assert dom.vcpu_pins == {i: frozenset({4 + i}) for i in range(4)}
    # written as 0-3,^2,8 in the input; libvirt stores 0-1,3,8
    assert dom.iothread_pins == {1: frozenset({0, 1, 3, 8}), 4: frozenset({9, 10})}
    assert dom.emulator_pin == frozenset({2})
    (scsi,) = [c for c in dom.controllers if c.type == "scsi"]
    assert (scsi.index, scsi.model, scsi.queues, scsi.iothread) == (0, "virtio-scsi", 4, 4)
    assert scsi.is_virtio_scsi
    vda = disk(dom, "vda")
    assert (vda.type, vda.source_dev, vda.iothread, vda.queues, vda.serial) == (
        "block", "/dev/mapper/mpatha", 1, 4, "san-boot-0001"
    )
    for dev, unit in (("sda", "0"), ("sdb", "1"), ("sdc", "2")):
        d = disk(dom, dev)
        assert d.address == {"type": "drive", "controller": "0", "bus": "0", "target": "0", "unit": unit}
        assert d.controller is scsi and d.is_virtio_scsi and not d.is_virtio_blk
    assert disk(dom, "sdc").device == "lun" and disk(dom, "sdc").is_storage
    assert (disk(dom, "sdb").cache, disk(dom, "sdb").io) == ("directsync", "io_uring")
    assert configured_queues(disk(dom, "sda")) == (4, "virtio-scsi controller 0 queues='4'")
    assert configured_queues(vda) == (4, "<driver queues='4'>")


def test_san_drift_disks_find_their_own_controller() -> None:
    dom = load("libvirt-san-drift.xml")
    assert dom.vcpu_cpuset == frozenset({0, 1, 3, 8})
    assert dom.vcpu_cpus(0) == frozenset({4, 5})  # <vcpupin> wins
    assert dom.vcpu_cpus(3) == frozenset({0, 1, 3, 8})  # else <vcpu cpuset>
    assert dom.iothread_ids == (1, 2)  # <iothreads>2</iothreads>, no <iothreadids>
    controllers = {(c.type, c.index): c for c in dom.controllers}
    assert controllers[("scsi", 0)].queues == 2 and controllers[("scsi", 0)].iothread is None
    assert controllers[("scsi", 1)].queues == 4 and controllers[("scsi", 1)].iothread == 2
    assert controllers[("scsi", 2)].model == "lsilogic" and not controllers[("scsi", 2)].is_virtio_scsi
    assert disk(dom, "sda").controller.index == 0
    assert disk(dom, "sdb").controller.index == 1
    sdc = disk(dom, "sdc")
    assert sdc.controller.index == 2 and not sdc.is_virtio_scsi
    assert configured_queues(sdc) == (None, "not a virtio disk")
    assert disk(dom, "vdb").cache == "unsafe"


def test_vcpu_current_and_max() -> None:
    dom = load("libvirt-hotplug.xml")
    assert (dom.vcpus, dom.max_vcpus) == (2, 4)
    assert dom.iothread_ids == (2, 1, 3)  # in libvirt's order
    assert dom.vcpu_cpus(0) is None  # not pinned at all
    sda = disk(dom, "sda")
    assert sda.readonly and sda.is_virtio_scsi and sda.controller.queues is None
    assert default_queues(sda, None) == (
        2, "QEMU default for machine type pc-i440fx-7.2: one queue per vCPU (QEMU hw/core/machine.c hw_compat_5_1)")


def test_nova_local_and_iscsi_volume() -> None:
    dom = load("libvirt-nova-local.xml")
    assert dom.name == "kvmio-corpus-instance-0000002a"
    assert b"http://openstack.org/xmlns/libvirt/nova/1.1" in dom.xml.encode()
    vda, vdb = disk(dom, "vda"), disk(dom, "vdb")
    assert vda.source_file == "/var/lib/nova/instances/3f1c9a52-7d4e-4b8a-9c61-2e5f0d8b7a10/disk"
    assert (vda.format, vda.cache, vda.io) == ("qcow2", "none", "native")
    assert vdb.type == "block" and vdb.source_dev.startswith("/dev/disk/by-path/ip-192.168.10.21:3260-iscsi-")
    assert vdb.serial == "5c1d7e3a-2b4f-4e8a-9c6d-0f1e2a3b4c5d"
    assert [d.target for d in dom.disks if d.is_storage] == ["vda", "vdb"]  # config drive cdrom is not
    assert dom.machine_version == (6, 2)


def test_nova_rbd_network_disks() -> None:
    dom = load("libvirt-nova-rbd.xml")
    vda, vdb = disk(dom, "vda"), disk(dom, "vdb")
    assert vda.type == "network" and vda.source_protocol == "rbd"
    assert vda.source_name == "vms/9a7b6c5d-4e3f-4a2b-8c1d-0e9f8a7b6c5d_disk"
    assert vda.source == "rbd:vms/9a7b6c5d-4e3f-4a2b-8c1d-0e9f8a7b6c5d_disk"
    assert vda.source_file is None and vda.source_dev is None
    assert (vda.cache, vda.discard) == ("writeback", "unmap")
    assert vdb.cache == "unsafe" and vdb.serial == "7e6d5c4b-3a2f-4e1d-8c0b-9a8f7e6d5c4b"
    assert vda.facts()["source"] == vda.source and vda.facts()["vcpus"] == 4


def test_test_driver_dump() -> None:
    dom = load("testdriver-default.xml")
    assert (dom.name, dom.type, dom.machine, dom.machine_version) == ("test", "test", None, None)
    (vda,) = dom.disks
    assert (vda.driver_name, vda.format, vda.cache) == (None, None, None)
    assert vda.source_file == "/guest/diskimage1"


# --- hand-written templates -------------------------------------------------------------------


def test_handwritten_cpuset_exclusion_survives_parsing() -> None:
    dom = load("handwritten-cpuset-exclusion.xml")
    assert dom.vcpu_cpuset == frozenset({0, 1, 3, 8})
    assert all(dom.vcpu_cpus(v) == frozenset({0, 1, 3, 8}) for v in range(dom.vcpus))
    assert dom.iothread_pins == {1: frozenset({2})}
    assert dom.machine_version == (8, 0)
    assert all(d.is_virtio_scsi and d.controller.iothread == 1 for d in dom.disks)


def test_handwritten_typos_are_parsed_verbatim() -> None:
    dom = load("handwritten-typos.xml")
    assert disk(dom, "vda").io == "uring"  # the model keeps what was written; the rule judges it
    assert disk(dom, "vdc").cache is None and disk(dom, "vdc").effective_cache == "writeback"
    assert dom.machine == "q35" and dom.machine_version is None


def test_partial_iothreadids_are_completed_like_libvirt() -> None:
    dom = load("handwritten-partial-iothreadids.xml")
    assert sorted(dom.iothread_ids) == [1, 4]


# --- QEMU's default queue count ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "qemu", "queues", "basis"),
    [
        ("libvirt-san-tuned.xml", None, 4, "machine type pc-q35-7.2: one queue per vCPU"),
        ("libvirt-san-tuned.xml", "4.2", 4, "machine type pc-q35-7.2"),  # the machine type decides
        ("libvirt-legacy.xml", "7.2", 1, "machine type pc-i440fx-4.2: one queue"),
        ("libvirt-nova-local.xml", None, 2, "machine type pc-q35-6.2"),
        ("handwritten-typos.xml", "7.2", 2, "QEMU 7.2 with machine type q35"),
        ("handwritten-typos.xml", "5.1", 1, "QEMU 5.1 with machine type q35: one queue"),
        ("handwritten-typos.xml", "5.2", 2, "QEMU 5.2 with machine type q35"),
        ("testdriver-default.xml", "7.2", 2, "machine type default"),
        ("testdriver-default.xml", None, None, "unversioned and QEMU's version unknown"),
    ],
)
def test_default_queues(name: str, qemu: str | None, queues: int | None, basis: str) -> None:
    dom = load(name)
    first_virtio = next(d for d in dom.disks if d.is_virtio_blk or d.is_virtio_scsi)
    got, why = default_queues(first_virtio, Version.parse(qemu) if qemu else None)
    assert got == queues
    assert basis in why


# --- errors name the source -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("truncated.xml", "malformed XML"),
        ("not-a-domain.xml", "root element is <network>, expected <domain>"),
        ("bad-cpuset.xml", "domain bad-cpuset: <iothreadpin iothread='1'>: '4-2' in cpuset '4-2'"),
        ("bad-queues.xml", "<controller type='scsi' index='0'> (line 6): queues='four' is not a whole number"),
        ("no-target-dev.xml", "domain bad-no-target: a <disk> has no <target dev=...>"),
    ],
)
def test_bad_xml_errors_name_the_file_and_the_element(bad: str, says: str) -> None:
    path = BAD / bad
    with pytest.raises(DomainXMLError) as exc:
        load_domain_files([str(path)])
    assert str(exc.value).startswith(f"{path}: ")
    assert says in str(exc.value)


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        ("<domain><name>d</name><vcpu>two</vcpu></domain>", "domain d: <vcpu> (line 1): 'two' is not a whole number"),
        ("<domain><name>d</name><vcpu current='x'>2</vcpu></domain>", "<vcpu> (line 1): current='x'"),
        ("<domain><name>d</name><vcpu cpuset='0-'>2</vcpu></domain>", "<vcpu cpuset>: '0-'"),
        ("<domain><name>d</name><cputune><vcpupin vcpu='0' cpuset='1,,2'/></cputune></domain>", "<vcpupin vcpu='0'>"),
        ("<domain><name>d</name><cputune><emulatorpin cpuset='x'/></cputune></domain>", "<emulatorpin>"),
        ("<domain><name>d</name><iothreadids><iothread id='a'/></iothreadids></domain>", "<iothreadids> (line 1): id='a'"),
        (
            "<domain><name>d</name><devices><disk><driver queues='2.5'/><target dev='vda'/></disk></devices></domain>",
            "disk vda: <driver> (line 1): queues='2.5' is not a whole number",
        ),
        (
            "<domain><name>d</name><devices><disk><driver iothread='one'/><target dev='vda'/></disk></devices></domain>",
            "disk vda: <driver> (line 1): iothread='one'",
        ),
        ("<domain><devices/></domain>", "<domain> has no <name>"),
        ("<domainsnapshot><name>s</name></domainsnapshot>", "root element is <domainsnapshot>"),
    ],
)
def test_inline_errors_name_the_source(xml: str, says: str) -> None:
    with pytest.raises(DomainXMLError) as exc:
        parse_domain(xml, source="inline.xml")
    assert str(exc.value).startswith("inline.xml: ")
    assert says in str(exc.value)


def test_load_domain_files_reads_a_directory_sorted_and_names_missing_paths(tmp_path: Path) -> None:
    names = [d.name for d in load_domain_files([str(CORPUS)])]
    assert len(names) == len(list(CORPUS.glob("*.xml"))) == len(set(names))
    assert names[0] == "tmpl-cpuset-exclusion"  # handwritten-cpuset-exclusion.xml sorts first
    with pytest.raises(DomainXMLError, match=f"^{tmp_path}/nope.xml: no such file or directory$"):
        load_domain_files([str(tmp_path / "nope.xml")])
    with pytest.raises(DomainXMLError, match="directory holds no"):
        load_domain_files([str(tmp_path)])
