"""Hostile names, paths and serials never change a command: every place kvmio builds one, with the worst values.

Each value (quotes, `;`, `$()`, backticks, newlines, a leading '-', unicode, format braces) must reach the
program it is meant for as one argument, byte for byte, and run nothing. Where it can, the test runs the
command built with the real shell (`sh -c`, testinfra's local backend) and reads the value back.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
import testinfra

from pytest_kvmio.facts import hostcpu
from pytest_kvmio.facts.guest import TimedHost
from pytest_kvmio.facts.guestmap import read_irq_counts
from pytest_kvmio.facts.host import COMMAND_TIMEOUT, HostFacts, collect_host_facts, host_script, parse_host_output
from pytest_kvmio.model.versions import Version
from pytest_kvmio.perf.ab import host_fio_command
from pytest_kvmio.perf.runner import GuestFio, fio_command, prefill_command
from pytest_kvmio.perf.thresholds import Profile

MARKER = "kvmio-pwned"
HOSTILE = [
    "it's", 'say "hi"', "a;touch kvmio-pwned", "$(touch kvmio-pwned)", "`touch kvmio-pwned`", "-rf", "--help",
    "new\nline", "x\nimage=AAAA AAAA\nkernel=99.0", "kernel=99.0\nimage-end", "ü ñ 漢", "back\\slash\\n", "tab\there",
    "*", "~", "a b", "%s", "{paths}", "a:b", "'$(touch kvmio-pwned)'",
]
IDS = [repr(v)[1:-1][:24] for v in HOSTILE]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory and check afterwards that no command created the marker file."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not list(tmp_path.rglob(MARKER)), "a hostile value ran as a command"


# --- host facts: the one batched command per host -------------------------------------------------------


def test_hostile_image_paths_reach_qemu_img_verbatim_and_cannot_forge_facts(in_tmp: Path) -> None:
    """Disks with hostile <source file> names on a libvirt (test driver) host, read by the real host command."""
    libvirt = pytest.importorskip("libvirt")
    images = in_tmp / "images"
    images.mkdir()
    # libvirt writes a newline or tab in an attribute raw, so it reads back as a space: those are tested below.
    paths = _image_files(images, [v for v in HOSTILE if "\n" not in v and "\t" not in v])
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file={quoteattr(p, {chr(10): '&#10;', chr(9): '&#9;'})}/>"
        f"<target dev='vd{chr(97 + i // 26)}{chr(97 + i % 26)}' bus='virtio'/></disk>"
        for i, p in enumerate(paths)
    )
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(f"<domain type='test'><name>hostile</name><memory>65536</memory><vcpu>1</vcpu>"
                       f"<os><type>hvm</type></os><devices>{disks}</devices></domain>")
        local = testinfra.get_host("local://")
        commands: list[str] = []

        class Recording:
            def run(self, command: str) -> object:
                commands.append(command)
                return local.run(command)

        facts, domains = collect_host_facts("local", Recording(), conn, "test:///default")
    finally:
        conn.close()
    every = sorted({d.source_file for dom in domains for d in dom.disks if d.source_file})  # the driver's own too
    assert set(paths) <= set(every)
    argv = shlex.split(commands[0])  # one `sh -c` whose script names each path as one quoted word
    assert argv[:4] == ["timeout", str(COMMAND_TIMEOUT), "sh", "-c"] and len(argv) == 5, argv[:4]
    assert all(f" {shlex.quote(p)}" in argv[4] for p in every), "a path split or changed on its way to the script"
    assert set(facts.images) == set(every)  # each path one word for the shell, and read back whole
    for path in paths:
        image = facts.images[path]
        assert (image.error, image.format, image.virtual_size) == (None, "raw", 65536), image
    assert facts.kernel == Version.parse(os.uname().release), "a path's newline forged the kernel fact"
    hostile = next(d for d in domains if d.name == "hostile")
    assert all(disk.image is not None for disk in hostile.disks)


def _image_files(directory: Path, names: list[str]) -> list[str]:
    paths = []
    for value in names:
        path = directory / f"{value.replace('/', '_')}.img"
        path.write_bytes(b"\0" * 65536)
        paths.append(str(path))
    return paths


def test_image_paths_with_newlines_cannot_forge_host_facts(in_tmp: Path) -> None:
    """The host script run by sh on files whose names hold newlines and marker lines: each read back whole."""
    paths = _image_files(in_tmp, HOSTILE)
    result = testinfra.get_host("local://").run(f"sh -c {shlex.quote(host_script(paths))}")
    assert result.rc == 0, result.stderr
    facts = HostFacts(name="local")
    parse_host_output(facts, result.stdout)
    assert sorted(facts.images) == sorted(paths)
    assert all(facts.images[p].format == "raw" and facts.images[p].error is None for p in paths), facts.images
    assert facts.kernel == Version.parse(os.uname().release), "a path's newline forged the kernel fact"


# --- fio commands: in the guest (runner) and on the hypervisor (kvmio ab) --------------------------------

PROFILE = Profile(name="randread-4k", description="", rw="randread", bs="4k", iodepth=8, numjobs=1, runtime=5, write=False,
                  ramp_time=1)


def _fio_commands(path: str) -> list[str]:
    return [fio_command(PROFILE, path, readonly=True), prefill_command(path, 1 << 30), host_fio_command(PROFILE, path)]


@pytest.mark.parametrize("device", HOSTILE, ids=IDS)
def test_fio_commands_pass_a_hostile_device_as_one_filename(device: str) -> None:
    path = f"/dev/{device}"
    for command, plain in zip(_fio_commands(path), _fio_commands("/dev/vdb")):
        argv = shlex.split(command)
        [filename] = [a.removeprefix("--filename=") for a in argv if a.startswith("--filename=")]
        assert re.sub(r"\\:", ":", filename) == path
        assert not re.search(r"(?<!\\):", filename), "an unescaped ':' makes fio open several files"
        assert [a for a in argv if not a.startswith("--filename=")] == [
            a for a in shlex.split(plain) if not a.startswith("--filename=")
        ], "the hostile value added or removed arguments"


@pytest.mark.parametrize("device", HOSTILE, ids=IDS)
def test_guest_device_probe_runs_on_a_hostile_device_name_as_data(device: str, in_tmp: Path) -> None:
    """The scratch check's probe script, run for real: the device is missing, nothing else happens."""
    local = testinfra.get_host("local://")
    ran: list[str] = []

    class Guest:
        def run(self, command: str, timeout: float) -> object:
            ran.append(command)
            return local.run(command)

    fio = GuestFio(Guest(), f"/dev/{device}", label="hv/vm/vdb", serial="kvmio-scratch-1", scratch_pattern="kvmio-scratch*")
    probe = fio.probe()
    argv = shlex.split(ran[0])
    assert argv[:5] == ["timeout", "-s", "KILL", argv[3], "sh"] and argv[5] == "-c" and len(argv) == 7
    assert probe.missing and probe.problems() == ["the device node does not exist in the guest"]


