"""Run fio profiles in a guest, safely: scratch checks, pre-fill, quoted commands, timeouts.

Safety (design.md, "Safety"): a profile that writes runs only on a scratch disk, which means
BOTH that the libvirt serial matches the `kvmio_scratch_serial` glob AND that the guest device
carries no partition table, filesystem, swap, LVM or LUKS signature, no partitions and no
mount/holder — checked in the guest before fio starts. Read profiles run with fio `--readonly`
on every disk. Scratch disks are pre-filled (one sequential 1 MiB write pass over the whole
device) once per disk per session before the first measured run, because reads of never-written
blocks and first writes to an unallocated image measure the image format, not the storage.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_kvmio.perf.fio import FioError, FioReport, parse_fio
from pytest_kvmio.perf.thresholds import Profile

#: Bytes read from the start of the device for the signature check (covers btrfs at 64 KiB + 64).
PROBE_BYTES = 17 * 4096
#: Seconds a guest command may take beyond fio's own runtime before it is killed.
COMMAND_SLACK = 60
PROBE_TIMEOUT = 60
#: The pre-fill writes the device at no less than this rate, else it is killed (bytes/s).
PREFILL_MIN_RATE = 2 * 1024 * 1024
#: fio's output format for measured runs: json+ adds the completion latency histogram (`clat_ns.bins`).
MEASURED_OUTPUT = "--output-format=json+"


class ScratchRefused(Exception):
    """fio must not write to this disk; the message says why, before anything ran."""


class FioRunError(Exception):
    """fio ran but failed, or its output could not be read."""


@dataclass(frozen=True)
class Signature:
    """Bytes at an offset that identify something stored on a device."""

    name: str
    offset: int
    magic: bytes


# Offsets as blkid (libblkid) probes them; each names what the disk would hold.
SIGNATURES: tuple[Signature, ...] = (
    Signature("GPT partition table", 512, b"EFI PART"),
    Signature("GPT partition table (4K sectors)", 4096, b"EFI PART"),
    Signature("LVM physical volume", 512, b"LABELONE"),
    Signature("LVM physical volume", 0, b"LABELONE"),
    Signature("LVM physical volume", 1024, b"LABELONE"),
    Signature("LVM physical volume", 1536, b"LABELONE"),
    Signature("LUKS encrypted volume", 0, b"LUKS\xba\xbe"),
    Signature("XFS filesystem", 0, b"XFSB"),
    Signature("btrfs filesystem", 65600, b"_BHRfS_M"),
    Signature("swap space", 4086, b"SWAPSPACE2"),
    Signature("swap space", 4086, b"SWAP-SPACE"),
    Signature("ISO 9660 filesystem", 32769, b"CD001"),
    Signature("NTFS filesystem", 3, b"NTFS    "),
    Signature("Linux RAID (md 1.1)", 0, b"\xfc\x4e\x2b\xa9"),
    Signature("Linux RAID (md 1.2)", 4096, b"\xfc\x4e\x2b\xa9"),
    Signature("bcache", 4120, b"\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"),
    Signature("F2FS filesystem", 1024, b"\x10\x20\xf5\xf2"),
)


def detect_signatures(data: bytes) -> list[str]:
    """Return what the first bytes of a device say it holds; [] for a blank or random-data disk.

    Two-byte magics (MBR 0x55AA, ext 0xEF53) would match random data once in 65,536 disks, so
    they need a second, structural confirmation (partition status bytes, ext revision level).
    """
    found: list[str] = []

    def at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    for sig in SIGNATURES:
        if at(sig.offset, len(sig.magic)) == sig.magic:
            found.append(f"{sig.name} ({sig.magic!r} at byte {sig.offset})")
    if at(510, 2) == b"\x55\xaa":
        status = [data[446 + 16 * i] for i in range(4)] if len(data) >= 510 else []
        fat = at(54, 3) == b"FAT" or at(82, 3) == b"FAT"
        if fat:
            found.append("FAT filesystem (boot sector 0x55AA at 510, 'FAT' label)")
        elif status and all(s in (0x00, 0x80) for s in status):
            found.append("MBR partition table (0x55AA at byte 510)")
    if at(1080, 2) == b"\x53\xef":
        rev = int.from_bytes(at(1100, 4), "little") if len(data) >= 1104 else -1
        if rev in (0, 1):
            found.append("ext2/3/4 filesystem (0xEF53 at byte 1080)")
    return list(dict.fromkeys(found))


def is_scratch_serial(serial: str | None, pattern: str) -> bool:
    """Return True when a disk's serial matches the scratch glob (no serial is never scratch)."""
    return bool(serial) and fnmatch.fnmatchcase(serial or "", pattern)


