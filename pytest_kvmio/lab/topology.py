"""Declare the lab: images, domains with seeded misconfigurations, and offline XML files.

Each misconfiguration is written down once, here; the XML (xmlgen.py) and the expected
findings (manifest.py) are both derived from these specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGE_MIB = 256
VCPUS = 2
MEMORY_MIB = 768
MACHINE = "q35"  # libvirt 9.0 / QEMU 7.2 expand it to pc-q35-7.2 (>= 5.2: queues default = vCPUs)
SCRATCH_SERIAL = "kvmio-scratch-0"
SERIAL_MAX = 20  # virtio-blk serials are cut at 20 bytes (VIRTIO_BLK_ID_BYTES); the guest sees only those


@dataclass(frozen=True)
class ImageSpec:
    """One image file; `alloc` is how it is laid out on the host filesystem."""

    name: str
    fmt: str  # raw | qcow2
    # prealloc (raw, fallocate) | sparse (raw, truncate) | thin (qcow2) | full (preallocation=full: written, so
    # reads reach the medium)
    alloc: str
    size_mib: int = IMAGE_MIB

    @property
    def sparse(self) -> bool:
        """Whether qemu-img's actual-size is below the virtual size (thin or sparse)."""
        return self.alloc in ("sparse", "thin")

    @property
    def filename(self) -> str:
        return f"{self.name}.{'qcow2' if self.fmt == 'qcow2' else 'raw'}"


@dataclass(frozen=True)
class ScsiController:
    """A virtio-scsi controller (index 0)."""

    queues: int | None = None
    iothread: int | None = None


@dataclass(frozen=True)
class DiskSpec:
    """One `<disk>` of a domain; None means the attribute is left out of the XML."""

    target: str
    image: ImageSpec
    serial: str | None  # None: no <serial> (libvirt refuses one on a vhost-user disk)
    bus: str = "virtio"  # virtio | scsi
    cache: str | None = None
    io: str | None = None
    discard: str | None = None
    iothread: int | None = None
    queues: int | None = None
    # None: what the guest kernel picks (none with more than one hardware queue, else mq-deadline); else the scheduler
    # an OpenRC-style boot script (/etc/local.d/kvmio-scheduler.start, from the kvmio.sched= knob) sets at every boot
    guest_scheduler: str | None = None
    # Written after boot over the guest agent by `kvmio lab up` (lab/seeds.py): lost at the next reboot
    guest_scheduler_by_hand: str | None = None
    # A vhost-user-blk disk served by a qemu-storage-daemon the lab runs (lab/vhost.py) from `image`:
    vhost: bool = False
    reconnect: int | None = None  # <reconnect enabled='yes' timeout=N/> on its socket; None: no <reconnect>
    backend_queues: int | None = None  # the daemon's num-queues


@dataclass(frozen=True)
class DomainSpec:
    """One lab domain (or offline XML file) and what is wrong with it, on purpose."""

    name: str
    purpose: str
    disks: tuple[DiskSpec, ...]
    running: bool = True
    vcpus: int = VCPUS
    vcpu_cpuset: str | None = None
    vcpupin: dict[int, str] = field(default_factory=dict)
    iothreads: int = 0
    iothreadpin: dict[int, str] = field(default_factory=dict)
    scsi: ScsiController | None = None
    machine: str = MACHINE
    offline_file: str | None = None  # set: written to offline/, never defined in libvirt
    # True: a user-mode NIC (restrict=on: no traffic out of QEMU) whose only way in is a host port
    # forward on 127.0.0.1 to the guest's dropbear on :22, for the SSH guest transport
    ssh: bool = False
    # True: <memoryBacking><source type='memfd'/><access mode='shared'/>, which vhost-user disks need
    shared_memory: bool = False
    memory_mib: int = MEMORY_MIB
    # True: `kvmio lab up` defines it again when its persistent XML differs from what the lab defined (tests change it)
    restore_drift: bool = False

    # Seeds `kvmio lab up` applies to the running domain after boot (lab/seeds.py), lost at a restart, re-applied on
    # every `up`. IOThread id -> host CPUs its thread is moved to behind libvirt's back:
    drift_iothreads: dict[int, str] = field(default_factory=dict)
    # (disk target, <driver> attribute, value) defined into the persistent XML while the domain runs: a pending restart
    pending_restart: tuple[tuple[str, str, str], ...] = ()

    def controller_of(self, disk: DiskSpec) -> ScsiController | None:
        return self.scsi if disk.bus == "scsi" else None


def _img(name: str, fmt: str, alloc: str) -> ImageSpec:
    return ImageSpec(name=name, fmt=fmt, alloc=alloc)