def test_an_escaped_colon_is_one_file_for_fio(in_tmp: Path) -> None:
    """fio itself, on a file named a:b: read as one file, and neither a nor b created."""
    if not testinfra.get_host("local://").exists("fio"):
        pytest.skip("fio is not installed here")
    (in_tmp / "a:b").write_bytes(b"\0" * (1 << 20))
    profile = Profile(name="r", description="", rw="read", bs="4k", iodepth=1, numjobs=1, runtime=1, ramp_time=0, write=False)
    result = testinfra.get_host("local://").run(fio_command(profile, "a:b", readonly=True) + " --size=64k --time_based=0")
    assert result.rc == 0, result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["a:b"]


# --- guest commands with arguments (testinfra quoting) and host CPU sampling -----------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_guest_command_arguments_arrive_verbatim(value: str, in_tmp: Path) -> None:
    guest = TimedHost(testinfra.get_host("local://").backend, command_timeout=10)
    assert guest.check_output("printf '%%s' %s", value) == value.rstrip("\n")


@pytest.mark.parametrize("value", ["$(touch kvmio-pwned)", "vd`touch kvmio-pwned`", "a;touch kvmio-pwned", "-rf"])
def test_irq_reading_takes_a_hostile_device_name_as_data(value: str, in_tmp: Path) -> None:
    guest = TimedHost(testinfra.get_host("local://").backend, command_timeout=10)
    with pytest.raises(ValueError, match="not a virtio disk") as info:
        read_irq_counts(guest, value)
    assert f"guest {value}:" in str(info.value)


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_host_cpu_sample_reads_the_pid_file_of_a_hostile_domain_name(name: str, in_tmp: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostcpu, "PID_DIR", str(in_tmp))
    (in_tmp / f"{name}.pid").write_text(f"{os.getpid()}\n")
    result = testinfra.get_host("local://").run(f"sh -c {shlex.quote(hostcpu.sample_script(name))}")
    assert result.rc == 0, result.stderr
    assert f"pid={os.getpid()}" in result.stdout.splitlines()
