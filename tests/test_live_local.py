"""The suites against the real local libvirtd (qemu:///system) with a defined domain and real images."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import SUITES, verdicts_of

pytestmark = pytest.mark.integration

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu placement='static'>2</vcpu>
  <iothreads>1</iothreads>
  <cputune>
    <vcpupin vcpu='0' cpuset='0'/>
    <vcpupin vcpu='1' cpuset='0'/>
    <iothreadpin iothread='1' cpuset='1'/>
  </cputune>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='io_uring' discard='unmap' iothread='1' queues='2'/>
      <source file='{dir}/prealloc.raw'/>
      <target dev='vdb' bus='virtio'/>
      <serial>kvmio-it-prealloc</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native'/>
      <source file='{dir}/thin.qcow2'/>
      <target dev='vdc' bus='virtio'/>
      <serial>kvmio-it-thin</serial>
    </disk>
  </devices>
</domain>
"""


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def defined_domain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("virsh") is None or _virsh("version").returncode != 0:
        pytest.skip("no libvirtd answering at qemu:///system (.ci/run starts one)")
    images = tmp_path_factory.mktemp("images")
    subprocess.run(["fallocate", "-l", "64M", str(images / "prealloc.raw")], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "thin.qcow2"), "64M"], check=True)
    name = f"kvmio-it-{os.getpid()}"
    xml = images / "domain.xml"
    xml.write_text(DOMAIN_XML.format(name=name, dir=images))
    defined = _virsh("define", str(xml))
    assert defined.returncode == 0, defined.stderr
    yield name
    _virsh("undefine", name)


def test_suites_give_host_and_disk_verdicts_for_a_defined_domain(pytester: pytest.Pytester, defined_domain: str) -> None:
    out = pytester.path / "verdicts.json"
    result = pytester.runpytest_subprocess(
        str(SUITES), "--host=local", f"--domain={defined_domain}", "--kvmio-json", str(out), "-m", "not perf",
        "-p", "no:cacheprovider",
    )
    verdicts = verdicts_of(out)
    outcome = {key: v["outcome"] for key, v in verdicts.items()}
    dom = f"local/{defined_domain}"
    # Host rules ran against this machine's real facts.
    assert outcome[("host-libvirt-min", "local")] == "passed"
    assert outcome[("host-qemu-min", "local")] == "passed"
    assert verdicts[("host-qemu-min", "local")]["facts"]["qemu"].startswith(("7.", "8.", "9.", "10."))
    # Image facts came from qemu-img on the host: the thin qcow2 under io='native' is caught.
    thin = verdicts[("disk-native-not-sparse", f"{dom}/vdc")]
    assert thin["outcome"] == "failed"
    assert "io='native' on a sparse image" in thin["message"] and "thin.qcow2" in thin["message"]
    assert thin["facts"]["image"]["sparse"] is True
    assert outcome[("disk-discard-unmap", f"{dom}/vdc")] == "failed"
    assert outcome[("disk-iothread-assigned", f"{dom}/vdc")] == "failed"
    # The compliant disk passes every disk rule that applies to it.
    for rule in ("disk-io-mode-valid", "disk-direct-io-for-async", "disk-io-uring-supported",
                 "disk-iothread-assigned", "disk-multiqueue", "disk-cache-safe"):
        assert outcome[(rule, f"{dom}/vdb")] == "passed", (rule, verdicts[(rule, f"{dom}/vdb")]["message"])
    # Rules that don't concern vdb make no item (io is not native; fully allocated: nothing to give back).
    assert ("disk-native-not-sparse", f"{dom}/vdb") not in outcome
    assert ("disk-discard-unmap", f"{dom}/vdb") not in outcome
    assert outcome[("domain-iothread-pinned", dom)] == "passed"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
