"""Fixes: computed from the domain model, never worse than what is there, idempotent; `kvmio fix` offline; the corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.fix.patch import fix_domain, parse_root, verdict_fix
from pytest_kvmio.fix.remedies import offline_target, remedies
from pytest_kvmio.model.domain import ImageFacts, parse_domain
from tests.conftest import DATA, SUITES, kvmio

OFFLINE = HostFacts(name="offline", offline=True)
EIGHT = HostFacts(name="offline", offline=True, cpu_count=8)
LAB_OFFLINE = Path("/var/lib/kvmio-lab/offline")


def _domain(devices: str, head: str = "<vcpu placement='static'>4</vcpu>") -> bytes:
    return (f"<domain type='kvm'><name>vm</name>{head}"
            "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>"
            f"<devices>{devices}</devices></domain>").encode()


def _disk(driver: str, dev: str = "vdb", extra: str = "") -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' {driver}/>"
            f"<source file='/img/{dev}.qcow2'/><target dev='{dev}' bus='virtio'/>{extra}</disk>")


def _fix(xml: bytes, facts: HostFacts = EIGHT, rules: list[str] | None = None) -> tuple[etree._Element, Any]:
    root = parse_root(xml, "t.xml")
    return root, fix_domain(root, facts, rules, source="t.xml")


def test_a_disk_without_iothread_reuses_the_pool_and_never_shrinks_it() -> None:
    head = "<vcpu placement='static'>4</vcpu><iothreads>5</iothreads>"
    root, result = _fix(_domain(_disk("cache='none' iothread='1' queues='4'", "vda") + _disk("cache='none' queues='4'"), head),
                        rules=["disk-iothread-assigned"])
    assert root.findtext("iothreads") == "5", result.diff()
    assert root.xpath("devices/disk[target/@dev='vdb']/driver")[0].get("iothread") == "2"  # the least used of 1..5
    assert [f.rule for f in result.fixed] == ["disk-iothread-assigned"]


def test_old_hint_would_have_shrunk_the_pool_the_fix_does_not() -> None:
    head = "<vcpu placement='static'>2</vcpu><iothreads>5</iothreads>"
    domain = parse_domain(_domain(_disk("cache='none' queues='2'"), head), source="t.xml")
    (remedy,) = remedies("disk-iothread-assigned", offline_target(domain, OFFLINE, domain.disks[0]), OFFLINE)
    assert "<iothreads>" not in remedy.summary and "IOThread 1" in remedy.summary
    assert remedy.virt_xml == ["virt-xml vm --edit target=vdb --disk driver.iothread=1"]


def test_iothreads_are_added_only_to_a_domain_without_any() -> None:
    root, _ = _fix(_domain(_disk("cache='none' queues='4'")), rules=["disk-iothread-assigned"])
    assert root.findtext("iothreads") == "1"
    assert root.find("devices/disk/driver").get("iothread") == "1"


def test_an_explicit_queue_mapping_is_kept_and_completed_not_replaced_by_a_queues_hint() -> None:
    mapping = "<iothreads><iothread id='1'><queue id='0'/></iothread><iothread id='2'><queue id='1'/></iothread></iothreads>"
    drv = f"<driver name='qemu' type='raw' cache='none' queues='4'>{mapping}</driver>"
    disk = (f"<disk type='file' device='disk'>{drv}<source file='/img/a.raw'/><target dev='vda' bus='virtio'/></disk>")
    root, result = _fix(_domain(disk, "<vcpu placement='static'>4</vcpu><iothreads>2</iothreads>"),
                        rules=["disk-multiqueue"])
    driver = root.find("devices/disk/driver")
    assert driver.get("queues") == "4"
    got = {t.get("id"): [q.get("id") for q in t.findall("queue")] for t in driver.findall("iothreads/iothread")}
    assert got == {"1": ["0", "2"], "2": ["1", "3"]}, result.diff()


def test_pinning_needs_the_hosts_cpus_offline_and_pins_apart_when_known() -> None:
    head = "<vcpu placement='static'>2</vcpu><iothreads>1</iothreads>"
    xml = _domain(_disk("cache='none' iothread='1' queues='2'"), head)
    _, unknown = _fix(xml, OFFLINE)
    assert [(f.rule, f.why_left) for f in unknown.left] == [
        ("domain-iothread-pinned", "needs the host's CPU count: run against the host (--host) or pass --assume cpus=N")]
    root, known = _fix(xml, HostFacts(name="h", cpu_count=4))
    pins = {p.get("iothread") or f"v{p.get('vcpu')}": p.get("cpuset") for p in root.find("cputune")}
    assert pins == {"1": "3", "v0": "0-2", "v1": "0-2"}, known.diff()
    assert not known.left


def test_a_pin_of_an_iothread_the_domain_does_not_define_is_dropped() -> None:
    head = ("<vcpu placement='static'>2</vcpu><iothreads>1</iothreads>\n  <cputune>\n    <vcpupin vcpu='0' cpuset='0'/>\n"
            "    <vcpupin vcpu='1' cpuset='1'/>\n    <iothreadpin iothread='1' cpuset='3'/>\n"
            "    <iothreadpin iothread='2' cpuset='1'/>\n  </cputune>")
    root, result = _fix(_domain(_disk("cache='none' iothread='1' queues='2'"), head), rules=["domain-iothread-pinned"])
    assert [f.applied.summary for f in result.fixed if f.applied] == [
        "offline/vm: drop the <iothreadpin> of undefined IOThread(s) [2]"], result.diff()
    assert b"<iothreadpin iothread=\"1\" cpuset=\"3\"/>\n  </cputune>" in etree.tostring(root)
    assert not result.left


def test_the_fixer_judges_each_rule_at_its_catalogue_level() -> None:
    from pytest_kvmio.fix.patch import findings

    head = "<vcpu placement='static'>2</vcpu><iothreads>1</iothreads>"
    domain = parse_domain(_domain(_disk("cache='unsafe' iothread='1' queues='2'") + _disk("cache='unsafe'", "vdc"), head),
                          source="t.xml")
    found = findings(domain, OFFLINE, ["domain-iothread-pinned", "disk-cache-safe", "host-kernel-min"])
    assert [(f.rule, f.target) for f in found] == [("domain-iothread-pinned", "offline/vm"),
                                                   ("disk-cache-safe", "offline/vm/vdb"), ("disk-cache-safe", "offline/vm/vdc")]


def test_native_on_a_sparse_image_prefers_preallocation_then_io_uring() -> None:
    domain = parse_domain(_domain(_disk("cache='none' io='native'")), source="t.xml")
    disk = domain.disks[0]
    disk.image = ImageFacts("/img/vdb.qcow2", "qcow2", 10 << 30, 196 << 10)
    first, second = remedies("disk-native-not-sparse", offline_target(domain, EIGHT, disk), EIGHT)
    assert "preallocation=full" in first.host_commands[0] and not first.edits
    assert second.virt_xml == ["virt-xml vm --edit target=vdb --disk io=io_uring"]
    fix = verdict_fix("disk-native-not-sparse", offline_target(domain, EIGHT, disk))
    assert fix["host_commands"][0].startswith("qemu-img convert") and 'io="io_uring"' in fix["alternatives"][0]["xml_patch"]


def test_fixing_a_fixed_file_changes_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "1", tmp_path / "2"
    assert kvmio("fix", str(DATA / "domains"), "--out", str(first), "--assume", "cpus=8").returncode == 0
    again = kvmio("fix", str(first), "--out", str(second), "--assume", "cpus=8")
    assert again.returncode == 0, again.stdout
    for path in first.glob("*.xml"):
        assert (second / path.name).read_bytes() == path.read_bytes(), path.name
    assert set(again.stdout.splitlines()) == {f"{p.name}: nothing to fix" for p in first.glob("*.xml")}


def test_diffs_show_no_secret_and_the_fixed_copy_keeps_it(tmp_path: Path) -> None:
    xml = _domain(_disk("cache='unsafe'") + "<graphics type='vnc' passwd='s3cret-pw'/>")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "vm.xml").write_bytes(xml)
    run = kvmio("fix", str(tmp_path / "in" / "vm.xml"), "--out", str(tmp_path / "out"), "--diff", "--rule", "disk-cache-safe")
    assert run.returncode == 0, run.stderr
    assert "-      " not in run.stdout or "s3cret-pw" not in run.stdout
    assert "s3cret-pw" not in run.stdout and "+" in run.stdout and "cache='none'" in run.stdout  # the file's quotes
    assert b"s3cret-pw" in (tmp_path / "out" / "vm.xml").read_bytes()


def test_cli_exit_codes(tmp_path: Path) -> None:
    legacy = str(DATA / "domains" / "libvirt-legacy.xml")
    left = kvmio("fix", legacy, "--out", str(tmp_path / "a"))
    assert left.returncode == 1
    assert "left domain-iothread-pinned on offline/libvirt-legacy.xml:kvmio-corpus-legacy: needs the host's CPU count" in left.stdout
    assert kvmio("fix", legacy, "--out", str(tmp_path / "b"), "--assume", "cpus=4").returncode == 0
    for args, says in (((legacy,), "--out DIR"), ((legacy, "--out", str(tmp_path), "--rule", "no-such-rule"), "no-such-rule"),
                       ((legacy, "--out", str(tmp_path), "--apply"), "need --host"),
                       ((legacy, "--out", str(tmp_path), "--assume", "cpus=many"), "--assume"),
                       (("--host", "local"), "--domain GLOB"), ((str(tmp_path / "missing.xml"), "--out", str(tmp_path)), "no such file")):
        run = kvmio("fix", *args)
        assert run.returncode == 4 and run.stderr.startswith("ERROR: kvmio fix: ") and says in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr


def test_every_failed_verdict_carries_a_fix_in_the_json_summary(pytester: pytest.Pytester) -> None:
    out = pytester.path / "v.json"
    pytester.runpytest_subprocess(str(SUITES), "--domain-xml", str(DATA / "domains"), "--kvmio-json", str(out),
                                  "-p", "no:cacheprovider")
    verdicts = json.loads(out.read_text())["verdicts"]
    failed = [v for v in verdicts if v["outcome"] == "failed"]
    assert failed and all(v["fix"]["summary"] for v in failed)
    assert all("fix" not in v for v in verdicts if v["outcome"] != "failed")
    xml = [v for v in failed if v["rule"] != "domain-iothread-pinned"]
    assert all(v["fix"]["xml_patch"].startswith("--- a/") for v in xml), [v["rule"] for v in xml if not v["fix"]["xml_patch"]]
    assert all(v["fix"]["takes_effect"] == "define" for v in xml)
    pinned = [v for v in failed if v["rule"] == "domain-iothread-pinned"]
    assert pinned and all("--assume cpus=N" in v["fix"]["needs"] for v in pinned)


def test_the_terminal_shows_the_fix_under_the_failure(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITES / "test_disks.py"), "--domain-xml",
                                           str(DATA / "domains" / "handwritten-typos.xml"), "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*kvmio fix*", "fix: offline/handwritten-typos.xml:tmpl-typos/vda: set io='io_uring'*(takes effect: define)",
                                 "  virt-xml tmpl-typos --edit target=vda --disk io=io_uring"])


CORPORA = [DATA / "domains", DATA / "libvirt-qemuxml"] + ([LAB_OFFLINE] if LAB_OFFLINE.is_dir() else [])


def _failures(pytester: pytest.Pytester, directory: Path, name: str) -> set[tuple[str, str]]:
    out = pytester.path / f"{name}.json"
    pytester.runpytest_subprocess(str(SUITES), "-m", "not perf", "--domain-xml", str(directory), "--kvmio-json", str(out),
                                  "--assume", "cpus=8,kernel=6.1,qemu=7.2,libvirt=9.0", "-p", "no:cacheprovider")
    return {(v["rule"], v["target"]) for v in json.loads(out.read_text())["verdicts"] if v["outcome"] == "failed"}


def _valid(path: Path) -> bool:
    return subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, timeout=60, check=False).returncode == 0


@pytest.mark.parametrize("corpus", CORPORA, ids=[c.name for c in CORPORA])
def test_the_corpus_is_fixed_no_rule_newly_fails_and_valid_files_stay_valid(pytester: pytest.Pytester, corpus: Path) -> None:
    fixed = pytester.path / "fixed"
    run = kvmio("fix", str(corpus), "--out", str(fixed), "--assume", "cpus=8", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    before, after = _failures(pytester, corpus, "before"), _failures(pytester, fixed, "after")
    assert before, "the corpus has failures to fix"
    assert not after, f"still failing after the fix: {sorted(after)}"
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate (libvirt-clients) not installed: validity not checked")
    broken = [p.name for p in sorted(corpus.glob("*.xml")) if _valid(p) and not _valid(fixed / p.name)]
    assert not broken, f"valid before the fix, invalid after: {broken}"


def test_live_fix_is_a_dry_run_without_apply(tmp_path: Path) -> None:
    run = kvmio("fix", "--host=local", "--libvirt-uri=test:///default", "--domain=test", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "test: dry run; pass --apply to define the patched XML" in run.stdout and "defined on" not in run.stdout
    assert "+  <iothreads>1</iothreads>" in run.stdout
    assert "<iothreads>1</iothreads>" in (tmp_path / "test.xml").read_text()
    none = kvmio("fix", "--host=local", "--libvirt-uri=test:///default", "--domain=nothing-*")
    assert none.returncode == 4 and "matches none" in none.stderr


def test_allure_attaches_the_fix_diff(pytester: pytest.Pytester) -> None:
    pytest.importorskip("allure_pytest")
    results = pytester.path / "allure"
    pytester.runpytest_subprocess(str(SUITES / "test_disks.py"), "--domain-xml", str(DATA / "domains" / "handwritten-typos.xml"),
                                  f"--alluredir={results}", "-p", "no:cacheprovider")
    diffs = [a for f in results.glob("*-result.json") for a in json.loads(f.read_text()).get("attachments", [])
             if a["name"] == "fix.diff"]
    assert len(diffs) == 4
    assert all((results / a["source"]).read_text().startswith("--- a/tmpl-typos.xml") for a in diffs)


def test_every_catalogue_rule_has_its_kind_of_fix() -> None:
    from pytest_kvmio.fix.remedies import OTHER_REMEDIES, XML_REMEDIES
    from pytest_kvmio.verdict.catalogue import RULES

    assert {r.id for r in RULES if r.fix == "xml"} == set(XML_REMEDIES)
    assert {r.id for r in RULES if r.fix in ("host", "guest")} == set(OTHER_REMEDIES)


def test_apply_defines_the_secure_xml_patched_and_prints_no_secret(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    import argparse
    import io

    import libvirt

    from pytest_kvmio.cli.fix import add_parser, run_fix

    conn = libvirt.open("test:///default")  # the test driver's state is shared by the connections of this process
    name = "kvmio-fixcheck-secure"
    xml = _domain(_disk("cache='unsafe'") + "<graphics type='vnc' passwd='s3cret-pw'/>").replace(
        b"<name>vm</name>", f"<name>{name}</name><memory unit='KiB'>65536</memory>".encode())
    dom = conn.defineXML(xml.decode())
    try:
        parser = argparse.ArgumentParser()
        args = add_parser(parser.add_subparsers()).parse_args(
            ["--host=local", "--libvirt-uri=test:///default", f"--domain={name}", "--rule=disk-cache-safe", "--apply",
             f"--backup-dir={tmp_path / 'backups'}"])
        before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        out = io.StringIO()
        assert run_fix(args, out) == 0
        printed = out.getvalue() + capsys.readouterr().err
        assert "s3cret-pw" not in printed and "cache='none'" in printed and f"{name}: defined on test:///default" in printed
        defined = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert "s3cret-pw" in defined and "cache='none'" in defined
        (backup,) = (tmp_path / "backups").glob("*.xml")
        assert f"to undo: kvmio fix --rollback {backup}" in printed
        assert backup.read_text() == before and backup.stat().st_mode & 0o777 == 0o600  # secure form, private
        assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
        rollback = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--rollback", str(backup)])
        assert run_fix(rollback, out) == 0
        assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    finally:
        dom.undefine()


def test_an_edit_that_changes_nothing_is_left_with_why_not_looped_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_kvmio.fix import remedies as module

    def no_op(target: Any, facts: Any) -> list[module.Remedy]:
        return [module.Remedy("does nothing", [lambda root: None])]

    monkeypatch.setitem(module.XML_REMEDIES, "disk-cache-safe", no_op)
    _, result = _fix(_domain(_disk("cache='unsafe'")), rules=["disk-cache-safe"])
    assert not result.changed and not result.fixed
    assert [f.why_left for f in result.left] == ["needs a fix by hand (kvmio's edit changed nothing)"]
