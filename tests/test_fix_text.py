"""Fixes edit a file's text, not rewrite it (issue 21): bytes outside the edited elements stay, inserted elements copy
their siblings' indentation, on every corpus file that fails a fixable rule."""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from pytest_kvmio.facts.host import HostFacts, assumed_facts
from pytest_kvmio.fix.patch import FixedDocument, fix_document
from pytest_kvmio.fix.sourcetext import (
    NotEditable,
    SourceText,
    redacted_source,
)
from pytest_kvmio.model.domain import DomainXMLError
from pytest_kvmio.model.xmlfiles import xml_files
from pytest_kvmio.settings import assumptions
from tests.conftest import DATA, kvmio

FACTS = assumed_facts("offline", assumptions("cpus=16,kernel=6.1,qemu=7.2,libvirt=9.0"))
LAB_OFFLINE = Path("/var/lib/kvmio-lab/offline")
CORPORA = [DATA / "domains", DATA / "libvirt-qemuxml", DATA / "domains-world"] + (
    [LAB_OFFLINE] if LAB_OFFLINE.is_dir() else [])
_TAG = re.compile(r"^(\s*)<([A-Za-z_][\w.:-]*)")


def _fix(text: str, facts: HostFacts = FACTS, rules: list[str] | None = None) -> FixedDocument:
    return fix_document(text.encode(), facts, rules, source="t.xml")


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _outside_root(text: str) -> tuple[str, str]:
    """Return the text before the root's start tag and after its end tag (declaration, comments, DOCTYPE)."""
    start = re.search(r"<(?![?!])", text)
    assert start is not None
    end = text.rfind(">") + 1
    return text[:start.start()], text[end:]


def _check_edit_only(original: str, fixed: str, where: str) -> tuple[int, int]:
    """Assert that `fixed` differs from `original` only in changed start tags and inserted element lines that copy
    their siblings' indentation; return (lines changed, lines inserted)."""
    before, after = original.splitlines(), fixed.splitlines()
    assert _outside_root(original) == _outside_root(fixed), f"{where}: text outside the root element changed"
    changed = inserted = 0
    inserted_lines: set[int] = set()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        removed, added = before[i1:i2], after[j1:j2]
        assert op != "delete" or all(_TAG.match(line) for line in removed), f"{where}: lines deleted: {removed}"
        for line in removed:  # a removed line is an element's start tag (an attribute changed) or a dropped element
            match = _TAG.match(line)
            assert match, f"{where}: a line that is no start tag changed: {line!r}"
            twin = next((k for k, new in enumerate(added) if (m := _TAG.match(new)) and m.groups() == match.groups()), None)
            if twin is not None:
                added.pop(twin)
                changed += 1
            else:
                assert match.group(2) in ("iothreadpin", "vcpupin"), f"{where}: element dropped: {line!r}"
        for line in added:
            assert line.strip().startswith("<"), f"{where}: an inserted line is no element: {line!r}"
            inserted += 1
        inserted_lines.update(j + 1 for j in range(j1, j2) if after[j] in added)
    # An inserted element copies its siblings' indentation.
    tree = etree.fromstring(fixed.encode(), parser=etree.XMLParser(resolve_entities=False))
    for el in tree.iter():
        parent = el.getparent()
        if not isinstance(el.tag, str) or el.sourceline not in inserted_lines or parent is None:
            continue
        siblings = [s for s in parent if isinstance(s.tag, str) and s.sourceline not in inserted_lines
                    and s.sourceline != parent.sourceline]
        if siblings:
            mine, theirs = _indent(after[int(el.sourceline) - 1]), _indent(after[int(str(siblings[0].sourceline)) - 1])
            assert mine == theirs, f"{where}: <{el.tag}> inserted at indentation {mine!r}, its siblings have {theirs!r}"
    return changed, inserted


def _valid(path: Path) -> bool:
    return subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, timeout=60,
                          check=False).returncode == 0


