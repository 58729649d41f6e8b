"""Map libvirt disks to the guest's block devices, and read their virtio interrupts.

The guest names disks in its own (PCI probe) order, so ``<target dev='vdb'>`` may well be the
guest's ``vda``. Matching, in order of trust:

1. ``<serial>``: virtio-blk exposes it in ``/sys/block/vdX/serial`` (the virtio-blk ID field holds
   20 bytes, so longer serials arrive cut to 20); SCSI and SATA disks in VPD page 0x80
   (``/sys/block/sdX/device/vpd_pg80``, after a 4-byte header; ATA pads with spaces);
   ``/dev/disk/by-id/virtio-SERIAL`` when udev made it.
2. SCSI address, for ``bus='scsi'`` disks without a serial: libvirt's
   ``<address type='drive' controller='C' bus='B' target='T' unit='U'/>`` becomes QEMU's
   ``scsi-hd,bus=scsiC.0,channel=B,scsi-id=T,lun=U``, which the guest shows as ``H:B:T:U``
   (``/sys/block/sdX/device`` points at that directory). The guest's SCSI host number H is not the
   controller index: it is matched through the controller's PCI address when the caller gives
   ``scsi_controllers`` ({index: <address type='pci'> attributes or "0000:01:00.0"}; the guest's
   sysfs path ends in that PCI function, also behind q35 root ports), or taken when the guest has
   exactly one virtio-scsi host. Otherwise the disk is reported unmapped with that reason.
3. PCI address, for virtio disks without a serial (libvirt refuses ``<serial>`` on vhost-user disks): the
   (slot, function) of every hop from the root bus to the device, from libvirt's ``<address type='pci'>`` and
   its parent controllers' addresses, equals the PCI functions in the guest's sysfs path
   (``/sys/devices/pci0000:00/0000:00:02.2/0000:03:00.0/virtio3/block/vdc`` is ``((2, 2), (0, 0))``). Bus
   numbers are not compared: libvirt's are controller indexes, the guest's are what its firmware enumerated.

Everything is read with one guest command (:data:`PROBE_SCRIPT`), which prints ``key=value`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

VIRTIO_BLK_SERIAL_BYTES = 20

PROBE_SCRIPT = r"""
for d in /sys/block/*; do
  [ -e "$d/device" ] || continue
  echo "dev=${d##*/}"
  echo "path=$(readlink -f "$d")"
  [ -r "$d/serial" ] && echo "serial=$(cat "$d/serial" 2>/dev/null)"
  [ -r "$d/device/vpd_pg80" ] && echo "vpd80=$(tail -c +5 "$d/device/vpd_pg80" 2>/dev/null | tr -d '\000\n')"
  [ -r "$d/queue/scheduler" ] && echo "sched=$(cat "$d/queue/scheduler")"
  [ -d "$d/mq" ] && echo "mq=$(ls "$d/mq" | wc -l)"
done
for l in /dev/disk/by-id/*; do
  [ -L "$l" ] && echo "byid=$(readlink -f "$l") ${l##*/}"
