"""QEMU machine types and virtio transports: the one place that maps their names to QEMU's defaults.

A machine type name is upstream (`pc-q35-7.2`, `pc-i440fx-2.12`, `virt-6.0`, `pseries-5.1`,
`s390-ccw-virtio-4.2`), downstream (`pc-q35-rhel8.2.0`, `pc-i440fx-rhel7.6.0`, `pseries-rhel8.4.0`,
`s390-ccw-virtio-rhel9.0.0`, `virt-rhel9.2.0`: RHEL, CentOS Stream and oVirt hosts), or an alias that
the host's QEMU resolves to its newest version (`q35`, `pc`, `virt`, `pseries`, `s390-ccw-virtio`, or
no machine attribute at all). Downstream versions do not follow upstream numbers: their defaults come
from the `hw_compat_rhel_*` tables of CentOS Stream's qemu-kvm, cited below. A name kvmio cannot place
is reported by name, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from lxml import etree

from pytest_kvmio.model.versions import Version

#: Families of machine types whose virtio devices kvmio knows the defaults of, by name pattern.
#: Each pattern has an upstream `-X.Y`, a downstream `-rhelX.Y.Z` and an unversioned alias form.
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    # (family, prefix of versioned names, alias)
    ("pc-i440fx", "pc-i440fx-", "pc"),
    ("pc-q35", "pc-q35-", "q35"),
    ("virt", "virt-", "virt"),
    ("pseries", "pseries-", "pseries"),
    ("s390-ccw-virtio", "s390-ccw-virtio-", "s390-ccw-virtio"),
)
_UPSTREAM = re.compile(r"^(\d+)\.(\d+)$")
_DOWNSTREAM = re.compile(r"^rhel(\d+)\.(\d+)\.(\d+)$")
#: i440fx names before QEMU 2.0 (`pc-0.15`, `pc-1.3`) and RHEL 6's (`rhel6.6.0`).
_OLD_PC = re.compile(r"^pc-(\d+)\.(\d+)$")
_RHEL6_PC = re.compile(r"^rhel(\d+)\.(\d+)\.(\d+)$")

#: Upstream QEMU: from the 5.2 machine types on, virtio-blk-pci and virtio-scsi-pci default num-queues to
#: the vCPU count; older machine types get one queue (hw_compat_5_1 in QEMU's hw/core/machine.c sets
#: virtio-blk-device num-queues=1 and virtio-scsi-device num_queues=1).
UPSTREAM_MULTIQUEUE_SINCE = (5, 2)
#: Downstream (RHEL) machine types: hw_compat_rhel_8_3 in CentOS Stream's qemu-kvm (hw/core/machine.c)
#: carries the same num-queues=1 entries, so the rhel8.4.0 machine types are the first whose PCI virtio
#: disks get one queue per vCPU; every rhel7.x and rhel8.0-8.3 machine type keeps one queue.
DOWNSTREAM_MULTIQUEUE_SINCE = (8, 4)
#: Where the mappings above come from, for messages and the catalogue.
SOURCE_UPSTREAM = "QEMU hw/core/machine.c hw_compat_5_1"
SOURCE_DOWNSTREAM = "CentOS Stream qemu-kvm hw/core/machine.c hw_compat_rhel_8_3"
SOURCE_TRANSPORT = "only QEMU's PCI proxies compute a per-vCPU default: virtio_pci_optimal_num_queues"


@dataclass(frozen=True)
class MachineType:
    """A machine type name read into its family and version."""

    name: str | None
    #: pc-i440fx, pc-q35, virt, pseries, s390-ccw-virtio, microvm; None when kvmio can't place it.
    family: str | None
    #: (major, minor) of an upstream name, e.g. (7, 2) for pc-q35-7.2.
    upstream: tuple[int, int] | None = None
    #: (major, minor, micro) of a downstream RHEL name, e.g. (8, 2, 0) for pc-q35-rhel8.2.0.
    downstream: tuple[int, int, int] | None = None
    #: The alias the host's machine types resolved to this name (`q35`; "" for no machine attribute), else None.
    host_alias: str | None = None

    @property
    def is_alias(self) -> bool:
        """Return True for a name the host's QEMU resolves to its newest versioned machine type."""
        return self.family is not None and self.upstream is None and self.downstream is None

    @property
    def label(self) -> str:
        if self.host_alias is not None:
            given = self.host_alias or "default (no machine attribute)"
            return f"machine type {given} ({self.name} on the host)"
        return f"machine type {self.name}" if self.name else "machine type default (no machine attribute)"


