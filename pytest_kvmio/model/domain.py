"""The parts of libvirt domain XML that storage rules look at, parsed with lxml."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from pytest_kvmio.model.cpuset import format_cpuset, parse_cpuset
from pytest_kvmio.model.machine import MachineType, multiqueue_default, parse_machine, resolve_on_host, virtio_transport
from pytest_kvmio.model.redact import redacted_text
from pytest_kvmio.model.runtime import QemuRuntime
from pytest_kvmio.model.versions import Version
from pytest_kvmio.model.vhost import VhostBackend

#: io modes libvirt accepts; 'default' leaves the choice to QEMU (threads).
VALID_IO_MODES = ("threads", "native", "io_uring", "default")
#: QEMU's cache mode when libvirt's <driver> names none (or says cache='default').
QEMU_DEFAULT_CACHE = "writeback"
#: Cache modes that open the image with O_DIRECT (what io='native' needs and io='io_uring' wants).
DIRECT_CACHE_MODES = ("none", "directsync")
#: QEMU's AIO mode when libvirt's <driver> names none (or says io='default').
QEMU_DEFAULT_IO = "threads"
#: Disk types whose I/O bypasses QEMU's block layer: libvirt refuses iothread, cache, io, discard,
#: iotune and transient on them, so the rules about those settings do not concern them.
OUTSIDE_BLOCK_LAYER = ("vhostuser", "vhostvdpa")
#: Seconds a vhost-user disk waits before reconnecting to a restarted backend (what kvmio proposes).
RECONNECT_TIMEOUT = 10
#: Network protocols whose images are thin by design (allocated on write).
THIN_BY_DESIGN_PROTOCOLS = ("rbd",)
#: Disk types whose `io=` reaches Linux AIO or io_uring: libvirt hands `aio` only to QEMU's file, host_device and
#: host_cdrom backends (qemuBlockStorageSourceGetFileProps in libvirt's src/qemu/qemu_block.c). Network disks
#: (rbd, iscsi, nbd, gluster, http, ...) and type='nvme' (QEMU's user-space NVMe driver) have no aio at all.
AIO_DISK_TYPES = ("file", "block")
#: <domain type> values of domains QEMU runs (libvirt's QEMU driver: docs/formatdomain.rst "Element and attribute
#: overview", type; src/qemu/qemu_capabilities.c). Other drivers (xen, lxc, bhyve, vz, hyperv, test...) are not judged.
QEMU_DOMAIN_TYPES = ("kvm", "qemu", "hvf")


class DomainXMLError(ValueError):
    """Domain XML that cannot be read; the message names the source and the element."""


@dataclass(frozen=True)
class ImageFacts:
    """Allocation of a disk's backing image as the host sees it (`qemu-img info`)."""

    path: str
    format: str | None
    virtual_size: int | None
    actual_size: int | None
    is_block_device: bool = False
    error: str | None = None

    @property
    def sparse(self) -> bool | None:
        """Return True when less is allocated than the guest sees; None when unknown."""
        if self.is_block_device:
            return False
        if self.error or self.virtual_size is None or self.actual_size is None:
            return None
        return self.actual_size < self.virtual_size

    def describe(self) -> str:
        """Say how much of the image is allocated, for failure messages."""
        if self.error:
            return f"{self.path}: allocation unknown ({self.error})"
        if self.is_block_device:
            return f"{self.path} is a block device"
        return (
            f"{self.format or 'image'} {self.path}: allocated {_size(self.actual_size)}"
            f" of {_size(self.virtual_size)}"
        )


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@dataclass(frozen=True)
class Allocation:
    """Whether a disk's backing storage is thin (grows on write), and how that is known.

    One fact for every rule that cares (native AIO blocks while a thin image grows; a thin image
    needs discard to shrink): `thin` is True, False, or None when it can't be known here.
    """

    thin: bool | None
    why: str


