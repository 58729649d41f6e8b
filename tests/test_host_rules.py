"""Host rules on host facts this machine can't show (old versions, io_uring off, NVMe with a scheduler).

The facts are parsed from the output of kvmio's own host script, as a remote host would print it;
the rules are the real suites/test_host.py, with `host`/`hypervisor` supplied by a conftest.
"""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_kvmio.facts.host import HostFacts, parse_host_output
from tests.conftest import SUITES

OLD_HOST = """kernel=4.19.0-25-amd64
io_uring_disabled=
cpu_model= Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz
cpu_count=64
blockdev=sda 1 [mq-deadline] kyber bfq none
blockdev=loop0 0 [none] mq-deadline
"""
NEW_HOST = """kernel=6.8.0-45-generic
io_uring_disabled=2
cpu_model= AMD EPYC 9454 48-Core Processor
cpu_count=96
blockdev=nvme0n1 0 [mq-deadline] kyber bfq none
blockdev=nvme1n1 0 [none] mq-deadline kyber bfq
blockdev=sdb 0 mq-deadline [none]
blockdev=sdc 1 [bfq] none
blockdev=dm-0 0 none
"""

CONFTEST = """
import json
import pytest
from pytest_kvmio.facts.host import HostFacts, parse_host_output
from pytest_kvmio.model.versions import Version

SPEC = json.loads({spec!r})

@pytest.fixture
def hypervisor():
    facts = HostFacts(name=SPEC["name"], qemu=Version.parse(SPEC["qemu"]), libvirt=Version.parse(SPEC["libvirt"]))
    parse_host_output(facts, SPEC["output"])
    return facts

@pytest.fixture
def host(hypervisor):
    return object()
"""


def test_host_script_output_is_parsed() -> None:
    facts = HostFacts(name="hv02")
    parse_host_output(facts, NEW_HOST)
    assert str(facts.kernel) == "6.8.0-45-generic" and facts.io_uring_disabled == 2 and facts.cpu_count == 96
    devices = {b.name: b for b in facts.block_devices}
    assert devices["nvme0n1"].scheduler == "mq-deadline" and devices["nvme0n1"].is_nvme
    assert devices["sdb"].scheduler == "none" and devices["sdb"].rotational is False
    assert devices["dm-0"].is_virtual and devices["dm-0"].scheduler == "none"


def _run(pytester: pytest.Pytester, name: str, output: str, qemu: str, libvirt: str) -> dict[str, dict]:
    spec = json.dumps({"name": name, "output": output, "qemu": qemu, "libvirt": libvirt})
    pytester.makeconftest(CONFTEST.format(spec=spec))
    shutil.copy(SUITES / "test_host.py", pytester.path / "test_host_rules_copy.py")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    return {rep.nodeid.split("::")[1]: rep for rep in result.reprec.getreports("pytest_runtest_logreport")
            if rep.when == "call" or (rep.when == "setup" and rep.skipped)}


def test_old_host_fails_every_version_rule(pytester: pytest.Pytester) -> None:
    reports = _run(pytester, "hv01", OLD_HOST, "4.2.1", "6.0.0")
    for test, text in [
        ("test_host_kernel_is_at_least_5_10", "hv01: kernel 4.19.0-25-amd64 is older than 5.10"),
        ("test_host_qemu_is_at_least_5_0", "hv01: QEMU 4.2.1 is older than 5.0"),
        ("test_host_libvirt_is_at_least_6_3", "hv01: libvirt 6.0.0 is older than 6.3"),
    ]:
        assert reports[test].failed and text in str(reports[test].longrepr), test
    assert reports["test_host_allows_io_uring"].passed  # no sysctl on 4.19: nothing switches io_uring off
    # Only a rotational disk and a loop device: nothing for the scheduler rule to judge.
    assert reports["test_host_flash_disks_use_no_io_scheduler"].skipped


def test_new_host_with_io_uring_off_and_a_scheduled_nvme_fails_those_rules(pytester: pytest.Pytester) -> None:
    reports = _run(pytester, "hv02", NEW_HOST, "8.2.2", "10.0.0")
    assert reports["test_host_kernel_is_at_least_5_10"].passed
    uring = reports["test_host_allows_io_uring"]
    assert uring.failed and "hv02: kernel.io_uring_disabled = 2" in str(uring.longrepr)
    sched = reports["test_host_flash_disks_use_no_io_scheduler"]
    message = str(sched.longrepr)
    assert sched.failed and "hv02: nvme0n1 uses mq-deadline; set `none`" in message
    assert "nvme1n1" not in message.split("; set")[0] and "sdb" not in message.split("; set")[0]
