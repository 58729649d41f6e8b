"""Runtime facts (issue 20) without a daemon: QEMU command lines recorded from libvirt's own tests and from the lab,
thread lines as the host command prints them, and the checks of the runtime rules on them."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import pytest

from pytest_kvmio.facts.host import HostFacts, host_script, parse_host_output
from pytest_kvmio.model.checks import pending_changes, runtime_pinning, runtime_settings
from pytest_kvmio.model.domain import parse_domain
from pytest_kvmio.model.redact import MASK
from pytest_kvmio.model.runtime import QemuRuntime, QemuThread, disk_settings, mask_secrets, parse_cmdline

DATA = Path(__file__).parent / "data" / "qemu-cmdlines"


def _args(name: str) -> list[str]:
    """Return the QEMU arguments of one of libvirt's `.args` test files (environment assignments dropped)."""
    words = shlex.split((DATA / name).read_text().replace("\\\n", " "))
    return mask_secrets(words[words.index(next(w for w in words if w.startswith("/usr/bin/qemu"))) + 1:])


def test_cache_modes_come_from_direct_no_flush_and_the_devices_write_cache() -> None:
    # libvirt's disk-cache.xml: hda none... in order: ide0-0-0 writeback-ish? read the switches, not the file's names
    found = {alias: s.cache for alias, s in disk_settings(_args("disk-cache.x86_64-latest.args")).items()}
    assert found == {
        "ide0-0-0": "writeback",       # direct off, no-flush off, write-cache on
        "ide0-0-1": "unsafe",          # no-flush on
        "scsi0-0-0": "none",           # direct on, write-cache on
        "virtio-disk0": "writethrough",  # direct off, write-cache off
        "usb-disk1": "directsync",     # direct on, write-cache off
    }


def test_qemu_9_queue_to_iothread_mapping_and_storage_only_nodes_are_read() -> None:
    found = disk_settings(_args("iothreads-disk.x86_64-latest.args"))
    assert found["virtio-disk1"].iothread == "iothread1"
    assert found["virtio-disk2"].num_queues == 4
    assert dict(found["virtio-disk2"].vq_mapping) == {"iothread2": (1, 3), "iothread3": (0, 2)}
    assert dict(found["virtio-disk3"].vq_mapping) == {"iothread4": (), "iothread1": ()}
    # one node (no format layer): no aio given is QEMU's threads, no discard is ignore
    assert (found["virtio-disk1"].effective_aio, found["virtio-disk1"].effective_discard) == ("threads", "ignore")


def test_secret_data_and_iv_are_masked_and_the_rbd_disks_still_read() -> None:
    args = _args("disk-network-rbd.x86_64-latest.args")
    text = " ".join(args)
    assert "9eao5F8qtkGt" not in text and "AAECAwQFBgcICQoLDA0ODw==" not in text
    secret = json.loads(next(a for a in args if "libvirt-2-storage-auth-secret0" in a and "qom-type" in a))
    assert secret["data"] == MASK and secret["iv"] == MASK and secret["keyid"] == "masterKey0"
    assert len(disk_settings(args)) == 6
    assert mask_secrets(["-object", "secret,id=s0,data=hunter2,format=base64"]) == [
        "-object", f"secret,id=s0,data={MASK},format=base64"]


def test_old_drive_syntax_is_read_too() -> None:
    args = ["-drive", "file=/img/a.qcow2,format=qcow2,if=none,id=drive-virtio-disk0,cache=none,aio=native,discard=unmap",
            "-device", "virtio-blk-pci,scsi=off,bus=pci.0,addr=0x4,drive=drive-virtio-disk0,id=virtio-disk0"]
    found = disk_settings(args)["virtio-disk0"]
    assert (found.cache, found.effective_aio, found.effective_discard, found.syntax) == ("none", "native", "unmap", "-drive")


def test_the_labs_recorded_command_line() -> None:
    found = disk_settings(parse_cmdline((DATA / "lab-kvmio-lab-pinning.cmdline").read_bytes()))
    assert {a: (s.effective_aio, s.cache, s.effective_discard) for a, s in found.items()} == {
        "virtio-disk1": ("io_uring", "writeback", "unmap"),
        "virtio-disk2": ("io_uring", "none", "unmap"),
        "scsi0-0-0-0": ("threads", "none", "unmap"),
    }


# --- the host command's runtime part -------------------------------------------------------------------------------


def test_the_host_command_reads_each_running_domain_in_one_script_and_its_output_parses() -> None:
    script = host_script([], [], ["vm one", "vm2"])
    assert script.count("kvmio_qemu ") == 2 and "'vm one'" in script
    cmdline = base64.b64encode(b"qemu-system-x86_64\0-name\0guest=vm one,debug-threads=on\0").decode()
    output = "\n".join([
        "kernel=6.1.0", "qemu-begin=0", "qemu-pid=4242",
        "qemu-thread=4242 0-3 0-3 qemu-system-x86\t/machine/vm/emulator",
        "qemu-thread=4250 2 2 CPU 0/KVM\t/machine/vm/vcpu0",
        "qemu-thread=4251 0 0 IO iothread1\t-",
        f"qemu-cmdline={cmdline}", "qemu-end",
        "qemu-begin=1", "qemu-error=no QEMU process found", "qemu-end",
    ])
    facts = HostFacts(name="hv")
    parse_host_output(facts, output, ["vm one", "vm2"])
    one = facts.runtime["vm one"]
    assert one.pid == 4242 and one.vcpu_threads()[0].affinity == {2} and one.iothread_threads()[1].cgroup is None
    assert one.vcpu_threads()[0].cgroup == "/machine/vm/vcpu0" and one.args[-1] == "guest=vm one,debug-threads=on"
    assert facts.runtime["vm2"].error == "no QEMU process found"
    assert str(facts.kernel) == "6.1.0"


