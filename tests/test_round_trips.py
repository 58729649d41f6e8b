"""Commands run on a host per kvmio run are constant in the number of its domains (one batched facts command).

The hosts are libvirt's in-process test driver fed a node file with 1 or 40 domains (4 disks each), with
`local` as the shell; every testinfra `Host.run` on a hypervisor is counted (a guest's own commands are not the
host's). The lab variant judges over SSH with one and with every running lab domain selected by `--domain`.
`--domain` also narrows what that one command reads: only the selected domains' images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import testinfra
import testinfra.host

from pytest_kvmio.facts.guest import GuestHost
from pytest_kvmio.facts.host import collect_host_facts
from pytest_kvmio.facts.targets import matches_any
from tests.conftest import REPO

SUITES_DIR = REPO / "suites"
MANIFEST = Path("/var/lib/kvmio-lab/manifest.json")

DOMAIN = """<domain type='test'>
  <name>fleet-{i:03d}</name>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>2</vcpu>
  <iothreads>1</iothreads>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
{disks}  </devices>
</domain>
"""
DISK = """    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' iothread='1' queues='2'/>
      <source file='{path}'/>
      <target dev='vd{letter}' bus='virtio'/>
    </disk>
"""


def node_file(directory: Path, count: int) -> Path:
    """Write a libvirt test-driver node file with `count` domains of 4 disks each; return its path."""
    domains = "".join(
        DOMAIN.format(i=i, disks="".join(DISK.format(path=directory / f"fleet-{i:03d}-{n}.img", letter="abcd"[n])
                                         for n in range(4)))
        for i in range(count)
    )
    path = directory / f"node-{count}.xml"
    path.write_text(f"<node>\n{domains}</node>\n")
    return path


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every command kvmio runs on a hypervisor through a testinfra Host (any backend; not in a guest)."""
    seen: list[str] = []
    real_run = testinfra.host.Host.run

    def counting_run(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, GuestHost):
            seen.append(command % args if args else command)
        return real_run(self, command, *args, **kwargs)

    monkeypatch.setattr(testinfra.host.Host, "run", counting_run)
    return seen


def run_suites(pytester: pytest.Pytester, commands: list[str], *args: str) -> tuple[list[str], dict[str, Any]]:
    """Run the suites; return the commands run on hosts and the JSON summary."""
    out = pytester.path / "verdicts.json"
    start = len(commands)
    result = pytester.runpytest(str(SUITES_DIR), "-p", "no:cacheprovider", "--kvmio-json", str(out), *args)
    if "--collect-only" in args:  # no verdicts, no summary
        assert result.ret == pytest.ExitCode.OK, "\n".join(result.outlines[-30:])
        return commands[start:], {}
    assert out.exists(), "\n".join(result.outlines[-30:])
    return commands[start:], json.loads(out.read_text())


def test_host_commands_do_not_grow_with_the_domains(pytester: pytest.Pytester, commands: list[str]) -> None:
    runs = {}
    for count in (1, 40):
        node = node_file(pytester.path, count)
        ran, summary = run_suites(pytester, commands, "--host=local", f"--libvirt-uri=test://{node}", "-m", "not perf")
        disks = {v["target"] for v in summary["verdicts"] if v["target"].count("/") == 2}
        assert len(disks) == 4 * count, f"{count} domains: verdicts for {len(disks)} disks"
        runs[count] = ran
    assert len(runs[1]) == len(runs[40]), f"1 domain: {runs[1]}\n40 domains: {runs[40]}"
    assert len(runs[40]) <= 2, f"a reachability probe and one facts command, not: {runs[40]}"
    facts = [c for c in runs[40] if "qemu-img info" in c]
    assert len(facts) == 1, "one batched qemu-img pass over the images"
    assert all(f"fleet-{i:03d}-{n}.img" in facts[0] for i in range(40) for n in range(4))


def images_named(command: str) -> set[str]:
    """Return the node file's image names a host command reads."""
    return set(re.findall(r"fleet-\d{3}-\d\.img", command))


