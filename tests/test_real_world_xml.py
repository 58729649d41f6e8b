"""Offline lint on XML the project did not write: the seven blind spots found on other projects' templates.

Each test names the blind spot it covers (issue 18): other hypervisor drivers, io= on disks it never
reaches, downstream machine types, virtio transports, one file stopping the lint, ids that moved with the
other files of a run, and the awkward ways of pointing kvmio at a template tree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUITES, kvmio

CURRENT_HOST = "kernel=6.1,qemu=7.2,libvirt=9.0"

DOMAIN = """<domain type='{type}'>
  {name}
  <vcpu>{vcpus}</vcpu>
  <os><type arch='{arch}' machine='{machine}'>hvm</type></os>
  <devices>
{disks}
  </devices>
</domain>
"""
FILE_DISK = """    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'{extra}/>
      <source file='/var/lib/libvirt/images/{dev}.img'/>
      <target dev='{dev}' bus='virtio'/>{address}
    </disk>"""
RBD_DISK = """    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' io='native'/>
      <source protocol='rbd' name='vms/{dev}'><host name='10.0.0.1' port='6789'/></source>
      <target dev='{dev}' bus='virtio'/>
    </disk>"""


def domain_xml(name: str | None = "vm", *, type: str = "kvm", vcpus: int = 2, machine: str = "pc-q35-7.2",
               arch: str = "x86_64", disks: str | None = None) -> str:
    disks = disks if disks is not None else FILE_DISK.format(dev="vda", extra="", address="")
    return DOMAIN.format(type=type, name=f"<name>{name}</name>" if name else "", vcpus=vcpus, arch=arch,
                         machine=machine, disks=disks)


def lint(pytester: pytest.Pytester, *paths: str | Path, assume: str | None = CURRENT_HOST,
         extra: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """Run the suites over `paths` offline; return the run and its JSON summary ({} when none was written)."""
    out = pytester.path / "verdicts.json"
    out.unlink(missing_ok=True)
    args = [str(SUITES), "--domain-xml", *[str(p) for p in paths], "--kvmio-json", str(out), "-p", "no:cacheprovider",
            "-m", "not perf"]
    if assume:
        args += ["--assume", assume]
    result = pytester.runpytest(*args, *extra)
    return result, json.loads(out.read_text()) if out.exists() else {}


def outcome(summary: dict[str, Any], rule: str, target: str) -> str:
    found = [v["outcome"] for v in summary["verdicts"] if v["rule"] == rule and v["target"] == target]
    return found[0] if found else "no item"


def message(summary: dict[str, Any], rule: str, target: str) -> str:
    (found,) = [v["message"] for v in summary["verdicts"] if v["rule"] == rule and v["target"] == target]
    return str(found)


# --- 1. <domain type> is read -----------------------------------------------------------------


@pytest.mark.parametrize("driver", ["xen", "lxc", "bhyve", "vz", "hyperv", "test"])
def test_domains_of_other_drivers_are_not_judged_and_the_summary_says_why(pytester: pytest.Pytester, driver: str) -> None:
    (pytester.path / "other.xml").write_text(domain_xml("other", type=driver))
    (pytester.path / "qemu.xml").write_text(domain_xml("qemu-one", type="qemu"))
    result, summary = lint(pytester, pytester.path / "other.xml", pytester.path / "qemu.xml")
    assert not [v for v in summary["verdicts"] if ":other" in v["target"]]
    assert outcome(summary, "disk-iothread-assigned", "offline/qemu.xml:qemu-one/vda") == "failed"
    (left,) = summary["left_out"]
    assert left["domain"] == "offline/other.xml:other" and left["source"].endswith("other.xml")
    assert f"<domain type='{driver}'>" in left["reason"]
    result.stdout.fnmatch_lines(["left out: 1 domain(s) not run by QEMU*"])


def test_hvf_domains_are_judged_like_kvm(pytester: pytest.Pytester) -> None:
    (pytester.path / "mac.xml").write_text(domain_xml("mac", type="hvf"))
    _, summary = lint(pytester, pytester.path / "mac.xml")
    assert outcome(summary, "disk-iothread-assigned", "offline/mac.xml:mac/vda") == "failed"
    assert summary["left_out"] == []


# --- 2. io= is judged only where it reaches a backend ----------------------------------------


def test_native_on_an_rbd_disk_needs_direct_io_but_is_no_sparse_image(pytester: pytest.Pytester) -> None:
    (pytester.path / "ceph.xml").write_text(domain_xml("ceph", disks=RBD_DISK.format(dev="vda")))
    _, summary = lint(pytester, pytester.path / "ceph.xml")
    target = "offline/ceph.xml:ceph/vda"
    assert outcome(summary, "disk-direct-io-for-async", target) == "failed"  # libvirt refuses it whatever the source
    assert outcome(summary, "disk-native-not-sparse", target) == "no item"
    assert summary["rules"]["disk-native-not-sparse"]["not_applicable"] == 1


def test_the_fix_of_native_on_rbd_never_proposes_another_io_mode(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ceph.xml").write_text(domain_xml("ceph", disks=RBD_DISK.format(dev="vda")))
    done = kvmio("fix", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--diff", "--assume", CURRENT_HOST)
    assert "io_uring" not in done.stdout and "preallocation" not in done.stdout, done.stdout
    assert "fixed disk-direct-io-for-async" in done.stdout and "remove io='native'" in done.stdout
    fixed = (tmp_path / "out" / "ceph.xml").read_text()
    assert "io=" not in fixed and "protocol=\"rbd\"" in fixed.replace("'", '"')


@pytest.mark.parametrize(("source", "rule"), [
    ("<source protocol='iscsi' name='iqn.2013-07.com.example:t/1'><host name='10.0.0.2'/></source>", "disk-io-uring-supported"),
    ("<source protocol='nbd' name='export'><host name='10.0.0.3' port='10809'/></source>", "disk-io-uring-supported"),
])
def test_io_uring_on_network_disks_is_not_judged(pytester: pytest.Pytester, source: str, rule: str) -> None:
    disk = f"""    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' io='io_uring'/>
      {source}
      <target dev='vda' bus='virtio'/>
    </disk>"""
    (pytester.path / "net.xml").write_text(domain_xml("net", disks=disk))
    _, summary = lint(pytester, pytester.path / "net.xml", assume="kernel=4.19,qemu=4.2,libvirt=6.0")
    assert outcome(summary, "disk-cache-safe", "offline/net.xml:net/vda") == "passed"  # the disk is judged
    for no_item in (rule, "disk-direct-io-for-async", "disk-native-not-sparse"):
        assert outcome(summary, no_item, "offline/net.xml:net/vda") == "no item"
        assert summary["rules"][no_item]["not_applicable"] == 1


def test_nvme_disks_and_volume_disks(pytester: pytest.Pytester) -> None:
    disks = """    <disk type='nvme' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source type='pci' managed='yes' namespace='1'><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source pool='default' volume='db.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>"""
    (pytester.path / "n.xml").write_text(domain_xml("n", disks=disks))
    _, summary = lint(pytester, pytester.path / "n.xml")
    assert outcome(summary, "disk-native-not-sparse", "offline/n.xml:n/vda") == "no item"
    assert outcome(summary, "disk-native-not-sparse", "offline/n.xml:n/vdb") == "skipped"
    assert "depends on the pool" in message(summary, "disk-native-not-sparse", "offline/n.xml:n/vdb")


