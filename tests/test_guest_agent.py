"""Unit tests of the guest agent backend and the guest disk mapping, against recorded agent replies.

tests/data/agent/*.json hold what a real qemu-ga 7.2 and libvirt 9.0 answered (each file's
"source" says how it was recorded; record.py re-records them). agent_timeout.json is the one
written from libvirt's source instead.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import libvirt
import pytest

from pytest_kvmio.facts import agent as agent_mod
from pytest_kvmio.facts import guest as g
from pytest_kvmio.facts import guest_errors as errors
from pytest_kvmio.facts.guestmap import (
    DiskRef,
    GuestDisk,
    Unmapped,
    irq_delta,
    map_disks,
    map_guest_disks,
    parse_interrupts,
    parse_probe,
    read_irq_counts,
)

DATA = Path(__file__).parent / "data" / "agent"


def _libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return exc


class ReplayAgent:
    """Answer agent commands from a recording: one queue per command, the last reply repeated."""

    def __init__(self, exchanges: list[dict[str, Any]], expect_command: str | None = None) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {}
        for ex in exchanges:
            self.queues.setdefault(ex["request"]["execute"], []).append(ex)
        self.expect_command = expect_command
        self.sent: list[tuple[dict[str, Any], int]] = []

    @classmethod
    def load(cls, name: str, **kwargs: Any) -> ReplayAgent:
        data = json.loads((DATA / f"{name}.json").read_text())
        return cls(data["exchanges"], expect_command=kwargs.get("expect_command", data["command"]))

    def __call__(self, command: str, timeout: int) -> str:
        request = json.loads(command)
        self.sent.append((request, timeout))
        execute = request["execute"]
        if execute == "guest-exec" and self.expect_command is not None:
            args = request["arguments"]
            if "kill -KILL" in args["arg"][-1]:
                return '{"return": {"pid": 1}}'
            assert args["path"] == "/bin/sh" and args["arg"] == ["-c", self.expect_command]
            assert args["capture-output"] is True
        queue = self.queues.get(execute)
        assert queue, f"no recorded reply for {execute}"
        ex = queue.pop(0) if len(queue) > 1 else queue[0]
        if "error" in ex:
            e = ex["error"]
            raise _libvirt_error(e["code"], e["domain"], e["message"])
        return str(ex["reply"])


def backend(agent: Any, **kwargs: Any) -> agent_mod.GuestAgentBackend:
    kwargs.setdefault("sleep", lambda s: None)
    return agent_mod.GuestAgentBackend("vm01", agent, **kwargs)


def host(agent: Any, **kwargs: Any) -> g.GuestHost:
    return g.GuestHost(backend(agent, **kwargs))


def scripted(*statuses: dict[str, Any], info: str | None = None) -> ReplayAgent:
    """Build an agent from guest-exec-status returns, with the recorded guest-info."""
    normal = json.loads((DATA / "normal.json").read_text())["exchanges"]
    exchanges = [normal[0], {"request": {"execute": "guest-exec"}, "reply": '{"return": {"pid": 42}}'}]
    exchanges += [{"request": {"execute": "guest-exec-status"}, "reply": json.dumps({"return": s})} for s in statuses]
    return ReplayAgent(exchanges)


# --- commands --------------------------------------------------------------------------------


def test_normal_output_is_decoded():
    agent = ReplayAgent.load("normal")
    result = host(agent).run("cat /proc/version; echo done")
    assert result.rc == 0 and result.succeeded
    assert result.stdout.startswith("Linux version ") and result.stdout.endswith("done\n")
    assert result.stderr == ""
    assert result.signal is None and not result.out_truncated
    assert [r["execute"] for r, _ in agent.sent][:3] == ["guest-info", "guest-exec", "guest-exec-status"]


def test_agent_timeout_is_passed_to_every_agent_call():
    agent = ReplayAgent.load("normal")
    host(agent, agent_timeout=7).run("cat /proc/version; echo done")
    assert {t for _, t in agent.sent} == {7}


def test_guest_info_is_asked_once():
    agent = ReplayAgent.load("normal")
    h = host(agent)
    h.run("cat /proc/version; echo done")
    h.run("cat /proc/version; echo done")
    assert [r["execute"] for r, _ in agent.sent].count("guest-info") == 1


def test_nonzero_exit_keeps_both_streams():
    result = host(ReplayAgent.load("nonzero_exit")).run("echo out; echo oops >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "oops\n")
    assert result.failed


def test_check_output_fails_on_nonzero_exit():
    with pytest.raises(AssertionError, match="Unexpected exit code 2"):
        host(ReplayAgent.load("stderr_only")).check_output("ls /nonexistent-kvmio")


def test_signal_gives_shell_style_status():
    result = host(ReplayAgent.load("signal")).run("kill -KILL $$")
    assert result.signal == 9
    assert result.rc == 128 + 9
    assert result.stdout == ""


def test_truncated_output_is_flagged_and_warned():
    with pytest.warns(errors.GuestOutputTruncated, match=r"vm01: 'head -c 17000000 /dev/zero': qemu-ga truncated stdout"):
        result = host(ReplayAgent.load("truncated")).run("head -c 17000000 /dev/zero")
    assert result.out_truncated and not result.err_truncated
    assert result.rc == 0


def test_binary_output_keeps_bytes_and_decodes_without_error():
    result = host(ReplayAgent.load("binary")).run("printf 'caf\\303\\251 \\377\\376\\000end'")
    assert result.stdout_bytes == b"caf\xc3\xa9 \xff\xfe\x00end"
    assert result.stdout.startswith("café ") and "\ufffd" in result.stdout


def test_slow_command_is_polled_until_it_exits():
    agent = ReplayAgent.load("slow")
    result = host(agent).run("sleep 2; echo late")
    assert result.stdout == "late\n"
    assert [r["execute"] for r, _ in agent.sent].count("guest-exec-status") >= 2


def test_command_timeout_names_domain_and_command_and_kills_it():
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    agent = ReplayAgent(
        [e for e in json.loads((DATA / "slow.json").read_text())["exchanges"] if "exited\": true" not in e.get("reply", "")],
        expect_command="sleep 2; echo late",
    )
    with pytest.raises(errors.GuestCommandTimeout, match=r"vm01: 'sleep 2; echo late': still running after 1 s"):
        host(agent, command_timeout=1, sleep=sleep, clock=lambda: now[0]).run("sleep 2; echo late")
    assert agent.sent[-1][0]["arguments"]["arg"][-1].endswith(agent_mod.KILL_TREE.replace("PID", "9279")[-40:])


def test_per_command_timeout_overrides_default():
    now = [0.0]
    agent = scripted({"exited": False})

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(errors.GuestCommandTimeout, match="after 0.2 s"):
        host(agent, sleep=sleep, clock=lambda: now[0]).run("true", timeout=0.2)


def test_arguments_are_quoted_for_the_guest_shell():
    agent = scripted({"exited": True, "exitcode": 0})
    agent.expect_command = "cat -- '/tmp/a b; rm -rf /'"
    host(agent).run("cat -- %s", "/tmp/a b; rm -rf /")
    assert agent.sent[1][0]["arguments"]["arg"] == ["-c", "cat -- '/tmp/a b; rm -rf /'"]


class CommandTable:
    """Answer guest-exec by command text, in the agent's wire format (recorded guest-info)."""

    def __init__(self, outputs: dict[str, tuple[int, bytes]]) -> None:
        self.outputs = outputs
        self.info = json.loads((DATA / "normal.json").read_text())["exchanges"][0]["reply"]
        self.pids: dict[int, str] = {}

    def __call__(self, command: str, timeout: int) -> str:
        request = json.loads(command)
        if request["execute"] == "guest-info":
            return str(self.info)
        if request["execute"] == "guest-exec":
            pid = len(self.pids) + 100
            self.pids[pid] = request["arguments"]["arg"][1]
            return json.dumps({"return": {"pid": pid}})
        rc, out = self.outputs.get(self.pids[request["arguments"]["pid"]], (127, b""))
        return json.dumps({"return": {"exited": True, "exitcode": rc, "out-data": base64.b64encode(out).decode()}})


