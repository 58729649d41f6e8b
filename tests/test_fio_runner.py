"""Unit tests of the fio runner: scratch checks, signature detection, command building, host CPU parsing."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_kvmio.facts.hostcpu import CpuSample, parse_sample, parse_stat
from pytest_kvmio.perf.runner import (
    PROBE_BYTES,
    DeviceProbe,
    GuestFio,
    ScratchRefused,
    detect_signatures,
    fio_command,
    is_scratch_serial,
    parse_probe,
    prefill_command,
    probe_script,
)
from pytest_kvmio.perf.thresholds import Profile

READ = Profile("randread-4k", "r", "randread", "4k", 32, 4, 3, 1, write=False)
WRITE = Profile("randwrite-4k", "w", "randwrite", "4k", 128, 1, 3, 1, write=True)


def head_of(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(PROBE_BYTES)


def blank(tmp_path: Path, name: str = "disk.img", size: int = 64 * 1024 * 1024) -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def put(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# --- signatures on real images ---------------------------------------------------------------


def test_blank_and_random_disks_carry_no_signature(tmp_path):
    assert detect_signatures(head_of(blank(tmp_path))) == []
    assert detect_signatures(os.urandom(PROBE_BYTES)) == []


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed")
def test_ext4_made_by_mkfs_is_detected(tmp_path):
    img = blank(tmp_path)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    assert any("ext2/3/4" in s for s in detect_signatures(head_of(img)))


@pytest.mark.skipif(shutil.which("mkswap") is None, reason="mkswap not installed")
def test_swap_made_by_mkswap_is_detected(tmp_path):
    img = blank(tmp_path)
    subprocess.run(["mkswap", str(img)], check=True, capture_output=True)
    assert any("swap" in s for s in detect_signatures(head_of(img)))


@pytest.mark.skipif(shutil.which("mkfs.vfat") is None and shutil.which("mkdosfs") is None, reason="no mkfs.vfat")
def test_fat_made_by_mkfs_is_detected(tmp_path):
    img = blank(tmp_path)
    subprocess.run([shutil.which("mkfs.vfat") or "mkdosfs", str(img)], check=True, capture_output=True)
    assert any("FAT" in s for s in detect_signatures(head_of(img)))


@pytest.mark.parametrize(
    ("offset", "magic", "expected"),
    [
        (512, b"EFI PART", "GPT"),
        (512, b"LABELONE", "LVM"),
        (0, b"LUKS\xba\xbe", "LUKS"),
        (0, b"XFSB", "XFS"),
        (65600, b"_BHRfS_M", "btrfs"),
        (4086, b"SWAPSPACE2", "swap"),
        (32769, b"CD001", "ISO 9660"),
        (4096, b"\xfc\x4e\x2b\xa9", "RAID"),
    ],
)
def test_signatures_at_their_offsets(tmp_path, offset, magic, expected):
    img = blank(tmp_path)
    put(img, offset, magic)
    found = detect_signatures(head_of(img))
    assert any(expected in s for s in found), found


def test_mbr_needs_the_boot_signature_and_sane_partition_entries(tmp_path):
    img = blank(tmp_path)
    put(img, 446, bytes([0x80, 1, 1, 0, 0x83, 0xFE, 0xFF, 0xFF]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little"))
    put(img, 510, b"\x55\xaa")
    assert any("MBR" in s for s in detect_signatures(head_of(img)))
    # 0x55AA alone in random data (1 in 65,536 pre-filled disks) is not a partition table.
    noise = bytearray(os.urandom(PROBE_BYTES))
    noise[446] = 0x37
    noise[510:512] = b"\x55\xaa"
    assert detect_signatures(bytes(noise)) == []


def test_ext_magic_alone_in_random_data_is_not_a_filesystem():
    noise = bytearray(os.urandom(PROBE_BYTES))
    noise[1080:1082] = b"\x53\xef"
    noise[1100:1104] = (0x7F3A1234).to_bytes(4, "little")
    assert detect_signatures(bytes(noise)) == []


def test_scratch_serial_glob():
    assert is_scratch_serial("kvmio-scratch-0", "kvmio-scratch*")
    assert not is_scratch_serial("kvmio-good-data", "kvmio-scratch*")
    assert not is_scratch_serial(None, "*")
    assert not is_scratch_serial("", "*")


# --- the probe: script output on a real image --------------------------------------------------


def run_probe_on(path: Path, dev_name: str = "vdz") -> DeviceProbe:
    """Run the guest probe script against an image file (sysfs parts find nothing; bytes are read)."""
    script = probe_script(str(path)).replace('[ -b "$d" ]', '[ -e "$d" ]')
    out = subprocess.run(["sh", "-c", script], check=True, capture_output=True, text=True).stdout
    return parse_probe(out)


def test_probe_reads_the_first_bytes_of_a_device(tmp_path):
    img = blank(tmp_path)
    put(img, 65600, b"_BHRfS_M")
    probe = run_probe_on(img)
    assert len(probe.head) == PROBE_BYTES
    assert any("btrfs" in p for p in probe.problems())


def test_probe_reports_partitions_mounts_and_missing_devices():
    probe = parse_probe("size=2048\npartition=vdb1\nholder=dm-0\nmounted=/dev/vdb1 /mnt ext4 rw 0 0\nbytes-begin\nbytes-end\n")
    problems = probe.problems()
    assert any("partition vdb1" in p for p in problems)
    assert any("dm-0" in p for p in problems)
    assert any("mounted" in p for p in problems)
    assert parse_probe("missing=1\n").problems() == ["the device node does not exist in the guest"]


def test_probe_script_quotes_the_device_path():
    script = probe_script("/dev/vd b;rm -rf /")
    assert "d='/dev/vd b;rm -rf /'" in script


# --- commands ------------------------------------------------------------------------------


def test_read_profile_command_is_readonly_json_plus_with_a_timeout():
    argv = shlex.split(fio_command(READ, "/dev/vdb", readonly=True))
    assert argv[:4] == ["timeout", "-s", "KILL", str(3 + 1 + 60)]
    assert argv[4] == "fio"
    # json+: the latency histogram that pools repeated runs' percentiles (perf/histogram.py)
    assert "--readonly" in argv and "--output-format=json+" in argv and "--filename=/dev/vdb" in argv
    assert "--rw=randread" in argv and "--numjobs=4" in argv


def test_write_profile_cannot_be_built_readonly_and_is_not_readonly_otherwise():
    with pytest.raises(ValueError, match="writes"):
        fio_command(WRITE, "/dev/vdb", readonly=True)
    assert "--readonly" not in shlex.split(fio_command(WRITE, "/dev/vdb", readonly=False))


def test_commands_quote_hostile_device_names():
    cmd = fio_command(READ, "/dev/x;reboot", readonly=True)
    assert "'--filename=/dev/x;reboot'" in cmd
    assert shlex.split(prefill_command("/dev/x y", 256 << 20))[-6] == "--filename=/dev/x y"


def test_prefill_writes_the_whole_device_sequentially_in_1m_blocks():
    argv = shlex.split(prefill_command("/dev/vdc", 256 << 20))
    assert {"--rw=write", "--bs=1M", "--direct=1", "--filename=/dev/vdc"} <= set(argv)
    assert not any(a.startswith(("--size", "--runtime", "--readonly")) for a in argv)


# --- refusal before fio starts ---------------------------------------------------------------


class FakeGuest:
    """A guest whose device is an image file: the probe reads it; fio commands are recorded, never run."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 0) -> SimpleNamespace:
        self.commands.append(command)
        if "bytes-begin" in command:
            argv = shlex.split(command)
            script = argv[argv.index("-c") + 1].replace('[ -b "$d" ]', '[ -e "$d" ]')
            script = script.replace(f"d={shlex.quote('/dev/vdc')}", f"d={shlex.quote(str(self.image))}")
            out = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
            return SimpleNamespace(rc=out.returncode, stdout=out.stdout, stderr=out.stderr)
        return SimpleNamespace(rc=1, stdout="", stderr="fio is not run by unit tests")