# --- 3. downstream machine types ----------------------------------------------------------------


@pytest.mark.parametrize(("machine", "arch", "queues"), [
    ("pc-i440fx-rhel7.6.0", "x86_64", 1),
    ("pc-q35-rhel8.2.0", "x86_64", 1),
    ("pc-q35-rhel8.3.0", "x86_64", 1),
    ("pc-q35-rhel8.4.0", "x86_64", 2),
    ("pc-q35-rhel9.2.0", "x86_64", 2),
    ("pseries-rhel7.6.0", "ppc64le", 1),
    ("pseries-rhel8.5.0", "ppc64le", 2),
    ("virt-rhel9.2.0", "aarch64", 2),
    ("pc-i440fx-5.1", "x86_64", 1),
    ("pc-q35-5.2", "x86_64", 2),
])
def test_downstream_and_upstream_machine_types_set_the_queue_default(pytester: pytest.Pytester, machine: str,
                                                                     arch: str, queues: int) -> None:
    (pytester.path / "m.xml").write_text(domain_xml("m", machine=machine, arch=arch, vcpus=2))
    for assume in (CURRENT_HOST, "kernel=5.4,qemu=4.2,libvirt=6.0", None):  # the machine type decides, not the host
        _, summary = lint(pytester, pytester.path / "m.xml", assume=assume)
        got = outcome(summary, "disk-multiqueue", "offline/m.xml:m/vda")
        assert got == ("passed" if queues == 2 else "failed"), (assume, got)
        if queues == 1:
            text = message(summary, "disk-multiqueue", "offline/m.xml:m/vda")
            assert f"machine type {machine}" in text and "1 queue(s)" in text
            assert "rhel" not in machine or "hw_compat_rhel_8_3" in text


