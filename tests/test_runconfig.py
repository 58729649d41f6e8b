"""One run configuration (issue 19): settings resolved once, and `kvmio ab` / `kvmio fix` honour them as pytest does.

The commands run against libvirt's test driver (test:///default, whose running domain `test` has one disk, vda), so a
setting that reached the command shows in what it read; a setting that lists several hosts is refused by the commands
that take one, naming the setting and where it came from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_kvmio.facts.host import Assumptions, assumed_facts
from pytest_kvmio.files.inifile import find_inifile
from pytest_kvmio.model.versions import Version
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.settings import assumptions, key_values
from tests.conftest import REPO, write_domain

TEST_URI = "test:///default"
#: A write profile on the test domain's vda, whose serial is no scratch serial: `kvmio ab` refuses it naming the
#: scratch pattern, after reading the thresholds, the host over the libvirt URI and the domain.
AB_ARGS = ("ab", "--a", "test/vda", "--b", "test/vda", "--profile", "randwrite-4k-qd128")


def kvmio(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `kvmio` in `cwd` with only the KVMIO_* variables given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KVMIO_")}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from pytest_kvmio.cli import main; sys.exit(main())", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd, env={**clean, **(env or {})},
        check=False,
    )


# --- kvmio fix and kvmio ab read KVMIO_* like pytest ------------------------------------------------------------


def test_kvmio_fix_takes_the_host_and_uri_from_the_environment(tmp_path: Path) -> None:
    env = {"KVMIO_HOSTS": "local", "KVMIO_LIBVIRT_URI": TEST_URI,
           "KVMIO_FIO_REPEAT": "0"}  # a setting fix has no option for is not read: a bad one can't stop it
    run = kvmio("fix", "--domain", "test", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "test: dry run; pass --apply to define the patched XML" in run.stdout


def test_the_command_line_wins_over_the_environment(tmp_path: Path) -> None:
    run = kvmio("fix", "--host", "local", "--libvirt-uri", TEST_URI, "--domain", "test", cwd=tmp_path,
                env={"KVMIO_HOSTS": "hv01,hv02", "KVMIO_LIBVIRT_URI": "qemu:///nowhere"})
    assert run.returncode == 0, run.stderr


def test_kvmio_ab_takes_uri_thresholds_and_scratch_serial_from_the_environment(tmp_path: Path) -> None:
    env = {"KVMIO_LIBVIRT_URI": TEST_URI, "KVMIO_THRESHOLDS": str(REPO / "thresholds"),
           "KVMIO_SCRATCH_SERIAL": "my-scratch*"}
    run = kvmio(*AB_ARGS, cwd=tmp_path, env=env)
    assert run.returncode == 4, run.stderr
    assert run.stderr.startswith("ERROR: kvmio ab: --a test/vda: randwrite-4k-qd128 writes"), run.stderr
    assert "the scratch pattern 'my-scratch*'" in run.stderr


@pytest.mark.parametrize("command", [("fix", "--domain", "x"), AB_ARGS])
def test_a_setting_that_lists_several_hosts_is_refused_by_a_one_host_command(tmp_path: Path, command) -> None:
    name = command[0]
    run = kvmio(*command, cwd=tmp_path, env={"KVMIO_HOSTS": "hv01,hv02"})
    assert run.returncode == 4
    assert run.stderr == f"ERROR: kvmio {name}: KVMIO_HOSTS lists 2 hosts (hv01, hv02); kvmio {name} takes one: pass --host\n"
    given = kvmio(*command, "--host", "hv01,hv02", cwd=tmp_path)
    assert f"ERROR: kvmio {name}: --host lists 2 hosts (hv01, hv02); kvmio {name} takes one: pass one --host" in given.stderr


def test_an_offline_fix_ignores_hosts_named_by_the_environment(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_domain(tmp_path / "in", "vm01", {"vda": "cache='none'"})
    run = kvmio("fix", "in", "--out", "out", cwd=tmp_path, env={"KVMIO_HOSTS": "hv01,hv02"})
    assert run.returncode in (0, 1), run.stderr
    assert (tmp_path / "out" / "vm01.xml").is_file()


def test_a_bad_value_says_the_same_in_pytest_and_in_the_command(tmp_path: Path) -> None:
    env = {"KVMIO_HOSTS": "local", "KVMIO_LIBVIRT_URI": "qemu:///{nope}"}
    command = kvmio("fix", "--domain", "x", cwd=tmp_path, env=env)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KVMIO_")}
    plugin = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**clean, **env}, check=False)
    assert command.returncode == plugin.returncode == 4
    said = command.stderr.removeprefix("ERROR: kvmio fix: ")
    assert said.startswith("KVMIO_LIBVIRT_URI='qemu:///{nope}': unknown field {nope}"), command.stderr
    assert f"ERROR: {said}" in plugin.stderr, plugin.stderr


# --- the ini file pytest reads, read by the commands --------------------------------------------------------------


def test_kvmio_fix_honours_the_ini_file_of_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nkvmio_hosts = local\nkvmio_libvirt_uri = {TEST_URI}\n")
    run = kvmio("fix", "--domain", "test", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "test: dry run" in run.stdout
    (tmp_path / "pytest.ini").write_text("[pytest]\nkvmio_hosts = hv01 hv02\n")
    several = kvmio("fix", "--domain", "test", cwd=tmp_path)
    assert several.returncode == 4
    assert (f"ERROR: kvmio fix: ini kvmio_hosts in {tmp_path / 'pytest.ini'} lists 2 hosts (hv01, hv02); "
            "kvmio fix takes one: pass --host") in several.stderr


def test_kvmio_ab_honours_the_ini_file_of_a_directory_above(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        f'kvmio_libvirt_uri = "{TEST_URI}"\nkvmio_thresholds = "{REPO / "thresholds"}"\nkvmio_scratch_serial = "ini-scratch*"\n'
    )
    below = tmp_path / "a" / "b"
    below.mkdir(parents=True)
    run = kvmio(*AB_ARGS, cwd=below)
    assert run.returncode == 4, run.stderr
    assert "the scratch pattern 'ini-scratch*'" in run.stderr, run.stderr
    overridden = kvmio(*AB_ARGS, "--scratch-serial", "cli-scratch*", cwd=below, env={"KVMIO_SCRATCH_SERIAL": "env-*"})
    assert "the scratch pattern 'cli-scratch*'" in overridden.stderr, overridden.stderr


@pytest.mark.parametrize("files", [
    {"pytest.ini": "", "pyproject.toml": "[tool.pytest.ini_options]\nx = '1'\n"},
    {"tox.ini": "[tox]\n", "setup.cfg": "[tool:pytest]\nx = 1\n"},
    {"tox.ini": "[pytest]\nx = 1\n", "setup.cfg": "[tool:pytest]\nx = 1\n"},
    {"pyproject.toml": "[project]\nname = 'x'\n"},
    {"../pytest.ini": "[pytest]\n", "pyproject.toml": "[project]\nname = 'x'\n"},
    {"../tox.ini": "[pytest]\n", "setup.cfg": "[metadata]\n"},
    {},
])
def test_the_ini_file_is_the_one_pytest_finds(tmp_path: Path, files: dict[str, str]) -> None:
    from _pytest.config.findpaths import locate_config  # pytest's own finder, private: the oracle

    here = tmp_path / "project"
    here.mkdir()
    for name, text in files.items():
        (here / name).write_text(text)
    _, inifile, _, _ = locate_config(here, [])
    found = find_inifile(here)
    assert found.path == inifile
    assert (found.path.parent if found.path else here) == found.rootpath


def test_ini_values_read_as_pytest_reads_them(tmp_path: Path) -> None:
    (tmp_path / "tox.ini").write_text("[pytest]\nkvmio_hosts = hv01\n  hv02\nkvmio_guest = ssh://root@{address}\n")
    ini = find_inifile(tmp_path)
    assert ini.get("kvmio_hosts", "args") == ["hv01", "hv02"]
    assert ini.get("kvmio_guest") == "ssh://root@{address}"
    assert ini.get("kvmio_thresholds") is None


# --- one configuration per pytest run -----------------------------------------------------------------------------


def test_pytest_resolves_the_run_configuration_once(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                   xml_dir: Path) -> None:
    for name in [k for k in os.environ if k.startswith("KVMIO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KVMIO_GUEST", "ssh://root@{address}")
    monkeypatch.setenv("KVMIO_FIO_REPEAT", "2")
    pytester.makeini("[pytest]\nkvmio_scratch_serial = lab-*\n")
    config = pytester.parseconfigure("--domain-xml", str(xml_dir), "--assume", "kernel=6.1,cpus=8")
    run = run_config(config)
    assert run is run_config(config)
    assert (run.mode, run.offline, run.domain_xml) == ("domain_xml", True, (str(xml_dir),))
    assert run.assume == Assumptions(kernel=Version.parse("6.1"), cpus=8)
    assert (run.guest, run.sources["guest"]) == ("ssh://root@{address}", "KVMIO_GUEST")
    assert (run.fio_repeat, run.sources["fio_repeat"]) == (2, "KVMIO_FIO_REPEAT")
    assert run.scratch_serial == "lab-*" and run.sources["scratch_serial"].startswith("ini kvmio_scratch_serial in ")
    live = run_config(pytester.parseconfigure("--host", "local,ssh://root@hv01:2222"))
    assert (live.mode, live.offline) == ("hosts", False)
    assert [(h.name, h.is_local, h.port) for h in live.hosts] == [("local", True, None), ("hv01:2222", False, 2222)]


def test_offline_is_decided_once_where_the_facts_are_made() -> None:
    facts = assumed_facts("offline", assumptions("qemu=7.2,cpus=4"))
    assert facts.offline and facts.assumed == ("cpus", "qemu") and facts.cpu_count == 4
    assert str(facts.qemu) == "7.2"


def test_one_key_value_parser() -> None:
    assert key_values("a=1, b = 2,a=3", ("a", "b")) == {"a": "3", "b": "2"}
    for text, message in [("a", "'a': expected KEY=VALUE with KEY one of a, b"), ("c=1", "'c=1': expected KEY=VALUE"),
                          ("a=", "'a=': expected"), ("a=x", "'a=x': not a number")]:
        with pytest.raises(ValueError, match=message):
            key_values(text, ("a", "b"), lambda key, value: int(value) if value.isdigit() else _refuse())


def _refuse() -> int:
    raise ValueError("not a number")
