"""vhost-user disks (the SPDK path): model, backend facts, guest mapping by PCI address, host CPU with the backend,
and the rules of suites/test_vhost_user.py, offline and on faked live facts. No daemon needed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.facts.guestmap import (
    DiskRef,
    GuestDisk,
    Unmapped,
    map_disks,
    parse_probe,
)
from pytest_kvmio.facts.host import HostFacts, host_script, parse_host_output
from pytest_kvmio.facts.hostcpu import CpuSample, QemuCpu, parse_sample, sample_script
from pytest_kvmio.model.domain import parse_domain
from pytest_kvmio.model.vhost import (
    BackendProcess,
    VhostBackend,
    parse_backend_lines,
    parse_export,
    qsd_exports,
)
from tests.conftest import SUITES, verdicts_of

SOCK = "/run/spdk/vhost.0"
DOMAIN = """<domain type='kvm'>
  <name>spdk01</name>
  <memory unit='GiB'>4</memory>
  {backing}
  <vcpu placement='static'>2</vcpu>
  {numa}
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='3' model='pcie-root-port'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x2'/>
    </controller>
    <disk type='vhostuser' device='disk'>
      <driver name='qemu' type='raw' {queues}/>
      <source type='unix' path='{sock}'>{reconnect}</source>
      <target dev='vdb' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
    </disk>
  </devices>
