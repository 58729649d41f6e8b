"""Host facts saved with `kvmio facts save` and replayed with `--host-facts FILE` (pytest, kvmio lint, kvmio fix).

Unit tests: libvirt's test:///default driver and recorded facts, no daemon. The lab's own round trip (live verdicts
equal replayed ones) is in tests/test_host_facts_lab.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pytest_kvmio.cli import main
from pytest_kvmio.errors import InputError
from pytest_kvmio.facts.connection import parse_host_spec
from pytest_kvmio.facts.host import Assumptions, BlockDevice, HostFacts, apply_host_facts
from pytest_kvmio.facts.saved import as_target, export_options, facts_document, facts_json, load_facts
from pytest_kvmio.facts.targets import load_host
from pytest_kvmio.model.domain import ImageFacts, default_queues, parse_domain
from pytest_kvmio.model.hostcpus import HostCpus
from pytest_kvmio.model.machine import HostMachines, host_machines_from_capabilities
from pytest_kvmio.model.versions import Version
from pytest_kvmio.model.vhost import BackendProcess, VhostBackend
from tests.conftest import SUITES, verdicts_of

WHEN = datetime(2026, 12, 4, 23, 0, tzinfo=timezone.utc)
SPARSE = "/var/lib/libvirt/images/thin.qcow2"
FULL = "/var/lib/libvirt/images/full.raw"
SOCKET = "/run/vhost/vm-vdc.sock"
SECRET = "hunter2-very-secret"
QSD_EXPORT = f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={SOCKET},writable=on,num-queues=2"

TEMPLATE = """<domain type='kvm'>
  <name>{name}</name>
  <vcpu placement='static'>4</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>
      <source file='{image}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def recorded_facts(name: str = "hv01", q35: str = "pc-q35-7.2") -> HostFacts:
    """Facts as a RHEL-like or Debian host would give them, with every kind of fact the file carries."""
    machines = HostMachines(("pc-i440fx-7.2", "pc", "pc-q35-5.1", q35, "q35"),
                            {"pc": "pc-i440fx-7.2", "q35": q35}, "pc-i440fx-7.2")
    backend = VhostBackend(SOCKET, True, "libvirt-qemu:kvm", "660", (
        BackendProcess(4242, "qemu-storage-da", "/usr/bin/qemu-storage-daemon", (
            "qemu-storage-daemon", "--object", f"secret,id=sec0,data={SECRET}",
            "--blockdev", f"driver=rbd,pool=p,image=i,key-secret=sec0,password={SECRET}",
            "--export", QSD_EXPORT)),), connections=1)
    return HostFacts(
        name=name, kernel=Version.parse("6.1.0-28-amd64"), qemu=Version.from_libvirt(7_002_000),
        libvirt=Version.from_libvirt(9_000_000), hypervisor_type="QEMU", io_uring_disabled=0, cpu_model="AMD EPYC",
        cpu_count=8, host_cpus=HostCpus({0: frozenset(range(4)), 1: frozenset(range(4, 8))}), arch="x86_64",
        machine_types={"x86_64": machines},
        block_devices=[BlockDevice("nvme0n1", False, "none", ("none", "mq-deadline")),
                       BlockDevice("sda", True, "mq-deadline", ("mq-deadline", "none"))],
        images={SPARSE: ImageFacts(SPARSE, "qcow2", 10 << 30, 196 << 10),
                FULL: ImageFacts(FULL, "raw", 1 << 30, 1 << 30),
                "/dev/mapper/lun": ImageFacts("/dev/mapper/lun", "raw", None, None, is_block_device=True),
                "/gone.img": ImageFacts("/gone.img", None, None, None, error="no such file on the host")},
        vhost_backends={SOCKET: backend},
        libvirt_uri=f"qemu+ssh://root:{SECRET}@hv01/system?keyfile=/k&password={SECRET}",
        host_uuid="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    )


def save(path: Path, facts: HostFacts, name: str | None = None) -> Path:
    path.write_text(facts_json(facts, name=name, saved_at=WHEN))
    return path


# --- the file: round trip, secrets ------------------------------------------------------------------------------


def test_recorded_facts_round_trip(tmp_path: Path) -> None:
    facts = recorded_facts()
    saved = load_facts(save(tmp_path / "hv01.json", facts))
    assert saved.host == "hv01" and saved.saved_at == "2026-12-04T23:00:00Z"
    loaded = saved.facts
    assert loaded.offline and loaded.facts_file == str(tmp_path / "hv01.json") and loaded.saved_from == "hv01"
    for what in ("kernel", "qemu", "libvirt", "hypervisor_type", "io_uring_disabled", "cpu_model", "cpu_count",
                 "host_cpus", "arch", "machine_types", "block_devices", "images", "host_uuid"):
        assert getattr(loaded, what) == getattr(facts, what), what
    assert str(loaded.kernel) == "6.1.0-28-amd64"
    assert loaded.io_uring_support() == facts.io_uring_support()
    # Saved again, the same document: nothing is lost or changed on the way.
    assert facts_document(loaded, saved_at=WHEN) == facts_document(facts, saved_at=WHEN)
    # The vhost-user backend keeps what its queue count is read from.
    backend = loaded.vhost_backends[SOCKET]
    assert backend.queues() == facts.vhost_backends[SOCKET].queues() == (2, "qemu-storage-daemon pid 4242: export e0 num-queues=2")
    assert backend.serving is not None and backend.serving.is_qemu_storage_daemon


def test_secrets_stay_out_of_the_file(tmp_path: Path) -> None:
    text = facts_json(recorded_facts(), saved_at=WHEN)
    assert SECRET not in text
    document = json.loads(text)
    assert document["libvirt_uri"] == "qemu+ssh://root:***@hv01/system?keyfile=/k&password=***"
    assert document["vhost_backends"][SOCKET]["listeners"][0]["exports"] == ["--export", QSD_EXPORT]
    assert export_options(("qsd", f"--export=type=nbd,addr.path=/s?password={SECRET}")) == \
        ["--export", "type=nbd,addr.path=/s?password=***"]


def test_facts_of_the_test_driver_round_trip(tmp_path: Path) -> None:
    host = load_host(parse_host_spec("local"), "test:///default", lambda line: None)
    assert host.error is None, host.error
    document = facts_document(host.facts, saved_at=WHEN)
    assert document["host"] == "local" and document["hypervisor_type"] == "TEST"
    assert document["cpu"]["numa_nodes"] == {"0": "0-7", "1": "8-15"}  # the test driver's two NUMA cells
    assert document["block_devices"], "this machine's block devices were read"
    loaded = load_facts(save(tmp_path / "local.json", host.facts)).facts
    assert facts_document(loaded, saved_at=WHEN) == document
    assert loaded.host_cpus == host.facts.host_cpus and loaded.libvirt == host.facts.libvirt


def test_machine_types_and_aliases_come_from_the_capabilities() -> None:
    caps = """<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
      <guest><os_type>hvm</os_type><arch name='x86_64'>
        <machine maxCpus='255'>pc-i440fx-rhel7.6.0</machine>
        <machine canonical='pc-i440fx-rhel7.6.0' maxCpus='240'>pc</machine>
        <machine maxCpus='710'>pc-q35-rhel9.2.0</machine>
        <machine canonical='pc-q35-rhel9.2.0' maxCpus='710'>q35</machine>
        <domain type='qemu'/><domain type='kvm'/>
      </arch></guest></capabilities>"""
    machines = host_machines_from_capabilities(caps)["x86_64"]
    assert machines.default == "pc-i440fx-rhel7.6.0"
    assert machines.canonical("q35") == "pc-q35-rhel9.2.0"
    assert machines.canonical(None) == "pc-i440fx-rhel7.6.0"  # no machine attribute: libvirt's default
    assert machines.canonical("pc-q35-rhel9.2.0") is None  # already versioned: nothing to resolve
    assert host_machines_from_capabilities("<not xml") == {}


def test_an_alias_is_judged_as_the_machine_type_the_host_resolves_it_to() -> None:
    dom = parse_domain(TEMPLATE.format(name="vm", machine="q35", image=FULL), source="t.xml")
    disk = dom.disks[0]
    assert default_queues(disk, Version.parse("7.2"))[0] == 4  # unversioned: QEMU's version decides
    apply_host_facts(recorded_facts(q35="pc-q35-5.1"), [dom])
    queues, why = default_queues(disk, Version.parse("7.2"))
    assert queues == 1 and "machine type q35 (pc-q35-5.1 on the host)" in why
    assert disk.image is not None and disk.image.sparse is False
    # No machine attribute and no arch: the host's arch and its default machine type, as libvirt fills them in.
    bare = parse_domain(TEMPLATE.format(name="vm", machine="x", image=FULL).replace(" arch='x86_64' machine='x'", ""),
                        source="t.xml")
    assert bare.machine is None and bare.arch is None
    apply_host_facts(recorded_facts(), [bare])
    assert bare.machine_type.name == "pc-i440fx-7.2"
    assert bare.machine_type.label == "machine type default (no machine attribute) (pc-i440fx-7.2 on the host)"
    # A versioned name is what it says, whatever the host's aliases.
    pinned = parse_domain(TEMPLATE.format(name="vm", machine="pc-q35-4.2", image=FULL), source="t.xml")
    apply_host_facts(recorded_facts(), [pinned])
    assert pinned.machine_on_host is None and pinned.machine_type.label == "machine type pc-q35-4.2"


# --- malformed files: clear errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "says"), [
    ("{nope", ["not JSON (Expecting property name", "line 1, column 2", "kvmio facts save"]),
    ("[1, 2]", ["format: expected 'kvmio-host-facts', got 'list'"]),
    ('{"format": "something-else", "version": 1}', ["format: expected 'kvmio-host-facts', got 'something-else'"]),
    ('{"format": "kvmio-host-facts", "version": 2, "host": "hv01"}',
     ["version: this kvmio reads host facts files of version 1, the file is of version 2", "save the facts again"]),
    ('{"format": "kvmio-host-facts", "version": 1}', ["(top level): 'host' is a required property"]),
    ('{"format": "kvmio-host-facts", "version": 1, "host": "h", "cpu": {"count": "two"}}',
     ["cpu.count: 'two' is not of type 'integer', 'null'", "host-facts.schema.json"]),
    ('{"format": "kvmio-host-facts", "version": 1, "host": "h", "images": {"/i": {"actual_size": -1}}}',
     ["images./i.actual_size: -1 is less than the minimum of 0"]),
    ('{"format": "kvmio-host-facts", "version": 1, "host": "h", "kernal": "6.1"}',
     ["(top level): Additional properties are not allowed ('kernal' was unexpected)"]),
    ('{"format": "kvmio-host-facts", "version": 1, "host": "h", "cpu": {"numa_nodes": {"0": "7-2"}}}',
     ["cpu.numa_nodes.0: '7-2' in cpuset '7-2' is not a CPU number"]),
])
def test_a_malformed_file_names_the_file_and_the_field(tmp_path: Path, content: str, says: list[str]) -> None:
    path = tmp_path / "hv01.json"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        load_facts(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for text in says:
        assert text in message


def test_an_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.json: cannot read: No such file or directory"):
        load_facts(tmp_path / "missing.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="binary.json: not UTF-8 text"):
        load_facts(tmp_path / "binary.json")


# --- kvmio facts save ------------------------------------------------------------------------------------------


def test_kvmio_facts_save_writes_a_file_that_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "facts" / "local.json"
    assert main(["facts", "save", "--host", "local", "--libvirt-uri", "test:///default", "--out", str(out)]) == 0
    assert "saved the facts of local" in capsys.readouterr().err
    saved = load_facts(out)
    assert saved.host == "local" and saved.facts.libvirt is not None
    assert main(["facts", "save", "--libvirt-uri", "test:///default", "--name", "hv07"]) == 0
    printed = json.loads(capsys.readouterr().out)  # without --out: standard output
    assert printed["host"] == "hv07" and printed["format"] == "kvmio-host-facts"


def test_kvmio_facts_save_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["facts", "save", "--libvirt-uri", "test:///default", "--out", str(tmp_path)]) == 4
    assert "is a directory" in capsys.readouterr().err
    assert main(["facts", "save", "--host", "hv01,hv02"]) == 4
    assert "takes one" in capsys.readouterr().err
    assert main(["facts", "save", "--libvirt-uri", "test:///nowhere/such.xml"]) == 1
    assert "no facts saved" in capsys.readouterr().err


# --- replay: pytest, kvmio lint, kvmio fix ---------------------------------------------------------------------


def _template(directory: Path, name: str, machine: str, image: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.xml"
    path.write_text(TEMPLATE.format(name=name, machine=machine, image=image))
    return path


def test_a_template_is_judged_against_the_saved_host(pytester: pytest.Pytester) -> None:
    domains = pytester.path / "domains"
    _template(domains, "vm", "q35", SPARSE)
    facts = save(pytester.path / "hv01.json", recorded_facts(q35="pc-q35-5.1"))
    out = pytester.path / "v.json"
    result = pytester.runpytest(str(SUITES / "test_disks.py"), f"--domain-xml={domains}", f"--host-facts={facts}",
                                f"--kvmio-json={out}")
    verdicts = verdicts_of(out)
    target = "offline/vm.xml:vm/vdb"  # the offline ids, whatever the facts
    native = verdicts[("disk-native-not-sparse", target)]
    assert native["outcome"] == "failed" and "allocated 196.0 KiB of 10.0 GiB" in native["message"]
    queues = verdicts[("disk-multiqueue", target)]
    assert queues["outcome"] == "failed" and "pc-q35-5.1 on the host" in queues["message"]
    result.stdout.fnmatch_lines(["*offline lint as hv01 (*hv01.json: kernel 6.1.0-28-amd64, QEMU 7.2.0, libvirt 9.0.0)*"])
    # The same template with --assume only: allocation unknown, the alias judged by QEMU's version.
    pytester.runpytest(str(SUITES / "test_disks.py"), f"--domain-xml={domains}", "--assume=qemu=7.2",
                       f"--kvmio-json={out}")
    verdicts = verdicts_of(out)
    assert verdicts[("disk-native-not-sparse", target)]["outcome"] == "skipped"
    assert verdicts[("disk-multiqueue", target)]["outcome"] == "passed"


def test_each_host_of_several_files_judges_every_file(pytester: pytest.Pytester) -> None:
    domains = pytester.path / "domains"
    _template(domains, "vm", "q35", FULL)
    one = save(pytester.path / "hv01.json", recorded_facts(q35="pc-q35-7.2"))
    two = save(pytester.path / "hv02.json", recorded_facts(q35="pc-q35-5.1"), name="hv02")
    out = pytester.path / "v.json"
    pytester.runpytest(str(SUITES), "-m", "not perf", f"--domain-xml={domains}", f"--host-facts={one}",
                       f"--host-facts={two}", f"--kvmio-json={out}")
    verdicts = verdicts_of(out)
    assert verdicts[("disk-multiqueue", "offline@hv01/vm.xml:vm/vdb")]["outcome"] == "passed"
    assert verdicts[("disk-multiqueue", "offline@hv02/vm.xml:vm/vdb")]["outcome"] == "failed"
    assert verdicts[("host-qemu-min", "offline@hv01")]["outcome"] == "passed"
    assert not any(target.startswith("offline/") for _, target in verdicts)


@pytest.mark.parametrize(("args", "says"), [
    (["--host-facts={one}"], "--host-facts judges domain XML files against saved host facts; use it with --domain-xml"),
    (["--domain-xml={domains}", "--host-facts={one}", "--host-facts={same_host}"],
     "both hold the facts of host 'hv01'; pass one of them, or save one under another name"),
])
def test_contradicting_host_facts_are_refused(pytester: pytest.Pytester, args: list[str], says: str) -> None:
    domains = pytester.path / "domains"
    _template(domains, "vm", "q35", FULL)
    one = save(pytester.path / "hv01.json", recorded_facts())
    same_host = save(pytester.path / "hv01-again.json", recorded_facts())
    values = {"one": one, "same_host": same_host, "domains": domains}
    result = pytester.runpytest(str(SUITES / "test_host.py"), *(a.format(**values) for a in args))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()


def test_assume_overrides_the_facts_it_names(pytester: pytest.Pytester, tmp_path: Path) -> None:
    saved = load_facts(save(tmp_path / "hv01.json", recorded_facts()))
    facts = as_target(saved, "offline", Assumptions(qemu=Version.parse("4.2"), cpus=2))
    assert facts.qemu == Version.parse("4.2") and facts.kernel == saved.facts.kernel
    assert facts.host_cpus == HostCpus.flat(2) and facts.assumed == ("cpus", "qemu")
    assert saved.facts.qemu == Version.parse("7.2")  # the file's facts are not changed
    domains = pytester.path / "domains"
    _template(domains, "vm", "q35", FULL)
    out = pytester.path / "v.json"
    pytester.runpytest(str(SUITES / "test_host.py"), f"--domain-xml={domains}", f"--host-facts={tmp_path / 'hv01.json'}",
                       "--assume=qemu=4.2", f"--kvmio-json={out}")
    qemu = verdicts_of(out)[("host-qemu-min", "offline")]
    assert qemu["outcome"] == "failed" and "QEMU 4.2 (assumed with --assume) is older than 5.0" in qemu["message"]


def test_kvmio_lint_and_fix_take_host_facts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    domains = tmp_path / "domains"
    _template(domains, "vm", "q35", FULL)
    old = save(tmp_path / "old.json", recorded_facts(q35="pc-q35-5.1"))
    new = save(tmp_path / "new.json", recorded_facts(q35="pc-q35-7.2"), name="hv02")
    out = tmp_path / "v.json"
    assert main(["lint", str(domains), "--host-facts", str(old), "--json", str(out), "--rule", "disk-multiqueue",
                 "--", "-q"]) == 1
    assert verdicts_of(out)[("disk-multiqueue", "offline/vm.xml:vm/vdb")]["outcome"] == "failed"
    capsys.readouterr()
    # kvmio fix: the host's machine types decide the fix, as they decide the verdict.
    assert main(["fix", str(domains / "vm.xml"), "--host-facts", str(old), "--out", str(tmp_path / "fixed")]) == 0
    assert "fixed disk-multiqueue: offline/vm.xml:vm/vdb: set queues='4'" in capsys.readouterr().out
    assert main(["fix", str(domains / "vm.xml"), "--host-facts", str(new), "--out", str(tmp_path / "fixed2")]) == 0
    assert "disk-multiqueue" not in capsys.readouterr().out
    assert main(["fix", str(domains / "vm.xml"), "--host-facts", str(old), "--host-facts", str(new),
                 "--out", str(tmp_path / "fixed3")]) == 4
    assert "pass one --host-facts file" in capsys.readouterr().err
    assert main(["lint", str(domains), "--host-facts", str(tmp_path / "nope.json")]) == 4
    assert "nope.json: cannot read" in capsys.readouterr().err
