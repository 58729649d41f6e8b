"""Unit tests of the lab helpers (no daemon: libvirt's in-process test:///default driver)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from pytest_kvmio.cli import lab as cli
from pytest_kvmio.lab import manifest, seeds, topology, xmlgen
from pytest_kvmio.lab.topology import DiskSpec, DomainSpec, ImageSpec, ScsiController

BOOT = xmlgen.GuestBoot(Path("/cache/vmlinuz"), Path("/cache/initrd.gz"), "qemu")

# Written out by hand on purpose: an independent statement of what the topology seeds.
EXPECTED: dict[str, dict[str, list[str]]] = {
    "kvmio-lab-good": {
        "kvmio-lab-good": [], "kvmio-lab-good/vdb": [], "kvmio-lab-good/vdc": [], "kvmio-lab-good/sda": [],
    },
    "kvmio-lab-legacy": {
        "kvmio-lab-legacy": [],
        "kvmio-lab-legacy/vdb": ["disk-discard-unmap", "disk-iothread-assigned", "disk-native-not-sparse"],
        "kvmio-lab-legacy/vdc": ["disk-discard-unmap", "disk-iothread-assigned", "disk-multiqueue"],
        "kvmio-lab-legacy/vdd": ["disk-cache-safe", "disk-iothread-assigned"],
    },
    "kvmio-lab-pinning": {
        "kvmio-lab-pinning": ["domain-iothread-pinned", "domain-pending-restart", "domain-runtime-pinning"],
        "kvmio-lab-pinning/vdb": ["disk-direct-io-for-async"],
        "kvmio-lab-pinning/vdc": ["disk-multiqueue"],
        "kvmio-lab-pinning/sda": ["disk-iothread-assigned", "disk-multiqueue"],
    },
    "kvmio-lab-overlap": {"kvmio-lab-overlap": ["domain-iothread-pinned"], "kvmio-lab-overlap/vdb": []},
    "kvmio-lab-ab": {"kvmio-lab-ab": [], "kvmio-lab-ab/vdb": [], "kvmio-lab-ab/vdc": []},
    "kvmio-lab-vhost": {
        "kvmio-lab-vhost": [], "kvmio-lab-vhost/vdb": [], "kvmio-lab-vhost/vdc": [],
        "kvmio-lab-vhost/vdd": ["disk-vhost-reconnect"],
    },
    "kvmio-lab-fix": {
        "kvmio-lab-fix": [], "kvmio-lab-fix/vdb": ["disk-cache-safe", "disk-discard-unmap", "disk-iothread-assigned"],
    },
    "kvmio-lab-offline-uring": {
        "kvmio-lab-offline-uring": [], "kvmio-lab-offline-uring/vdb": ["disk-io-mode-valid"],
    },
    "kvmio-lab-offline-native-writeback": {
        "kvmio-lab-offline-native-writeback": [],
        "kvmio-lab-offline-native-writeback/vdb": ["disk-direct-io-for-async"],
    },
    "kvmio-lab-offline-vhost-private-memory": {
        "kvmio-lab-offline-vhost-private-memory": [],
        "kvmio-lab-offline-vhost-private-memory/vdb": ["disk-vhost-shared-memory"],
    },
}
EXPECTED_GUEST: dict[str, dict[str, list[str]]] = {
    "kvmio-lab-good": {"kvmio-lab-good/vdb": [], "kvmio-lab-good/vdc": [], "kvmio-lab-good/sda": []},
    "kvmio-lab-legacy": {
        "kvmio-lab-legacy/vdb": ["guest-scheduler-none"],
        "kvmio-lab-legacy/vdc": ["guest-irq-spread", "guest-scheduler-persistent"],
        "kvmio-lab-legacy/vdd": [],
    },
    "kvmio-lab-pinning": {
        "kvmio-lab-pinning/vdb": [],
        "kvmio-lab-pinning/vdc": ["guest-queues-active"],
        "kvmio-lab-pinning/sda": ["guest-irq-spread"],
    },
    "kvmio-lab-overlap": {},
    "kvmio-lab-ab": {"kvmio-lab-ab/vdb": [], "kvmio-lab-ab/vdc": []},
    "kvmio-lab-vhost": {"kvmio-lab-vhost/vdb": [], "kvmio-lab-vhost/vdc": [], "kvmio-lab-vhost/vdd": []},
    "kvmio-lab-fix": {},
}
LAB_RULES = {
    "disk-io-mode-valid", "disk-direct-io-for-async", "disk-native-not-sparse", "disk-iothread-assigned",
    "domain-iothread-pinned", "disk-multiqueue", "disk-discard-unmap", "disk-cache-safe",
    "disk-vhost-shared-memory", "disk-vhost-reconnect", "domain-runtime-pinning", "domain-pending-restart",
}
GUEST_RULES = {"guest-scheduler-none", "guest-scheduler-persistent", "guest-queues-active", "guest-irq-spread"}


@pytest.mark.parametrize("spec", topology.DOMAINS + topology.OFFLINE, ids=lambda s: s.name)
def test_manifest_matches_the_hand_written_expectations(spec: DomainSpec) -> None:
    assert manifest.expected(spec, host_cpus=2) == EXPECTED[spec.name]
    if spec.offline_file is None:
        assert manifest.expected_guest(spec) == EXPECTED_GUEST[spec.name]


def test_every_exercisable_rule_fails_somewhere_and_the_good_domain_passes_all() -> None:
    failed = {r for targets in EXPECTED.values() for rules in targets.values() for r in rules}
    guest_failed = {r for targets in EXPECTED_GUEST.values() for rules in targets.values() for r in rules}
    assert failed == LAB_RULES
    assert guest_failed == GUEST_RULES
    assert all(not rules for rules in EXPECTED["kvmio-lab-good"].values())


def test_at_most_five_domains_run_at_once() -> None:
    # Idle TCG guests cost little CPU; five (768 MiB each) boot within AGENT_TIMEOUT on 2 cores.
    assert sum(d.running for d in topology.DOMAINS) <= 5


def test_serials_fit_virtio_blk_and_are_unique_per_domain() -> None:
    for dom in topology.DOMAINS + topology.OFFLINE:
        assert all(d.serial is None for d in dom.disks if d.vhost)  # libvirt refuses <serial> on vhost-user disks
        serials = [d.serial for d in dom.disks if d.serial is not None]
        assert len(set(serials)) == len(serials), dom.name
        assert all(len(s) <= topology.SERIAL_MAX for s in serials), serials


def test_each_running_domain_with_fio_has_a_scratch_disk() -> None:
    good = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-good")
    assert topology.SCRATCH_SERIAL in [d.serial for d in good.disks]


@pytest.mark.parametrize(
    ("spec", "cpus"),
    [("0", {0}), ("0-3,^2", {0, 1, 3}), ("1,3-4", {1, 3, 4}), ("", set())],
)
def test_parse_cpuset(spec: str, cpus: set[int]) -> None:
    assert manifest.parse_cpuset(spec) == cpus


@pytest.mark.parametrize(
    ("machine", "queues"), [("pc-q35-7.2", 4), ("pc-i440fx-5.2", 4), ("pc-i440fx-5.1", 1), ("q35", 4)]
)
def test_default_queues_follow_the_machine_type(machine: str, queues: int) -> None:
    assert manifest.default_queues(machine, vcpus=4) == queues


def _dom(**kw: object) -> DomainSpec:
    disk = DiskSpec("vdb", ImageSpec("x", "raw", "prealloc"), "s", cache="none", io="threads",
                    iothread=1, queues=2)
    base: dict[str, object] = dict(name="kvmio-lab-t", purpose="t", disks=(disk,), iothreads=1,
                                   vcpupin={0: "0", 1: "0"}, iothreadpin={1: "1"})
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def test_iothread_pin_semantics() -> None:
    assert manifest.domain_failures(_dom(), 2) == []
    assert manifest.domain_failures(_dom(iothreads=0, iothreadpin={}), 2) == []  # skipped
    assert manifest.domain_failures(_dom(iothreadpin={}), 2) == ["domain-iothread-pinned"]
    assert manifest.domain_failures(_dom(vcpupin={}), 2) == ["domain-iothread-pinned"]  # vCPUs float
    assert manifest.domain_failures(_dom(vcpupin={}, vcpu_cpuset="0"), 2) == []
    assert manifest.domain_failures(_dom(vcpupin={0: "0"}, vcpu_cpuset="0-1"), 2) == ["domain-iothread-pinned"]


def test_disk_semantics_edge_cases() -> None:
    dom = _dom()
    sparse = ImageSpec("s", "raw", "sparse")
    assert manifest.disk_failures(dom, DiskSpec("vdb", sparse, "s", io="io_uring", cache="directsync",
                                                discard="unmap", iothread=1)) == []
    # iothread 2 does not exist in a domain with one iothread
    assert "disk-iothread-assigned" in manifest.disk_failures(dom, DiskSpec(
        "vdb", sparse, "s", iothread=2, discard="unmap"))
    # writeback is legitimate (reported, not failed); absent cache with native fails direct-io
    assert manifest.disk_failures(dom, DiskSpec("vdb", sparse, "s", cache="writeback", discard="unmap",
                                                iothread=1)) == []
    assert manifest.disk_failures(dom, DiskSpec("vdb", ImageSpec("f", "qcow2", "full"), "s", io="native",
                                                iothread=1)) == ["disk-direct-io-for-async"]
    scsi = _dom(scsi=ScsiController(queues=None, iothread=1))
    assert manifest.disk_failures(scsi, DiskSpec("sda", sparse, "s", bus="scsi", discard="unmap")) == []


def test_xml_carries_the_seeded_settings_and_a_stable_hash(tmp_path: Path) -> None:
    pinning = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-pinning")
    xml = xmlgen.render(pinning, BOOT, tmp_path, tmp_path / "c.log")
    assert xml == xmlgen.render(pinning, BOOT, tmp_path, tmp_path / "c.log")
    assert xmlgen.spec_hash(xml)
    root = etree.fromstring(xml.encode())

    def attr(path: str, name: str) -> str | None:
        found: Any = root.xpath(path)
        return found[0].get(name) if found else "<missing>"

    assert root.get("type") == "qemu"
    assert attr("devices/controller[@model='virtio-scsi']/driver", "queues") == "1"
    assert attr("devices/disk[target/@dev='vdb']/driver", "cache") is None
    assert attr("devices/disk[target/@dev='vdb']/driver", "io") == "io_uring"
    assert attr("devices/channel/target", "name") == "org.qemu.guest_agent.0"
    legacy = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-legacy")
    assert "kvmio.sched=kvmio-legacy-native:mq-deadline" in xmlgen.cmdline(legacy)


@pytest.mark.parametrize("spec", topology.DOMAINS, ids=lambda s: s.name)
def test_libvirt_parses_every_defined_domain(spec: DomainSpec, tmp_path: Path) -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(xmlgen.render(spec, BOOT, tmp_path, tmp_path / "c.log", 2223))
        assert dom.name() == spec.name
    finally:
        conn.close()


def test_a_pending_restart_seed_defined_into_a_stopped_domain_is_found_in_effect(tmp_path: Path) -> None:
    """A host reboot starts a lab domain from the persistent XML that carries its pending-restart seed: the seed would
    then be in effect, nothing pending, and `kvmio lab up` must define the domain afresh (seen in CI)."""
    pinning = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-pinning")
    assert pinning.pending_restart == (("vdb", "cache", "none"),)
    pristine = xmlgen.render(pinning, BOOT, tmp_path, tmp_path / "c.log", 2223)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(pristine)
        assert seeds.pending_in_effect(dom, pinning) == []
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        root.xpath("devices/disk[target/@dev='vdb']/driver")[0].set("cache", "none")  # type: ignore[index,union-attr]
        dom = conn.defineXML(etree.tostring(root, encoding="unicode"))
        assert seeds.pending_in_effect(dom, pinning) == ["vdb cache='none'"]
        good = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-good")
        assert seeds.pending_in_effect(dom, good) == []  # no seed, nothing to find
    finally:
        conn.close()


def test_libvirt_rejects_the_io_uring_typo(tmp_path: Path) -> None:
    spec = next(d for d in topology.OFFLINE if d.name == "kvmio-lab-offline-uring")
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open("test:///default")
    try:
        with pytest.raises(libvirt.libvirtError, match="uring"):
            conn.defineXML(xmlgen.render(spec, BOOT, tmp_path, tmp_path / "c.log"))
    finally:
        conn.close()


def test_cli_registers_up_down_status() -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["lab", "status", "--json"]).json is True
    assert parser.parse_args(["lab", "down", "--purge"]).purge is True
    assert callable(parser.parse_args(["lab", "up"]).func)
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "up", "--daemon-timeout", "-1"])


def test_state_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_kvmio.lab.paths import LabPaths

    monkeypatch.setenv("KVMIO_LAB_DIR", str(tmp_path))
    assert LabPaths.from_env().manifest == tmp_path / "manifest.json"


QEMU_NS = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}


def _qemu_args(spec: DomainSpec, tmp_path: Path, port: int | None = 2223) -> list[str]:
    root = etree.fromstring(xmlgen.render(spec, BOOT, tmp_path, tmp_path / "c.log", port).encode())
    assert root.xpath("devices/interface") == []  # no libvirt-managed NIC in any lab domain
    values: Any = root.xpath("qemu:commandline/qemu:arg/@value", namespaces=QEMU_NS)
    return [str(v) for v in values]


def test_only_the_good_domain_has_a_nic_a_restricted_user_netdev_forwarded_from_loopback(tmp_path: Path) -> None:
    with_nic = {d.name for d in topology.DOMAINS + topology.OFFLINE if _qemu_args(d, tmp_path)}
    assert with_nic == {"kvmio-lab-good"}
    good = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-good")
    args = _qemu_args(good, tmp_path, 2299)
    assert args[0::2] == ["-netdev", "-device"]
    netdev = dict(kv.partition("=")[::2] for kv in args[1].split(",")[1:])
    assert args[1].split(",")[0] == "user"  # SLIRP: no tap, no bridge, nothing on the host's network
    assert netdev["restrict"] == "on"  # the guest reaches nothing outside QEMU
    assert netdev["hostfwd"] == "tcp:127.0.0.1:2299-:22"  # bound to loopback only, never 0.0.0.0
    assert set(netdev) == {"id", "restrict", "hostfwd"}  # no guestfwd, no smb/tftp
    assert args[3].startswith("virtio-net-pci,") and f"netdev={netdev['id']}" in args[3].split(",")


def test_the_ssh_port_is_part_of_the_xml_hash_and_required(tmp_path: Path) -> None:
    good = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-good")
    a = xmlgen.render(good, BOOT, tmp_path, tmp_path / "c.log", 2223)
    b = xmlgen.render(good, BOOT, tmp_path, tmp_path / "c.log", 2224)
    assert xmlgen.spec_hash(a) != xmlgen.spec_hash(b)  # a new port redefines (and restarts) the domain
    with pytest.raises(ValueError, match="ssh_port"):
        xmlgen.render(good, BOOT, tmp_path, tmp_path / "c.log")


def test_qemu_driver_accepts_the_passthrough(tmp_path: Path) -> None:
    """virt-xml-validate (the schema the qemu driver parses) accepts <qemu:commandline>."""
    import shutil
    import subprocess

    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate not installed (libxml2-utils + libvirt-clients)")
    good = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-good")
    path = tmp_path / "good.xml"
    path.write_text(xmlgen.render(good, BOOT, tmp_path, tmp_path / "c.log", 2223))
    proc = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_guest_ssh_ports_config_and_spec(tmp_path: Path) -> None:
    from pytest_kvmio.lab import guestssh
    from pytest_kvmio.lab.paths import LabPaths
    from pytest_kvmio.lab.sshd import SshFiles

    assert guestssh.ports(2223) == {"kvmio-lab-good": 2223}
    files = SshFiles(LabPaths(tmp_path))
    block = guestssh.config_block(files, 2223)
    assert block.startswith("Host kvmio-lab-good\n")
    for line in ("HostName 127.0.0.1", "Port 2223", "User root", f"IdentityFile {files.client_key}",
                 "StrictHostKeyChecking yes", "BatchMode yes", "HostKeyAlias kvmio-lab-good",
                 f"UserKnownHostsFile {tmp_path}/ssh/known_hosts_guests"):
        assert f"\n  {line}\n" in block, line
    doc = guestssh.spec(files, 2223)
    assert doc["spec"] == f"ssh://{{domain}}?ssh_config={tmp_path}/ssh/ssh_config"
    assert doc["domains"] == ["kvmio-lab-good"]


def test_guest_ssh_port_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_kvmio.errors import CommandError
    from pytest_kvmio.lab.paths import guest_ssh_port

    monkeypatch.delenv("KVMIO_LAB_GUEST_SSH_PORT", raising=False)
    assert guest_ssh_port() == 2223
    monkeypatch.setenv("KVMIO_LAB_GUEST_SSH_PORT", "2400")
    assert guest_ssh_port() == 2400
    monkeypatch.setenv("KVMIO_LAB_GUEST_SSH_PORT", "70000")
    with pytest.raises(CommandError, match="KVMIO_LAB_GUEST_SSH_PORT"):
        guest_ssh_port()


def test_guest_build_inputs_cover_the_ssh_server() -> None:
    from pytest_kvmio.lab import guest

    assert "virtio_net" in guest.MODULES
    assert guest.SSH_PACKAGES == ("dropbear-bin", "libtomcrypt1", "libtommath1")
    init = guest.init_script().decode()
    assert "dropbear -F -E -s -g" in init  # public keys only, root included
    assert "10.0.2.15/24" in init
    base = dict(kernel_package="k", kernel_version="1", agent_version="1", fio_version="1",
                busybox_version="1", init_sha="x", modules=guest.MODULES)
    a = guest.GuestInputs(**base, ssh_packages=("dropbear-bin=1",))  # type: ignore[arg-type]
    b = guest.GuestInputs(**base, ssh_packages=("dropbear-bin=2",))  # type: ignore[arg-type]
    assert a.key != b.key  # a new dropbear rebuilds the cached guest


def test_the_vhost_domain_shares_memory_and_serves_its_vhost_user_disks_from_the_lab_backends(tmp_path: Path) -> None:
    from pytest_kvmio.lab import vhost
    from pytest_kvmio.lab.paths import LabPaths

    paths = LabPaths(tmp_path)
    spec = next(d for d in topology.DOMAINS if d.name == "kvmio-lab-vhost")
    root = etree.fromstring(xmlgen.render(spec, BOOT, paths.images, paths.console_log(spec.name)).encode())
    assert root.find("memoryBacking/source").get("type") == "memfd"  # type: ignore[union-attr]
    assert root.find("memoryBacking/access").get("mode") == "shared"  # type: ignore[union-attr]
    disks = {d.find("target").get("dev"): d for d in root.findall("devices/disk")}  # type: ignore[union-attr]
    assert [disks[t].get("type") for t in ("vdb", "vdc", "vdd")] == ["file", "vhostuser", "vhostuser"]
    backends = {b.disk.target: b for b in vhost.backends(paths)}
    assert set(backends) == {"vdc", "vdd"}
    for target, backend in backends.items():
        disk = disks[target]
        assert disk.find("serial") is None and disk.find("driver").get("queues") == "2"  # type: ignore[union-attr]
        assert disk.find("source").get("path") == str(backend.socket)  # type: ignore[union-attr]
        assert backend.socket.parent == paths.vhost
        export = [a for a in backend.argv() if a.startswith("type=vhost-user-blk")][0]
        assert f"addr.path={backend.socket}" in export and "num-queues=2" in export
        assert f"filename={paths.images / backend.disk.image.filename}" in " ".join(backend.argv())
    assert disks["vdc"].find("source/reconnect").get("timeout") == "10"  # type: ignore[union-attr]
    assert disks["vdd"].find("source/reconnect") is None  # seeded: a backend restart leaves it dead
    # The ordinary virtio-blk disk and the vhost-user disk sit on the same storage, laid out alike.
    vdb = next(d for d in spec.disks if d.target == "vdb")
    assert (vdb.image.fmt, vdb.image.alloc, vdb.image.size_mib) == (backends["vdc"].disk.image.fmt,
                                                                    backends["vdc"].disk.image.alloc,
                                                                    backends["vdc"].disk.image.size_mib)
    assert "kvmio.disks=3" in xmlgen.cmdline(spec)


def test_the_manifest_lists_the_vhost_backends(tmp_path: Path) -> None:
    from pytest_kvmio.lab import vhost
    from pytest_kvmio.lab.paths import LabPaths

    entries = vhost.manifest_entries(LabPaths(tmp_path))
    doc = manifest.build(topology.DOMAINS, {}, {}, 2, {}, "tcg", "qemu:///system", vhost=entries)
    assert set(doc["vhost"]) == {"kvmio-lab-vhost/vdc", "kvmio-lab-vhost/vdd"}
    assert doc["vhost"]["kvmio-lab-vhost/vdc"]["reconnect"] == 10 and doc["vhost"]["kvmio-lab-vhost/vdd"]["reconnect"] is None
    assert doc["vhost"]["kvmio-lab-vhost/vdc"]["program"] == "qemu-storage-daemon"


def test_a_restarted_backend_of_a_disk_without_reconnect_means_its_domain_boots_again() -> None:
    from pytest_kvmio.lab import vhost

    assert vhost.stranded_domains(["kvmio-lab-vhost/vdd"]) == ["kvmio-lab-vhost"]
    assert vhost.stranded_domains(["kvmio-lab-vhost/vdc"]) == []  # vdc reconnects
    assert vhost.stranded_domains([]) == []