def test_a_machine_type_kvmio_cannot_place_is_a_skip_that_names_it(pytester: pytest.Pytester) -> None:
    (pytester.path / "m.xml").write_text(domain_xml("m", machine="acme-hv-3.1", vcpus=2))
    _, summary = lint(pytester, pytester.path / "m.xml")
    assert outcome(summary, "disk-multiqueue", "offline/m.xml:m/vda") == "skipped"
    assert "acme-hv-3.1" in message(summary, "disk-multiqueue", "offline/m.xml:m/vda")


# --- 4. the transport sets the default too ------------------------------------------------------


@pytest.mark.parametrize(("machine", "arch", "address"), [
    ("s390-ccw-virtio", "s390x", ""),
    ("s390-ccw-virtio-rhel9.2.0", "s390x", ""),
    ("s390-ccw-virtio-7.2", "s390x", "\n      <address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0000'/>"),
    ("virt-7.2", "aarch64", "\n      <address type='virtio-mmio'/>"),
    ("microvm", "x86_64", ""),
])
def test_virtio_off_pci_gets_one_queue_whatever_the_machine_type(pytester: pytest.Pytester, machine: str, arch: str,
                                                                address: str) -> None:
    disks = FILE_DISK.format(dev="vda", extra="", address=address)
    (pytester.path / "t.xml").write_text(domain_xml("t", machine=machine, arch=arch, vcpus=2, disks=disks))
    _, summary = lint(pytester, pytester.path / "t.xml", assume=None)
    assert outcome(summary, "disk-multiqueue", "offline/t.xml:t/vda") == "failed"
    assert "1 queue(s)" in message(summary, "disk-multiqueue", "offline/t.xml:t/vda")


def test_arm_virt_without_mmio_devices_is_on_pci(pytester: pytest.Pytester) -> None:
    (pytester.path / "a.xml").write_text(domain_xml("a", machine="virt-7.2", arch="aarch64", vcpus=2))
    _, summary = lint(pytester, pytester.path / "a.xml")
    assert outcome(summary, "disk-multiqueue", "offline/a.xml:a/vda") == "passed"


# --- 5. one file never stops the lint -----------------------------------------------------------


def test_a_template_tree_with_nameless_multi_domain_and_broken_files_judges_every_file(pytester: pytest.Pytester) -> None:
    tree = pytester.path / "templates"
    (tree / "sub").mkdir(parents=True)
    (tree / "plain.xml").write_text(domain_xml("plain"))
    (tree / "sub" / "nameless.xml").write_text(domain_xml(None))
    (tree / "two.xml").write_text(domain_xml("first") + domain_xml("second"))
    (tree / "node.xml").write_text(f"<node>{domain_xml('n1')}{domain_xml('n2', type='xen')}</node>")
    (tree / "broken.xml").write_text("<domain type='kvm'>\n<name>b</name>\n<devices>\n")
    (tree / "entities.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x "y">]>\n' + domain_xml("&x;"))
    result, summary = lint(pytester, tree)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    judged = {v["target"].rsplit("/", 1)[0] for v in summary["verdicts"] if v["target"].endswith("/vda")}
    assert judged == {"offline/plain.xml:plain", "offline/sub/nameless.xml:nameless", "offline/two.xml:first",
                      "offline/two.xml:second", "offline/node.xml:n1"}
    nameless = [v for v in summary["verdicts"] if v["target"].startswith("offline/sub/nameless.xml:nameless")]
    assert nameless and all(v["source"].endswith("nameless.xml") for v in nameless)
    noted = [v for v in nameless if v["outcome"] == "passed"]
    assert noted and all("judged as 'nameless'" in v["message"] for v in noted)
    errors = {v["target"]: v["message"] for v in summary["verdicts"] if v["outcome"] == "error"}
    assert set(errors) == {"offline/broken.xml", "offline/entities.xml"}
    assert "broken.xml: line" in errors["offline/broken.xml"]
    assert "entities" in errors["offline/entities.xml"]
    assert [d["domain"] for d in summary["left_out"]] == ["offline/node.xml:n2"]
    result.stdout.fnmatch_lines(["*judged as 'nameless', its file's name*"])


def test_a_domain_without_disks_makes_no_placeholder_items(pytester: pytest.Pytester) -> None:
    (pytester.path / "bare.xml").write_text(domain_xml("bare", disks=""))
    result, summary = lint(pytester, pytester.path / "bare.xml", extra=("-rA",))
    assert "NOTSET" not in result.stdout.str() and "empty parameter set" not in result.stdout.str()
    assert all("NOTSET" not in v["target"] for v in summary["verdicts"])
    assert {v["target"] for v in summary["verdicts"]} == {"offline"}  # the host rules; the domain has no IOThreads


# --- 6. ids do not depend on the other files ----------------------------------------------------


def test_ids_stay_the_same_whatever_else_is_linted(pytester: pytest.Pytester) -> None:
    first, second = pytester.path / "a", pytester.path / "b"
    first.mkdir()
    second.mkdir()
    (first / "fedora.xml").write_text(domain_xml("fedora"))
    (second / "compare.xml").write_text(domain_xml("fedora"))
    _, alone = lint(pytester, first / "fedora.xml")
    _, together = lint(pytester, first / "fedora.xml", second / "compare.xml")
    ids_alone = {v["target"] for v in alone["verdicts"]}
    ids_together = {v["target"] for v in together["verdicts"]}
    assert "offline/fedora.xml:fedora/vda" in ids_alone
    assert ids_alone <= ids_together and "offline/compare.xml:fedora/vda" in ids_together


def test_two_inputs_that_would_share_ids_are_a_usage_error(pytester: pytest.Pytester) -> None:
    for sub in ("a", "b"):
        (pytester.path / sub).mkdir()
        (pytester.path / sub / "same.xml").write_text(domain_xml("x"))
    result, _ = lint(pytester, pytester.path / "a" / "same.xml", pytester.path / "b" / "same.xml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*would both be judged as 'same.xml'*common parent folder*"])


