"""docs/architecture.md's walk through adding a config rule, done for a test-only rule: it works end to end.

The steps of "Where to add … a rule" and "… a fix": the check (a function of the model), the suite test that asserts
on it, the catalogue entry (level, severity, reason = the docstring, applies-when as text and predicate), and the
remedy registered under the rule's id that asks the same check. Here they are made in the test (the catalogue and
the remedies are patched for this run only) instead of in the package's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_kvmio.facts.targets import Target
from pytest_kvmio.fix import edits, remedies
from pytest_kvmio.model.domain import Disk
from pytest_kvmio.verdict import catalogue

RULE = "disk-detect-zeroes-not-on"
REASON = "detect_zeroes='on' scans every write for zeroes; 'unmap' also frees them."


def detect_zeroes_is_not_on(disk: Disk) -> bool:
    """The check: one function of the model, asked by the suite test and by the remedy."""
    return disk.detect_zeroes != "on"


SUITE = f'''
import pytest

from tests_rule_check import detect_zeroes_is_not_on


@pytest.mark.rule("{RULE}")
def test_detect_zeroes_is_not_on(disk):
    """{REASON}"""
    assert detect_zeroes_is_not_on(disk), f"{{disk.id}}: detect_zeroes='on'; set detect_zeroes='unmap'"
'''

DOMAIN = """<domain type='kvm'><name>z</name><vcpu>1</vcpu><os><type machine='pc-q35-7.2'>hvm</type></os><devices>
  <disk type='file' device='disk'><driver name='qemu' type='raw' detect_zeroes='on'/>
    <source file='/i/a.img'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/>
    <source file='/i/b.img'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>
"""


def _remedy(target: Target, facts: object) -> list[remedies.Remedy]:
    disk = target.disk
    assert disk is not None
    if detect_zeroes_is_not_on(disk):
        return []
    return [remedies.Remedy(f"{disk.id}: set detect_zeroes='unmap'", [edits.disk_driver(disk.target, detect_zeroes="unmap")])]


def test_a_rule_added_as_the_architecture_page_says_judges_fixes_and_counts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rule = catalogue.Rule(
        RULE, "disk", "minor", "detect_zeroes is not 'on'", REASON, "disks with a detect_zeroes attribute", "xml",
        lambda scope: None if scope.disk.detect_zeroes else "no detect_zeroes attribute",
        cites="libvirt docs/formatdomain.rst, <driver detect_zeroes>",
    )
    monkeypatch.setitem(catalogue.BY_ID, RULE, rule)
    monkeypatch.setitem(remedies.XML_REMEDIES, RULE, _remedy)
    pytester.makepyfile(tests_rule_check="from tests.test_adding_a_rule import detect_zeroes_is_not_on\n")
    pytester.makepyfile(test_zeroes=SUITE)
    (pytester.path / "z.xml").write_text(DOMAIN)
    out = tmp_path / "v.json"
    result = pytester.runpytest("test_zeroes.py", "--domain-xml", "z.xml", "--kvmio-json", str(out),
                                "-p", "no:cacheprovider")
    summary = json.loads(out.read_text())
    (verdict,) = summary["verdicts"]
    assert (verdict["rule"], verdict["target"], verdict["outcome"]) == (RULE, "offline/z.xml:z/vda", "failed")
    assert verdict["severity"] == "minor"  # from the catalogue entry
    assert verdict["fix"]["summary"] == "offline/z.xml:z/vda: set detect_zeroes='unmap'"
    assert "detect_zeroes=\"unmap\"" in verdict["fix"]["xml_patch"] or "detect_zeroes='unmap'" in verdict["fix"]["xml_patch"]
    assert summary["rules"][RULE]["not_applicable"] == 1  # vdb has no detect_zeroes: no item, counted
    assert result.ret == pytest.ExitCode.TESTS_FAILED