done
exit 0
"""


class DiskLike(Protocol):
    """What the mapping needs from a libvirt disk (the lead's Disk model has these)."""

    @property
    def target(self) -> str: ...
    @property
    def bus(self) -> str | None: ...
    @property
    def serial(self) -> str | None: ...
    @property
    def address(self) -> Mapping[str, str] | None: ...
    @property
    def pci_path(self) -> tuple[tuple[int, int], ...] | None: ...


@dataclass(frozen=True)
class DiskRef:
    """A libvirt disk as the mapping sees it: target dev, bus, serial, <address> attributes, PCI path."""

    target: str
    bus: str | None = None
    serial: str | None = None
    address: Mapping[str, str] | None = None
    pci_path: tuple[tuple[int, int], ...] | None = None


@dataclass
class GuestBlockDevice:
    """One block device as the guest shows it in /sys/block."""

    name: str
    path: str = ""
    serial: str | None = None
    vpd_serial: str | None = None
    byid: list[str] = field(default_factory=list)
    scheduler_line: str | None = None
    hw_queues: int | None = None

    @property
    def scheduler(self) -> str | None:
        """Return the active scheduler, the bracketed entry of queue/scheduler."""
        if self.scheduler_line is None:
            return None
        m = re.search(r"\[([^\]]+)\]", self.scheduler_line)
        return m.group(1) if m else self.scheduler_line.strip() or None

    @property
    def virtio(self) -> str | None:
        """Return the virtio device (virtioN) the disk hangs off, from its sysfs path."""
        found = [p for p in self.path.split("/") if re.fullmatch(r"virtio\d+", p)]
        return found[-1] if found else None

    @property
    def pci(self) -> str | None:
        """Return the PCI address of the disk's controller (last one in the sysfs path)."""
        found = self._pci_functions()
        return found[-1] if found else None

    @property
    def pci_path(self) -> tuple[tuple[int, int], ...] | None:
        """Return (slot, function) of every PCI function from the root bus to the device, from the sysfs path."""
        found = self._pci_functions()
        if not found:
            return None
        return tuple((int(p[-4:-2], 16), int(p[-1], 16)) for p in found)

    def _pci_functions(self) -> list[str]:
        return [p for p in self.path.split("/") if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", p)]

    @property
    def scsi_address(self) -> tuple[int, int, int, int] | None:
        """Return host:channel:target:lun for a SCSI disk."""
        found = [p for p in self.path.split("/") if re.fullmatch(r"\d+:\d+:\d+:\d+", p)]
        if not found:
            return None
        h, c, t, u = (int(x) for x in found[-1].split(":"))
        return h, c, t, u

    def serials(self) -> list[str]:
        """Return every serial the guest gives for this device."""
        seen = [s.strip() for s in (self.serial, self.vpd_serial) if s and s.strip()]
        for name in self.byid:
            for prefix in ("virtio-", "scsi-0QEMU_QEMU_HARDDISK_", "ata-QEMU_HARDDISK_"):
                if name.startswith(prefix) and "-part" not in name:
                    seen.append(name[len(prefix):])
        return list(dict.fromkeys(seen))


@dataclass(frozen=True)
class GuestDisk:
    """A libvirt disk found in the guest."""

    target: str
    device: str
    scheduler: str | None
    hw_queues: int | None
    matched_by: str
    virtio: str | None = None

    def describe(self) -> str:
        """Say which guest device a libvirt target is, for assertion messages."""
        return f"{self.target} (guest {self.device}, matched by {self.matched_by})"


@dataclass(frozen=True)
class Unmapped:
    """A libvirt disk not found in the guest, with why."""

    target: str
    reason: str

    def describe(self) -> str:
        """Say why a libvirt target has no guest device."""
        return f"{self.target}: not found in the guest: {self.reason}"


def parse_probe(output: str) -> dict[str, GuestBlockDevice]:
    """Parse PROBE_SCRIPT output into guest block devices by name."""
    devices: dict[str, GuestBlockDevice] = {}
    by_path: dict[str, list[str]] = {}
    cur: GuestBlockDevice | None = None
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "dev":
            cur = devices.setdefault(value, GuestBlockDevice(value))
        elif key == "byid":
            target, _, name = value.partition(" ")
            by_path.setdefault(target.rsplit("/", 1)[-1], []).append(name)
        elif cur is None:
            continue
        elif key == "path":
            cur.path = value
        elif key == "serial":
            cur.serial = value
        elif key == "vpd80":
            cur.vpd_serial = value
        elif key == "sched":
            cur.scheduler_line = value
        elif key == "mq":
            try:
                cur.hw_queues = int(value.strip())
            except ValueError:
                cur.hw_queues = None
    for dev, names in by_path.items():
        if dev in devices:
            devices[dev].byid.extend(names)
    return devices


def _serial_matches(xml_serial: str, guest_serial: str) -> str | None:
    if guest_serial == xml_serial:
        return "serial"
    if (
        len(xml_serial) > VIRTIO_BLK_SERIAL_BYTES
        and len(guest_serial) == VIRTIO_BLK_SERIAL_BYTES
        and xml_serial.startswith(guest_serial)
    ):
        return f"serial (first {VIRTIO_BLK_SERIAL_BYTES} bytes, as virtio-blk keeps)"
    return None


def _found(disk: DiskLike, dev: GuestBlockDevice, how: str) -> GuestDisk:
    return GuestDisk(disk.target, dev.name, dev.scheduler, dev.hw_queues, how, dev.virtio)


def _scsi_hosts(devices: Iterable[GuestBlockDevice]) -> dict[int, str | None]:
    hosts: dict[int, str | None] = {}
    for dev in devices:
        addr = dev.scsi_address
        if addr is not None and dev.virtio is not None:
            hosts[addr[0]] = dev.pci
    return hosts


def pci_address(address: Mapping[str, str] | str) -> str:
    """Return a libvirt <address type='pci'> (attributes) or a PCI address string as 0000:01:00.0."""
    if isinstance(address, str):
        text = address.lower()
        return text if text.count(":") == 2 else f"0000:{text}"
    parts = [int(str(address.get(k, "0")), 0) for k in ("domain", "bus", "slot", "function")]
    return "{:04x}:{:02x}:{:02x}.{:x}".format(*parts)


def _map_by_scsi_address(
    disk: DiskLike,
    devices: Mapping[str, GuestBlockDevice],
    scsi_controllers: Mapping[int, Mapping[str, str] | str] | None,
) -> GuestDisk | Unmapped:
    addr = disk.address or {}
    if addr.get("type", "drive") != "drive":
        return Unmapped(disk.target, f"no <serial> and <address type='{addr.get('type')}'> is not a drive address")
    try:
        ctrl = int(addr.get("controller", 0))
        want = (int(addr.get("bus", 0)), int(addr.get("target", 0)), int(addr.get("unit", 0)))
    except ValueError:
        return Unmapped(disk.target, f"no <serial> and an unreadable <address> {dict(addr)}")
    hosts = _scsi_hosts(devices.values())
    host: int | None = None
    if scsi_controllers and ctrl in scsi_controllers:
        pci = pci_address(scsi_controllers[ctrl])
        matches = [h for h, p in hosts.items() if p == pci]
        if not matches:
            return Unmapped(disk.target, f"no <serial>; no guest SCSI host on controller {ctrl}'s PCI address {pci}")
        host = matches[0]
    elif len(hosts) == 1:
        host = next(iter(hosts))
    else:
        return Unmapped(
            disk.target,
            f"no <serial>; {len(hosts)} virtio-scsi hosts in the guest and controller {ctrl}'s PCI address not given",
        )
    for dev in devices.values():
        sa = dev.scsi_address
        if sa is not None and sa[0] == host and sa[1:] == want:
            return _found(disk, dev, f"SCSI address {host}:{want[0]}:{want[1]}:{want[2]}")
    return Unmapped(disk.target, f"no <serial>; no guest disk at SCSI address {host}:{want[0]}:{want[1]}:{want[2]}")


def _format_pci_path(path: tuple[tuple[int, int], ...]) -> str:
    return " -> ".join(f"{slot:02x}.{function:x}" for slot, function in path)


def _map_by_pci_path(disk: DiskLike, devices: Mapping[str, GuestBlockDevice]) -> GuestDisk | Unmapped:
    want = disk.pci_path
    assert want is not None
    hits = [dev for dev in devices.values() if dev.virtio is not None and dev.pci_path == want]
    shown = _format_pci_path(want)
    if len(hits) == 1:
        return _found(disk, hits[0], f"PCI address (slot.function {shown})")
    if hits:
        return Unmapped(disk.target, f"no <serial>; PCI slot.function {shown} matches {', '.join(d.name for d in hits)}")
    seen = ", ".join(f"{d.name}={_format_pci_path(d.pci_path)}" for d in devices.values() if d.pci_path) or "none"
    return Unmapped(disk.target, f"no <serial> and no guest virtio disk at PCI slot.function {shown} (guest: {seen})")


def map_disks(
    devices: Mapping[str, GuestBlockDevice],
    disks: Iterable[DiskLike],
    scsi_controllers: Mapping[int, Mapping[str, str] | str] | None = None,
) -> dict[str, GuestDisk | Unmapped]:
    """Match libvirt disks to parsed guest block devices (see the module docstring)."""
    disks = list(disks)
    result: dict[str, GuestDisk | Unmapped] = {}
    for disk in disks:
        serial = (disk.serial or "").strip()
        if serial:
            hits = [(dev, how) for dev in devices.values() for s in dev.serials() if (how := _serial_matches(serial, s))]
            names = sorted({dev.name for dev, _ in hits})
            if len(names) == 1:
                result[disk.target] = _found(disk, hits[0][0], hits[0][1])
                continue
            if len(names) > 1:
                result[disk.target] = Unmapped(disk.target, f"serial {serial!r} matches several guest devices: {', '.join(names)}")
                continue
            if (disk.bus or "") != "scsi" or not disk.address:
                seen = ", ".join(f"{d.name}={'/'.join(d.serials()) or '-'}" for d in devices.values()) or "none"
                result[disk.target] = Unmapped(disk.target, f"no guest block device with serial {serial!r} (guest serials: {seen})")
                continue
        if (disk.bus or "") == "scsi" and disk.address:
            result[disk.target] = _map_by_scsi_address(disk, devices, scsi_controllers)
        elif (disk.bus or "") == "virtio" and getattr(disk, "pci_path", None):
            result[disk.target] = _map_by_pci_path(disk, devices)
        else:
            result[disk.target] = Unmapped(
                disk.target,
                f"no <serial> in the domain XML; a bus={disk.bus or '?'} disk can only be found by serial "
                "(guest names like vdX follow probe order, not <target dev>)",
            )
    # A guest device claimed by two libvirt disks means one match is wrong: report both.
    claimed: dict[str, list[str]] = {}
    for target, m in result.items():
        if isinstance(m, GuestDisk):
            claimed.setdefault(m.device, []).append(target)
    for dev, targets in claimed.items():
        if len(targets) > 1:
            for t in targets:
                result[t] = Unmapped(t, f"guest {dev} matches several libvirt disks: {', '.join(targets)}")
    return result


def probe_guest_block_devices(guest: Any) -> dict[str, GuestBlockDevice]:
    """Read every guest block device with one command."""
    return parse_probe(guest.check_output(PROBE_SCRIPT))


def map_guest_disks(
    guest: Any,
    disks: Iterable[DiskLike],
    scsi_controllers: Mapping[int, Mapping[str, str] | str] | None = None,
) -> dict[str, GuestDisk | Unmapped]:
    """Map libvirt disks (target, bus, serial, address) to guest block devices, by target dev."""
    return map_disks(probe_guest_block_devices(guest), disks, scsi_controllers)


# --- interrupts -------------------------------------------------------------------------------

_REQUEST_VQ = re.compile(r"^(virtio\d+)-(req\.\d+|request(\.\d+)?)$")


@dataclass(frozen=True)
class IrqSnapshot:
    """Per-CPU counts of one guest disk's virtio request interrupts at one moment."""

    device: str
    virtio: str
    cpus: tuple[int, ...]
    per_irq: Mapping[str, tuple[int, ...]]  # "25 virtio2-req.0" -> counts in the order of cpus

    def per_cpu(self) -> dict[int, int]:
        """Return the summed count per CPU over the disk's request queues."""
        totals = dict.fromkeys(self.cpus, 0)
        for counts in self.per_irq.values():
            for cpu, n in zip(self.cpus, counts):
                totals[cpu] += n
        return totals


def parse_interrupts(text: str, virtio: str, device: str = "") -> IrqSnapshot:
    """Parse /proc/interrupts and keep the request-queue lines of one virtio device."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("/proc/interrupts is empty")
    cpus = tuple(int(c[3:]) for c in lines[0].split() if c.startswith("CPU"))
    per_irq: dict[str, tuple[int, ...]] = {}
    for line in lines[1:]:
        label, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if not fields:
            continue
        m = _REQUEST_VQ.match(fields[-1])
        if not m or m.group(1) != virtio:
            continue
        counts = []
        for f in fields[: len(cpus)]:
            if not f.isdigit():
                break
            counts.append(int(f))
        per_irq[f"{label.strip()} {fields[-1]}"] = tuple(counts + [0] * (len(cpus) - len(counts)))
    return IrqSnapshot(device, virtio, cpus, per_irq)


_IRQ_SCRIPT = 'readlink -f /sys/block/%s; echo ---; cat /proc/interrupts'


def read_irq_counts(guest: Any, device: str | GuestDisk) -> IrqSnapshot:
    """Read the per-CPU counts of a guest disk's virtio request interrupts (one guest command)."""
    name = device.device if isinstance(device, GuestDisk) else device
    if isinstance(device, GuestDisk) and device.virtio:
        virtio = device.virtio
        text = guest.check_output("cat /proc/interrupts")
    else:
        out = guest.check_output(_IRQ_SCRIPT, name)
        path, _, text = out.partition("\n---\n")
        found = GuestBlockDevice(name, path.strip()).virtio
        if found is None:
            raise ValueError(f"guest {name}: not a virtio disk (sysfs path {path.strip() or 'missing'})")
        virtio = found
    snap = parse_interrupts(text, virtio, name)
    if not snap.per_irq:
        raise ValueError(f"guest {name}: no {virtio}-req.*/{virtio}-request lines in /proc/interrupts (no MSI-X?)")
    return snap


def irq_delta(before: IrqSnapshot, after: IrqSnapshot) -> dict[int, int]:
    """Return how many request interrupts each CPU took between two snapshots."""
    if before.virtio != after.virtio:
        raise ValueError(f"snapshots of different devices: {before.virtio} and {after.virtio}")
    a, b = after.per_cpu(), before.per_cpu()
    return {cpu: a[cpu] - b.get(cpu, 0) for cpu in a}