# --- 7. pointing kvmio at a template tree ----------------------------------------------------------


def test_folders_are_searched_recursively(pytester: pytest.Pytester) -> None:
    tree = pytester.path / "tree"
    (tree / "web" / "prod").mkdir(parents=True)
    (tree / "web" / "prod" / "app.xml").write_text(domain_xml("app"))
    _, summary = lint(pytester, tree)
    assert outcome(summary, "disk-iothread-assigned", "offline/web/prod/app.xml:app/vda") == "failed"


def test_a_glob_the_shell_expanded_is_linted_not_collected_as_tests(pytester: pytest.Pytester) -> None:
    for name in ("a", "b", "c"):
        (pytester.path / f"{name}.xml").write_text(domain_xml(name))
    out = pytester.path / "v.json"
    # what `--domain-xml templates/*.xml` becomes after the shell: one option value and two positional paths
    result = pytester.runpytest(str(SUITES), "--domain-xml", "a.xml", "b.xml", "c.xml", "--kvmio-json", str(out),
                                "-p", "no:cacheprovider", "-m", "not perf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-2000:]
    targets = {v["target"].split("/")[1] for v in json.loads(out.read_text())["verdicts"] if v["target"] != "offline"}
    assert targets == {"a.xml:a", "b.xml:b", "c.xml:c"}


def test_a_quoted_glob_is_expanded_by_kvmio(pytester: pytest.Pytester) -> None:
    (pytester.path / "t").mkdir()
    for name in ("a", "b"):
        (pytester.path / "t" / f"{name}.xml").write_text(domain_xml(name))
    _, summary = lint(pytester, str(pytester.path / "t" / "*.xml"))
    assert {v["target"].split("/")[1] for v in summary["verdicts"] if v["target"] != "offline"} == {"a.xml:a", "b.xml:b"}


@pytest.mark.parametrize("how", [("-k", "disk-cache-safe"), ("--kvmio-rule", "disk-cache-safe")])
def test_a_rule_id_selects_its_items(pytester: pytest.Pytester, how: tuple[str, str]) -> None:
    (pytester.path / "a.xml").write_text(domain_xml("a"))
    result, summary = lint(pytester, pytester.path / "a.xml", extra=how)
    assert {v["rule"] for v in summary["verdicts"]} == {"disk-cache-safe"}
    assert result.ret == pytest.ExitCode.OK


def test_an_unknown_rule_id_is_a_usage_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "a.xml").write_text(domain_xml("a"))
    result, _ = lint(pytester, pytester.path / "a.xml", extra=("--kvmio-rule", "disk-cache-safer"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kvmio-rule disk-cache-safer: no rule has that id*"])


def test_kvmio_fix_of_a_tree_keeps_relative_paths(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for sub in ("a", "b"):
        (tree / sub).mkdir(parents=True)
        (tree / sub / "vm.xml").write_text(domain_xml(f"vm-{sub}"))
    done = kvmio("fix", str(tree), "--out", str(tmp_path / "out"), "--assume", CURRENT_HOST)
    assert done.returncode in (0, 1), done.stderr
    for sub in ("a", "b"):
        assert f"vm-{sub}" in (tmp_path / "out" / sub / "vm.xml").read_text()
    assert f"{'a/vm.xml'}: fixed disk-iothread-assigned" in done.stdout