@pytest.mark.parametrize("corpus", CORPORA, ids=[c.name for c in CORPORA])
def test_every_fixed_corpus_file_differs_only_in_edited_and_inserted_lines(corpus: Path, tmp_path: Path) -> None:
    checked = changed_lines = inserted_lines = declarations = commented = 0
    invalid = []
    validate = shutil.which("virt-xml-validate") is not None
    for file in xml_files([str(corpus)]):
        data = file.path.read_bytes()
        try:
            fixed = fix_document(data, FACTS, None, source=str(file.path))
        except DomainXMLError:
            continue  # not one well-formed <domain>: kvmio fix reports it and writes nothing
        if not fixed.result.fixed:
            assert fixed.data == data, f"{file.rel}: nothing fixed, yet its bytes changed"
            continue
        assert fixed.rewritten is None, f"{file.rel}: written out anew: {fixed.rewritten}"
        original, text = data.decode(), fixed.data.decode()
        changed, inserted = _check_edit_only(original, text, file.rel)
        checked, changed_lines, inserted_lines = checked + 1, changed_lines + changed, inserted_lines + inserted
        declarations += original.lstrip().startswith("<?xml")
        commented += "<!--" in _outside_root(original)[0]
        if validate:
            copy = tmp_path / "fixed.xml"
            copy.write_bytes(fixed.data)
            if _valid(file.path) and not _valid(copy):
                invalid.append(file.rel)
    assert checked, f"{corpus.name}: no file failed a fixable rule"
    assert not invalid, f"valid before the fix, invalid after: {invalid}"
    print(f"{corpus.name}: {checked} files fixed by editing: {changed_lines} lines changed, {inserted_lines} inserted; "
          f"{declarations} with an XML declaration, {commented} with comments before the root kept")


DOC = """<?xml version="1.0" encoding="UTF-8"?>
<!-- a template: kept -->
<domain type="kvm" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
\t<name>vm</name>
\t<vcpu placement="static">2</vcpu>
\t<os>
\t\t<type arch="x86_64" machine="pc-q35-7.2">hvm</type>
\t</os>
\t<devices>
\t\t<disk type="file"   device="disk">
\t\t\t<driver name="qemu"
\t\t\t        type="qcow2" cache="unsafe"/>
\t\t\t<source file="/img/a.qcow2"/>
\t\t\t<target dev="vda" bus="virtio"/>
\t\t</disk>
\t</devices>
\t<qemu:commandline/>
</domain>
"""


