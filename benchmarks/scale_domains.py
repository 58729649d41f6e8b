"""Generated domain XML for the scale benchmarks: a fleet of N domains with 4 data disks each.

The mix imitates a real fleet: most domains are compliant (virtio-blk on an IOThread, cache='none',
io='native' on raw preallocated images or io_uring on qcow2 with discard), some have drifted
(no IOThread, unpinned IOThreads, single-queue disks, cache='unsafe', writeback, qcow2 without discard),
a few use virtio-scsi controllers with or without an IOThread. `libvirt_safe=True` leaves out what
libvirt refuses at define time (io='uring', io='native' with a page-cache mode), for the live benchmark.
Each domain's shape depends only on its number, so runs are comparable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

#: (cache, io, discard, image format) per disk style; the offline-only ones libvirt rejects.
DISK_STYLES = (
    ("none", "native", None, "raw"),  # compliant: native on a raw (preallocated) image
    ("none", "io_uring", "unmap", "qcow2"),  # compliant: io_uring on thin qcow2 with discard
    ("none", "threads", "unmap", "qcow2"),
    ("writeback", "threads", None, "qcow2"),  # reported (writeback) and failed (no discard)
    ("unsafe", "threads", "unmap", "raw"),  # failed: cache unsafe
    ("directsync", "io_uring", None, "raw"),
)
OFFLINE_ONLY_STYLES = (
    ("none", "uring", None, "raw"),  # failed: typo libvirt rejects
    ("writeback", "native", None, "raw"),  # failed: native without O_DIRECT, libvirt rejects
)
DISKS_PER_DOMAIN = 4


def _disk(i: int, n: int, style: tuple[str, str, str | None, str], bus: str, source: str, iothread: int | None,
          queues: int | None) -> str:
    cache, io, discard, fmt = style
    attrs = f" name='qemu' type='{fmt}' cache='{cache}' io='{io}'"
    if discard:
        attrs += f" discard='{discard}'"
    if iothread is not None:
        attrs += f" iothread='{iothread}'"
    if queues is not None:
        attrs += f" queues='{queues}'"
    dev = ("vd" if bus == "virtio" else "sd") + "abcdefgh"[n]
    address = (
        f"\n      <address type='drive' controller='0' bus='0' target='0' unit='{n}'/>" if bus == "scsi" else ""
    )
    kind, src = ("block", f"dev={quoteattr(source)}") if source.startswith("/dev/") else ("file", f"file={quoteattr(source)}")
    return f"""    <disk type='{kind}' device='disk'>
      <driver{attrs}/>
      <source {src}/>
      <target dev='{dev}' bus='{bus}'/>
      <serial>scale-{i:05d}-{n}</serial>{address}
    </disk>
"""


def image_paths(i: int, image_dir: Path) -> list[str]:
    """Return the 4 image paths of domain i (the 4th of every 5th domain is a block device)."""
    paths = [str(image_dir / f"scale-{i:05d}-{n}.img") for n in range(DISKS_PER_DOMAIN)]
    if i % 5 == 4:
        paths[3] = f"/dev/mapper/scale-{i:05d}-lun"
    return paths


def image_format(i: int, n: int, libvirt_safe: bool) -> str:
    """Return the format the XML gives disk n of domain i (the live benchmark creates images of it)."""
    return _styles(i, libvirt_safe)[n][3]


def _styles(i: int, libvirt_safe: bool) -> list[tuple[str, str, str | None, str]]:
    styles = DISK_STYLES if libvirt_safe else DISK_STYLES + OFFLINE_ONLY_STYLES
    compliant = i % 4 != 3  # three of four domains are compliant
    if compliant:
        return [DISK_STYLES[(i + n) % 2] for n in range(DISKS_PER_DOMAIN)]
    return [styles[(i * 7 + n * 3) % len(styles)] for n in range(DISKS_PER_DOMAIN)]


def domain_xml(i: int, image_dir: Path, prefix: str = "scale", libvirt_safe: bool = False) -> str:
    """Return the XML of domain number i."""
    name = f"{prefix}-{i:03d}"
    vcpus = (2, 4, 8)[i % 3]
    compliant = i % 4 != 3
    scsi = i % 10 in (2, 7)  # one domain in five puts its disks on a virtio-scsi controller
    iothreads = 0 if (not compliant and i % 8 == 7) else 1 + i % 2
    pinned = compliant or i % 3 == 0
    queues = vcpus if compliant else (1 if i % 2 else None)
    styles = _styles(i, libvirt_safe)
    paths = image_paths(i, image_dir)
    disks = "".join(
        _disk(i, n, styles[n], "scsi" if scsi else "virtio", paths[n],
              None if scsi or not iothreads else 1 + n % iothreads, None if scsi else queues)
        for n in range(DISKS_PER_DOMAIN)
    )
    controller = ""
    if scsi:
        driver = f"<driver queues='{vcpus}' iothread='1'/>" if iothreads else "<driver queues='1'/>"
        controller = f"    <controller type='scsi' index='0' model='virtio-scsi'>\n      {driver}\n    </controller>\n"
    cputune = ""
    if iothreads:
        pins = "".join(f"    <vcpupin vcpu='{v}' cpuset='{2 + v}'/>\n" for v in range(vcpus))
        if pinned:
            pins += "".join(f"    <iothreadpin iothread='{t + 1}' cpuset='{t}'/>\n" for t in range(iothreads))
        cputune = f"  <cputune>\n{pins}  </cputune>\n"
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid.uuid5(uuid.NAMESPACE_DNS, f"{prefix}-{i}.kvmio.invalid")}</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
{f"  <iothreads>{iothreads}</iothreads>" + chr(10) if iothreads else ""}{cputune}  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
{disks}{controller}    <controller type='usb' index='0' model='qemu-xhci'/>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <console type='pty'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def write_fleet(count: int, directory: Path, image_dir: Path) -> Iterator[Path]:
    """Write `count` domain XML files into `directory`; yield their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = directory / f"scale-{i:05d}.xml"
        path.write_text(domain_xml(i, image_dir))
        yield path
