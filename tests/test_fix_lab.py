"""`kvmio fix` on the lab: fixed corpus files define, printed virt-xml commands equal the patch, --apply on a live domain."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.conftest import DATA, SUITES, kvmio

pytestmark = [pytest.mark.integration, pytest.mark.lab]

URI = "qemu:///system"
PREFIX = "kvmio-fixcheck-"
LEGACY = "kvmio-lab-legacy"
CORPORA = [DATA / "domains", DATA / "libvirt-qemuxml", Path("/var/lib/kvmio-lab/offline")]
#: Rules whose failures on kvmio-lab-legacy an XML patch fixes.
XML_FIXABLE = {"disk-native-not-sparse", "disk-iothread-assigned", "disk-multiqueue", "disk-discard-unmap",
               "disk-cache-safe", "domain-iothread-pinned"}


def virsh(*args: str, check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120, check=check, input=stdin)


def _renamed(data: bytes, name: str) -> bytes:
    root = etree.fromstring(data)
    root.find("name").text = name
    for tag in ("uuid",):
        for el in root.findall(tag):
            root.remove(el)
    return etree.tostring(root)


def _defines(path: Path, name: str, tmp: Path) -> tuple[bool, str]:
    """Define the file under a temporary name with --validate; undefine it again."""
    copy = tmp / f"{name}.xml"
    copy.write_bytes(_renamed(path.read_bytes(), name))
    run = virsh("define", "--validate", str(copy))
    if run.returncode == 0:
        virsh("undefine", name, "--nvram")
    return run.returncode == 0, run.stderr.strip()


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    yield
    names = virsh("list", "--all", "--name").stdout.split()
    for name in names:
        if name.startswith(PREFIX):
            virsh("destroy", name)
            virsh("undefine", name, "--nvram")


def test_fixed_corpus_files_define_where_their_originals_did(tmp_path: Path, no_leftovers: None) -> None:
    fixed_dir, checked, newly_defined, refused = tmp_path / "fixed", 0, 0, []
    for corpus in CORPORA:
        out = fixed_dir / corpus.name
        assert kvmio("fix", str(corpus), "--out", str(out), "--assume", "cpus=8", timeout=300).returncode == 0
        for n, path in enumerate(sorted(corpus.glob("*.xml"))):
            name = f"{PREFIX}{corpus.name}-{n}"
            before, _ = _defines(path, name, tmp_path)
            after, why = _defines(out / path.name, name, tmp_path)
            checked += before
            newly_defined += after and not before
            if before and not after:
                refused.append(f"{corpus.name}/{path.name}: {why}")
    assert checked > 50, checked
    assert not refused, "libvirt refuses fixed files whose originals it accepted:\n" + "\n".join(refused)
    print(f"{checked} originals defined and so did their fixed copies; {newly_defined} fixed copies define where the original did not")


def _canonical(xml: str) -> bytes:
    root = etree.fromstring(xml.encode(), parser=etree.XMLParser(remove_blank_text=True))
    for el in root.iter():
        if isinstance(el.tag, str) and el.text is not None and not el.text.strip():
            el.text = None
    return etree.tostring(root, method="c14n")


@pytest.mark.skipif(shutil.which("virt-xml") is None, reason="virt-xml (Debian package virtinst) not installed")
def test_printed_virt_xml_commands_give_the_patched_xml(tmp_path: Path, no_leftovers: None) -> None:
    name = f"{PREFIX}virtxml"
    source = virsh("dumpxml", "--inactive", LEGACY, check=True).stdout
    copy = tmp_path / "copy.xml"
    copy.write_bytes(_renamed(source.encode(), name))
    virsh("define", str(copy), check=True)
    rules = ["disk-native-not-sparse", "disk-multiqueue", "disk-discard-unmap", "disk-cache-safe"]
    run = kvmio("fix", "--host=local", f"--domain={name}", "--out", str(tmp_path / "patched"),
                *[f"--rule={r}" for r in rules], timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    commands = [line.strip() for line in run.stdout.splitlines() if line.startswith("    virt-xml ")]
    assert len(commands) >= 5, run.stdout
    for command in commands:
        done = subprocess.run(command.split(), check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
    got = virsh("dumpxml", "--inactive", name, check=True).stdout
    wanted = (tmp_path / "patched" / f"{name}.xml").read_text()
    assert _canonical(got) == _canonical(wanted), run.stdout


def _suites(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    out = pytester.path / "verdicts.json"
    pytester.runpytest_subprocess(str(SUITES), "-m", "not perf", "--host=local", f"--domain={LEGACY}",
                                  "--kvmio-json", str(out), "-p", "no:cacheprovider", timeout=900)
    return [v for v in json.loads(out.read_text())["verdicts"] if v["target"].startswith(f"local/{LEGACY}")]


def _restart(name: str) -> None:
    virsh("destroy", name)
    for _ in range(60):
        if virsh("domstate", name).stdout.strip() == "shut off":
            break
        time.sleep(1)
    assert kvmio("lab", "up", timeout=1500).returncode == 0  # starts it and waits for its guest agent


def test_apply_on_the_live_legacy_domain_makes_its_xml_rules_pass(pytester: pytest.Pytester) -> None:
    original = virsh("dumpxml", "--inactive", "--security-info", LEGACY, check=True).stdout
    try:
        run = kvmio("fix", "--host=local", f"--domain={LEGACY}", "--apply", timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "restart the domain" in run.stdout and "defined on qemu:///system" in run.stdout
        _restart(LEGACY)
        verdicts = _suites(pytester)
    finally:
        virsh("define", "/dev/stdin", stdin=original, check=True)
        _restart(LEGACY)
    xml_rules = {(v["rule"], v["target"]): v["outcome"] for v in verdicts if v["rule"] in XML_FIXABLE}
    assert xml_rules and all(o == "passed" for o in xml_rules.values()), xml_rules
    # vdb's fix was io='io_uring' (the image can't be preallocated by XML): native-not-sparse no longer concerns it.
    assert {r for r, _ in xml_rules} == XML_FIXABLE - {"disk-native-not-sparse"}
    assert ("disk-io-uring-supported", f"local/{LEGACY}/vdb") in {(v["rule"], v["target"]) for v in verdicts if v["outcome"] == "passed"}
    restored = virsh("dumpxml", "--inactive", LEGACY, check=True).stdout
    assert "cache='unsafe'" in restored and "<iothreads>" not in restored