def test_testinfra_file_module_works_over_the_agent():
    guest = host(CommandTable({"uname -s": (0, b"Linux\n"), "uname -m": (0, b"x86_64\n"), "cat -- /etc/hostname": (0, b"hello\n")}))
    assert guest.file("/etc/hostname").content_string == "hello\n"
    assert guest.check_output("uname -s") == "Linux"


def test_backend_identifies_itself():
    b = backend(scripted())
    assert b.get_connection_type() == "qemu-ga"
    assert b.get_hostname() == "vm01"
    assert b.get_pytest_id() == "qemu-ga://vm01"
    assert b.encoding == "utf-8"  # no python in the guest to ask


def test_exit_without_status_is_a_protocol_error():
    with pytest.raises(errors.GuestError, match="vm01: 'true': guest-exec-status: exited without exitcode or signal"):
        host(scripted({"exited": True})).run("true")


# --- unavailable guests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "recording, reason, detail",
    [
        ("agent_timeout", errors.AGENT_TIMEOUT, "Guest agent not available for now"),
        ("agent_not_connected", errors.NOT_CONNECTED, "QEMU guest agent is not connected"),
        ("agent_not_configured", errors.NOT_CONFIGURED, "QEMU guest agent is not configured"),
        ("not_running", errors.NOT_RUNNING, "domain is not running"),
        ("exec_disabled_normal", errors.EXEC_DISABLED, "guest-exec is disabled in qemu-ga 7.2"),
        ("exec_disabled_reply", errors.EXEC_DISABLED, "Command guest-exec has been disabled"),
    ],
)
def test_unavailable_guest_raises_with_reason_and_domain(recording, reason, detail):
    agent = ReplayAgent.load(recording)
    with pytest.raises(errors.GuestUnavailable) as info:
        host(agent).run(agent.expect_command)
    assert info.value.reason == reason
    assert info.value.domain == "vm01"
    assert str(info.value).startswith("vm01: ")
    assert detail in str(info.value)