</domain>
"""
MEMFD = "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
RECONNECT = "<reconnect enabled='yes' timeout='10'/>"


def domain_xml(backing: str = MEMFD, reconnect: str = RECONNECT, queues: str = "queues='2'", numa: str = "") -> str:
    return DOMAIN.format(backing=backing, reconnect=reconnect, queues=queues, numa=numa, sock=SOCK)


def vhost_disk(**kw: str) -> Any:
    return parse_domain(domain_xml(**kw), source="t.xml", host="hv01").disks[0]


# --- the model ----------------------------------------------------------------------------------------------


def test_vhost_user_disk_facts_memory_reconnect_and_pci_path() -> None:
    disk = vhost_disk()
    assert disk.is_vhost_user and not disk.in_block_layer
    assert disk.reconnects and disk.reconnect_timeout == 10
    assert disk.pci_path == ((2, 2), (0, 0))  # root port 00:02.2, then slot 0 function 0 behind it
    assert disk.domain.shared_memory() == (True, "<memoryBacking><access mode='shared'/>")
    facts = disk.facts()
    assert facts["socket"] == SOCK and facts["reconnect"] == {"enabled": True, "timeout": 10}
    assert facts["memory"]["source"] == "memfd"


@pytest.mark.parametrize(
    ("backing", "numa", "shared"),
    [
        ("", "", False),
        ("<memoryBacking><access mode='private'/></memoryBacking>", "", False),
        ("", "<cpu><numa><cell id='0' cpus='0-1' memory='4' unit='GiB' memAccess='shared'/></numa></cpu>", True),
        # a cell without memAccess takes the domain's access: shared here, unset (private) below
        (MEMFD, "<cpu><numa><cell id='0' cpus='0-1' memory='4' unit='GiB'/></numa></cpu>", True),
        ("", "<cpu><numa><cell id='0' cpus='0-1' memory='4' unit='GiB'/></numa></cpu>", False),
    ],
)
def test_shared_memory_is_decided_as_libvirt_decides_it(backing: str, numa: str, shared: bool) -> None:
    assert vhost_disk(backing=backing, numa=numa).domain.shared_memory()[0] is shared


def test_reconnect_absent_or_disabled_does_not_reconnect() -> None:
    assert not vhost_disk(reconnect="").reconnects
    assert not vhost_disk(reconnect="<reconnect enabled='no'/>").reconnects


# --- the backend: qemu-storage-daemon's command line, the host script's output ------------------------------


def test_qsd_exports_in_keyval_and_json_syntax() -> None:
    argv = ("qemu-storage-daemon", "--blockdev", "driver=file,node-name=f,filename=/img,,1",
            "--export", f"type=vhost-user-blk,id=e0,node-name=r,addr.type=unix,addr.path={SOCK},num-queues=4",
            '--export={"type": "vhost-user-blk", "id": "e1", "addr": {"type": "unix", "path": "/x.sock"}}')
    first, second = qsd_exports(argv)
    assert first["num-queues"] == "4" and first["addr.path"] == SOCK
    assert second["addr.path"] == "/x.sock" and "num-queues" not in second
    assert parse_export("a=b,,c,d=e") == {"a": "b,c", "d": "e"}


def test_backend_queue_count_from_the_command_line_or_unknown() -> None:
    qsd = BackendProcess(42, "qemu-storage-d", "/usr/bin/qemu-storage-daemon", (
        "qemu-storage-daemon", "--export", f"type=vhost-user-blk,id=e0,addr.type=unix,addr.path={SOCK}"))
    assert VhostBackend(SOCK, True, listeners=(qsd,)).queues() == (1, "qemu-storage-daemon pid 42: export e0 sets no num-queues (default 1)")
    other = VhostBackend("/other.sock", True, listeners=(qsd,)).queues()
    assert other[0] is None and "no --export" in other[1]
    spdk = BackendProcess(7, "reactor_0", "/opt/spdk/build/bin/spdk_tgt")
    assert spdk.is_spdk and VhostBackend(SOCK, True, listeners=(spdk,)).queues()[0] is None
    assert VhostBackend(SOCK, False).queues() == (None, "no process serves the socket")


def test_host_script_finds_the_process_listening_on_a_socket(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "vhost.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        out = subprocess.run(["sh", "-c", host_script([], [str(path), str(tmp_path / "gone.sock")])],
                             capture_output=True, text=True, timeout=120, check=False).stdout
    facts = HostFacts("local")
    parse_host_output(facts, out)
    served, gone = facts.vhost_backends[str(path)], facts.vhost_backends[str(tmp_path / "gone.sock")]
    assert served.exists and served.owner and not gone.exists and gone.serving is None
    import os

    if os.geteuid() == 0:  # only root sees every process's fds; this test's own process is always visible
        assert served.serving is not None and served.serving.pid == os.getpid(), served


def test_backend_lines_read_as_non_root_say_so() -> None:
    backend = parse_backend_lines(SOCK, ["vhost-socket=root:root 755", "vhost-connections=1"], uid=1000)
    assert backend.exists and backend.serving is None and backend.unreadable and "uid 1000" in backend.unreadable
    lines = ["vhost-pid=9 qemu-storage-d", "vhost-exe=9 /usr/bin/qemu-storage-daemon",
             "vhost-cmdline=9 qemu-storage-daemon\x1f--export\x1ftype=vhost-user-blk,addr.path=/s,num-queues=2"]
    found = parse_backend_lines("/s", lines, uid=0)
    assert found.serving is not None and found.serving.is_qemu_storage_daemon and found.queues()[0] == 2


# --- the guest: a disk without <serial> found by its PCI address -------------------------------------------

PROBE = """\
dev=vda
path=/sys/devices/pci0000:00/0000:00:02.1/0000:02:00.0/virtio2/block/vda
serial=kvmio-vhost-virtio
mq=2
dev=vdb
path=/sys/devices/pci0000:00/0000:00:02.2/0000:03:00.0/virtio3/block/vdb
serial=
mq=2
dev=vdc
path=/sys/devices/pci0000:00/0000:00:02.3/0000:04:00.0/virtio4/block/vdc
mq=1
"""


def test_a_vhost_user_disk_is_found_by_its_pci_path() -> None:
    disk = vhost_disk()
    m = map_disks(parse_probe(PROBE), [disk])
    assert isinstance(m["vdb"], GuestDisk) and m["vdb"].device == "vdb" and m["vdb"].hw_queues == 2
    assert m["vdb"].matched_by == "PCI address (slot.function 02.2 -> 00.0)"
    # The guest's bus numbers need not equal libvirt's controller indexes: only slots and functions are compared.
    renumbered = PROBE.replace("0000:03:00.0", "0000:07:00.0")
    assert map_disks(parse_probe(renumbered), [disk])["vdb"].device == "vdb"  # type: ignore[union-attr]


def test_a_disk_without_serial_at_an_unknown_pci_path_says_why() -> None:
    m = map_disks(parse_probe(PROBE), [DiskRef("vdz", "virtio", None, None, ((2, 7), (0, 0)))])
    assert isinstance(m["vdz"], Unmapped) and "no guest virtio disk at PCI slot.function 02.7 -> 00.0" in m["vdz"].reason


# --- host CPU per I/O: the backend counted with QEMU --------------------------------------------------------


def test_the_backend_cpu_is_sampled_and_added_to_qemus() -> None:
    script = sample_script("spdk01", (4242,))
    assert "/proc/4242/stat" in script and "exit 5" in script
    out = (
        "tck=100\npid=77\nproc=77 (qemu-system-x86) S 1 77 77 0 -1 0 0 0 0 0 1000 500 0 0 20 0 5 0 1 0 0\n"
        "backend=4242 4242 (reactor_0) R 1 4242 4242 0 -1 0 0 0 0 0 300 100 0 0 20 0 5 0 1 0 0\n"
    )
    before = parse_sample(out)
    assert before.backends_s == {4242: 4.0}
    after = CpuSample(77, 16.0, {}, {4242: 7.0})
    delta = after.minus(before)
    assert (delta.qemu_s, delta.backends_s, delta.seconds) == (1.0, {4242: 3.0}, 4.0)
    with pytest.raises(Exception, match="backend pids changed"):
        CpuSample(77, 16.0, {}, {999: 1.0}).minus(before)


def test_counted_names_every_process() -> None:
    class Host:
        def run(self, command: str) -> Any:
            out = "tck=100\npid=77\nproc=77 (q) S 1 77 77 0 -1 0 0 0 0 0 1 1 0 0 20 0 5 0 1 0 0\nbackend=9 9 (qsd) S 1 9 9 0 -1 0 0 0 0 0 1 1 0 0 20 0 5 0 1 0 0\n"
            return type("R", (), {"rc": 0, "stdout": out, "stderr": ""})()

    cpu = QemuCpu(Host(), "spdk01", {9: "qemu-storage-daemon pid 9 (serves /s)"})
    cpu.sample()
    assert cpu.counted() == ["QEMU pid 77 (domain spdk01)", "qemu-storage-daemon pid 9 (serves /s)"]


# --- the rules ----------------------------------------------------------------------------------------------


def _suite() -> Any:
    spec = importlib.util.spec_from_file_location("kvmio_suite_vhost", SUITES / "test_vhost_user.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_lint_fails_private_memory_and_a_socket_without_reconnect(pytester: pytest.Pytester) -> None:
    (pytester.path / "ok.xml").write_text(domain_xml().replace("spdk01", "ok"))
    (pytester.path / "private.xml").write_text(domain_xml(backing="").replace("spdk01", "private"))
    (pytester.path / "noreconnect.xml").write_text(domain_xml(reconnect="").replace("spdk01", "noreconnect"))
    out = pytester.path / "v.json"
    pytester.runpytest_subprocess(str(SUITES), "--domain-xml", str(pytester.path), "--kvmio-json", str(out),
                                  "-p", "no:cacheprovider")
    verdicts = verdicts_of(out)
    outcome = {k: v["outcome"] for k, v in verdicts.items() if k[0].startswith("disk-vhost")}
    assert outcome == {
        ("disk-vhost-shared-memory", "offline/ok.xml:ok/vdb"): "passed",
        ("disk-vhost-reconnect", "offline/ok.xml:ok/vdb"): "passed",
        ("disk-vhost-shared-memory", "offline/private.xml:private/vdb"): "failed",
        ("disk-vhost-reconnect", "offline/private.xml:private/vdb"): "passed",
        ("disk-vhost-shared-memory", "offline/noreconnect.xml:noreconnect/vdb"): "passed",
        ("disk-vhost-reconnect", "offline/noreconnect.xml:noreconnect/vdb"): "failed",
    }
    private = verdicts[("disk-vhost-shared-memory", "offline/private.xml:private/vdb")]["message"]
    assert "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>" in private
    assert "add <reconnect enabled='yes' timeout='10'/>" in verdicts[("disk-vhost-reconnect", "offline/noreconnect.xml:noreconnect/vdb")]["message"]
    # The block-layer rules make no item for a vhost-user disk; disk-multiqueue judges it (2 queues, 2 vCPUs).
    assert not any(k[1] == "offline/ok.xml:ok/vdb" and k[0] in ("disk-iothread-assigned", "disk-cache-safe", "disk-discard-unmap")
                   for k in verdicts)
    assert verdicts[("disk-multiqueue", "offline/ok.xml:ok/vdb")]["outcome"] == "passed"


def _live(disk: Any, backend: VhostBackend | None) -> Any:
    disk.backend = backend
    return disk


QSD = BackendProcess(42, "qemu-storage-d", "/usr/bin/qemu-storage-daemon",
                     ("qemu-storage-daemon", "--export", f"type=vhost-user-blk,id=e0,addr.type=unix,addr.path={SOCK},num-queues=1"))


def test_live_rules_on_backend_facts() -> None:
    suite = _suite()
    facts: dict[str, Any] = {}
    hv = HostFacts("hv01")
    served = VhostBackend(SOCK, True, "libvirt-qemu:libvirt-qemu", "660", (QSD,), 1)
    with pytest.raises(AssertionError, match="2 queue.*backend offers 1 .*num-queues=2"):
        suite.test_vhost_user_queues_fit_what_the_backend_offers(_live(vhost_disk(), served), hv, facts)
    suite.test_vhost_user_queues_fit_what_the_backend_offers(_live(vhost_disk(queues="queues='1'"), served), hv, facts)
    suite.test_vhost_user_socket_is_served_by_a_live_process(_live(vhost_disk(), served), hv, facts)
    assert facts["backend"]["listeners"][0]["program"] == "qemu-storage-daemon"
    with pytest.raises(AssertionError, match="does not exist"):
        suite.test_vhost_user_socket_is_served_by_a_live_process(_live(vhost_disk(), VhostBackend(SOCK, False)), hv, facts)
    with pytest.raises(AssertionError, match="no process listens"):
        suite.test_vhost_user_socket_is_served_by_a_live_process(_live(vhost_disk(), VhostBackend(SOCK, True)), hv, facts)
    with pytest.raises(CouldNotJudge, match="read as root"):
        suite.test_vhost_user_socket_is_served_by_a_live_process(
            _live(vhost_disk(), VhostBackend(SOCK, True, unreadable="facts read as uid 5; read as root")), hv, facts)
    with pytest.raises(CouldNotJudge):
        suite.test_vhost_user_socket_is_served_by_a_live_process(_live(vhost_disk(), None), hv, facts)


def test_spdk_backend_needs_hugepages_live() -> None:
    suite = _suite()
    spdk = VhostBackend(SOCK, True, listeners=(BackendProcess(7, "reactor_0", "/usr/local/bin/spdk_tgt"),))
    notes: dict[str, object] = {}
    with pytest.raises(AssertionError, match="SPDK.*hugepages"):
        suite.test_vhost_user_disk_has_shared_guest_memory(_live(vhost_disk(), spdk), {}, notes.__setitem__)
    huge = "<memoryBacking><hugepages/><access mode='shared'/></memoryBacking>"
    suite.test_vhost_user_disk_has_shared_guest_memory(_live(vhost_disk(backing=huge), spdk), {}, notes.__setitem__)
    assert notes == {}
    # Shared, but neither memfd nor hugepages: passes with a note (libvirt uses a file in memory_backing_dir).
    suite.test_vhost_user_disk_has_shared_guest_memory(
        vhost_disk(backing="<memoryBacking><access mode='shared'/></memoryBacking>"), {}, notes.__setitem__)
    assert "memory_backing_dir" in str(notes["kvmio_note"])


def test_host_cpu_rows_say_which_processes_were_counted() -> None:
    from pytest_kvmio.report.cpucost import cpu_costs, format_table
    from pytest_kvmio.verdict.record import Verdict

    perf = {"profile": "randread-4k-qd1", "median": 120.0, "io_mode": "vhost-user",
            "counted": ["QEMU pid 1 (domain d)", "qemu-storage-daemon pid 2 (serves /s)"]}
    verdict = Verdict(rule="perf-host-cpu", target="hv/d/vdc", outcome="passed", message="", facts={"perf": perf})
    rows = cpu_costs([verdict])
    assert rows[0]["counted"] == perf["counted"]
    assert "qemu-storage-daemon pid 2" in "\n".join(format_table(rows))
    json.dumps(rows)


def test_an_ab_arm_on_a_vhost_user_disk_names_its_socket_not_io_or_cache() -> None:
    from pytest_kvmio.perf.ab import Arm, parse_arm
    from pytest_kvmio.report.abreport import _path

    disk = vhost_disk()
    arm = Arm("b", parse_arm("spdk01/vdb"), disk, counted=["QEMU pid 1 (domain spdk01)", "spdk_tgt pid 7 (serves /s)"])
    facts = arm.facts()
    assert (facts["device_model"], facts["io"], facts["cache"], facts["socket"]) == ("vhost-user-blk", None, None, SOCK)
    assert facts["host_cpu_counted"][1] == "spdk_tgt pid 7 (serves /s)"
    assert _path(disk) == f"vhost-user-blk on {SOCK}, bus=virtio"


def test_the_perf_suite_counts_the_processes_serving_a_vhost_user_disk_only() -> None:
    from pytest_kvmio.perf.diskfio import backend_processes
    from pytest_kvmio.plugin.perfsuite import io_path

    disk = _live(vhost_disk(), VhostBackend(SOCK, True, listeners=(QSD,)))
    assert backend_processes(disk) == {42: f"qemu-storage-daemon pid 42 (serves {SOCK})"}
    assert backend_processes(_live(vhost_disk(), None)) == {}  # unknown backend: the fio fixture notes it, no cost
    assert io_path(disk) == "vhost-user"
    plain = parse_domain(domain_xml(), source="t.xml").disks[0]
    plain.type = "file"
    assert backend_processes(plain) == {} and io_path(plain) == "threads"
