"""One rule, one place (issue 19): a rule's remedy proposes a fix exactly where its suite test fails.

The verdicts come from a real lint of each corpus (pytest over suites/ in a subprocess, --kvmio-json), never from
the check functions the suites and the remedies share, so a remedy that drifts from its rule shows here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_kvmio.facts.host import HostFacts, assumed_facts
from pytest_kvmio.facts.targets import OFFLINE_HOST, HostTarget, Target, iter_targets
from pytest_kvmio.fix.remedies import offline_target, remedies
from pytest_kvmio.model.domain import parse_domain
from pytest_kvmio.model.vhost import BackendProcess, VhostBackend
from pytest_kvmio.model.xmlfiles import load_xml_files
from pytest_kvmio.settings import assumptions
from pytest_kvmio.verdict.catalogue import RULES, Rule
from tests.conftest import DATA, REPO, SUITES
from tests.test_vhost_user_disks import SOCK, _suite, domain_xml

ASSUME = "kernel=6.1,qemu=7.2,libvirt=9.0,cpus=16"
OLD_HOST = "kernel=5.4,qemu=4.2,libvirt=6.0,cpus=16"
#: (corpus, --assume); "edge" is EDGE written to a temporary folder.
RUNS = [("domains", ASSUME), ("libvirt-qemuxml", ASSUME), ("domains-world", ASSUME), ("edge", ASSUME), ("edge", OLD_HOST)]
_HEAD = ("<domain type='kvm'><name>{name}</name><vcpu placement='static'>2</vcpu><iothreads>1</iothreads>"
         "<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/><iothreadpin iothread='1' cpuset='3'/>"
         "{pins}</cputune><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os><devices>")
_DISK = ("<disk type='{type}' device='disk'><driver name='qemu' type='raw' iothread='1' queues='2' {driver}/>{source}"
         "<target dev='vda' bus='virtio'/></disk></devices></domain>")
_VOLUME = "<source pool='default' volume='a.img'/>"
#: Where remedies once disagreed with the suites: io on a type='volume' disk (skipped: the pool decides) and a pin
#: of an IOThread the domain does not define (failed, with nothing to fix).
EDGE = {
    "volume-io-uring.xml": _HEAD.format(name="volume-io-uring", pins="")
    + _DISK.format(type="volume", driver="io='io_uring'", source=_VOLUME),
    "volume-native.xml": _HEAD.format(name="volume-native", pins="")
    + _DISK.format(type="volume", driver="io='native'", source=_VOLUME),
    "stray-pin.xml": _HEAD.format(name="stray-pin", pins="<iothreadpin iothread='2' cpuset='1'/>")
    + _DISK.format(type="file", driver="cache='none'", source="<source file='/img/a.img'/>"),
}
#: Every domain and disk rule with a remedy (measurements have none); rules a target does not concern get none.
JUDGED = [r for r in RULES if r.level in ("domain", "disk") and r.fix != "measurement"]


def _verdicts(corpus: Path, assume: str, out: Path) -> dict[tuple[str, str], str]:
    """Lint a corpus with the suites; return {(rule, target): outcome}."""
    args = [sys.executable, "-m", "pytest", str(SUITES), "--domain-xml", str(corpus), "--assume", assume,
            "--kvmio-json", str(out), "-m", "not perf", "-q", "-p", "no:cacheprovider", f"--rootdir={REPO}"]
    subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    return {(v["rule"], v["target"]): v["outcome"] for v in json.loads(out.read_text())["verdicts"]}


def _targets(corpus: Path, assume: str) -> list[tuple[Rule, Target]]:
    """Return every (rule, target) pair of a corpus at the rule's level, as the plugin builds its targets."""
    domains, _ = load_xml_files([str(corpus)])
    host = HostTarget(name=OFFLINE_HOST, spec=None, facts=assumed_facts(OFFLINE_HOST, assumptions(assume)),
                      domains=domains)
    host.leave_out_other_drivers()
    return [(rule, target) for rule in JUDGED for target in iter_targets([host], rule.level)]


@pytest.mark.parametrize(("corpus", "assume"), RUNS, ids=[f"{c}-{a.split(',')[0]}" for c, a in RUNS])
def test_a_remedy_is_proposed_exactly_where_its_rule_fails(tmp_path: Path, corpus: str, assume: str) -> None:
    folder = DATA / corpus
    if corpus == "edge":
        folder = tmp_path / "edge"
        folder.mkdir()
        for name, xml in EDGE.items():
            (folder / name).write_text(xml)
    verdicts = _verdicts(folder, assume, tmp_path / "v.json")
    assert "failed" in verdicts.values(), "the corpus has failures to compare"
    pairs = _targets(folder, assume)
    ids = {rule.id for rule in JUDGED}
    unmatched = {(r, t) for r, t in verdicts if r in ids} - {(rule.id, target.id) for rule, target in pairs}
    assert not unmatched, f"verdicts on targets this test does not build: {sorted(unmatched)[:10]}"
    wrong, no_edit = [], []
    for rule, target in pairs:
        outcome = verdicts.get((rule.id, target.id), "not applicable")
        found = remedies(rule.id, target, target.host.facts)
        if bool(found) != (outcome == "failed"):
            wrong.append(f"{rule.id} on {target.id}: {outcome}, {len(found)} remedies"
                         + (f" ({found[0].summary})" if found else ""))
        elif found and rule.fix == "xml" and not any(r.edits for r in found) and not found[0].needs:
            no_edit.append(f"{rule.id} on {target.id}: {found[0].summary}")
    assert not wrong, f"{len(wrong)} remedies disagree with the suites' verdicts:\n" + "\n".join(wrong[:40])
    assert not no_edit, "failed XML rules without an edit or a missing fact:\n" + "\n".join(no_edit)


def test_an_spdk_backend_without_hugepages_fails_and_has_a_remedy_live() -> None:
    spdk = VhostBackend(SOCK, True, listeners=(BackendProcess(7, "reactor_0", "/usr/local/bin/spdk_tgt"),))
    facts = HostFacts("hv01")
    huge = "<memoryBacking><hugepages/><access mode='shared'/></memoryBacking>"
    for backing, fails in (("<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>", True),
                           (huge, False)):
        domain = parse_domain(domain_xml(backing=backing), source="t.xml", host="hv01")
        disk = domain.disks[0]
        disk.backend = spdk
        try:
            _suite().test_vhost_user_disk_has_shared_guest_memory(disk, {}, lambda key, value: None)
            failed = False
        except AssertionError:
            failed = True
        found = remedies("disk-vhost-shared-memory", offline_target(domain, facts, disk), facts)
        assert (failed, bool(found)) == (fails, fails), backing
        assert all(not r.edits for r in found), "hugepages must be reserved on the host before the XML asks for them"
