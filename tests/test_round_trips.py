"""Commands run on a host per kvmio run are constant in the number of its domains (one batched facts command).

The hosts are libvirt's in-process test driver fed a node file with 1 or 40 domains (4 disks each), with
`local` as the shell; every testinfra `Host.run` is counted. The lab variant does the same over SSH with
the lab's domains selected by `--domain` globs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import testinfra.host

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
    """Record every command kvmio runs through a testinfra Host (any backend)."""
    seen: list[str] = []
    real_run = testinfra.host.Host.run

    def counting_run(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
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


@pytest.mark.lab
def test_lab_host_commands_over_ssh_do_not_grow_with_the_domains(pytester: pytest.Pytester, commands: list[str]) -> None:
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
