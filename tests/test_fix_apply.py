"""`kvmio fix` beyond the patch (issue 21), without a daemon: backups and rollback, restart, the re-judge, the Ansible
playbook and the options' combinations. The lab tests (tests/test_fix_lab.py) run the same on real guests."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.facts.targets import HostTarget
from pytest_kvmio.fix import verify
from pytest_kvmio.fix.ansible import DomainChanges, host_check, playbook
from pytest_kvmio.fix.apply import load_backup, restart, save_backup
from pytest_kvmio.fix.verify import Judgement, judge_in_effect
from pytest_kvmio.model.domain import parse_domain
from tests.conftest import kvmio

FACTS = HostFacts(name="h", offline=True, cpu_count=4)
XML = ("<domain type='kvm'><name>vm</name><vcpu placement='static'>2</vcpu><os><type arch='x86_64' "
       "machine='pc-q35-7.2'>hvm</type></os><devices><disk type='file' device='disk'>"
       "<driver name='qemu' type='raw' cache='{cache}' iothread='1'/><source file='/a.raw'/>"
       "<target dev='vda' bus='virtio'/></disk></devices></domain>")


def _parse(argv: list[str]) -> argparse.Namespace:
    from pytest_kvmio.cli.fix import add_parser

    return add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(argv)


@pytest.mark.parametrize(("argv", "says"), [
    (["--host=local", "--domain=x", "--restart"], "--restart restarts what --apply changed"),
    (["--host=local", "--domain=x", "--apply", "--force"], "--force destroys a domain"),
    (["--rollback", "b.xml", "--apply"], "--rollback FILE defines a saved definition again"),
    (["--rollback", "missing.xml"], "--rollback missing.xml: cannot read it"),
])
def test_option_combinations_are_refused_with_the_fix(argv: list[str], says: str) -> None:
    from pytest_kvmio.cli.fix import run_fix

    with pytest.raises(InputError, match=says):
        run_fix(_parse(argv), io.StringIO())


def test_a_bad_shutdown_timeout_is_a_usage_error() -> None:
    run = kvmio("fix", "--host=local", "--domain=x", "--apply", "--restart", "--shutdown-timeout=soon")
    assert run.returncode == 4 and "expected a number of seconds above 0, got 'soon'" in run.stderr


def test_a_backup_is_private_and_says_where_it_came_from(tmp_path: Path) -> None:
    backup = save_backup(tmp_path / "b", host="root@hv01", libvirt_uri="qemu+ssh://root@hv01/system", domain="vm",
                         uuid="u-1", xml="<domain><name>vm</name><uuid>u-1</uuid></domain>")
    assert backup.path.stat().st_mode & 0o777 == 0o600 and backup.meta_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o700
    loaded, xml = load_backup(backup.path)
    assert loaded == backup and xml == "<domain><name>vm</name><uuid>u-1</uuid></domain>"
    backup.meta_path.write_text(json.dumps({"domain": "vm"}))
    with pytest.raises(InputError, match="expected the fields host, libvirt_uri"):
        load_backup(backup.path)
    with pytest.raises(CommandError, match="--backup-dir .*: cannot save vm's definition"):
        save_backup(Path("/proc/kvmio-no"), host="h", libvirt_uri="u", domain="vm", uuid=None, xml="<domain/>")


def test_rollback_refuses_a_file_that_is_not_the_domain_its_companion_names(tmp_path: Path) -> None:
    from pytest_kvmio.cli.fix import run_fix

    backup = save_backup(tmp_path, host="local", libvirt_uri="test:///default", domain="test", uuid=None,
                         xml="<domain type='test'><name>other</name></domain>")
    with pytest.raises(InputError, match="holds no <domain> named 'test'"):
        run_fix(_parse(["--rollback", str(backup.path)]), io.StringIO())


def test_restart_shuts_down_and_starts_a_domain_that_obeys() -> None:
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")  # the test driver's running domain: it shuts down when asked
    said: list[str] = []
    assert restart(dom, timeout=5, force=False, say=said.append) == "shut down"
    assert dom.isActive() and said[-1] == "test: started (shut down)"


def _host(xml: str) -> HostTarget:
    domain = parse_domain(xml, source="h/vm", host="h")
    return HostTarget(name="h", spec=None, facts=FACTS, domains=[domain])


def test_the_rejudge_says_in_effect_or_what_is_still_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = [("disk-cache-safe", "h/vm/vda")]
    assert judge_in_effect(_host(XML.format(cache="none")), "vm", fixed) == [
        Judgement("disk-cache-safe", "h/vm/vda", True)]
    (still,) = judge_in_effect(_host(XML.format(cache="unsafe")), "vm", fixed)
    assert not still.in_effect and still.line() == (
        "h/vm/vda: disk-cache-safe: still wrong: h/vm/vda: set cache='none' (cache='unsafe' ignores guest flushes)")
    assert not judge_in_effect(_host(XML.format(cache="none")), "gone", fixed)[0].in_effect

    def runtime(host: HostTarget, domain: Any) -> list[Judgement]:
        return [Judgement("domain-runtime-pinning", domain.id, False, "IOThread 1 runs on CPUs 0-3")]

    monkeypatch.setattr(verify, "RUNTIME_JUDGES", [runtime])
    assert judge_in_effect(_host(XML.format(cache="none")), "vm", fixed)[-1].rule == "domain-runtime-pinning"


def test_host_commands_get_checks_that_make_them_idempotent() -> None:
    assert host_check("sysctl -w kernel.io_uring_disabled=0") == 'test "$(sysctl -n kernel.io_uring_disabled)" = 0'
    assert host_check("echo none > /sys/block/nvme0n1/queue/scheduler") == \
        "grep -qF '[none]' /sys/block/nvme0n1/queue/scheduler"
    assert host_check("echo 'kernel.io_uring_disabled = 0' > /etc/sysctl.d/90-kvmio-io-uring.conf") == \
        "test \"$(cat /etc/sysctl.d/90-kvmio-io-uring.conf 2>/dev/null)\" = 'kernel.io_uring_disabled = 0'"
    assert host_check("apt-get install --only-upgrade qemu-system-x86") is None


def test_the_playbook_probes_before_it_changes_and_holds_no_domain_xml() -> None:
    text = playbook([DomainChanges("vm", ["disk-cache-safe"], xml=["./devices/disk[target/@dev='vda']/driver/@cache=none"],
                                   host_commands=["sysctl -w kernel.io_uring_disabled=0", "apt-get install x"])],
                    hosts="hv01", local=False, libvirt_uri=None)
    assert "# vm: not automated (kvmio knows no check that makes it idempotent): apt-get install x" in text
    (play,) = yaml.safe_load(text)
    assert play["hosts"] == "hv01" and play["become"] is True and "<domain" not in text
    probe, backup, edit, host_probe, host_apply = play["tasks"]
    assert probe["ansible.builtin.command"]["argv"][-1] == "--print-diff" and probe["check_mode"] is False
    assert probe["changed_when"] is False and edit["when"] == "kvmio_probe_1.stdout | length > 0"
    assert edit["vars"]["kvmio_argv"] == probe["ansible.builtin.command"]["argv"][:-1]
    assert "--security-info" in backup["ansible.builtin.shell"] and "umask 077" in backup["ansible.builtin.shell"]
    assert host_probe["failed_when"] is False and host_apply["when"] == "kvmio_host_1_1.rc != 0"


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-core not installed")
def test_an_offline_fix_writes_a_playbook_ansible_accepts(tmp_path: Path) -> None:
    source = tmp_path / "vm.xml"
    source.write_text(XML.format(cache="unsafe"))
    book = tmp_path / "fix.yml"
    run = kvmio("fix", str(source), "--out", str(tmp_path / "out"), "--assume", "cpus=4", "--ansible", str(book))
    assert run.returncode == 0, run.stdout + run.stderr
    (play,) = yaml.safe_load(book.read_text())
    assert play["hosts"] == "all" and play["tasks"][0]["name"].startswith("vm: would its definition change?")
    argv = play["tasks"][2]["vars"]["kvmio_argv"]
    assert argv[:3] == ["virt-xml", "vm", "--edit"] and "./devices/disk[target/@dev='vda']/driver/@cache=none" in argv
    syntax = subprocess.run(["ansible-playbook", "--syntax-check", "-i", "localhost,", str(book)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
