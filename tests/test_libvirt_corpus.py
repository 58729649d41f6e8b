"""The rule suites on libvirt's own test domain XMLs: third-party input the rules must judge without false alarms.

The files in tests/data/libvirt-qemuxml/ are libvirt's tests/qemuxmlconfdata inputs picked by a rule (every input
whose name starts with one of the prefixes in manifest.json), unmodified; SOURCE.md says where from and under
which license. A sample of them has verdicts written by hand from the rule texts (expected-sample.yaml).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_kvmio.verdict.catalogue import lookup
from tests.conftest import DATA, SUITES

CORPUS = DATA / "libvirt-qemuxml"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text())
SAMPLE: dict[str, dict[str, dict[str, str]]] = yaml.safe_load((CORPUS / "expected-sample.yaml").read_text())
#: This machine's versions (Debian 12): what a user asks "can these templates run here?" with.
ASSUME = "kernel=6.1,qemu=7.2,libvirt=9.0"
#: Rules libvirt refuses the settings of on disks outside QEMU's block layer (vhost-user, vhost-vdpa).
BLOCK_LAYER_RULES = {
    "disk-io-mode-valid", "disk-direct-io-for-async", "disk-native-not-sparse", "disk-io-uring-supported",
    "disk-iothread-assigned", "disk-discard-unmap", "disk-cache-safe",
}
#: The vhost-user rules (suites/test_vhost_user.py).
VHOST_USER_RULES = {"disk-vhost-shared-memory", "disk-vhost-reconnect", "disk-vhost-backend-queues", "disk-vhost-backend-serving"}

_RUNS: dict[str, dict[str, Any]] = {}


def lint(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, assume: str | None) -> dict[str, Any]:
    """Run suites/ over the whole corpus once per --assume value; return the JSON summary plus exit code/output."""
    key = assume or "-"
    if key not in _RUNS:
        out = tmp_path_factory.mktemp("libvirt-corpus") / "verdicts.json"
        args = [str(SUITES), "--domain-xml", str(CORPUS), "--kvmio-json", str(out), "-p", "no:cacheprovider"]
        result = pytester.runpytest(*args, *(["--assume", assume] if assume else []))
        assert out.exists(), "\n".join(result.outlines[-30:])
        document = json.loads(out.read_text())
        document["_ret"] = result.ret
        document["_output"] = "\n".join(result.outlines + result.errlines)
        _RUNS[key] = document
    return _RUNS[key]


@pytest.fixture(params=[None, ASSUME], ids=["no-assume", "assume"])
def summary(request: pytest.FixtureRequest, pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return lint(pytester, tmp_path_factory, request.param)


def by_key(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["rule"], v["target"]): v for v in summary["verdicts"]}


# --- the corpus is what the rule says ------------------------------------------------------------


def test_the_corpus_holds_every_input_the_rule_selects() -> None:
    prefixes = tuple(MANIFEST["prefixes"])
    upstream = set(MANIFEST["upstream_inputs"])
    assert all(name.startswith(prefixes) and name.count(".") == 1 for name in upstream)
    wanted = (upstream - set(MANIFEST["missing"])) | set(MANIFEST["extra"])
    on_disk = {p.name for p in CORPUS.glob("*.xml")}
    assert on_disk == wanted, f"not here: {sorted(wanted - on_disk)}; not selected: {sorted(on_disk - wanted)}"
    assert len(on_disk) >= 60
    assert all(reason for reason in MANIFEST["missing"].values()), "every missing input says why"


# --- verdicts over the whole corpus ------------------------------------------------------------------


def test_no_crash_and_every_verdict_names_its_source_file(summary: dict[str, Any]) -> None:
    assert summary["_ret"] == pytest.ExitCode.TESTS_FAILED  # libvirt's inputs have no IOThreads, rbd without discard...
    assert "Traceback" not in summary["_output"] and "INTERNALERROR" not in summary["_output"]
    assert summary["totals"]["error"] == 0
    assert all(lookup(rule) is not None for rule in summary["rules"]), "every rule seen in verdicts is in the catalogue"
    for verdict in summary["verdicts"]:
        if verdict["rule"].startswith("host-"):
            continue
        source = Path(verdict["source"])
        assert source.parent == CORPUS and source.is_file(), verdict
        if verdict["outcome"] in ("failed", "skipped"):
            assert str(source) in verdict["message"], verdict


def _file_verdicts(pytester: pytest.Pytester, name: str, paths: list[Path], assume: str | None) -> dict[tuple[str, str], str]:
    """(rule, target) -> outcome of a lint of `paths` alone (no host rules)."""
    out = pytester.path / f"{name}.json"
    args = [str(SUITES), *(a for p in paths for a in ("--domain-xml", str(p))), "--kvmio-json", str(out), "-p", "no:cacheprovider"]
    pytester.runpytest(*args, *(["--assume", assume] if assume else []))
    return {(v["rule"], v["target"]): v["outcome"] for v in json.loads(out.read_text())["verdicts"]
            if not v["rule"].startswith("host-")}


def test_rule_and_target_are_unique_though_64_files_name_their_domain_qemuguest1(
        summary: dict[str, Any], pytester: pytest.Pytester, request: pytest.FixtureRequest) -> None:
    keys = Counter((v["rule"], v["target"]) for v in summary["verdicts"])
    assert [k for k, n in keys.items() if n > 1] == []
    assert "[" not in "".join(v["nodeid"].rsplit("]", 1)[-1] for v in summary["verdicts"])  # no pytest suffixes
    # The ids carry the file, so they are the same whatever else is linted in the run: disk-cache.xml alone,
    # with one other file naming its domain QEMUGuest1 too, and within the whole corpus.
    assume = request.node.callspec.params["summary"]
    whole = {(v["rule"], v["target"]): v["outcome"] for v in summary["verdicts"]
             if v["target"].startswith("offline/disk-cache.xml:")}
    assert {t for _, t in whole} == {f"offline/disk-cache.xml:QEMUGuest1/{d}" for d in ("hda", "hdb", "sda", "sdb", "vda")}
    alone = _file_verdicts(pytester, "alone", [CORPUS / "disk-cache.xml"], assume)
    pair = pytester.path / "pair"
    pair.mkdir()
    for name in ("disk-cache.xml", "iothreads-disk.xml"):
        (pair / name).write_bytes((CORPUS / name).read_bytes())
    with_other = _file_verdicts(pytester, "pair", [pair], assume)
    assert alone == whole
    assert {k: o for k, o in with_other.items() if k[1].startswith("offline/disk-cache.xml:")} == whole
    assert any(t.startswith("offline/iothreads-disk.xml:QEMUGuest1/") for _, t in with_other)


def test_skips_are_unknown_facts_only_and_rare_once_the_host_is_assumed(pytester, tmp_path_factory) -> None:
    for assume, most in ((ASSUME, 0.25), (None, 0.40)):
        summary = lint(pytester, tmp_path_factory, assume)
        totals = summary["totals"]
        judged = sum(n for outcome, n in totals.items() if outcome != "not_applicable")
        share = totals["skipped"] / judged
        print(f"--assume {assume}: {totals['skipped']} of {judged} verdicts skipped ({share:.0%}); "
              f"{totals['not_applicable']} rule x target pairs not applicable")
        assert share <= most, assume
        reasons = {v["message"] for v in summary["verdicts"] if v["outcome"] == "skipped"}
        assert all("unknown" in r for r in reasons), [r for r in reasons if "unknown" not in r]


def test_libvirt_features_raise_no_false_alarm(summary: dict[str, Any]) -> None:
    verdicts = by_key(summary)

    def outcome(rule: str, target: str) -> str:
        return verdicts[(rule, target)]["outcome"] if (rule, target) in verdicts else "not-applicable"

    # Queue→IOThread mappings on a virtio disk's and on a virtio-scsi controller's <driver> are IOThreads.
    for target in ("offline/iothreads-disk.xml:QEMUGuest1/vdc", "offline/iothreads-disk.xml:QEMUGuest1/vdd",
                   "offline/iothreads-virtio-scsi-mapping.xml:QEMUGuest1/sdc"):
        assert outcome("disk-iothread-assigned", target) == "passed", target
    # ... and the mapping, not the vCPU count, decides the queues (4 queues on 2 vCPUs; 3 queues round-robin).
    assert outcome("disk-multiqueue", "offline/iothreads-disk.xml:QEMUGuest1/vdc") == "passed"
    assert outcome("disk-multiqueue", "offline/iothreads-virtio-scsi-mapping.xml:QEMUGuest1/sdc") == "passed"
    # vhost-user and vhost-vdpa disks bypass QEMU's block layer: those rules make no item.
    for target in ("offline/disk-vhostuser.xml:QEMUGuest1/vda", "offline/disk-vhostuser.xml:QEMUGuest1/vdb",
                   "offline/disk-vhostvdpa.xml:QEMUGuest1/vda", "offline/disk-vhostuser-numa.xml:QEMUGuest1/vda"):
        assert {r for r in BLOCK_LAYER_RULES if outcome(r, target) != "not-applicable"} == set(), target
    assert outcome("disk-multiqueue", "offline/disk-vhostvdpa.xml:QEMUGuest1/vda") == "not-applicable"
    # Shared guest memory for vhost-user: <memoryBacking><access mode='shared'/>, or every NUMA cell memAccess='shared'.
    for target in ("offline/disk-vhostuser.xml:QEMUGuest1/vda", "offline/disk-vhostuser-numa.xml:QEMUGuest1/vdb"):
        assert outcome("disk-vhost-shared-memory", target) == "passed", target
    assert outcome("disk-vhost-reconnect", "offline/disk-vhostuser.xml:QEMUGuest1/vdb") == "passed"
    # ... and none of the vhost-user rules concerns vhost-vdpa; the backend rules need a live host.
    assert {r for r in VHOST_USER_RULES if outcome(r, "offline/disk-vhostvdpa.xml:QEMUGuest1/vda") != "not-applicable"} == set()
    assert outcome("disk-vhost-backend-serving", "offline/disk-vhostuser.xml:QEMUGuest1/vdb") == "not-applicable"
    # cache='default' is QEMU's default, writeback: passed with the writeback note.
    defaults = [v for v in summary["verdicts"] if v["rule"] == "disk-cache-safe" and "(QEMU default)" in v["message"]]
    assert any(v["target"].startswith("offline/disk-sata-device.xml:") for v in defaults)
    # A network rbd image is thin by design: judged, and a transient disk's base never grows: not judged.
    assert outcome("disk-discard-unmap", "offline/disk-network-rbd.xml:QEMUGuest1/vda") == "failed"
    assert "rbd images are thin by design" in verdicts[("disk-discard-unmap", "offline/disk-network-rbd.xml:QEMUGuest1/vda")]["message"]
    assert outcome("disk-discard-unmap", "offline/disk-transient.xml:QEMUGuest1/hda") == "not-applicable"
    assert outcome("disk-native-not-sparse", "offline/disk-transient.xml:QEMUGuest1/hda") == "not-applicable"


# --- a sample judged by hand --------------------------------------------------------------------------


def _full_id(target: str, file: str) -> str:
    """Map a per-file target id of the sample (offline/QEMUGuest1/vdb) to its id (offline/FILE:QEMUGuest1/vdb)."""
    host, rest = target.split("/", 1)
    return f"{host}/{file}:{rest}"


def test_the_hand_judged_sample_matches(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    summary = lint(pytester, tmp_path_factory, None)
    verdicts = by_key(summary)
    wrong = []
    for file, targets in SAMPLE.items():
        assert (CORPUS / file).is_file(), file
        for target, rules in targets.items():
            full = _full_id(target, file)
            for rule, expected in rules.items():
                found = verdicts.get((rule, full))
                actual = found["outcome"] if found else "not-applicable"
                if actual != expected:
                    wrong.append(f"{file} {full} {rule}: expected {expected}, got {actual}"
                                 + (f" ({found['message'][:160]})" if found else ""))
    assert not wrong, "\n".join(wrong)
    assert sum(len(r) for t in SAMPLE.values() for r in t.values()) >= 100