def test_a_domain_glob_reads_only_the_matching_domains_images(pytester: pytest.Pytester,
                                                             commands: list[str]) -> None:
    node = node_file(pytester.path, 40)
    ran, summary = run_suites(pytester, commands, "--host=local", f"--libvirt-uri=test://{node}",
                              "--domain=fleet-00[3-5]", "--domain=fleet-039", "-m", "not perf")
    (facts,) = [c for c in ran if "qemu-img info" in c]
    wanted = {f"fleet-{i:03d}-{n}.img" for i in (3, 4, 5, 39) for n in range(4)}
    assert images_named(facts) == wanted
    disks = {v["target"]: v["facts"] for v in summary["verdicts"] if v["target"].count("/") == 2}
    assert {t.split("/")[1] for t in disks} == {"fleet-003", "fleet-004", "fleet-005", "fleet-039"}
    # each judged disk has its image's facts (the files do not exist: qemu-img was asked, and said so)
    assert all(f["image"]["error"] == "no such file on the host" for f in disks.values()), disks


def test_the_host_command_names_only_the_selected_domains_images(tmp_path: Path) -> None:
    """collect_host_facts with a recording testinfra host: unselected domains are read (XML), not their images."""
    libvirt = pytest.importorskip("libvirt")
    local = testinfra.get_host("local://")
    scripts: list[str] = []

    class RecordingHost:
        def run(self, command: str) -> Any:
            scripts.append(command)
            return local.run(command)

    node = node_file(tmp_path, 40)
    conn = libvirt.openReadOnly(f"test://{node}")
    try:
        facts, domains = collect_host_facts("local", RecordingHost(), conn, f"test://{node}",
                                            wanted=lambda name: matches_any(name, ["fleet-01?"]))
    finally:
        conn.close()
    (script,) = scripts
    assert images_named(script) == {f"fleet-{i:03d}-{n}.img" for i in range(10, 20) for n in range(4)}
    assert len(domains) == 40, "every domain's XML is still read (a fix places IOThreads away from its neighbours)"
    read = {dom.name for dom in domains if any(disk.image is not None for disk in dom.disks)}
    assert read == {f"fleet-{i:03d}" for i in range(10, 20)}
    assert {Path(p).name for p in facts.images} == images_named(script)


@pytest.mark.lab
def test_lab_host_commands_over_ssh_do_not_grow_with_the_running_domains(pytester: pytest.Pytester,
                                                                          commands: list[str]) -> None:
    """Judge over SSH (the lab's sshd and qemu+ssh) with one, then every running lab domain selected by --domain."""
    if not MANIFEST.exists():
        pytest.skip("the lab is not up (kvmio lab up)")
    ssh = json.loads(MANIFEST.read_text())["ssh"]
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.openReadOnly("qemu:///system")
    try:
        running = sorted(d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                         if d.name().startswith("kvmio-lab-"))
    finally:
        conn.close()
    assert len(running) >= 3, f"the lab runs {running}"
    runs = {}
    for selected in (running[:1], running):
        ran, summary = run_suites(pytester, commands, f"--host={ssh['host_spec']}",
                                  f"--libvirt-uri={ssh['libvirt_uri']}", *(f"--domain={name}" for name in selected),
                                  "-m", "not perf")
        judged = {v["target"].split("/")[1] for v in summary["verdicts"] if v["target"].count("/") >= 1}
        assert judged == set(selected), f"verdicts for {judged}, selected {selected}"
        (facts,) = [c for c in ran if "qemu-img info" in c]  # the one facts command: images and QEMU processes
        qemus = set(re.findall(r"kvmio_qemu (\S+);", facts))
        assert qemus == set(selected), "each selected running domain's QEMU is read, no other"
        runs[len(selected)] = ran
    one, every = runs[1], runs[len(running)]
    assert len(one) == len(every), f"1 running domain: {one}\n{len(running)}: {every}"
    assert len(every) <= 2, f"a reachability probe and one facts command, not: {every}"


@pytest.mark.lab
def test_lab_host_commands_over_ssh_do_not_grow_with_the_domains_collected(pytester: pytest.Pytester,
                                                                           commands: list[str]) -> None:
    if not MANIFEST.exists():
        pytest.skip("the lab is not up (kvmio lab up)")
    ssh = json.loads(MANIFEST.read_text())["ssh"]
    runs = {}
    for glob in ("kvmio-lab-good", "kvmio-lab-*"):
        ran, _ = run_suites(pytester, commands, f"--host={ssh['host_spec']}", f"--libvirt-uri={ssh['libvirt_uri']}",
                                  f"--domain={glob}", "--collect-only", "-q")
        runs[glob] = ran
    assert len(runs["kvmio-lab-good"]) == len(runs["kvmio-lab-*"]), runs
    assert len(runs["kvmio-lab-*"]) <= 2, runs["kvmio-lab-*"]