def test_read_only_connection_is_a_clear_error_not_a_skip():
    agent = ReplayAgent.load("read_only_connection")
    with pytest.raises(errors.GuestReadOnlyConnection, match="vm01: 'guest-info': agent commands need a read-write libvirt connection"):
        host(agent).run("true")


def test_agent_host_needs_a_uri_with_a_name():
    with pytest.raises(ValueError, match="vm01: agent_host needs uri or conn"):
        g.agent_host("vm01")


# --- SSH transport ---------------------------------------------------------------------------


class FakeDomain:
    """The three virDomain calls guest_host makes for an SSH spec."""

    def __init__(self, addrs: dict[int, Any], active: bool = True) -> None:
        self.addrs = addrs
        self.active = active

    def name(self) -> str:
        return "vm01"

    def isActive(self) -> int:
        return int(self.active)

    def interfaceAddresses(self, source: int, flags: int = 0) -> dict[str, Any]:
        found = self.addrs.get(source)
        if isinstance(found, Exception):
            raise found
        return found or {}


LEASES = {
    "vnet0": {"hwaddr": "52:54:00:aa:bb:cc", "addrs": [{"type": 1, "addr": "fe80::1", "prefix": 64}, {"type": 0, "addr": "192.168.122.50", "prefix": 24}]}
}


def test_ssh_spec_gets_the_address_from_libvirt():
    no_agent = _libvirt_error(86, 10, "Guest agent is not responding: QEMU guest agent is not connected")
    dom = FakeDomain({libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT: no_agent, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE: LEASES})
    h = g.guest_host("ssh://root@{address}?timeout=5", dom, "qemu:///system")  # type: ignore[arg-type]
    assert h.backend.get_connection_type() == "ssh"
    assert h.backend.get_hostname() == "192.168.122.50"


def test_ssh_spec_without_address_only_substitutes_the_domain():
    h = g.guest_host("ssh://root@{domain}.lab", FakeDomain({}), None)  # type: ignore[arg-type]
    assert h.backend.get_hostname() == "vm01.lab"


def test_ssh_spec_without_any_address_is_unavailable():
    with pytest.raises(errors.GuestUnavailable, match="vm01: no guest address .*lease: no usable address"):
        g.guest_host("ssh://root@{address}", FakeDomain({}), None)  # type: ignore[arg-type]