@dataclass(frozen=True)
class Controller:
    """A `<controller>`; storage rules care about virtio-scsi queues and iothread."""

    type: str
    index: int
    model: str | None
    queues: int | None
    iothread: int | None
    #: Explicit queue -> IOThread mapping (<driver><iothreads><iothread id><queue id/>): IOThread id -> queue ids.
    iothread_queues: dict[int, tuple[int, ...]] = field(default_factory=dict)
    #: The controller's own <address> attributes (a pcie-root-port's place on its parent bus).
    address: dict[str, str] | None = None

    @property
    def is_virtio_scsi(self) -> bool:
        return self.type == "scsi" and self.model is not None and self.model.startswith("virtio-")

    @property
    def iothreads(self) -> tuple[int, ...]:
        """Return every IOThread this controller uses: its iothread attribute and its mapping's ids."""
        return _used_iothreads(self.iothread, self.iothread_queues)


@dataclass(repr=False)
class Disk:
    """One `<disk>` of a domain, with the domain it belongs to."""

    domain: Domain
    type: str
    device: str
    target: str
    bus: str | None
    driver_name: str | None = None
    format: str | None = None
    cache: str | None = None
    io: str | None = None
    discard: str | None = None
    detect_zeroes: str | None = None
    iothread: int | None = None
    queues: int | None = None
    #: Explicit queue -> IOThread mapping (libvirt >= 10.0): IOThread id -> queue ids.
    iothread_queues: dict[int, tuple[int, ...]] = field(default_factory=dict)
    transient: bool = False
    source_file: str | None = None
    source_dev: str | None = None
    source_protocol: str | None = None
    source_name: str | None = None
    source_path: str | None = None
    #: type='volume': <source pool volume>; what backs it depends on the pool.
    source_pool: str | None = None
    serial: str | None = None
    readonly: bool = False
    address: dict[str, str] | None = None
    #: libvirt's <alias name> of a running domain's disk: QEMU's -device id.
    alias: str | None = None
    image: ImageFacts | None = None
    #: vhost-user: <source><reconnect enabled='yes|no' timeout='N'/> (None when the element is absent).
    reconnect_enabled: bool | None = None
    reconnect_timeout: int | None = None
    #: vhost-user, live: the process serving the socket, read on the host (facts/host.py).
    backend: VhostBackend | None = None

    def __repr__(self) -> str:
        return f"Disk({self.id})"

    @property
    def name(self) -> str:
        """Return the libvirt target name (`vdb`); guests may name the device differently."""
        return self.target

    @property
    def id(self) -> str:
        return f"{self.domain.id}/{self.target}"

    @property
    def source(self) -> str | None:
        """Return the path or network name that backs the disk."""
        if self.source_file or self.source_dev:
            return self.source_file or self.source_dev
        if self.source_protocol:
            return f"{self.source_protocol}:{self.source_name or ''}"
        if self.source_path:
            return f"{self.type}:{self.source_path}"
        return None

    @property
    def effective_cache(self) -> str:
        """Return the cache mode QEMU uses (libvirt leaves it to QEMU when absent or 'default')."""
        return QEMU_DEFAULT_CACHE if self.cache in (None, "default") else self.cache

    @property
    def effective_io(self) -> str:
        """Return the AIO mode QEMU uses (libvirt leaves it to QEMU when absent or 'default')."""
        return QEMU_DEFAULT_IO if self.io in (None, "default") else self.io

    @property
    def in_block_layer(self) -> bool:
        """Return True when QEMU's block layer serves the disk (not vhost-user or vhost-vdpa)."""
        return self.type not in OUTSIDE_BLOCK_LAYER

    @property
    def aio_backend(self) -> tuple[bool | None, str]:
        """Return whether `io=` reaches Linux AIO or io_uring on the host (a file or block backend), and why.

        None for type='volume': the pool decides (a dir or fs pool gives a file, a logical or disk pool a block
        device, an rbd or iscsi pool a network disk), and offline the pool is unknown.
        """
        if self.type in AIO_DISK_TYPES:
            return True, f"type='{self.type}' disk: QEMU's {'file' if self.type == 'file' else 'host_device'} backend"
        if self.type == "volume":
            return None, (f"type='volume' disk (pool {self.source_pool or '?'}): whether io reaches a file or block "
                          "backend depends on the pool, unknown here")
        if self.type == "network":
            return False, f"network disk ({self.source_protocol or 'unknown protocol'}): libvirt passes no aio to it"
        return False, f"type='{self.type}' disk: libvirt passes no aio to its backend"

    @property
    def is_virtio_blk(self) -> bool:
        return self.bus == "virtio"

    @property
    def transport(self) -> tuple[str, str]:
        """Return the virtio transport (pci, ccw, mmio) of the disk's device, or its virtio-scsi controller's."""
        ctl = self.controller if self.bus == "scsi" else None
        address = (ctl.address if ctl is not None else self.address) or {}
        return virtio_transport(address.get("type"), self.domain.machine_type, self.domain.mmio_in_use)

    @property
    def is_vhost_user(self) -> bool:
        """Return True for a vhost-user disk (a user-space backend such as SPDK serves its I/O over a socket)."""
        return self.type == "vhostuser"

    @property
    def reconnects(self) -> bool:
        """Return True when QEMU reconnects to the backend's socket after the backend restarts."""
        return bool(self.reconnect_enabled) and (self.reconnect_timeout or 0) > 0

    @property
    def pci_path(self) -> tuple[tuple[int, int], ...] | None:
        """Return (slot, function) of every PCI hop from the root bus to this disk, or None without a PCI address.

        Bus numbers are left out: libvirt's bus number is its controller index, the guest's is what its firmware
        enumerated; the slots and functions along the path are the same on both sides.
        """
        return _pci_path(self.address, self.domain.controllers)

    @property
    def iothreads(self) -> tuple[int, ...]:
        """Return every IOThread the disk itself names: its iothread attribute and its mapping's ids."""
        return _used_iothreads(self.iothread, self.iothread_queues)

    @property
    def allocation(self) -> Allocation:
        """Return whether the backing storage is thin, from host facts, the protocol or the format."""
        if self.type == "block" or self.source_dev or (self.image is not None and self.image.is_block_device):
            return Allocation(False, f"{self.source or 'a block device'} is a block device")
        if self.type == "nvme":
            return Allocation(False, "an NVMe namespace driven by QEMU is a block device")
        if self.source_protocol in THIN_BY_DESIGN_PROTOCOLS:
            return Allocation(True, f"{self.source_protocol} images are thin by design")
        if self.image is not None and self.image.sparse is not None:
            return Allocation(self.image.sparse, self.image.describe())
        # A qcow2 is thin unless it was preallocated, and preallocation is exactly what makes tools such as
        # Nova choose io='native': without the image's allocation, the answer is unknown, not "thin".
        fmt = f"{self.format} " if self.format else ""
        if self.image is not None:
            return Allocation(None, self.image.describe())
        what = f"{fmt}network image" if self.source_protocol else f"{fmt}image"
        return Allocation(None, f"{what} {self.source or '(no source)'}: allocation unknown (offline or not readable)")

    @property
    def controller(self) -> Controller | None:
        """Return the controller a SCSI/SATA disk hangs off, by its `<address controller>`."""
        if self.bus not in ("scsi", "sata", "ide", "usb"):
            return None
        wanted = int((self.address or {}).get("controller", "0"))
        ctype = "scsi" if self.bus == "scsi" else self.bus
        for ctl in self.domain.controllers:
            if ctl.type == ctype and ctl.index == wanted:
                return ctl
        return None

    @property
    def is_virtio_scsi(self) -> bool:
        ctl = self.controller
        return self.bus == "scsi" and ctl is not None and ctl.is_virtio_scsi

    @property
    def is_storage(self) -> bool:
        """Return True for disks that carry data (not cdrom/floppy)."""
        return self.device in ("disk", "lun")

    def describe_allocation(self) -> str:
        """Say what is known about the backing storage, for failure messages."""
        return f"{self.id}: {self.allocation.why}"

    def facts(self) -> dict[str, Any]:
        """Return the disk's configuration as plain values (for verdicts and reports)."""
        out: dict[str, Any] = {
            "type": self.type,
            "device": self.device,
            "bus": self.bus,
            "format": self.format,
            "cache": self.cache,
            "io": self.io,
            "effective_io": self.effective_io,
            "discard": self.discard,
            "iothread": self.iothread,
            "queues": self.queues,
            "source": self.source,
            "serial": self.serial,
            "vcpus": self.domain.vcpus,
        }
        if self.iothread_queues:
            out["iothread_queues"] = {str(k): list(v) for k, v in self.iothread_queues.items()}
        if self.transient:
            out["transient"] = True
        if self.is_vhost_user:
            out["socket"] = self.source_path
            out["reconnect"] = {"enabled": self.reconnect_enabled, "timeout": self.reconnect_timeout}
            out["memory"] = self.domain.memory_facts()
            if self.backend is not None:
                out["backend"] = self.backend.facts()
        if self.image is not None:
            out["image"] = {
                "format": self.image.format,
                "virtual_size": self.image.virtual_size,
                "actual_size": self.image.actual_size,
                "sparse": self.image.sparse,
                "error": self.image.error,
            }
        ctl = self.controller
        if ctl is not None:
            out["controller"] = {"model": ctl.model, "queues": ctl.queues, "iothread": ctl.iothread}
            if ctl.iothread_queues:
                out["controller"]["iothread_queues"] = {str(k): list(v) for k, v in ctl.iothread_queues.items()}
        return out


