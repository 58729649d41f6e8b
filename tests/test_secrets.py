"""Secrets in domain XML and URIs never reach a report: terminal, JSON summary, JUnit, Allure."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_kvmio.model.domain import parse_domain
from pytest_kvmio.model.redact import MASK, redact_uri
from tests.conftest import SUITES

SECRETS = ("s3cr3t-vnc", "sp1ce-pw", "c00kie-value", "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f", "ceph-client-secret")
DOMAIN = """<domain type='kvm'>
  <name>vm-secrets</name>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='unsafe'/>
      <source protocol='https' name='/images/base.img'>
        <host name='images.example' port='443'/>
        <cookies><cookie name='session'>c00kie-value</cookie></cookies>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='rbd' name='pool/image'>
        <host name='mon1'/>
        <encryption format='luks'><secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/></encryption>
      </source>
      <auth username='admin'><secret type='ceph' usage='ceph-client-secret'/></auth>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <graphics type='vnc' port='-1' passwd='s3cr3t-vnc'/>
    <graphics type='spice' autoport='yes' passwd='sp1ce-pw'/>
  </devices>
</domain>
"""


def test_the_parsed_domain_keeps_no_secret_but_everything_the_rules_read() -> None:
    domain = parse_domain(DOMAIN, source="vm-secrets.xml")
    assert not any(secret in domain.xml for secret in SECRETS)
    assert domain.xml.count(MASK) == len(SECRETS)
    assert [d.effective_cache for d in domain.disks] == ["unsafe", "none"] and domain.vcpus == 2


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("qemu+ssh://root:hunter2@hv01/system", "qemu+ssh://root:***@hv01/system"),
        ("qemu+tls://hv01/system?pkipath=/p&password=hunter2", "qemu+tls://hv01/system?pkipath=/p&password=***"),
        ("ssh://admin@hv01?ssh_identity_file=/k&api_token=abc", "ssh://admin@hv01?ssh_identity_file=/k&api_token=***"),
        ("qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&no_verify=1", "qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&no_verify=1"),
        ("RUN command=b'sshpass -p hunter2 ssh -o User=root hv01 true'", "RUN command=b'sshpass -p *** ssh -o User=root hv01 true'"),
    ],
)
def test_passwords_in_uris_and_host_specs_are_masked(text: str, shown: str) -> None:
    assert redact_uri(text) == shown


def test_no_secret_in_any_report_of_an_offline_run(pytester: pytest.Pytester) -> None:
    xml = pytester.path / "domains" / "vm-secrets.xml"
    xml.parent.mkdir()
    xml.write_text(DOMAIN)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        str(SUITES), "--domain-xml", str(xml.parent), f"--kvmio-json={out / 'verdicts.json'}",
        f"--junitxml={out / 'junit.xml'}", f"--alluredir={out / 'allure'}", "-p", "no:cacheprovider", "-rA",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # cache='unsafe' and no IOThreads: real findings
    texts = {"terminal": result.stdout.str() + result.stderr.str()}
    texts.update({str(p.relative_to(out)): p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()})
    assert {"verdicts.json", "junit.xml"} <= set(texts) and any("-attachment" in name for name in texts)
    leaks = [f"{name}: {secret}" for name, text in texts.items() for secret in SECRETS if secret in text]
    assert not leaks, leaks
    attached = [t for n, t in texts.items() if "<graphics" in t]
    assert attached and all(MASK in t for t in attached), "the domain XML is attached, masked"
    # Attached where a person needs it: with each finding, and once more for the domain, not on every pass.
    results = [n for n in texts if n.endswith("-result.json")]
    assert len(attached) <= len([n for n in results if '"status": "failed"' in texts[n]]) + 1 < len(results)


def test_domain_xml_is_attached_once_per_domain_when_everything_passes(pytester: pytest.Pytester) -> None:
    xml = pytester.path / "domains" / "vm-ok.xml"
    xml.parent.mkdir()
    xml.write_text(DOMAIN.replace("vm-secrets", "vm-ok").replace("cache='unsafe'", "cache='none'"))
    out = pytester.path / "allure"
    pytester.runpytest_subprocess(str(SUITES / "test_disks.py"), "--domain-xml", str(xml.parent), "-k", "cache",
                                  f"--alluredir={out}", "-p", "no:cacheprovider")
    attachments = [p for p in out.glob("*-attachment.xml") if "<graphics" in p.read_text()]
    assert len(list(out.glob("*-result.json"))) == 2 and len(attachments) == 1
    assert not any(secret in p.read_text() for p in out.iterdir() for secret in SECRETS)