def test_an_edit_keeps_declaration_comments_quotes_tabs_and_a_multiline_tag() -> None:
    fixed = _fix(DOC, HostFacts(name="h", offline=True, cpu_count=4))
    text = fixed.text
    assert fixed.rewritten is None
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!-- a template: kept -->\n'
                           '<domain type="kvm" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">\n')
    assert '\t\t<disk type="file"   device="disk">\n' in text  # untouched tags keep their spacing
    assert '\t\t\t<driver name="qemu"\n\t\t\t        type="qcow2" cache="none" iothread="1"/>' in text
    assert '\t<vcpu placement="static">2</vcpu>\n\t<iothreads>1</iothreads>\n' in text  # a sibling's tabs
    assert ('\t<cputune>\n\t\t<vcpupin vcpu="0" cpuset="0-2"/>\n\t\t<vcpupin vcpu="1" cpuset="0-2"/>\n'
            '\t\t<iothreadpin iothread="1" cpuset="3"/>\n\t</cputune>\n') in text  # children one tab further
    diff = [line for line in difflib.unified_diff(DOC.splitlines(), text.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len([d for d in diff if d.startswith("-")]) == 1 and len(diff) == 8, diff


def test_a_one_line_document_stays_on_one_line() -> None:
    doc = ("<domain type='kvm'><name>vm</name><vcpu placement='static'>2</vcpu><os><type arch='x86_64' "
           "machine='pc-q35-7.2'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' "
           "type='raw' cache='unsafe'/><source file='/a.raw'/><target dev='vda' bus='virtio'/></disk></devices></domain>")
    text = _fix(doc, rules=["disk-cache-safe", "disk-iothread-assigned"]).text
    assert "\n" not in text
    assert "<vcpu placement='static'>2</vcpu><iothreads>1</iothreads><os>" in text
    assert "<driver name='qemu' type='raw' cache='none' iothread='1'/>" in text


def test_a_self_closing_parent_gets_its_first_child_on_its_own_line() -> None:
    doc = """<domain type='kvm'>
  <name>vm</name>
  <vcpu placement='static'>2</vcpu>
  <iothreads>1</iothreads>
  <cputune/>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' iothread='1'/>
      <source file='/a.raw'/><target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""
    text = _fix(doc, HostFacts(name="h", offline=True, cpu_count=2), ["domain-iothread-pinned"]).text
    assert ("  <cputune>\n    <vcpupin vcpu='0' cpuset='0'/>\n    <vcpupin vcpu='1' cpuset='0'/>\n"
            "    <iothreadpin iothread='1' cpuset='1'/>\n  </cputune>\n  <os>") in text


def test_a_dropped_pin_takes_its_line_with_it() -> None:
    doc = """<domain type='kvm'>
  <name>vm</name>
  <vcpu placement='static'>2</vcpu>
  <iothreads>1</iothreads>
  <cputune>
    <vcpupin vcpu='0' cpuset='0'/>
    <vcpupin vcpu='1' cpuset='1'/>
    <iothreadpin iothread='1' cpuset='3'/>
    <iothreadpin iothread='2' cpuset='1'/>
  </cputune>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
</domain>
"""
    fixed = _fix(doc, HostFacts(name="h", offline=True, cpu_count=4), ["domain-iothread-pinned"])
    assert fixed.text == doc.replace("    <iothreadpin iothread='2' cpuset='1'/>\n", "")
    assert [c.kind for c in fixed.changes] == ["remove"]


def test_the_diff_is_of_the_files_texts_and_masks_secrets() -> None:
    doc = "<!-- c -->\n<domain type='kvm'>\n  <name>vm</name>\n  <devices>\n    <graphics type='vnc' passwd='s3cret'/>\n" \
          "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw' cache='unsafe'/>\n" \
          "      <source file='/a.raw'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n"
    fixed = _fix(doc, rules=["disk-cache-safe"])
    assert "s3cret" in fixed.text and "s3cret" not in fixed.result.diff()
    assert fixed.result.diff().splitlines()[3:] == [
        "   <devices>", "     <graphics type='vnc' passwd='***'/>", "     <disk type='file' device='disk'>",
        "-      <driver name='qemu' type='raw' cache='unsafe'/>", "+      <driver name='qemu' type='raw' cache='none'/>",
        "       <source file='/a.raw'/>", "       <target dev='vda' bus='virtio'/>", "     </disk>"]
    assert redacted_source("<a><secret type='ceph' uuid='u-1'/><cookie>c</cookie></a>") == \
        "<a><secret type='ceph' uuid='***'/><cookie>***</cookie></a>"


def test_text_and_tree_that_do_not_line_up_are_refused() -> None:
    with pytest.raises(NotEditable, match="the text has"):
        SourceText("<a><b/></a>", etree.fromstring("<a><c/></a>"))
    with pytest.raises(NotEditable, match="not closed"):
        SourceText("<a><b>", etree.fromstring("<a><b/></a>"))


def test_the_changes_are_virt_xml_settings_of_the_same_edit() -> None:
    fixed = _fix(DOC, HostFacts(name="h", offline=True, cpu_count=4))
    assert [c.virt_xml for c in fixed.changes] == [
        "./iothreads=1",
        "./cputune/vcpupin[@vcpu='0']/@cpuset=0-2",
        "./cputune/vcpupin[@vcpu='1']/@cpuset=0-2",
        "./cputune/iothreadpin[@iothread='1']/@cpuset=3",
        "./devices/disk[target/@dev='vda']/driver/@cache=none",
        "./devices/disk[target/@dev='vda']/driver/@iothread=1",
    ]


def test_kvmio_fix_writes_edited_copies(tmp_path: Path) -> None:
    source = tmp_path / "in" / "t.xml"
    source.parent.mkdir()
    source.write_text(DOC)
    run = kvmio("fix", str(source), "--out", str(tmp_path / "out"), "--assume", "cpus=4")
    assert run.returncode == 0, run.stdout + run.stderr
    text = (tmp_path / "out" / "t.xml").read_text()
    assert text == _fix(DOC, HostFacts(name="h", offline=True, cpu_count=4)).text and text.startswith("<?xml")
    again = kvmio("fix", str(tmp_path / "out" / "t.xml"), "--out", str(tmp_path / "again"), "--assume", "cpus=4")
    assert again.returncode == 0 and (tmp_path / "again" / "t.xml").read_bytes() == text.encode()
