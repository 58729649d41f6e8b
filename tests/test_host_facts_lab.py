"""`kvmio facts save` on the real lab, and its replay: the lab's XML linted against the lab's saved facts gives the
live run's verdicts, for every lab domain and every rule that applies offline.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.facts.saved import load_facts
from tests.conftest import SUITES, kvmio

pytestmark = [pytest.mark.integration, pytest.mark.lab]

URI = "qemu:///system"
#: Rules a replay does not judge: the guest's, fio's and A/B's, the host rules that read a live host, the rules of
#: vhost-user backends (live hosts only, catalogue) and the rules of what runs (live, running domains only).
LIVE_ONLY_RULES = {
    "host-io-uring-enabled", "host-scheduler-none", "disk-vhost-backend-queues", "disk-vhost-backend-serving",
    "domain-runtime-pinning", "disk-runtime-settings", "domain-pending-restart", "guest-scheduler-persistent",
}


def _offline_only(rule: str) -> bool:
    return not rule.startswith(("guest-", "perf-", "ab-")) and rule not in LIVE_ONLY_RULES


def _dump(names: list[str], directory: Path) -> dict[str, str]:
    """Write `virsh dumpxml` of each domain to DIRECTORY/NAME.xml (the live XML, as the live run reads it)."""
    directory.mkdir(exist_ok=True)
    dumped = {}
    for name in names:
        xml = subprocess.run(["virsh", "-c", URI, "-r", "dumpxml", name], capture_output=True, text=True, check=True).stdout
        (directory / f"{name}.xml").write_text(xml)
        dumped[name] = xml
    return dumped


def _run(pytester: pytest.Pytester, *args: str) -> list[dict[str, Any]]:
    out = pytester.path / "verdicts.json"
    out.unlink(missing_ok=True)
    result = pytester.runpytest_subprocess(str(SUITES), "-m", "not perf", "-p", "no:cacheprovider",
                                           f"--kvmio-json={out}", *args, timeout=900)
    assert out.exists(), result.stdout.str()[-3000:]
    verdicts: list[dict[str, Any]] = json.loads(out.read_text())["verdicts"]
    return verdicts


def _live_as_offline(target: str) -> str:
    """Map a live id to the offline id of its dumped file: local/DOM/DISK -> offline/DOM.xml:DOM/DISK."""
    if target == "local":
        return "offline"
    domain, _, disk = target.removeprefix("local/").partition("/")
    return f"offline/{domain}.xml:{domain}" + (f"/{disk}" if disk else "")


def _outcomes(verdicts: list[dict[str, Any]], ids: Any = lambda t: t) -> dict[tuple[str, str], str]:
    return {(v["rule"], ids(v["target"])): v["outcome"] for v in verdicts if _offline_only(v["rule"])}


def test_facts_save_on_the_lab(tmp_path: Path, lab: dict[str, Any]) -> None:
    out = tmp_path / "lab.json"
    done = kvmio("facts", "save", "--host", "local", "--out", str(out))
    assert done.returncode == 0, done.stderr
    saved = load_facts(out)
    facts = saved.facts
    version = subprocess.run(["virsh", "-c", URI, "-r", "version"], capture_output=True, text=True, check=True).stdout
    assert f"libvirt {facts.libvirt}" in version.replace("library: libvirt", "libvirt"), version
    assert str(facts.kernel) == subprocess.check_output(["uname", "-r"], text=True).strip()
    assert facts.qemu is not None and facts.io_uring_support()[0] is True
    assert facts.host_cpus is not None and facts.host_cpus.count == facts.cpu_count
    x86 = facts.machine_types[facts.arch or ""]
    assert x86.canonical("q35") is not None and x86.canonical("q35").startswith("pc-q35-")  # type: ignore[union-attr]
    # Every image of the lab's domains (but the vhost-user ones, which QEMU does not open), with its allocation.
    vhost_images = {entry["image"] for entry in lab["vhost"].values()}
    images = [p for p in lab["status"]["images"] if p not in vhost_images]
    assert images and all(facts.images[p].error is None and facts.images[p].sparse is not None for p in images), images
    assert facts.images["/var/lib/kvmio-lab/images/legacy-thin.qcow2"].sparse is True
    assert facts.images["/var/lib/kvmio-lab/images/good-data.raw"].sparse is False
    # The vhost-user backends, with the --export their queue count is read from (and nothing else of their argv).
    for entry in lab["vhost"].values():
        backend = facts.vhost_backends[entry["socket"]]
        assert backend.queues()[0] == entry["queues"], backend
    assert "--blockdev" not in out.read_text()


def test_replayed_lab_verdicts_equal_the_live_ones(pytester: pytest.Pytester, lab: dict[str, Any]) -> None:
    names = sorted(lab["domains"])
    facts = pytester.path / "lab.json"
    saved = kvmio("facts", "save", "--host", "local", "--out", str(facts))
    assert saved.returncode == 0, saved.stderr
    dumped = _dump(names, pytester.path / "live-xml")
    live = _outcomes(_run(pytester, "--host=local", "--domain=kvmio-lab-*"), _live_as_offline)
    assert _dump(names, pytester.path / "after") == dumped, "a lab domain was redefined during the live run: run again"
    replayed = _outcomes(_run(pytester, f"--domain-xml={pytester.path / 'live-xml'}", f"--host-facts={facts}"))
    assert {r for r, _ in live} == {r for r, _ in replayed}, "the same rules are judged live and replayed"
    differ = {k: (live.get(k), replayed.get(k)) for k in live.keys() | replayed.keys() if live.get(k) != replayed.get(k)}
    assert not differ, "live vs replayed: " + "\n".join(f"{k}: {v}" for k, v in sorted(differ.items()))
    judged = {target.split(":", 1)[1].split("/")[0] for _, target in live if ":" in target}
    assert judged == set(names), "every lab domain is judged"
    # The facts that only a host can give were restored: the image-allocation rules are judged, not skipped.
    for rule in ("disk-native-not-sparse", "disk-discard-unmap"):
        outcomes = [o for (r, _), o in replayed.items() if r == rule]
        assert outcomes and "skipped" not in outcomes, (rule, outcomes)
    # Without the facts, the same files leave them undecided.
    bare = _outcomes(_run(pytester, f"--domain-xml={pytester.path / 'live-xml'}"))
    assert "skipped" in {o for (r, _), o in bare.items() if r == "disk-native-not-sparse"}
    print(f"live = replayed for {len(names)} lab domains: {len(live)} verdicts of {len({r for r, _ in live})} rules")


def test_the_lab_templates_with_machine_aliases_replay_too(pytester: pytest.Pytester, lab: dict[str, Any]) -> None:
    """The lab's own XML says machine='q35' (libvirt stores pc-q35-X.Y): judged against the saved facts, the alias is
    the host's machine type, and the verdicts are the live ones."""
    facts = pytester.path / "lab.json"
    assert kvmio("facts", "save", "--host", "local", "--out", str(facts)).returncode == 0
    templates = {name: Path(entry["xml"]) for name, entry in lab["domains"].items() if name != "kvmio-lab-fix"}
    assert any("machine=\"q35\"" in t.read_text() or "machine='q35'" in t.read_text() for t in templates.values())
    live = _outcomes(_run(pytester, "--host=local", "--kvmio-rule=disk-*", "--kvmio-rule=domain-*",
                          *[f"--domain={n}" for n in templates]), _live_as_offline)
    replayed = _outcomes(_run(pytester, *[f"--domain-xml={t}" for t in templates.values()], f"--host-facts={facts}",
                              "--kvmio-rule=disk-*", "--kvmio-rule=domain-*"))
    differ = {k: (live.get(k), replayed.get(k)) for k in live.keys() | replayed.keys() if live.get(k) != replayed.get(k)}
    assert not differ, "live vs replayed templates: " + "\n".join(f"{k}: {v}" for k, v in sorted(differ.items()))


def test_facts_saved_over_ssh_equal_the_local_ones(tmp_path: Path, lab: dict[str, Any]) -> None:
    ssh = lab["ssh"]
    local, remote = tmp_path / "local.json", tmp_path / "ssh.json"
    assert kvmio("facts", "save", "--host", "local", "--out", str(local)).returncode == 0
    done = kvmio("facts", "save", "--host", ssh["host_spec"], "--libvirt-uri", ssh["libvirt_uri"], "--out", str(remote))
    assert done.returncode == 0, done.stderr
    a, b = json.loads(local.read_text()), json.loads(remote.read_text())
    assert b["host"] == f"127.0.0.1:{ssh['port']}" and b["libvirt_uri"].startswith("qemu+ssh://root@127.0.0.1")
    for key in ("host_uuid", "versions", "io_uring_disabled", "cpu", "arch", "machine_types", "block_devices"):
        assert a[key] == b[key], key
    assert a["images"].keys() == b["images"].keys()
    assert {p: i["block_device"] for p, i in a["images"].items()} == {p: i["block_device"] for p, i in b["images"].items()}
    assert a["vhost_backends"].keys() == b["vhost_backends"].keys()