def test_ipv6_only_address_is_bracketed():
    assert g.pick_address({"eth0": {"addrs": [{"addr": "fd00::5"}]}}) == "[fd00::5]"


# --- disk mapping ----------------------------------------------------------------------------

# What the probe prints in a lab-like guest: virtio-blk disks probed in PCI order (the XML's vdb
# is the guest's vda), a virtio-scsi disk with a serial and one without.
PROBE = """\
dev=vda
path=/sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda
serial=kvmio-raw-prealloc
sched=[none] mq-deadline
mq=2
dev=vdb
path=/sys/devices/pci0000:00/0000:00:05.0/virtio3/block/vdb
serial=kvmio-scratch-0
sched=none [mq-deadline]
mq=1
dev=sda
path=/sys/devices/pci0000:00/0000:00:06.0/virtio4/host0/target0:0:0/0:0:0:0/block/sda
vpd80=kvmio-scsi-0
sched=[none] mq-deadline
mq=4
dev=sdb
path=/sys/devices/pci0000:00/0000:00:06.0/virtio4/host0/target0:0:1/0:0:1:0/block/sdb
sched=[none] mq-deadline
mq=4
dev=vdc
path=/sys/devices/pci0000:00/0000:00:07.0/virtio5/block/vdc
serial=abcdefghijklmnopqrst
sched=[none] mq-deadline
mq=1
"""


def test_disks_are_mapped_by_serial_not_by_name():
    m = map_disks(parse_probe(PROBE), [DiskRef("vdb", "virtio", "kvmio-raw-prealloc"), DiskRef("vda", "virtio", "kvmio-scratch-0")])
    assert m["vdb"] == GuestDisk("vdb", "vda", "none", 2, "serial", "virtio2")
    assert m["vda"] == GuestDisk("vda", "vdb", "mq-deadline", 1, "serial", "virtio3")


def test_scsi_disk_by_vpd_serial_and_by_address():
    disks = [
        DiskRef("sda", "scsi", "kvmio-scsi-0", {"type": "drive", "controller": "0", "bus": "0", "target": "0", "unit": "0"}),
        DiskRef("sdb", "scsi", None, {"type": "drive", "controller": "0", "bus": "0", "target": "1", "unit": "0"}),
    ]
    m = map_disks(parse_probe(PROBE), disks)
    assert m["sda"].device == "sda" and m["sda"].matched_by == "serial"  # type: ignore[union-attr]
    assert m["sdb"] == GuestDisk("sdb", "sdb", "none", 4, "SCSI address 0:0:1:0", "virtio4")


def test_scsi_address_uses_controller_pci_address_when_given():
    disk = DiskRef("sdb", "scsi", None, {"type": "drive", "controller": "1", "bus": "0", "target": "1", "unit": "0"})
    assert map_disks(parse_probe(PROBE), [disk], {1: "0000:00:06.0"})["sdb"].device == "sdb"  # type: ignore[union-attr]
    wrong = map_disks(parse_probe(PROBE), [disk], {1: "0000:00:09.0"})["sdb"]
    assert isinstance(wrong, Unmapped) and "0000:00:09.0" in wrong.reason


def test_long_serial_matches_virtio_blk_20_bytes():
    m = map_disks(parse_probe(PROBE), [DiskRef("vdz", "virtio", "abcdefghijklmnopqrstuvwxyz")])
    assert m["vdz"].device == "vdc" and "first 20 bytes" in m["vdz"].matched_by  # type: ignore[union-attr]


def test_unmapped_disks_say_why():
    m = map_disks(
        parse_probe(PROBE),
        [DiskRef("vdx", "virtio", "missing-serial"), DiskRef("vdy", "virtio", None), DiskRef("hda", "sata", None)],
    )
    assert isinstance(m["vdx"], Unmapped) and "no guest block device with serial 'missing-serial'" in m["vdx"].reason
    assert "vda=kvmio-raw-prealloc" in m["vdx"].reason
    assert isinstance(m["vdy"], Unmapped) and "no <serial> in the domain XML" in m["vdy"].reason
    assert "bus=sata" in m["hda"].reason  # type: ignore[union-attr]


