"""Render a DomainSpec as libvirt domain XML (direct kernel boot, agent channel, file console)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from pytest_kvmio.lab.topology import DiskSpec, DomainSpec

METADATA_NS = "https://pytest-kvmio.invalid/lab"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
NETDEV_ID = "kvmionet0"
FORWARD_HOST = "127.0.0.1"
# A fixed root-bus slot libvirt leaves alone (it fills slots from 0x01 up with root ports; 0x1f is
# the ICH9 LPC/SATA). Without an address QEMU takes slot 1 before libvirt's pcie-root-port gets it.
NIC_PCI_SLOT = "0x10"


@dataclass(frozen=True)
class GuestBoot:
    """The built guest: kernel, initramfs, and the accelerator domains run under."""

    kernel: Path
    initrd: Path
    domain_type: str  # qemu (TCG) | kvm


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str | None) -> etree._Element:
    el = etree.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def cmdline(dom: DomainSpec) -> str:
    """Return the guest kernel command line, with the lab's guest-side knobs."""
    args = ["console=ttyS0", "quiet", f"kvmio.disks={len(dom.disks)}"]
    for disk in dom.disks:
        if disk.guest_scheduler is not None:
            args.append(f"kvmio.sched={disk.serial}:{disk.guest_scheduler}")
    return " ".join(args)


def vhost_socket(vhost_dir: Path, domain: str, target: str) -> Path:
    """Return the UNIX socket a lab vhost-user disk's backend serves (lab/vhost.py starts it)."""
    return vhost_dir / f"{domain}-{target}.sock"


def _vhost_disk(devices: etree._Element, dom: DomainSpec, disk: DiskSpec, vhost_dir: Path) -> None:
    """Render a vhost-user-blk disk: raw, queues, a unix socket source (reconnect when set), no serial."""
    el = _sub(devices, "disk", type="vhostuser", device="disk")
    _sub(el, "driver", name="qemu", type="raw", queues=None if disk.queues is None else str(disk.queues))
    source = _sub(el, "source", type="unix", path=str(vhost_socket(vhost_dir, dom.name, disk.target)))
    if disk.reconnect is not None:
        _sub(source, "reconnect", enabled="yes", timeout=str(disk.reconnect))
    _sub(el, "target", dev=disk.target, bus=disk.bus)


def _disk(devices: etree._Element, disk: DiskSpec, image_dir: Path) -> None:
    el = _sub(devices, "disk", type="file", device="disk")
    _sub(
        el,
        "driver",
        name="qemu",
        type=disk.image.fmt,
        cache=disk.cache,
        io=disk.io,
        discard=disk.discard,
        iothread=None if disk.iothread is None else str(disk.iothread),
        queues=None if disk.queues is None else str(disk.queues),
    )
    _sub(el, "source", file=str(image_dir / disk.image.filename))
    _sub(el, "target", dev=disk.target, bus=disk.bus)
    _sub(el, "serial", disk.serial)
    if disk.bus == "scsi":
        unit = str(ord(disk.target[-1]) - ord("a"))
        _sub(el, "address", type="drive", controller="0", bus="0", target="0", unit=unit)


def qemu_net_args(ssh_port: int, machine: str = "q35") -> list[str]:
    """Return QEMU arguments for a user-mode NIC whose only way in is 127.0.0.1:ssh_port -> guest :22.

    libvirt 9.0 forwards ports of <interface type='user'> only with the passt backend (not
    installed here) and cannot say restrict=on, hence <qemu:commandline>. restrict=on isolates the
    guest: it reaches nothing outside QEMU, not even the host; only the forward comes in.
    """
    netdev = f"user,id={NETDEV_ID},restrict=on,hostfwd=tcp:{FORWARD_HOST}:{ssh_port}-:22"
    bus = "pcie.0" if "q35" in machine else "pci.0"
    device = f"virtio-net-pci,netdev={NETDEV_ID},bus={bus},addr={NIC_PCI_SLOT},romfile="  # no iPXE ROM needed
    return ["-netdev", netdev, "-device", device]


def render(dom: DomainSpec, boot: GuestBoot, image_dir: Path, console_log: Path, ssh_port: int | None = None,
           vhost_dir: Path | None = None) -> str:
    """Return the domain XML, with a content hash in <metadata> for idempotent `lab up`.

    A domain with ``dom.ssh`` gets the NIC of :func:`qemu_net_args` (``ssh_port`` is required then). vhost-user
    disks' sockets are in ``vhost_dir`` (default: ``vhost`` beside ``image_dir``, as LabPaths lays them out).
    """
    vhost_dir = vhost_dir if vhost_dir is not None else image_dir.parent / "vhost"
    if dom.ssh and ssh_port is None:
        raise ValueError(f"{dom.name}: an SSH-enabled domain needs ssh_port")
    root = etree.Element("domain", type=boot.domain_type, nsmap={"qemu": QEMU_NS} if dom.ssh else None)
    _sub(root, "name", dom.name)
    _sub(root, "title", "kvmio lab domain")
    _sub(root, "description", dom.purpose)
    _sub(root, "memory", str(dom.memory_mib), unit="MiB")
    if dom.shared_memory:
        backing = _sub(root, "memoryBacking")
        _sub(backing, "source", type="memfd")
        _sub(backing, "access", mode="shared")
    _sub(root, "vcpu", str(dom.vcpus), placement="static", cpuset=dom.vcpu_cpuset)
    if dom.iothreads:
        _sub(root, "iothreads", str(dom.iothreads))
    if dom.vcpupin or dom.iothreadpin:
        tune = _sub(root, "cputune")
        for vcpu, cpus in sorted(dom.vcpupin.items()):
            _sub(tune, "vcpupin", vcpu=str(vcpu), cpuset=cpus)
        for thread, cpus in sorted(dom.iothreadpin.items()):
            _sub(tune, "iothreadpin", iothread=str(thread), cpuset=cpus)
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=dom.machine)
    _sub(os_el, "kernel", str(boot.kernel))
    _sub(os_el, "initrd", str(boot.initrd))
    _sub(os_el, "cmdline", cmdline(dom))
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    _sub(devices, "emulator", "/usr/bin/qemu-system-x86_64")
    for disk in dom.disks:
        if disk.vhost:
            _vhost_disk(devices, dom, disk, vhost_dir)
        else:
            _disk(devices, disk, image_dir)
    if dom.scsi is not None:
        ctrl = _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        queues = None if dom.scsi.queues is None else str(dom.scsi.queues)
        iothread = None if dom.scsi.iothread is None else str(dom.scsi.iothread)
        if queues or iothread:
            _sub(ctrl, "driver", queues=queues, iothread=iothread)
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(console_log))
    _sub(serial, "target", port="0")
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    _sub(devices, "memballoon", model="none")
    if dom.ssh:
        assert ssh_port is not None
        qemu_cmd = etree.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for arg in qemu_net_args(ssh_port, dom.machine):
            etree.SubElement(qemu_cmd, f"{{{QEMU_NS}}}arg", value=arg)
    body = etree.tostring(root, pretty_print=True, encoding="unicode")
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    meta = etree.Element("metadata")
    etree.SubElement(meta, f"{{{METADATA_NS}}}lab", nsmap={"kvmio": METADATA_NS}, hash=digest)
    root.insert(3, meta)
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def spec_hash(xml: str) -> str | None:
    """Return the lab hash stored in a domain XML's <metadata>, if any."""
    root = etree.fromstring(xml.encode())
    found = root.find(f"metadata/{{{METADATA_NS}}}lab")
    return None if found is None else found.get("hash")