def runner(guest: FakeGuest, serial: str | None) -> GuestFio:
    return GuestFio(guest, "vdc", label="hv/vm/vdc", serial=serial, scratch_pattern="kvmio-scratch*")


def test_write_on_a_non_scratch_serial_is_refused_without_touching_the_guest(tmp_path):
    guest = FakeGuest(blank(tmp_path))
    with pytest.raises(ScratchRefused, match="does not match the scratch pattern"):
        runner(guest, "kvmio-good-data").run_once(WRITE)
    assert guest.commands == []


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed")
def test_write_on_a_scratch_serial_with_a_filesystem_is_refused_before_fio(tmp_path):
    img = blank(tmp_path)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    guest = FakeGuest(img)
    with pytest.raises(ScratchRefused, match="ext2/3/4 filesystem.*refused before fio started"):
        runner(guest, "kvmio-scratch-0").run_once(WRITE)
    with pytest.raises(ScratchRefused, match="ext2/3/4"):
        runner(guest, "kvmio-scratch-0").prefill()
    assert not any(" fio " in f" {c} " for c in guest.commands), guest.commands


def test_read_profile_on_any_disk_goes_straight_to_fio_readonly(tmp_path):
    guest = FakeGuest(blank(tmp_path))
    with pytest.raises(Exception, match="fio is not run"):
        runner(guest, "kvmio-good-data").run_once(READ)
    assert len(guest.commands) == 1 and "--readonly" in guest.commands[0]


def test_blank_scratch_disk_passes_the_check_and_is_prefilled_once(tmp_path):
    guest = FakeGuest(blank(tmp_path))
    fio = runner(guest, "kvmio-scratch-0")
    fio.check_writable("randwrite-4k")  # no exception
    fio.prefilled.add("hv/vm/vdc")
    assert fio.prefill() is None  # already done this session: nothing runs


# --- host CPU --------------------------------------------------------------------------------


def test_stat_lines_with_spaces_in_the_thread_name():
    line = "4242 (IO iothread1) S 1 4242 4242 0 -1 4194624 10 0 0 0 250 75 0 0 20 0 1 0 100 0 0"
    assert parse_stat(line) == ("IO iothread1", 250, 75)


def test_sample_sums_the_process_and_breaks_down_threads():
    out = (
        "tck=100\npid=77\nproc=77 (qemu-system-x86) S 1 77 77 0 -1 0 0 0 0 0 1000 500 0 0 20 0 5 0 1 0 0\n"
        "task=77 (qemu-system-x86) S 1 77 77 0 -1 0 0 0 0 0 100 50 0 0 20 0 5 0 1 0 0\n"
        "task=78 (IO iothread1) S 1 77 77 0 -1 0 0 0 0 0 300 100 0 0 20 0 5 0 1 0 0\n"
    )
    sample = parse_sample(out)
    assert sample.pid == 77 and sample.total_s == 15.0
    later = CpuSample(77, 17.5, {"IO iothread1": 5.0, "qemu-system-x86": 1.5})
    delta = later.minus(sample)
    assert delta.seconds == 2.5 and delta.iothread_s == pytest.approx(1.0)