GOOD_DATA = _img("good-data", "raw", "prealloc")
GOOD_SCRATCH = _img("good-scratch", "raw", "prealloc")
GOOD_SCSI = _img("good-scsi", "raw", "prealloc")
LEGACY_THIN = _img("legacy-thin", "qcow2", "thin")
LEGACY_SCRATCH = _img("legacy-scratch", "raw", "sparse")
LEGACY_FULL = _img("legacy-full", "qcow2", "full")
PINNING_FULL = _img("pinning-full", "qcow2", "full")
PINNING_DATA = _img("pinning-data", "raw", "prealloc")
PINNING_SCSI = _img("pinning-scsi", "raw", "sparse")
OVERLAP_DATA = _img("overlap-data", "raw", "sparse")
AB_NATIVE = _img("ab-native", "raw", "prealloc")
AB_URING = _img("ab-uring", "raw", "prealloc")
# The vhost-user study: the same kind of image behind an ordinary virtio-blk disk and a vhost-user-blk disk.
VHOST_VIRTIO = _img("vhost-virtio", "raw", "full")
VHOST_USER = _img("vhost-user", "raw", "full")
VHOST_NORECONNECT = _img("vhost-noreconnect", "raw", "prealloc")
FIX_THIN = _img("fix-thin", "qcow2", "thin")



def _compliant(target: str, image: ImageSpec, serial: str) -> DiskSpec:
    """Return the recommended virtio-blk disk: io_uring, cache none, discard, iothread 1, queues = vCPUs."""
    return DiskSpec(target, image, serial, cache="none", io="io_uring", discard="unmap", iothread=1,
                    queues=VCPUS)


def _vhost_user(target: str, image: ImageSpec, reconnect: int | None = 10) -> DiskSpec:
    """Return a vhost-user-blk disk: no serial (libvirt refuses it), queues = vCPUs = what its backend offers."""
    return DiskSpec(target, image, None, vhost=True, reconnect=reconnect, queues=VCPUS, backend_queues=VCPUS)


DOMAINS: tuple[DomainSpec, ...] = (
    DomainSpec(
        name="kvmio-lab-good",
        purpose="compliant: io_uring, cache none, raw preallocated, pinned iothread, queues = vCPUs; "
        "reachable over SSH on a loopback port forward",
        ssh=True,
        vcpupin={0: "0", 1: "0"},
        iothreads=1,
        iothreadpin={1: "1"},
        scsi=ScsiController(queues=VCPUS, iothread=1),
        disks=(
            _compliant("vdb", GOOD_DATA, "kvmio-good-data"),
            _compliant("vdc", GOOD_SCRATCH, SCRATCH_SERIAL),
            DiskSpec("sda", GOOD_SCSI, "kvmio-good-scsi", bus="scsi", cache="none", io="io_uring",
                     discard="unmap"),
        ),
    ),
    DomainSpec(
        name="kvmio-lab-legacy",
        purpose="legacy template: no iothreads, native on thin qcow2, writethrough/threads single queue, "
        "cache unsafe, mq-deadline left in the guest, a guest scheduler set by hand (lost at reboot)",
        disks=(
            # native AIO on a thin qcow2 without discard; queues absent (QEMU default = vCPUs)
            DiskSpec("vdb", LEGACY_THIN, "kvmio-legacy-native", cache="none", io="native",
                     guest_scheduler="mq-deadline"),
            # old-style scratch disk: host page cache, thread pool, one queue for two vCPUs
            # its guest scheduler none only until the next reboot (set by hand; the kernel picks mq-deadline for one queue)
            DiskSpec("vdc", LEGACY_SCRATCH, SCRATCH_SERIAL, cache="writethrough", io="threads", queues=1,
                     guest_scheduler_by_hand="none"),
            DiskSpec("vdd", LEGACY_FULL, "kvmio-legacy-unsafe", cache="unsafe", io="threads", queues=VCPUS),
        ),
    ),
    DomainSpec(
        name="kvmio-lab-pinning",
        purpose="iothreads unpinned / pinned onto unpinned vCPUs, io_uring without cache mode, "
        "queues above vCPUs, virtio-scsi controller without iothread and single queue; at runtime IOThread 2 moved "
        "off its pin and a cache change waiting for a restart",
        iothreads=2,
        iothreadpin={2: "1"},  # iothread 1 unpinned; vCPUs unpinned, so iothread 2 overlaps them
        scsi=ScsiController(queues=1, iothread=None),
        # issue 20's runtime seeds: IOThread 2 runs on CPU 0 although pinned to 1 (its cgroup's cpuset narrowed: the
        # cpuset cgroup libvirt gives a pinned thread refuses a taskset outside it), and vdb's cache='none' is defined
        # but waits for a restart
        drift_iothreads={2: "0"},
        pending_restart=(("vdb", "cache", "none"),),
        disks=(
            DiskSpec("vdb", PINNING_FULL, "kvmio-pin-nocache", io="io_uring", discard="unmap",
                     iothread=1, queues=VCPUS),
            DiskSpec("vdc", PINNING_DATA, "kvmio-pin-queues4", cache="none", io="io_uring",
                     discard="unmap", iothread=2, queues=4),
            # single queue: the kernel would pick mq-deadline; the boot script sets none
            DiskSpec("sda", PINNING_SCSI, "kvmio-pin-scsi", bus="scsi", cache="none", io="threads",
                     discard="unmap", guest_scheduler="none"),
        ),
    ),
    DomainSpec(
        name="kvmio-lab-overlap",
        purpose="defined, not running: iothread pinned onto a CPU a vCPU may use (via <vcpu cpuset>)",
        running=False,
        vcpu_cpuset="1",
        vcpupin={0: "0"},  # vCPU 1 falls back to <vcpu cpuset='1'>
        iothreads=1,
        iothreadpin={1: "1"},
        disks=(
            DiskSpec("vdb", OVERLAP_DATA, "kvmio-overlap-data", cache="none", io="threads",
                     discard="unmap", iothread=1, queues=VCPUS),
        ),
    ),
    DomainSpec(
        name="kvmio-lab-ab",
        purpose="compliant A/B pair: two blank scratch disks backed alike (raw preallocated, same host "
        "storage, one IOThread) that differ only in io: vdb native, vdc io_uring (kvmio ab)",
        vcpupin={0: "0", 1: "0"},
        iothreads=1,
        iothreadpin={1: "1"},
        disks=(
            DiskSpec("vdb", AB_NATIVE, "kvmio-scratch-native", cache="none", io="native",
                     discard="unmap", iothread=1, queues=VCPUS),
            DiskSpec("vdc", AB_URING, "kvmio-scratch-uring", cache="none", io="io_uring",
                     discard="unmap", iothread=1, queues=VCPUS),
        ),
    ),
    DomainSpec(
        name="kvmio-lab-vhost",
        purpose="vhost-user (the SPDK path, served by qemu-storage-daemon): memfd shared memory; vdb an ordinary "
        "virtio-blk disk and vdc a vhost-user-blk disk (reconnect, 2 queues) on the same host storage, for kvmio ab; "
        "vdd a vhost-user-blk disk without <reconnect>",
        shared_memory=True,
        vcpupin={0: "0", 1: "0"},
        iothreads=1,
        iothreadpin={1: "1"},
        disks=(
            _compliant("vdb", VHOST_VIRTIO, "kvmio-vhost-virtio"),
            _vhost_user("vdc", VHOST_USER),
            _vhost_user("vdd", VHOST_NORECONNECT, reconnect=None),
        ),
    ),
    DomainSpec(
        name="kvmio-lab-fix",
        purpose="for the `kvmio fix` tests only (apply, rollback, restart, Ansible), which may change, start and stop it "
        "and leave it as declared here: defined, not running; no IOThread, cache unsafe, thin qcow2 without discard",
        running=False,
        memory_mib=384,
        restore_drift=True,
        disks=(DiskSpec("vdb", FIX_THIN, "kvmio-fix-data", cache="unsafe", io="threads"),),
    ),
)

