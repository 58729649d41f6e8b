"""What a running domain's QEMU process really does: its threads' CPUs and the disk settings on its command line.

No I/O here: `facts/host.py` reads /proc in the host's one facts command; this module turns what it printed into
model objects, and masks secrets on the command line before anything keeps it.

Sources:
- Thread names: libvirt starts QEMU with `-name guest=NAME,debug-threads=on` (src/qemu/qemu_command.c
  qemuBuildNameCommandLine), so QEMU names its threads: `CPU n/KVM` (accel/kvm/kvm-accel-ops.c), `CPU n/TCG` for
  multi-threaded TCG and `ALL CPUs/TCG` for single-threaded TCG (accel/tcg/tcg-accel-ops-mttcg.c, -rr.c), `IO NAME`
  for an IOThread object NAME (iothread.c), which libvirt calls `iothreadN` for <iothread id='N'>.
- The disk settings: libvirt ≥ 6.0 (QEMU ≥ 4.2) writes each disk as `-blockdev` JSON nodes — the storage node with
  `aio` and `cache.direct`/`cache.no-flush`, the format node above it — and a `-device` whose `drive` names the top
  node and whose `id` is the disk's <alias> (src/qemu/qemu_block.c, qemu_command.c qemuBuildDiskDeviceProps); older
  ones write `-drive file=…,cache=…,aio=…,discard=…` with `id=drive-ALIAS`. The cache mode is the three switches
  QEMU documents (docs/system/qemu-block-drivers.rst, "cache modes"): direct, no-flush and the device's write-cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_kvmio.model.cpuset import parse_cpuset
from pytest_kvmio.model.redact import MASK

_VCPU_THREAD = re.compile(r"^CPU (\d+)/(KVM|TCG|HVF|WHPX|NVMM)$")
_IOTHREAD = re.compile(r"^IO iothread(\d+)$")
#: Properties of a `-object secret` that hold the secret (or what decrypts it).
_SECRET_PROPS = ("data", "iv")


@dataclass(frozen=True)
class QemuThread:
    """One thread of a QEMU process: its name, the CPUs it may run on, and the CPUs its cgroup allows."""

    tid: int
    name: str
    affinity: frozenset[int] | None
    #: The effective cpuset of the thread's cgroup (None: no cpuset controller, or unreadable).
    cgroup_cpus: frozenset[int] | None = None
    cgroup: str | None = None

    @property
    def vcpu(self) -> int | None:
        m = _VCPU_THREAD.match(self.name)
        return int(m.group(1)) if m else None

    @property
    def iothread(self) -> int | None:
        m = _IOTHREAD.match(self.name)
        return int(m.group(1)) if m else None

    @property
    def runs_on(self) -> frozenset[int] | None:
        """Return the CPUs the thread can really run on: its affinity within its cgroup's cpuset."""
        if self.affinity is None:
            return None
        return self.affinity & self.cgroup_cpus if self.cgroup_cpus is not None else self.affinity


@dataclass(frozen=True)
class DiskSettings:
    """One disk's settings as QEMU was started with them (None: not on the command line, QEMU's default)."""

    alias: str
    aio: str | None = None
    direct: bool | None = None
    no_flush: bool | None = None
    write_cache: bool | None = None
    discard: str | None = None
    detect_zeroes: str | None = None
    read_only: bool | None = None
    num_queues: int | None = None
    iothread: str | None = None
    #: QEMU ≥ 9 `iothread-vq-mapping`: IOThread object id -> virtqueue numbers (empty: none given).
    vq_mapping: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: Where the settings were read: "-blockdev" or "-drive".
    syntax: str = "-blockdev"
    #: The file or block device QEMU opened (None: a network disk, or not said).
    filename: str | None = None

    @property
    def cache(self) -> str:
        """Return libvirt's name for the cache mode these switches make (QEMU's defaults where absent)."""
        direct, no_flush = bool(self.direct), bool(self.no_flush)
        write_cache = True if self.write_cache is None else self.write_cache
        if no_flush:
            return "unsafe"
        if direct:
            return "none" if write_cache else "directsync"
        return "writeback" if write_cache else "writethrough"

    @property
    def effective_aio(self) -> str:
        """Return the AIO mode QEMU runs (threads when the command line names none)."""
        return self.aio or "threads"

    @property
    def effective_discard(self) -> str:
        """Return the discard mode QEMU runs (ignore when the command line names none)."""
        return "unmap" if self.discard in ("unmap", "on") else "ignore"

    def as_dict(self) -> dict[str, Any]:
        return {"aio": self.effective_aio, "cache": self.cache, "discard": self.effective_discard,
                "detect_zeroes": self.detect_zeroes, "read_only": self.read_only, "num_queues": self.num_queues,
                "iothread": self.iothread, "from": self.syntax,
                **({"iothread_vq_mapping": {k: list(v) for k, v in self.vq_mapping.items()}} if self.vq_mapping else {})}