def probe_script(device_path: str) -> str:
    """Return the guest shell script that prints partitions, mounts, holders, size and the first bytes."""
    dev = shlex.quote(device_path)
    name = shlex.quote(device_path.rsplit("/", 1)[-1])
    return (
        f"d={dev}; n={name}; "
        '[ -b "$d" ] || { echo "missing=1"; exit 0; }; '
        'echo "size=$(cat /sys/block/$n/size 2>/dev/null)"; '
        'for p in /sys/block/$n/$n*; do [ -e "$p/partition" ] && echo "partition=${p##*/}"; done; '
        'for h in /sys/block/$n/holders/*; do [ -e "$h" ] && echo "holder=${h##*/}"; done; '
        'grep -E "^$d(p?[0-9]+)? " /proc/mounts | sed "s/^/mounted=/"; '
        'grep -E "^$d(p?[0-9]+)? " /proc/swaps | sed "s/^/swap=/"; '
        f'echo "bytes-begin"; dd if="$d" bs=4096 count={PROBE_BYTES // 4096} 2>/dev/null | base64; echo "bytes-end"'
    )


@dataclass(frozen=True)
class DeviceProbe:
    """What the guest says about a device before fio may write to it."""

    size_bytes: int | None
    partitions: tuple[str, ...]
    holders: tuple[str, ...]
    mounts: tuple[str, ...]
    swaps: tuple[str, ...]
    head: bytes
    missing: bool = False

    def problems(self) -> list[str]:
        """Return why this device must not be written to ([] when it looks blank or ours)."""
        if self.missing:
            return ["the device node does not exist in the guest"]
        out = [f"has partition {p}" for p in self.partitions]
        out += [f"is held by {h} (device-mapper/md/bcache)" for h in self.holders]
        out += [f"is mounted: {m}" for m in self.mounts]
        out += [f"is in use as swap: {s}" for s in self.swaps]
        if len(self.head) < PROBE_BYTES and (self.size_bytes or 0) >= PROBE_BYTES:
            out.append(f"could not read its first {PROBE_BYTES} bytes (got {len(self.head)})")
        out += [f"carries {s}" for s in detect_signatures(self.head)]
        return out


def parse_probe(output: str) -> DeviceProbe:
    """Parse the output of probe_script."""
    fields: dict[str, list[str]] = {}
    encoded: list[str] = []
    inside = False
    for line in output.splitlines():
        if line == "bytes-begin":
            inside = True
        elif line == "bytes-end":
            inside = False
        elif inside:
            encoded.append(line.strip())
        else:
            key, sep, value = line.partition("=")
            if sep:
                fields.setdefault(key, []).append(value)
    try:
        head = base64.b64decode("".join(encoded), validate=True)
    except (binascii.Error, ValueError):
        head = b""
    sectors = (fields.get("size") or [""])[0].strip()
    return DeviceProbe(
        size_bytes=int(sectors) * 512 if sectors.isdigit() else None,
        partitions=tuple(fields.get("partition", ())),
        holders=tuple(fields.get("holder", ())),
        mounts=tuple(fields.get("mounted", ())),
        swaps=tuple(fields.get("swap", ())),
        head=head,
        missing="missing" in fields,
    )