def test_duplicate_serial_is_unmapped():
    probe = PROBE.replace("serial=kvmio-scratch-0", "serial=kvmio-raw-prealloc")
    m = map_disks(parse_probe(probe), [DiskRef("vdb", "virtio", "kvmio-raw-prealloc")])
    assert isinstance(m["vdb"], Unmapped) and "several guest devices: vda, vdb" in m["vdb"].reason


def test_by_id_links_give_serials_when_sysfs_has_none():
    probe = "dev=vda\npath=/sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda\nbyid=/dev/vda virtio-disk-7\nbyid=/dev/vda1 virtio-disk-7-part1\n"
    assert map_disks(parse_probe(probe), [DiskRef("vdq", "virtio", "disk-7")])["vdq"].device == "vda"  # type: ignore[union-attr]


def test_map_guest_disks_uses_one_guest_command():
    agent = scripted({"exited": True, "exitcode": 0, "out-data": base64.b64encode(PROBE.encode()).decode()})
    m = map_guest_disks(host(agent), [DiskRef("vdb", "virtio", "kvmio-raw-prealloc")])
    assert m["vdb"].device == "vda"  # type: ignore[union-attr]
    assert [r["execute"] for r, _ in agent.sent].count("guest-exec") == 1


# --- interrupts ------------------------------------------------------------------------------

INTERRUPTS = """\
           CPU0       CPU1
  0:         38          0   IO-APIC   2-edge      timer
 24:          0          0   PCI-MSI 65536-edge      virtio2-config
 25:       1200         10   PCI-MSI 65537-edge      virtio2-req.0
 26:          5        900   PCI-MSI 65538-edge      virtio2-req.1
 27:          0          0   PCI-MSI 81920-edge      virtio3-config
 28:        777          0   PCI-MSI 81921-edge      virtio3-req.0
 29:          3          0   PCI-MSI 98304-edge      virtio4-request
NMI:          0          0   Non-maskable interrupts
ERR:          0
"""


def test_interrupts_of_one_virtio_device_per_cpu():
    snap = parse_interrupts(INTERRUPTS, "virtio2", "vda")
    assert snap.cpus == (0, 1)
    assert snap.per_irq == {"25 virtio2-req.0": (1200, 10), "26 virtio2-req.1": (5, 900)}
    assert snap.per_cpu() == {0: 1205, 1: 910}
    assert parse_interrupts(INTERRUPTS, "virtio4").per_cpu() == {0: 3, 1: 0}


def test_irq_delta_per_cpu():
    before = parse_interrupts(INTERRUPTS, "virtio2")
    after = parse_interrupts(INTERRUPTS.replace("1200", "1500").replace("900", "950"), "virtio2")
    assert irq_delta(before, after) == {0: 300, 1: 50}
    with pytest.raises(ValueError, match="different devices"):
        irq_delta(before, parse_interrupts(INTERRUPTS, "virtio3"))


def test_read_irq_counts_finds_the_virtio_index_in_the_guest():
    out = "/sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda\n---\n" + INTERRUPTS
    agent = scripted({"exited": True, "exitcode": 0, "out-data": base64.b64encode(out.encode()).decode()})
    agent.expect_command = "readlink -f /sys/block/vda; echo ---; cat /proc/interrupts"
    assert read_irq_counts(host(agent), "vda").per_cpu() == {0: 1205, 1: 910}


# --- replies recorded from a lab guest through libvirt ---------------------------------------


@pytest.mark.parametrize("source", ["", "lab_"])
def test_same_results_from_host_agent_and_lab_guest(source):
    binary = host(ReplayAgent.load(f"{source}binary")).run("printf 'caf\\303\\251 \\377\\376\\000end'")
    assert binary.stdout_bytes == b"caf\xc3\xa9 \xff\xfe\x00end"
    failed = host(ReplayAgent.load(f"{source}nonzero_exit")).run("echo out; echo oops >&2; exit 3")
    assert (failed.rc, failed.stdout, failed.stderr) == (3, "out\n", "oops\n")
    killed = host(ReplayAgent.load(f"{source}signal")).run("kill -KILL $$")
    assert (killed.rc, killed.signal) == (137, 9)
    assert host(ReplayAgent.load(f"{source}slow")).run("sleep 2; echo late").stdout == "late\n"