@dataclass
class QemuRuntime:
    """A running domain's QEMU process as the host's facts command read it."""

    pid: int | None
    threads: list[QemuThread] = field(default_factory=list)
    #: The command line, secrets masked.
    args: list[str] = field(default_factory=list)
    #: Disk settings by the disk's alias (the -device id).
    disks: dict[str, DiskSettings] = field(default_factory=dict)
    #: Why the process could not be read (no pid file, process gone, permission), None when it was.
    error: str | None = None

    def vcpu_threads(self) -> dict[int, QemuThread]:
        return {t.vcpu: t for t in self.threads if t.vcpu is not None}

    def iothread_threads(self) -> dict[int, QemuThread]:
        return {t.iothread: t for t in self.threads if t.iothread is not None}

    @property
    def single_threaded_tcg(self) -> bool:
        """Return True when every vCPU runs in QEMU's one `ALL CPUs/TCG` thread (no per-vCPU affinity)."""
        return any(t.name == "ALL CPUs/TCG" for t in self.threads)


# --- reading what the facts command printed --------------------------------------------------------------------------


def parse_thread_line(value: str) -> QemuThread | None:
    """Parse `TID AFFINITY CGROUP_CPUS NAME…<TAB>CGROUP` (`-` when unknown); None on a malformed line."""
    front, _, cgroup = value.partition("\t")
    parts = front.split(" ", 3)
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    tid, affinity, cgroup_cpus, name = parts
    if not name.strip():  # the thread ended between listing and reading it
        return None
    cgroup = cgroup.strip()
    return QemuThread(int(tid), name.strip(), _cpus(affinity), _cpus(cgroup_cpus), None if cgroup in ("", "-") else cgroup)


def _cpus(text: str) -> frozenset[int] | None:
    if text in ("", "-"):
        return None
    try:
        return parse_cpuset(text)
    except ValueError:
        return None


def parse_cmdline(raw: bytes) -> list[str]:
    """Return /proc/PID/cmdline's arguments (NUL-separated), secrets masked."""
    args = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")]
    if args and args[-1] == "":
        args.pop()
    return mask_secrets(args)


def mask_secrets(args: Sequence[str]) -> list[str]:
    """Mask what a `-object secret` carries (data, iv), in JSON and in key=value form, and any password=."""
    out: list[str] = []
    for i, arg in enumerate(args):
        prev = args[i - 1] if i else ""
        if prev == "-object" and arg.startswith("{"):
            try:
                props = json.loads(arg)
            except json.JSONDecodeError:
                props = None
            if isinstance(props, dict) and str(props.get("qom-type", "")).startswith("secret"):
                out.append(json.dumps({k: (MASK if k in _SECRET_PROPS else v) for k, v in props.items()}))
                continue
        if prev == "-object" and arg.startswith("secret"):
            out.append(",".join(
                f"{k}={MASK}" if k in _SECRET_PROPS else part
                for part in arg.split(",") for k in [part.partition("=")[0]]
            ))
            continue
        out.append(re.sub(r"(password|passwd)=[^,]*", rf"\1={MASK}", arg))
    return out


def _options(arg: str) -> dict[str, Any]:
    """Return a `-device`/`-blockdev`/`-drive` argument's properties: JSON, or QEMU's key=value,… (`,,` escapes a comma)."""
    if arg.startswith("{"):
        try:
            value = json.loads(arg)
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}
    props: dict[str, Any] = {}
    for part in re.split(r"(?<!,),(?!,)", arg):
        key, eq, val = part.partition("=")
        props[key] = val.replace(",,", ",") if eq else "on"
    return props


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if value in ("on", "true", "yes"):
        return True
    if value in ("off", "false", "no"):
        return False
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _cache_of(props: Mapping[str, Any]) -> tuple[bool | None, bool | None]:
    """Return (direct, no-flush) from a -blockdev node: nested `cache` JSON or dotted `cache.direct=` keys."""
    cache = props.get("cache")
    if isinstance(cache, dict):
        return _flag(cache.get("direct")), _flag(cache.get("no-flush"))
    return _flag(props.get("cache.direct")), _flag(props.get("cache.no-flush"))


#: `-drive cache=MODE` as (direct, no-flush, write-cache) (QEMU blockdev.c, bdrv_parse_cache_mode).
_DRIVE_CACHE = {"none": (True, False, True), "off": (True, False, True), "directsync": (True, False, False),
                "writeback": (False, False, True), "writethrough": (False, False, False),
                "unsafe": (False, True, True)}


