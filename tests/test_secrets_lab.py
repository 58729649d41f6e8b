"""Secrets never leave the host, live: a domain with them defined on the lab's libvirtd, a host spec with a password.

The domain carries a VNC and a SPICE password and HTTP cookies (libvirt keeps them, and shows them
only to a reader asking for VIR_DOMAIN_XML_SECURE, which kvmio never does), a LUKS secret's UUID and
a Ceph secret's usage name (shown to everyone; kvmio masks them). The second host spec has a
password in its userinfo. None of them may reach the terminal, the JSON summary, JUnit, Allure or the log.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SUITES
from tests.test_secrets import DOMAIN, SECRETS

pytestmark = [pytest.mark.integration, pytest.mark.lab]

NAME = "kvmio-secret-probe"
VNC_PASSWORD = "s3cr3tvn"  # libvirt refuses VNC passwords longer than 8 characters
HOST_PASSWORD = "hunter2-host-pw"
URI = "qemu:///system"


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def secret_domain(tmp_path: Any, lab: dict[str, Any]) -> Iterator[str]:
    xml = tmp_path / f"{NAME}.xml"
    xml.write_text(
        DOMAIN.replace("vm-secrets", NAME).replace("s3cr3t-vnc", VNC_PASSWORD).replace(
            "<vcpu>", "<memory unit='MiB'>128</memory><vcpu>").replace("type='kvm'", "type='qemu'")
    )
    _virsh("undefine", NAME)  # left over from an interrupted run
    defined = _virsh("define", str(xml))
    assert defined.returncode == 0, defined.stderr
    secure = _virsh("dumpxml", "--security-info", NAME).stdout
    assert VNC_PASSWORD in secure and "c00kie-value" in secure  # libvirt really holds them
    try:
        yield NAME
    finally:
        _virsh("undefine", NAME)


def test_no_secret_of_a_live_domain_or_a_host_spec_reaches_any_report(
    pytester: pytest.Pytester, secret_domain: str, lab: dict[str, Any]
) -> None:
    ssh = lab["ssh"]
    spec_with_password = ssh["host_spec"].replace("ssh://root@", f"ssh://root:{HOST_PASSWORD}@")
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        str(SUITES), "-m", "not perf", "--host=local", f"--host={spec_with_password}",
        "--libvirt-uri=qemu:///system", f"--domain={secret_domain}",
        f"--kvmio-json={out / 'verdicts.json'}", f"--junitxml={out / 'junit.xml'}", f"--alluredir={out / 'allure'}",
        f"--log-file={out / 'kvmio.log'}", "--log-file-level=DEBUG", "-p", "no:cacheprovider", "-rA", "-v",
        timeout=600,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # cache='unsafe', no IOThreads: real findings
    texts = {"terminal": result.stdout.str() + result.stderr.str()}
    texts.update({str(p.relative_to(out)): p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()})
    assert {"verdicts.json", "junit.xml", "kvmio.log", "allure/environment.properties"} <= set(texts)
    assert f"local/{secret_domain}/vda" in texts["verdicts.json"]  # the live domain was judged
    assert any("<graphics" in text for name, text in texts.items() if "-attachment" in name)  # its XML attached
    secrets = (*SECRETS, VNC_PASSWORD, HOST_PASSWORD)
    leaks = [f"{name}: {secret}" for name, text in texts.items() for secret in secrets if secret in text]
    assert not leaks, leaks