def _q(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def fio_filename(path: str) -> str:
    """Return `path` as fio's --filename must spell it: fio splits the value at ':' into several files
    (/dev/vdb:/dev/vda would also touch vda; a:b creates a and b), so a colon is escaped as fio documents."""
    return path.replace(":", "\\:")


def fio_command(profile: Profile, device_path: str, *, readonly: bool, timeout: int | None = None) -> str:
    """Return the quoted guest shell command for one measured fio run (json+ on stdout: its latency histogram
    lets repeated runs' percentiles be pooled, see perf/histogram.py)."""
    if profile.write and readonly:
        raise ValueError(f"{profile.name}: writes ({profile.rw}); it cannot run with --readonly")
    limit = timeout if timeout is not None else profile.runtime + profile.ramp_time + COMMAND_SLACK
    args = ["timeout", "-s", "KILL", str(limit), "fio", MEASURED_OUTPUT, f"--filename={fio_filename(device_path)}"]
    args += profile.fio_args()
    if readonly:
        args.append("--readonly")
    return _q(args)


def prefill_command(device_path: str, size_bytes: int | None) -> str:
    """Return the guest command that writes the whole device once, sequentially, in 1 MiB blocks."""
    limit = COMMAND_SLACK + (size_bytes or 0) // PREFILL_MIN_RATE
    args = [
        "timeout", "-s", "KILL", str(limit), "fio", "--output-format=json", "--name=kvmio-prefill",
        f"--filename={fio_filename(device_path)}", "--rw=write", "--bs=1M", "--iodepth=8", "--ioengine=libaio",
        "--direct=1",
    ]
    return _q(args)


@dataclass
class RunOutput:
    """One fio run: its parsed report and the wall time it took."""

    report: FioReport
    seconds: float


class GuestFio:
    """Run fio for one disk in one guest: checks, pre-fill once, then measured runs."""

    def __init__(
        self,
        guest: Any,
        device: str,
        *,
        label: str,
        serial: str | None,
        scratch_pattern: str,
        prefilled: set[str] | None = None,
        progress: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.guest = guest
        self.device_path = device if device.startswith("/dev/") else f"/dev/{device}"
        self.label = label
        self.serial = serial
        self.scratch_pattern = scratch_pattern
        self.prefilled = prefilled if prefilled is not None else set()
        self.progress = progress
        self._probe: DeviceProbe | None = None

    @property
    def scratch_serial(self) -> bool:
        """Return True when the serial marks this disk as scratch."""
        return is_scratch_serial(self.serial, self.scratch_pattern)

    def _run(self, command: str, timeout: float) -> Any:
        return self.guest.run(command, timeout=timeout)

    def probe(self) -> DeviceProbe:
        """Read the device's partitions, users and first bytes in the guest (fresh every call)."""
        command = f"timeout -s KILL {PROBE_TIMEOUT} sh -c {shlex.quote(probe_script(self.device_path))}"
        result = self._run(command, PROBE_TIMEOUT + 10)
        if result.rc != 0:
            raise ScratchRefused(
                f"{self.label}: cannot inspect {self.device_path} in the guest (exit {result.rc}): "
                f"{result.stderr.strip()[:300]}; refusing to write"
            )
        self._probe = parse_probe(result.stdout)
        return self._probe

    def check_writable(self, profile_name: str) -> DeviceProbe:
        """Raise ScratchRefused unless the disk is scratch by serial AND blank or ours by content."""
        if not self.scratch_serial:
            raise ScratchRefused(
                f"{self.label}: {profile_name} writes, and serial {self.serial!r} does not match the scratch "
                f"pattern {self.scratch_pattern!r} (ini kvmio_scratch_serial); refused before fio started"
            )
        found = self.probe()
        problems = found.problems()
        if problems:
            raise ScratchRefused(
                f"{self.label}: {profile_name} writes, but guest {self.device_path} (serial {self.serial}) "
                f"{'; '.join(problems)}; refused before fio started, nothing was written. "
                "Wipe the disk yourself if it really is scratch (wipefs -a)"
            )
        return found

    def prefill(self) -> float | None:
        """Write the whole scratch device once per session; return the seconds it took, None if done before."""
        if self.label in self.prefilled:
            return None
        found = self.check_writable("pre-fill")
        self.progress(f"kvmio fio: {self.label}: pre-filling {self.device_path} (sequential 1 MiB write pass)")
        started = time.monotonic()
        command = prefill_command(self.device_path, found.size_bytes)
        limit = COMMAND_SLACK + (found.size_bytes or 0) / PREFILL_MIN_RATE + 10
        result = self._run(command, limit)
        report = self._parse(result, "pre-fill", command)
        for m in report.metrics:
            if m.errors:
                raise FioRunError(f"{self.label}: pre-fill of {self.device_path} had {m.errors} I/O errors")
        self.prefilled.add(self.label)
        return time.monotonic() - started

    def run_once(self, profile: Profile) -> RunOutput:
        """Run one measured fio pass (checks first: refusal happens before fio starts)."""
        if profile.write:
            self.check_writable(profile.name)
        command = fio_command(profile, self.device_path, readonly=not profile.write)
        started = time.monotonic()
        result = self._run(command, profile.runtime + profile.ramp_time + COMMAND_SLACK + 10)
        report = self._parse(result, profile.name, command)
        return RunOutput(report, time.monotonic() - started)

    def _parse(self, result: Any, what: str, command: str) -> FioReport:
        if result.rc != 0:
            raise FioRunError(
                f"{self.label}: fio {what} on {self.device_path} failed (exit {result.rc}): "
                f"{(result.stderr or result.stdout).strip()[-500:]}\ncommand: {command}"
            )
        try:
            return parse_fio(result.stdout, f"{self.label} {what}")
        except FioError as exc:
            raise FioRunError(f"{self.label}: {exc}") from None