def disk_settings(args: Sequence[str]) -> dict[str, DiskSettings]:
    """Return every disk device's settings on a QEMU command line, by the device's id (libvirt's disk alias)."""
    nodes: dict[str, dict[str, Any]] = {}
    drives: dict[str, dict[str, Any]] = {}
    devices: list[dict[str, Any]] = []
    for opt, arg in zip(args, args[1:]):
        if opt == "-blockdev":
            props = _options(arg)
            if isinstance(props.get("node-name"), str):
                nodes[props["node-name"]] = props
        elif opt == "-drive":
            props = _options(arg)
            if "id" in props:
                drives[str(props["id"])] = props
        elif opt == "-device":
            props = _options(arg)
            if "drive" in props and "id" in props:
                devices.append(props)
    found: dict[str, DiskSettings] = {}
    for dev in devices:
        alias, top = str(dev["id"]), str(dev["drive"])
        common = dict(
            alias=alias,
            write_cache=_flag(dev.get("write-cache")),
            num_queues=_int_or_none(dev.get("num-queues", dev.get("num_queues"))),
            iothread=dev.get("iothread") if isinstance(dev.get("iothread"), str) else None,
            vq_mapping=_vq_mapping(dev.get("iothread-vq-mapping")),
        )
        if top in nodes:
            chain = _chain(nodes, top)
            caches = [_cache_of(node) for node in chain]
            found[alias] = DiskSettings(
                **common,  # type: ignore[arg-type]
                aio=next((str(n["aio"]) for n in chain if "aio" in n), None),
                # the top node's cache switches (libvirt writes the same on every node of the chain)
                direct=next((d for d, _ in caches if d is not None), None),
                no_flush=next((n for _, n in caches if n is not None), None),
                # a guest's discard reaches the image only if every node passes it on: libvirt always writes
                # discard=unmap on the storage node and the disk's own setting on the format node above it
                discard="unmap" if all(n.get("discard") == "unmap" for n in chain) else "ignore",
                detect_zeroes=next((str(n["detect-zeroes"]) for n in chain if "detect-zeroes" in n), None),
                read_only=_flag(chain[0].get("read-only")) if chain else None,
                syntax="-blockdev",
                filename=next((str(n["filename"]) for n in chain if "filename" in n), None),
            )
        elif top in drives:
            drive = drives[top]
            direct, no_flush, write_cache = _DRIVE_CACHE.get(str(drive.get("cache", "writeback")), (None, None, None))
            if common["write_cache"] is None:
                common["write_cache"] = write_cache
            found[alias] = DiskSettings(
                **common,  # type: ignore[arg-type]
                aio=str(drive["aio"]) if "aio" in drive else None,
                direct=direct, no_flush=no_flush,
                discard=str(drive["discard"]) if "discard" in drive else None,
                detect_zeroes=str(drive["detect-zeroes"]) if "detect-zeroes" in drive else None,
                read_only=_flag(drive.get("readonly")),
                syntax="-drive",
                filename=str(drive["file"]) if "file" in drive else None,
            )
    return found


def _chain(nodes: Mapping[str, Mapping[str, Any]], top: str) -> list[Mapping[str, Any]]:
    """Return the nodes from `top` down its `file` children (format → filters → storage), guarding against loops."""
    chain: list[Mapping[str, Any]] = []
    name: Any = top
    while isinstance(name, str) and name in nodes and len(chain) < 16:
        node = nodes[name]
        chain.append(node)
        name = node.get("file")
    return chain


def _vq_mapping(value: Any) -> dict[str, tuple[int, ...]]:
    """Return QEMU 9's `iothread-vq-mapping` ([{"iothread": ID, "vqs": [n, …]}, …]) as {ID: (n, …)}."""
    if not isinstance(value, list):
        return {}
    mapping: dict[str, tuple[int, ...]] = {}
    for entry in value:
        if isinstance(entry, dict) and isinstance(entry.get("iothread"), str):
            vqs = entry.get("vqs")
            mapping[entry["iothread"]] = tuple(v for v in vqs if isinstance(v, int)) if isinstance(vqs, list) else ()
    return mapping


def build_runtime(pid: int | None, threads: list[QemuThread], cmdline: bytes | None, error: str | None) -> QemuRuntime:
    """Return a QemuRuntime from the pieces the facts command printed for one domain."""
    args = parse_cmdline(cmdline) if cmdline else []
    return QemuRuntime(pid=pid, threads=threads, args=args, disks=disk_settings(args), error=error)