@dataclass(repr=False)
class Domain:
    """A libvirt domain: its disks, controllers, vCPUs, IOThreads and CPU pinning."""

    name: str
    host: str
    source: str
    xml: str
    type: str | None = None
    machine: str | None = None
    arch: str | None = None
    #: What the host's machine types make of `machine` when it is an alias or absent (`q35` -> `pc-q35-7.2`), when
    #: the host's facts are known (facts/host.py apply_host_facts); None otherwise.
    machine_on_host: str | None = None
    #: Some device has <address type='virtio-mmio'> (libvirt then places other virtio devices there too, on `virt`).
    mmio_in_use: bool = False
    vcpus: int = 1
    max_vcpus: int = 1
    vcpu_cpuset: frozenset[int] | None = None
    iothread_ids: tuple[int, ...] = ()
    vcpu_pins: dict[int, frozenset[int]] = field(default_factory=dict)
    iothread_pins: dict[int, frozenset[int]] = field(default_factory=dict)
    emulator_pin: frozenset[int] | None = None
    controllers: list[Controller] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)
    running: bool | None = None
    #: What the running QEMU process does (live hosts, running domains; None otherwise).
    runtime: QemuRuntime | None = None
    #: The persistent definition of a running domain (None: not running, transient, or not read).
    persistent: Domain | None = None
    #: <memoryBacking>: <access mode>, <source type>, <hugepages/>; NUMA cells' memAccess, in cell order.
    memory_access: str | None = None
    memory_source: str | None = None
    hugepages: bool = False
    numa_access: tuple[str | None, ...] = ()
    #: Offline: what the target id says instead of the name: `<file relative to the path given>:<name>`.
    label: str | None = None
    #: Something the verdicts of this domain should say (e.g. the name was taken from the file).
    note: str | None = None

    def __repr__(self) -> str:
        return f"Domain({self.id})"

    @property
    def id(self) -> str:
        return f"{self.host}/{self.label or self.name}"

    @property
    def machine_type(self) -> MachineType:
        """Return the machine type read into family and version (model/machine.py)."""
        return resolve_on_host(parse_machine(self.machine, self.arch), self.machine_on_host)

    @property
    def machine_version(self) -> tuple[int, int] | None:
        """Return (major, minor) of an upstream versioned machine type like `pc-q35-7.2`."""
        return self.machine_type.upstream

    def not_run_by_qemu(self, stand_in: tuple[str, ...] = ()) -> str | None:
        """Return why QEMU does not run this domain (its <domain type> is another driver's), or None.

        `stand_in`: domain types judged as QEMU's all the same (libvirt's test driver, kvmio's own tests).
        """
        if self.type in QEMU_DOMAIN_TYPES or self.type in stand_in:
            return None
        if not self.type:
            return "no <domain type>: libvirt requires one; kvmio judges kvm, qemu and hvf domains"
        return f"<domain type='{self.type}'>: not run by QEMU; kvmio's rules concern kvm, qemu and hvf domains"

    def vcpu_cpus(self, vcpu: int) -> frozenset[int] | None:
        """Return the host CPUs vCPU `vcpu` may run on; None means any host CPU."""
        return self.vcpu_pins.get(vcpu, self.vcpu_cpuset)

    def shared_memory(self) -> tuple[bool, str]:
        """Return whether guest memory is shared with other processes (what vhost-user needs), and why, as libvirt
        decides it: without NUMA cells <memoryBacking><access mode='shared'/>; with cells, every cell shared
        (its own memAccess, else the domain's)."""
        if not self.numa_access:
            if self.memory_access == "shared":
                return True, "<memoryBacking><access mode='shared'/>"
            return False, f"<memoryBacking><access mode='{self.memory_access}'/>" if self.memory_access else "no <memoryBacking><access mode='shared'/>"
        private = [i for i, a in enumerate(self.numa_access) if (a or self.memory_access) != "shared"]
        if private:
            return False, f"NUMA cell(s) {private} not shared (memAccess or <memoryBacking><access>)"
        return True, "every NUMA cell has memAccess='shared'" if all(self.numa_access) else "NUMA cells shared"

    def memory_facts(self) -> dict[str, Any]:
        """Return the guest memory backing as plain values."""
        return {"access": self.memory_access, "source": self.memory_source, "hugepages": self.hugepages,
                "numa_access": list(self.numa_access)}

    def facts(self) -> dict[str, Any]:
        """Return the domain's CPU and IOThread layout as plain values."""
        return {
            "vcpus": self.vcpus,
            "machine": self.machine,
            "iothreads": list(self.iothread_ids),
            "vcpupin": {str(k): format_cpuset(v) for k, v in sorted(self.vcpu_pins.items())},
            "vcpu_cpuset": format_cpuset(self.vcpu_cpuset) if self.vcpu_cpuset is not None else None,
            "iothreadpin": {str(k): format_cpuset(v) for k, v in sorted(self.iothread_pins.items())},
            "emulatorpin": format_cpuset(self.emulator_pin) if self.emulator_pin is not None else None,
            "running": self.running,
        }