OFFLINE: tuple[DomainSpec, ...] = (
    DomainSpec(
        name="kvmio-lab-offline-uring",
        purpose="io='uring' typo (libvirt rejects it at define time)",
        running=False,
        offline_file="kvmio-lab-offline-uring.xml",
        vcpupin={0: "0", 1: "0"},
        iothreads=1,
        iothreadpin={1: "1"},
        disks=(DiskSpec("vdb", GOOD_DATA, "kvmio-offline-uring", cache="none", io="uring",
                        discard="unmap", iothread=1, queues=VCPUS),),
    ),
    DomainSpec(
        name="kvmio-lab-offline-native-writeback",
        purpose="io='native' with cache='writeback' (libvirt rejects it at define time)",
        running=False,
        offline_file="kvmio-lab-offline-native-writeback.xml",
        vcpupin={0: "0", 1: "0"},
        iothreads=1,
        iothreadpin={1: "1"},
        disks=(DiskSpec("vdb", GOOD_DATA, "kvmio-offline-native", cache="writeback", io="native",
                        discard="unmap", iothread=1, queues=VCPUS),),
    ),
    DomainSpec(
        name="kvmio-lab-offline-vhost-private-memory",
        purpose="a vhost-user disk in a domain whose memory is private (libvirt refuses it at define time)",
        running=False,
        offline_file="kvmio-lab-offline-vhost-private-memory.xml",
        vcpupin={0: "0", 1: "0"},
        iothreads=1,
        iothreadpin={1: "1"},
        disks=(_vhost_user("vdb", VHOST_USER),),
    ),
)


def images() -> list[ImageSpec]:
    """Return every image the defined domains use, once each."""
    seen: dict[str, ImageSpec] = {}
    for dom in DOMAINS:
        for disk in dom.disks:
            seen.setdefault(disk.image.name, disk.image)
    return list(seen.values())