def test_output_over_libvirts_message_limit_is_a_clear_error():
    agent = ReplayAgent.load("lab_too_large")
    with pytest.raises(errors.GuestOutputTooLarge, match=r"vm01: 'head -c 3200000 /dev/zero': output too large for libvirt's RPC limit"):
        host(agent).run("head -c 3200000 /dev/zero")


# --- probe and /proc/interrupts as printed by kvmio-lab-good (q35, root ports, virtio-scsi) ----

LAB_GOOD_DISKS = [
    DiskRef("vdb", "virtio", "kvmio-good-data"),
    DiskRef("vdc", "virtio", "kvmio-scratch-0"),
    DiskRef("sda", "scsi", "kvmio-good-scsi", {"type": "drive", "controller": "0", "bus": "0", "target": "0", "unit": "0"}),
]
LAB_SCSI_CONTROLLER = {"type": "pci", "domain": "0x0000", "bus": "0x01", "slot": "0x00", "function": "0x0"}


def test_lab_probe_maps_by_serial():
    m = map_disks(parse_probe((DATA / "probe-kvmio-lab-good.txt").read_text()), LAB_GOOD_DISKS)
    assert m == {
        "vdb": GuestDisk("vdb", "vda", "none", 2, "serial", "virtio2"),
        "vdc": GuestDisk("vdc", "vdb", "none", 2, "serial", "virtio3"),
        "sda": GuestDisk("sda", "sda", "none", 2, "serial", "virtio0"),
    }


def test_lab_probe_maps_scsi_by_address_behind_a_root_port():
    probe = (DATA / "probe-kvmio-lab-good.txt").read_text().replace("vpd80=kvmio-good-scsi\n", "")
    sda = DiskRef("sda", "scsi", None, LAB_GOOD_DISKS[2].address)
    devices = parse_probe(probe)
    assert map_disks(devices, [sda])["sda"].matched_by == "SCSI address 0:0:0:0"  # type: ignore[union-attr]
    assert map_disks(devices, [sda], {0: LAB_SCSI_CONTROLLER})["sda"].device == "sda"  # type: ignore[union-attr]


def test_lab_probe_with_mq_deadline_seeded():
    m = map_disks(
        parse_probe((DATA / "probe-kvmio-lab-legacy.txt").read_text()),
        [DiskRef("vdb", "virtio", "kvmio-legacy-native"), DiskRef("vdc", "virtio", "kvmio-scratch-0")],
    )
    assert m["vdb"].device == "vda" and m["vdb"].scheduler == "mq-deadline"  # type: ignore[union-attr]
    assert m["vdc"].scheduler == "none"  # type: ignore[union-attr]


def test_lab_interrupts_blk_and_scsi_request_queues():
    text = (DATA / "interrupts-kvmio-lab-good.txt").read_text()
    blk = parse_interrupts(text, "virtio2")
    assert list(blk.per_irq) == ["31 virtio2-req.0", "32 virtio2-req.1"]
    scsi = parse_interrupts(text, "virtio0")
    assert list(scsi.per_irq) == ["41 virtio0-request", "42 virtio0-request"]  # control/event excluded
    assert parse_interrupts(text, "virtio1").per_irq == {}  # the console's shared vector is not a disk


def test_ssh_style_guest_commands_are_bounded_and_quoted() -> None:
    import testinfra.backend

    from pytest_kvmio.facts.guest import TimedHost

    # local:// stands in for the SSH backend: both run a shell command line without a timeout of their own.
    host = TimedHost(testinfra.backend.get_backend("local://"), command_timeout=1)
    hung = host.run("echo %s; sleep 30", "it's here")
    assert hung.rc == 137 and hung.stdout == "it's here\n"  # killed after 1 s, output kept
    assert host.run("sleep 2; echo done", timeout=10).stdout == "done\n"  # per-command bound
    assert host.file("/proc/version").exists  # testinfra modules go through the same run()