@dataclass(frozen=True)
class HostMachines:
    """The machine types a host's QEMU offers for one guest architecture, as libvirt's capabilities list them.

    libvirt lists the default machine type first (QEMU's `is-default` one, moved to the front in
    qemu_capabilities.c), and an alias as its own <machine canonical='pc-q35-7.2'>q35</machine>. When a domain is
    defined, libvirt stores the canonical name in its XML (and the default for a domain without one): this is what
    a template's alias becomes on that host.
    """

    names: tuple[str, ...] = ()
    #: alias -> canonical name (`q35` -> `pc-q35-7.2`).
    aliases: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    def canonical(self, name: str | None) -> str | None:
        """Return the versioned name libvirt would store for `name` (None: no machine attribute), None when unknown."""
        if not name:
            return self.aliases.get(self.default, self.default) if self.default else None
        return self.aliases.get(name)

    def as_dict(self) -> dict[str, object]:
        """Return the machine types as plain values (a host facts file's `machine_types.<arch>`)."""
        return {"default": self.default, "aliases": dict(sorted(self.aliases.items())), "names": list(self.names)}


def host_machines_from_capabilities(capabilities_xml: str) -> dict[str, HostMachines]:
    """Return the machine types of each guest architecture in libvirt's capabilities XML (<guest><arch><machine>).

    An architecture's machines are those of its <arch>; a <domain type> that lists its own (another emulator for
    KVM) adds them. Architectures are keyed by name (`x86_64`); an unreadable document gives {}.
    """
    try:
        root = etree.fromstring(capabilities_xml.encode(), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return {}
    out: dict[str, HostMachines] = {}
    for arch in root.iterfind("guest/arch"):
        arch_name = arch.get("name")
        if not arch_name:
            continue
        names: list[str] = []
        aliases: dict[str, str] = {}
        for machine in [*arch.iterfind("machine"), *arch.iterfind("domain/machine")]:
            text = (machine.text or "").strip()
            if not text:
                continue
            canonical = machine.get("canonical")
            if canonical and canonical != text:
                aliases.setdefault(text, canonical)
            if text not in names:
                names.append(text)
        if not names:
            continue
        known = out.get(arch_name)
        if known is not None:  # the same arch under another <guest> (os_type): keep the first default
            names = [*known.names, *(n for n in names if n not in known.names)]
            aliases = {**aliases, **known.aliases}
        out[arch_name] = HostMachines(tuple(names), aliases, known.default if known else names[0])
    return out


def resolve_on_host(machine: MachineType, canonical: str | None) -> MachineType:
    """Return the versioned machine type an alias (or no machine attribute) is on a host, `canonical` being the name
    the host's machine types give it (HostMachines.canonical); the alias itself when that is unknown or unplaceable."""
    if not machine.is_alias or not canonical:
        return machine
    resolved = parse_machine(canonical)
    if resolved.family is None or resolved.is_alias:
        return machine
    return replace(resolved, host_alias=machine.name or "")


def parse_machine(name: str | None, arch: str | None = None) -> MachineType:
    """Read a machine type name (None: libvirt's default for the architecture, an alias)."""
    if not name:
        family = {"s390x": "s390-ccw-virtio", "aarch64": "virt", "armv7l": "virt", "riscv64": "virt",
                  "ppc64": "pseries", "ppc64le": "pseries"}.get(arch or "", "pc-i440fx")
        return MachineType(None, family)
    if name == "microvm":
        return MachineType(name, "microvm")
    for family, prefix, alias in _FAMILIES:
        if name == alias:
            return MachineType(name, family)
        if name.startswith(prefix):
            tail = name[len(prefix):]
            if up := _UPSTREAM.match(tail):
                return MachineType(name, family, upstream=(int(up[1]), int(up[2])))
            if down := _DOWNSTREAM.match(tail):
                return MachineType(name, family, downstream=(int(down[1]), int(down[2]), int(down[3])))
    if old := _OLD_PC.match(name):
        return MachineType(name, "pc-i440fx", upstream=(int(old[1]), int(old[2])))
    if rhel6 := _RHEL6_PC.match(name):
        return MachineType(name, "pc-i440fx", downstream=(int(rhel6[1]), int(rhel6[2]), int(rhel6[3])))
    return MachineType(name, None)


#: Virtio transports: how a virtio device reaches the guest.
PCI, CCW, MMIO = "pci", "ccw", "mmio"
_ADDRESS_TRANSPORTS = {"pci": PCI, "ccw": CCW, "virtio-mmio": MMIO, "virtio-s390": CCW}


def virtio_transport(address_type: str | None, machine: MachineType, mmio_in_use: bool = False) -> tuple[str, str]:
    """Return the transport of a virtio device (pci, ccw or mmio) and why.

    An explicit `<address type>` decides. Without one, libvirt (src/qemu/qemu_domain_address.c) places virtio
    devices on the channel subsystem of s390-ccw-virtio machines (qemuDomainAssignS390Addresses: ccw); on
    ARM and RISC-V `virt` on PCI, since it adds a pcie-root there (qemuDomainDefAddDefaultDevices), unless the
    domain already has a virtio-mmio device (qemuDomainAssignVirtioMMIOAddresses then keeps to virtio-mmio);
    microvm has virtio-mmio only (its PCIe host is off by default: QEMU hw/i386/microvm.c); PCI elsewhere.
    """
    if address_type:
        transport = _ADDRESS_TRANSPORTS.get(address_type)
        if transport is not None:
            return transport, f"<address type='{address_type}'>"
    if machine.family == "s390-ccw-virtio":
        return CCW, f"{machine.label}: virtio devices sit on the channel subsystem (ccw)"
    if machine.family == "microvm":
        return MMIO, f"{machine.label}: virtio devices sit on virtio-mmio"
    if machine.family == "virt" and mmio_in_use:
        return MMIO, f"{machine.label} with virtio-mmio devices: libvirt places virtio on virtio-mmio"
    return PCI, "virtio on PCI (libvirt's placement)"


def multiqueue_default(machine: MachineType, transport: str, qemu: Version | None) -> tuple[bool | None, str, str]:
    """Return whether QEMU gives a virtio-blk/virtio-scsi device one queue per vCPU by default, why, and the source.

    Only the PCI proxies (virtio-blk-pci, virtio-scsi-pci, vhost-user-blk-pci) compute the per-vCPU
    default (QEMU's virtio_pci_optimal_num_queues); the device itself falls back to one queue, so a
    ccw or mmio device has one whatever the machine type. None: unknown here (the reason says why).
    """
    if transport != PCI:
        return False, f"virtio over {transport}", SOURCE_TRANSPORT
    if machine.downstream is not None:
        return machine.downstream[:2] >= DOWNSTREAM_MULTIQUEUE_SINCE, machine.label, SOURCE_DOWNSTREAM
    if machine.upstream is not None:
        return machine.upstream >= UPSTREAM_MULTIQUEUE_SINCE, machine.label, SOURCE_UPSTREAM
    if machine.family is None:
        return None, f"{machine.label} is not a machine type kvmio can place (set queues explicitly)", ""
    if qemu is None:
        return None, f"{machine.label} is unversioned and QEMU's version unknown", ""
    version = (qemu.parts + (0, 0))[:2]
    return tuple(version) >= UPSTREAM_MULTIQUEUE_SINCE, f"QEMU {qemu} with {machine.label}", SOURCE_UPSTREAM