# --- the checks -------------------------------------------------------------------------------------------------------

XML = """<domain type='kvm'><name>vm</name><vcpu>2</vcpu><iothreads>2</iothreads>
<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/><iothreadpin iothread='1' cpuset='2'/></cputune>
<os><type machine='pc-q35-7.2'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' io='native' discard='unmap' iothread='1'/>
<source file='/img/a.raw'/><target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source file='/img/b.raw'/><target dev='vdb' bus='virtio'/><alias name='virtio-disk1'/></disk>
</devices></domain>"""


def _thread(tid: int, name: str, cpus: set[int], cgroup: set[int] | None = None) -> QemuThread:
    return QemuThread(tid, name, frozenset(cpus), frozenset(cgroup) if cgroup is not None else None)


def _domain(threads: list[QemuThread], args: list[str] | None = None):
    dom = parse_domain(XML, source="test")
    dom.running = True
    dom.runtime = QemuRuntime(pid=1, threads=threads, args=args or [], disks=disk_settings(args or []))
    return dom


GOOD_THREADS = [_thread(11, "CPU 0/KVM", {0}, {0}), _thread(12, "CPU 1/KVM", {1}, {1}),
                _thread(13, "IO iothread1", {2}, {2}), _thread(14, "IO iothread2", {0, 1, 2, 3}, {0, 1, 2, 3})]


def test_threads_where_the_xml_pins_them_pass() -> None:
    found = runtime_pinning(_domain(GOOD_THREADS))
    assert found.holds is True and found.compared == 4 and not found.drifts


def test_a_pinned_thread_moved_or_clipped_by_its_cgroup_fails_naming_thread_declared_and_actual() -> None:
    moved = [*GOOD_THREADS[:2], _thread(13, "IO iothread1", {3}, {2, 3}), GOOD_THREADS[3]]
    found = runtime_pinning(_domain(moved))
    assert found.holds is False
    [drift] = found.drifts
    assert "IOThread 1" in drift.thread and "13" in drift.thread
    assert (drift.declared, drift.actual) == ({2}, {3})
    clipped = [_thread(11, "CPU 0/KVM", {0, 1}, {1}), *GOOD_THREADS[1:]]  # a taskset-free cgroup narrowing
    assert [d.actual for d in runtime_pinning(_domain(clipped)).drifts] == [frozenset({1})]


def test_an_unpinned_thread_narrowed_below_its_cgroup_is_a_pin_nobody_declared() -> None:
    narrowed = [*GOOD_THREADS[:3], _thread(14, "IO iothread2", {1}, {0, 1, 2, 3})]
    [drift] = runtime_pinning(_domain(narrowed)).drifts
    assert drift.declared_by.startswith("unpinned") and drift.actual == {1}


def test_single_threaded_tcg_compares_no_vcpu_and_says_so() -> None:
    found = runtime_pinning(_domain([_thread(10, "ALL CPUs/TCG", {0, 1}), *GOOD_THREADS[2:]]))
    assert found.compared == 2 and any("single-threaded TCG" in u for u in found.unknown)


def test_disk_settings_equal_to_the_xml_pass_and_a_difference_fails() -> None:
    storage = '{"driver":"file","filename":"/img/a.raw","aio":"native","node-name":"n1","cache":{"direct":true},"discard":"unmap"}'
    args = ["-blockdev", storage, "-device", '{"driver":"virtio-blk-pci","drive":"n1","id":"virtio-disk0"}']
    dom = _domain(GOOD_THREADS, args)
    assert runtime_settings(dom.disks[0]).holds is True
    other = args.copy()
    other[1] = storage.replace('"aio":"native"', '"aio":"threads"').replace('"direct":true', '"direct":false')
    found = runtime_settings(_domain(GOOD_THREADS, other).disks[0])
    assert found.holds is False
    assert found.differences == [("aio", "native", "threads"), ("cache", "none", "writeback")]


def test_a_disk_not_on_the_command_line_is_not_judged_from_it() -> None:
    dom = _domain(GOOD_THREADS, [])
    found = runtime_settings(dom.disks[1])
    assert found.holds is None and "hotplugged" in (found.unknown or "")
    moved = ["-blockdev", '{"driver":"file","filename":"/img/old.raw","node-name":"n1"}',
             "-device", '{"driver":"virtio-blk-pci","drive":"n1","id":"virtio-disk0"}']
    found = runtime_settings(_domain(GOOD_THREADS, moved).disks[0])
    assert found.holds is None and "changed after start" in (found.unknown or "")


def test_pending_changes_list_what_differs_between_running_and_persistent() -> None:
    dom = _domain(GOOD_THREADS)
    assert pending_changes(dom) is None  # no persistent definition read
    dom.persistent = parse_domain(XML.replace("io='native'", "io='io_uring'").replace("cpuset='2'", "cpuset='3'"),
                                  source="test (persistent)")
    assert pending_changes(dom) == [("<iothreadpin iothread='1'>", "2", "3"), ("disk vda io", "native", "io_uring")]
    dom.persistent = parse_domain(XML, source="test (persistent)")
    assert pending_changes(dom) == []


@pytest.mark.parametrize("line", ["", "x", "12 0-1 - "])
def test_malformed_thread_lines_are_dropped(line: str) -> None:
    facts = HostFacts(name="hv")
    parse_host_output(facts, f"qemu-begin=0\nqemu-pid=1\nqemu-thread={line}\nqemu-end\n", ["vm"])
    assert facts.runtime["vm"].threads == []