#: Counts and ids above this are not a configuration but a typo (or hostile input that would make loops hang).
MAX_COUNT = 65536


def _whole(text: str, what: str) -> int:
    """Return `text` as a count or id; `what` says where it stands (`... queues='four'`) for the error."""
    try:
        number = int(text)
    except ValueError:
        raise DomainXMLError(f"{what} is not a whole number") from None
    if not 0 <= number <= MAX_COUNT:
        raise DomainXMLError(f"{what} is out of range (0 to {MAX_COUNT})")
    return number


def _int(el: etree._Element, attr: str, where: str) -> int | None:
    value = el.get(attr)
    return None if value is None else _whole(value, f"{where} (line {el.sourceline}): {attr}={value!r}")


def _text_int(el: etree._Element | None, where: str, default: int) -> int:
    if el is None or el.text is None:
        return default
    return _whole(el.text.strip(), f"{where} (line {el.sourceline}): {el.text.strip()!r}")


def _cpuset(value: str | None, where: str) -> frozenset[int] | None:
    if value is None:
        return None
    try:
        return parse_cpuset(value, source=where)
    except ValueError as exc:
        raise DomainXMLError(str(exc)) from None


def _used_iothreads(iothread: int | None, mapping: dict[int, tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(([iothread] if iothread is not None else []) + list(mapping)))


def _iothread_queues(drv: etree._Element | None, where: str) -> dict[int, tuple[int, ...]]:
    """Read <driver><iothreads><iothread id='N'><queue id='Q'/>...: IOThread id -> queue ids."""
    mapping: dict[int, tuple[int, ...]] = {}
    if drv is None:
        return mapping
    for el in drv.findall("iothreads/iothread"):
        tid = _int(el, "id", f"{where}: <driver><iothreads><iothread>")
        if tid is None:
            raise DomainXMLError(f"{where}: <driver><iothreads><iothread> has no id")
        queues = [_int(q, "id", f"{where}: <iothread id='{tid}'><queue>") for q in el.findall("queue")]
        mapping[tid] = tuple(q for q in queues if q is not None)
    return mapping


def _complete_iothread_ids(listed: list[int], count: int) -> tuple[int, ...]:
    """Return IOThread ids as libvirt does: those listed in <iothreadids>, then the lowest free ids up to <iothreads>."""
    ids = list(dict.fromkeys(listed))
    candidate = 1
    while len(ids) < count:
        if candidate not in ids:
            ids.append(candidate)
        candidate += 1
    return tuple(ids)


#: No DTD loaded, no entity expanded or fetched (XXE, "billion laughs"), no network, libxml2's size limits kept.
#: The parser of every domain XML kvmio reads: no entity expansion, no network, no DTD, no huge trees.
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
ENTITY_DECLARATION = re.compile(rb"<!ENTITY", re.IGNORECASE)
ENTITIES_REFUSED = (
    "declares XML entities (<!ENTITY ...>), which kvmio neither expands nor fetches; "
    "libvirt's domain XML has none: remove the DOCTYPE (virsh dumpxml NAME gives the real XML)"
)


def parse_documents(xml: str | bytes, *, source: str) -> list[etree._Element]:
    """Return every <domain> element of a file: its root, the <domain>s a wrapper root holds (libvirt's test
    driver files have a <node> of them), or each of several concatenated documents (dumps appended to one file).

    Raise DomainXMLError naming `source` (and the line) when the file holds none or is not usable XML.
    """
    data = xml.encode() if isinstance(xml, str) else xml
    if not data.strip():
        raise DomainXMLError(f"{source}: empty file; expected a libvirt <domain> (virsh dumpxml NAME)")
    try:
        root = _parse(data, source)
    except _ExtraContent as first:
        # Several documents one after another: read them as children of one root (declarations dropped; the
        # wrapper opens on line 1, so line numbers still point into the file).
        body = _XML_DECLARATION.sub(b"", data)
        try:
            root = _parse(b"<kvmio-documents>" + body + b"</kvmio-documents>", source)
        except (_ExtraContent, DomainXMLError):
            raise DomainXMLError(str(first)) from None
    if root.tag == "domain":
        return [root]
    found = root.findall("domain")
    if not found:
        raise DomainXMLError(f"{source}: line {root.sourceline}: root element is <{root.tag}>, expected <domain>")
    return found


class _ExtraContent(DomainXMLError):
    """More than one root element: maybe several documents in one file."""


_XML_DECLARATION = re.compile(rb"<\?xml[^>]*\?>")


def _parse(data: bytes, source: str) -> etree._Element:
    try:
        root = etree.fromstring(data, parser=SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        if ENTITY_DECLARATION.search(data):  # the parser stopped in the DTD (e.g. an entity expanding a billion times)
            raise DomainXMLError(f"{source}: {ENTITIES_REFUSED}") from None
        message = getattr(exc, "msg", None) or str(exc)
        where = f"line {exc.lineno}: " if getattr(exc, "lineno", None) else ""
        kind = _ExtraContent if "Extra content at the end of the document" in message else DomainXMLError
        raise kind(f"{source}: {where}malformed XML: {message}") from None
    dtd: Any = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise DomainXMLError(f"{source}: {ENTITIES_REFUSED}")
    return root


def parse_domain(xml: str | bytes, *, source: str, host: str = "offline") -> Domain:
    """Parse a file's one domain; raise DomainXMLError naming `source` when it is not usable (or holds several)."""
    roots = parse_documents(xml, source=source)
    if len(roots) > 1:
        raise DomainXMLError(f"{source}: holds {len(roots)} <domain> documents; expected one")
    return domain_of(roots[0], source=source, host=host)


def domain_of(root: etree._Element, *, source: str, host: str = "offline", name: str | None = None) -> Domain:
    """Read one <domain> element; `name` stands in for a missing <name> (a template filled at deploy time)."""
    name = (root.findtext("name") or "").strip() or name
    if not name:
        raise DomainXMLError(f"{source}: line {root.sourceline}: <domain> has no <name>")
    where = f"{source}: domain {name}"
    vcpu_el = root.find("vcpu")
    max_vcpus = _text_int(vcpu_el, f"{where}: <vcpu>", 1)
    current = _int(vcpu_el, "current", f"{where}: <vcpu>") if vcpu_el is not None else None
    os_type = root.find("os/type")
    iothreads = _text_int(root.find("iothreads"), f"{where}: <iothreads>", 0)
    ids = [
        _int(el, "id", f"{where}: <iothreadids>") for el in root.findall("iothreadids/iothread")
    ]
    iothread_ids = _complete_iothread_ids([i for i in ids if i is not None], iothreads)
    dom = Domain(
        name=name,
        host=host,
        source=source,
        xml=redacted_text(root),  # what reports may show: passwords, cookies and secret references masked
        type=root.get("type"),
        machine=os_type.get("machine") if os_type is not None else None,
        arch=os_type.get("arch") if os_type is not None else None,
        mmio_in_use=root.find("devices//address[@type='virtio-mmio']") is not None,
        vcpus=current or max_vcpus,
        max_vcpus=max_vcpus,
        vcpu_cpuset=_cpuset(vcpu_el.get("cpuset") if vcpu_el is not None else None, f"{where}: <vcpu cpuset>"),
        iothread_ids=iothread_ids,
    )
    for pin in root.findall("cputune/vcpupin"):
        vcpu = _int(pin, "vcpu", f"{where}: <vcpupin>")
        cpus = _cpuset(pin.get("cpuset"), f"{where}: <vcpupin vcpu='{vcpu}'>")
        if vcpu is not None and cpus is not None:
            dom.vcpu_pins[vcpu] = cpus
    for pin in root.findall("cputune/iothreadpin"):
        tid = _int(pin, "iothread", f"{where}: <iothreadpin>")
        cpus = _cpuset(pin.get("cpuset"), f"{where}: <iothreadpin iothread='{tid}'>")
        if tid is not None and cpus is not None:
            dom.iothread_pins[tid] = cpus
    backing = root.find("memoryBacking")
    if backing is not None:
        access, msource = backing.find("access"), backing.find("source")
        dom.memory_access = access.get("mode") if access is not None else None
        dom.memory_source = msource.get("type") if msource is not None else None
        dom.hugepages = backing.find("hugepages") is not None
    dom.numa_access = tuple(cell.get("memAccess") for cell in root.findall("cpu/numa/cell"))
    emu = root.find("cputune/emulatorpin")
    if emu is not None:
        dom.emulator_pin = _cpuset(emu.get("cpuset"), f"{where}: <emulatorpin>")
    for ctl in root.findall("devices/controller"):
        cwhere = f"{where}: <controller type='{ctl.get('type')}' index='{ctl.get('index')}'>"
        drv = ctl.find("driver")
        dom.controllers.append(
            Controller(
                type=ctl.get("type", ""),
                index=_int(ctl, "index", cwhere) or 0,
                model=ctl.get("model"),
                queues=_int(drv, "queues", cwhere) if drv is not None else None,
                iothread=_int(drv, "iothread", cwhere) if drv is not None else None,
                iothread_queues=_iothread_queues(drv, cwhere),
                address=_address(ctl),
            )
        )
    for el in root.findall("devices/disk"):
        disk = _parse_disk(dom, el, where)
        if any(d.target == disk.target for d in dom.disks):
            raise DomainXMLError(f"{where}: two <disk>s with <target dev='{disk.target}'>; libvirt refuses that, give each its own")
        dom.disks.append(disk)
    return dom


def _parse_disk(dom: Domain, el: etree._Element, where: str) -> Disk:
    target = el.find("target")
    dev = target.get("dev") if target is not None else None
    if not dev:
        raise DomainXMLError(f"{where}: a <disk> has no <target dev=...>")
    dwhere = f"{where}: disk {dev}"
    drv = el.find("driver")
    src = el.find("source")
    disk = Disk(
        domain=dom,
        type=el.get("type", "file"),
        device=el.get("device", "disk"),
        target=dev,
        bus=(target.get("bus") if target is not None else None) or _default_bus(dev, el.get("device", "disk")),
        serial=(el.findtext("serial") or "").strip() or None,
        readonly=el.find("readonly") is not None,
        transient=el.find("transient") is not None,
        address=_address(el),
        alias=_alias(el),
    )
    if drv is not None:
        disk.driver_name = drv.get("name")
        disk.format = drv.get("type")
        disk.cache = drv.get("cache")
        disk.io = drv.get("io")
        disk.discard = drv.get("discard")
        disk.detect_zeroes = drv.get("detect_zeroes")
        disk.iothread = _int(drv, "iothread", f"{dwhere}: <driver>")
        disk.queues = _int(drv, "queues", f"{dwhere}: <driver>")
        disk.iothread_queues = _iothread_queues(drv, f"{dwhere}: <driver>")
    if src is not None:
        # libvirt reads the source attribute of the disk's type and ignores the others (virDomainStorageSourceParse in
        # src/conf/domain_conf.c): a type='file' disk with <source dev=...> has no source at all.
        disk.source_file = src.get("file") if disk.type == "file" else None
        disk.source_dev = src.get("dev") if disk.type == "block" else None
        disk.source_protocol = src.get("protocol")
        disk.source_name = src.get("name")
        disk.source_path = src.get("path")  # vhost-user socket
        disk.source_pool = src.get("pool")
        reconnect = src.find("reconnect")
        if reconnect is not None:
            disk.reconnect_enabled = reconnect.get("enabled") == "yes"
            disk.reconnect_timeout = _int(reconnect, "timeout", f"{dwhere}: <source><reconnect>")
    return disk


#: The bus libvirt gives a disk whose <target> names none, by the target's prefix (virDomainDiskDefParseXML in
#: libvirt's src/conf/domain_conf.c): templates often leave it out (`<target dev='vda'/>` is a virtio disk).
_BUS_BY_PREFIX = (("xvd", "xen"), ("ubd", "uml"), ("hd", "ide"), ("sd", "scsi"), ("vd", "virtio"))


def _default_bus(dev: str, device: str) -> str:
    if device == "floppy":
        return "fdc"
    return next((bus for prefix, bus in _BUS_BY_PREFIX if dev.startswith(prefix)), "ide")


def _alias(el: etree._Element) -> str | None:
    alias = el.find("alias")
    return alias.get("name") if alias is not None else None


def _address(el: etree._Element) -> dict[str, str] | None:
    addr = el.find("address")
    return {str(k): str(v) for k, v in addr.attrib.items()} if addr is not None else None


def _pci_hop(address: dict[str, str] | None) -> tuple[int, int, int] | None:
    """Return (bus, slot, function) of a PCI <address>, None for any other (or an unreadable) address."""
    if not address or address.get("type") != "pci":
        return None
    try:
        return tuple(int(address.get(k, "0"), 0) for k in ("bus", "slot", "function"))  # type: ignore[return-value]
    except ValueError:
        return None


def _pci_path(address: dict[str, str] | None, controllers: list[Controller]) -> tuple[tuple[int, int], ...] | None:
    hop = _pci_hop(address)
    path: list[tuple[int, int]] = []
    seen: set[int] = set()
    while hop is not None:
        bus, slot, function = hop
        path.insert(0, (slot, function))
        if bus == 0:
            return tuple(path)
        if bus in seen:
            return None
        seen.add(bus)
        parent = next((c for c in controllers if c.type == "pci" and c.index == bus), None)
        hop = _pci_hop(parent.address) if parent is not None else None
    return None


def default_queues(disk: Disk, qemu: Version | None) -> tuple[int | None, str]:
    """Return QEMU's default queue count for a virtio disk (its controller's, on virtio-scsi) and how it was decided.

    The machine type (upstream, downstream or an alias the host's QEMU resolves) and the device's transport
    decide it: model/machine.py says how. None when it can't be known here.
    """
    transport, _ = disk.transport
    per_vcpu, why, source = multiqueue_default(disk.domain.machine_type, transport, qemu)
    if per_vcpu is None:
        return None, why
    if per_vcpu:
        return disk.domain.vcpus, f"QEMU default for {why}: one queue per vCPU ({source})"
    return 1, f"QEMU default for {why}: one queue ({source})"


def configured_queues(disk: Disk) -> tuple[int | None, str]:
    """Return the queue count set in the XML for a virtio disk (its own, or its virtio-scsi controller's)."""
    if disk.is_virtio_blk:
        return disk.queues, f"<driver queues='{disk.queues}'>" if disk.queues else "no queues attribute"
    ctl = disk.controller
    if disk.is_virtio_scsi and ctl is not None:
        where = f"virtio-scsi controller {ctl.index}"
        return ctl.queues, f"{where} queues='{ctl.queues}'" if ctl.queues else f"{where} without queues"
    return None, "not a virtio disk"


def effective_queues(disk: Disk, qemu: Version | None) -> tuple[int | None, str]:
    """Return the queue count QEMU gives a virtio disk (the XML's, else QEMU's default; None when unknown) and whence."""
    queues, where = configured_queues(disk)
    return (queues, where) if queues is not None else default_queues(disk, qemu)
