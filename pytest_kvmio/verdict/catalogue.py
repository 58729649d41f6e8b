"""The rule catalogue: each rule's id, level, severity, reason, and the targets it applies to.

A rule that does not concern a target (io is not native, the bus has no IOThreads, no guest offline,
no class or baseline for this disk and profile) makes no test item: `applies` decides that at
collection, from the domain XML, the host facts and the settings, and the run counts such targets as
*not applicable* per rule. A skip then only means "applies, but could not be judged".

The suites (`suites/`) implement the rules and name them with `@pytest.mark.rule(ID)`; their
severity and applicability come from here. A project's own rule may pass `severity=` and
`applies=` (a callable taking the `Scope`, returning None when the rule applies or the reason it
does not) in its marker instead.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_kvmio.facts.targets import Target
from pytest_kvmio.model.domain import Disk, configured_queues
from pytest_kvmio.perf import session as perf_session
from pytest_kvmio.perf.runner import is_scratch_serial
from pytest_kvmio.runconfig import run_config


@dataclass(frozen=True)
class Scope:
    """What a rule's applicability is decided on: the target, the item's other parameters, the config."""

    target: Target
    params: Mapping[str, Any] = field(default_factory=dict)
    config: Any = None

    @property
    def disk(self) -> Disk:
        assert self.target.disk is not None, "a disk rule's scope has a disk"
        return self.target.disk


#: None when the rule applies, otherwise why it does not concern the target.
Applies = Callable[[Scope], "str | None"]


@dataclass(frozen=True)
class Rule:
    """One catalogue entry."""

    id: str
    level: str  # host, domain or disk
    severity: str
    summary: str  # the rule in one line (README table)
    reason: str  # why it exists (the rule's docstring)
    applies_when: str  # `applies` in words
    fix: str  # the kind of fix: xml, host, guest, measurement
    applies: Applies | None = None
    #: Where the scope comes from: the libvirt or QEMU source (file, function) or doc page it follows.
    cites: str = "—"

    def not_applicable(self, scope: Scope) -> str | None:
        """Return why the rule does not concern the scope's target, or None when it does."""
        if self.applies is None or scope.target.host.error is not None:
            return None  # an unreachable host's items report its error
        return self.applies(scope)

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.id, "level": self.level, "severity": self.severity, "summary": self.summary,
            "reason": self.reason, "applies_when": self.applies_when, "fix": self.fix, "cites": self.cites,
        }


#: Severities a rule may have (Allure's levels).
SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")


# --- applicability predicates ------------------------------------------------------------------


def _block_layer(disk: Disk) -> str | None:
    if not disk.in_block_layer:
        return f"{disk.type} disk: its I/O bypasses QEMU's block layer"
    return None


def _io_attribute(scope: Scope) -> str | None:
    return "no io attribute (QEMU's default)" if scope.disk.io is None else None


def _no_aio_backend(disk: Disk) -> str | None:
    """Return why `io=` reaches no Linux AIO or io_uring on this disk (a network or NVMe disk), or None."""
    reaches, why = disk.aio_backend
    return f"{why}, so io={disk.io} has no effect" if reaches is False else None


def _async_io(scope: Scope) -> str | None:
    disk = scope.disk
    # libvirt refuses io='native' without a direct cache mode whatever the source (qemuValidateDomainDeviceDefDiskFrontend),
    # so native is judged on every disk; io_uring only where it reaches a backend.
    return _block_layer(disk) or (
        None if disk.io == "native" else
        _no_aio_backend(disk) if disk.io == "io_uring" else f"io={disk.effective_io}, not native or io_uring"
    )


def _never_grows(disk: Disk) -> str | None:
    if disk.transient:
        return "transient disk: writes go to a throwaway overlay"
    if disk.readonly:
        return "read-only disk: its image never grows"
    return None


def _native(scope: Scope) -> str | None:
    disk = scope.disk
    if _never_grows(disk):
        return _never_grows(disk)
    return _block_layer(disk) or (None if disk.io == "native" else f"io={disk.effective_io}, not native") or (
        _no_aio_backend(disk))


def _io_uring(scope: Scope) -> str | None:
    disk = scope.disk
    return _block_layer(disk) or (None if disk.io == "io_uring" else f"io={disk.effective_io}, not io_uring") or (
        _no_aio_backend(disk))


def _iothread_capable(scope: Scope) -> str | None:
    disk = scope.disk
    if not (disk.is_virtio_blk or disk.is_virtio_scsi):
        return f"bus {disk.bus} has no IOThread support"
    return _block_layer(disk)


def _virtio_queues(scope: Scope) -> str | None:
    disk = scope.disk
    if disk.type == "vhostvdpa":
        return "vhost-vdpa disk: the device's queues are the hardware's"
    return None if configured_queues(disk)[1] != "not a virtio disk" else f"bus {disk.bus} is not virtio"


def _thin(scope: Scope) -> str | None:
    disk = scope.disk
    if _never_grows(disk):
        return _never_grows(disk)
    outside = _block_layer(disk)
    if outside:
        return outside
    allocation = disk.allocation
    return f"not thin: {allocation.why}" if allocation.thin is False else None


def _cache(scope: Scope) -> str | None:
    return _block_layer(scope.disk)


def _vhost_user(scope: Scope) -> str | None:
    disk = scope.disk
    return None if disk.is_vhost_user else f"{disk.type} disk, not vhost-user"


def _live_vhost_user(scope: Scope) -> str | None:
    return _vhost_user(scope) or _live_host(scope)


def _running_qemu(scope: Scope) -> str | None:
    target = scope.target
    if target.host.offline:
        return "offline lint: no running QEMU to read"
    if target.domain is not None and not target.domain.running:
        return "domain not running: no QEMU process"
    return None


def _running_block_disk(scope: Scope) -> str | None:
    return _running_qemu(scope) or _block_layer(scope.disk) or (
        None if scope.disk.is_storage else f"{scope.disk.device} without storage")


def _has_iothreads(scope: Scope) -> str | None:
    domain = scope.target.domain
    assert domain is not None
    return None if domain.iothread_ids else "the domain defines no IOThreads"


def _live_guest(scope: Scope) -> str | None:
    target = scope.target
    if target.host.offline:
        return "offline lint: no guest"
    if target.domain is not None and target.domain.running is False:
        return "domain not running: no guest"
    return None


def _guest_virtio(scope: Scope) -> str | None:
    return _live_guest(scope) or (
        None if scope.disk.is_virtio_blk or scope.disk.is_virtio_scsi else f"bus {scope.disk.bus} is not virtio"
    )


def _guest_irq(scope: Scope) -> str | None:
    reason = _guest_virtio(scope)
    if reason is None and scope.disk.domain.vcpus < 2:
        return "one vCPU: nothing to spread interrupts over"
    return reason


def _live_host(scope: Scope) -> str | None:
    return "offline lint: no host to read it from" if scope.target.host.offline else None


def _flash_devices(scope: Scope) -> str | None:
    facts = scope.target.host.facts
    if scope.target.host.offline:
        return "offline lint: no host to read it from"
    flash = [b for b in facts.block_devices if not b.is_virtual and (b.is_nvme or b.rotational is False)]
    return None if flash else "no NVMe or non-rotational block device"


def _perf_runnable(scope: Scope) -> str | None:
    """Return why fio can't concern this disk at all: offline without results, or a write profile on a non-scratch disk."""

    config = scope.config
    run = run_config(config)
    if run.fio_results:
        return None  # results are read from files: nothing runs, nothing is written
    if scope.target.host.offline:
        return "offline lint: no guest to run fio in (pass --host, or --fio-results)"
    profile = scope.params.get("profile")
    if profile is None:
        return None
    pattern = run.scratch_serial
    if perf_session.state(config).thresholds.profile(str(profile)).write and not is_scratch_serial(scope.disk.serial, pattern):
        return f"{profile} writes and serial {scope.disk.serial!r} is not scratch ({pattern!r})"
    return None


def _perf_limit(scope: Scope) -> str | None:
    if "profile" not in scope.params:
        return None  # a project's own rule whose id starts with perf-: it decides for itself
    runnable = _perf_runnable(scope)
    if runnable:
        return runnable
    profile, metric = scope.params.get("profile"), scope.params.get("metric")
    disk = scope.disk
    thresholds = perf_session.state(scope.config).thresholds
    storage_class = thresholds.class_for(disk.id, disk.serial)
    if storage_class is None:
        return "no storage class matches the disk"
    if metric is None or metric not in thresholds.limits(storage_class.name, str(profile)):
        return f"class {storage_class.name} sets no {metric} limit for {profile}"
    return None


def _perf_baseline(scope: Scope) -> str | None:
    runnable = _perf_runnable(scope)
    if runnable or "profile" not in scope.params:
        return runnable  # without a profile: a project's own baseline rule, which decides for itself
    profile, metric = scope.params.get("profile"), scope.params.get("metric")
    disk = scope.disk
    if perf_session.state(scope.config).thresholds.baseline(disk.id, str(profile), str(metric)) is None:
        return f"no {metric} baseline for {profile}"
    return None


def _perf_history(scope: Scope) -> str | None:
    runnable = _perf_runnable(scope)
    if runnable:
        return runnable
    return None if run_config(scope.config).history else "no results history (--kvmio-history URL)"


def _ab_requested(scope: Scope) -> str | None:
    if scope.target.host.offline:
        return "offline lint: no host to run an experiment on"
    return None if run_config(scope.config).ab else "no experiment asked for (--kvmio-ab)"


def _perf_class(scope: Scope) -> str | None:
    runnable = _perf_runnable(scope)
    if runnable:
        return runnable
    disk = scope.disk
    if perf_session.state(scope.config).thresholds.class_for(disk.id, disk.serial) is None:
        return "no storage class matches the disk"
    return None


# --- the catalogue -----------------------------------------------------------------------------

LIBVIRT_AIO = "libvirt src/qemu/qemu_block.c qemuBlockStorageSourceGetFileProps (aio only for file, host_device, host_cdrom)"

RULES: tuple[Rule, ...] = (
    Rule("host-kernel-min", "host", "critical", "kernel ≥ 5.10",
         "io_uring arrived in 5.1 but 5.10 is the first LTS kernel where it is stable and complete.",
         "every host (offline: judged on --assume kernel=...)", "host"),
    Rule("host-qemu-min", "host", "critical", "QEMU ≥ 5.0",
         "QEMU 5.0 is the first release with the io_uring AIO backend.",
         "every host (offline: judged on --assume qemu=...)", "host"),
    Rule("host-libvirt-min", "host", "critical", "libvirt ≥ 6.3",
         "libvirt 6.3 is the first release that accepts io='io_uring' in domain XML.",
         "every host (offline: judged on --assume libvirt=...)", "host"),
    Rule("host-io-uring-enabled", "host", "critical", "`kernel.io_uring_disabled` is 0 (or absent)",
         "With kernel.io_uring_disabled at 1 or 2, QEMU (unprivileged) cannot create rings; io_uring disks fail to start.",
         "live hosts", "host", _live_host),
    Rule("host-scheduler-none", "host", "normal", "NVMe and non-rotational host disks use scheduler `none`",
         "The guest already schedules its I/O; a second scheduler on NVMe/SSD adds latency and jitter.",
         "live hosts with an NVMe or non-rotational block device", "host", _flash_devices),
    Rule("disk-io-mode-valid", "disk", "blocker",
         "io ∈ threads, native, io_uring, default (`uring` is a typo libvirt rejects)",
         "libvirt knows threads, native and io_uring; 'uring' is a common typo it rejects at define time.",
         "disks with an io attribute", "xml", _io_attribute,
         cites="libvirt docs/formatdomain.rst, <driver io>: threads, native, io_uring (since 6.3.0)"),
    Rule("disk-direct-io-for-async", "disk", "critical",
         "native/io_uring use cache none or directsync (no cache attribute = writeback)",
         "Linux AIO is only asynchronous with O_DIRECT (libvirt refuses native without it); io_uring through "
         "the page cache pays for double caching and host-crash exposure.",
         "io='native' on a disk QEMU's block layer serves; io='io_uring' on a file or block disk", "xml", _async_io,
         cites="libvirt src/qemu/qemu_validate.c qemuValidateDomainDeviceDefDiskFrontend (native needs cache none or "
               "directsync, whatever the source); " + LIBVIRT_AIO),
    Rule("disk-native-not-sparse", "disk", "critical",
         "no io='native' on a sparse/thin image (block devices are fine)",
         "Linux AIO blocks while a sparse image grows; guests hang on metadata updates.",
         "io='native' on a writable, persistent (not transient) file or block disk (type='volume': skipped, the pool "
         "decides)", "xml", _native, cites=LIBVIRT_AIO),
    Rule("disk-io-uring-supported", "disk", "blocker", "io_uring only where the host supports it",
         "A disk with io='io_uring' fails to start on a host without io_uring (old kernel/QEMU/libvirt or disabled).",
         "io='io_uring' on a file or block disk (type='volume': skipped, the pool decides)", "host", _io_uring,
         cites=LIBVIRT_AIO),
    Rule("disk-iothread-assigned", "disk", "normal",
         "virtio disks / virtio-scsi controllers use IOThreads that exist (an iothread attribute or a queue mapping)",
         "Without an IOThread, disk emulation shares the QEMU main loop with everything else and stalls vCPUs.",
         "virtio-blk disks and disks on a virtio-scsi controller, QEMU's block layer", "xml", _iothread_capable,
         cites="libvirt docs/formatdomain.rst, <driver iothread> (virtio disks and virtio-scsi controllers)"),
    Rule("domain-iothread-pinned", "domain", "normal", "every IOThread pinned, on host CPUs no vCPU may use",
         "An IOThread that shares host CPUs with vCPUs competes with the guest it serves; I/O waits on scheduling.",
         "domains that define IOThreads", "xml", _has_iothreads,
         cites="libvirt docs/formatdomain.rst, <iothreads> and <cputune><iothreadpin>"),
    Rule("disk-multiqueue", "disk", "normal",
         "virtio-blk / virtio-scsi queues = vCPUs, up to the hotplug maximum (QEMU's default computed from "
         "the machine type); an explicit queue→IOThread mapping must cover every queue",
         "One queue per vCPU lets every vCPU submit I/O without contending for a shared queue.",
         "virtio-blk disks and disks on a virtio-scsi controller (not vhost-vdpa); the default follows the machine "
         "type (upstream, RHEL) and the transport (PCI: one per vCPU from 5.2 / rhel8.4.0; ccw, mmio: one)", "xml",
         _virtio_queues,
         cites="QEMU hw/virtio/virtio-blk-pci.c, virtio-scsi-pci.c (virtio_pci_optimal_num_queues, PCI only), "
               "hw/core/machine.c hw_compat_5_1; CentOS Stream qemu-kvm hw_compat_rhel_8_3; "
               "libvirt src/qemu/qemu_domain_address.c (ccw on s390, virtio-mmio)"),
    Rule("disk-discard-unmap", "disk", "minor", "thin images (sparse files, rbd) pass discard='unmap'",
         "Without discard='unmap' a thin image only grows: blocks the guest frees are never returned to the host.",
         "writable, persistent disks QEMU's block layer serves, unless known to be fully allocated", "xml", _thin,
         cites="libvirt docs/formatdomain.rst, <driver discard>"),
    Rule("disk-cache-safe", "disk", "critical", "no cache='unsafe'; writeback passes with a note (guests must flush)",
         "cache='unsafe' ignores guest flushes: a host crash loses data the guest was told is on disk.",
         "disks QEMU's block layer serves", "xml", _cache,
         cites="QEMU docs/system/qemu-block-drivers.rst, cache modes (unsafe ignores flushes)"),
    Rule("disk-vhost-shared-memory", "disk", "blocker",
         "a vhost-user disk's domain shares its memory (<access mode='shared'/>, memfd or hugepages); "
         "live, an SPDK backend also needs hugepages",
         "The vhost-user backend reads and writes guest memory itself: libvirt refuses the domain unless that memory "
         "is shared, and SPDK can only use it from hugepages.",
         "vhost-user disks (the SPDK part: live hosts, where the backend process is known)", "xml",
         _vhost_user),
    Rule("disk-vhost-reconnect", "disk", "critical",
         "a vhost-user disk's socket source has <reconnect enabled='yes' timeout='N'/>",
         "Without reconnect, a restart of the vhost-user backend (an upgrade, a crash) leaves the disk dead until "
         "the domain restarts.",
         "vhost-user disks", "xml", _vhost_user),
    Rule("disk-vhost-backend-queues", "disk", "blocker",
         "a vhost-user disk asks for no more queues than its backend offers",
         "QEMU refuses to start a vhost-user disk with more queues than its backend offers "
         "('The maximum number of queues supported by the backend is 1').",
         "vhost-user disks on live hosts (judged where the backend's queue count can be read)", "host",
         _live_vhost_user),
    Rule("disk-vhost-backend-serving", "disk", "critical",
         "a vhost-user disk's socket exists and a live process listens on it",
         "A vhost-user disk is only as alive as the process behind its socket: without one the domain can't "
         "start and a running guest's I/O hangs.",
         "vhost-user disks on live hosts", "host", _live_vhost_user),
    Rule("domain-runtime-pinning", "domain", "normal",
         "every vCPU and IOThread thread runs on exactly the CPUs the live XML pins it to (unpinned: every CPU its "
         "cgroup allows, or <vcpu cpuset>)",
         "Threads moved behind libvirt's back (tuned, a hook, a taskset, a narrowed cgroup) run elsewhere than the XML says.",
         "running domains on live hosts (threads named by QEMU's debug-threads, which libvirt turns on)", "host",
         _running_qemu,
         cites="libvirt src/qemu/qemu_command.c qemuBuildNameCommandLine (debug-threads=on); src/qemu/qemu_process.c "
               "qemuProcessSetupPid (pins, <vcpu cpuset> for unpinned threads); QEMU iothread.c, "
               "accel/*/…-accel-ops.c (thread names)"),
    Rule("disk-runtime-settings", "disk", "critical",
         "aio, cache and discard on QEMU's command line equal the live XML",
         "The other disk rules judge the XML; this one checks QEMU runs what the XML says, so their verdicts hold.",
         "disks of running domains on live hosts that QEMU's block layer serves (hotplugged disks: skipped, the command "
         "line does not hold them)", "host", _running_block_disk,
         cites="libvirt src/qemu/qemu_block.c (-blockdev: aio, cache.direct, cache.no-flush, discard), qemu_command.c "
               "qemuBuildDiskDeviceProps (write-cache); QEMU docs/system/qemu-block-drivers.rst (cache modes)"),
    Rule("domain-pending-restart", "domain", "normal",
         "the persistent definition does not differ from the running domain in an attribute a storage rule judges",
         "A definition changed on a running domain (virsh define, kvmio fix --apply) takes effect only at its restart.",
         "running, persistent domains on live hosts", "host", _running_qemu,
         cites="libvirt virDomainGetXMLDesc VIR_DOMAIN_XML_INACTIVE (the definition the next start uses)"),
    Rule("guest-scheduler-none", "disk", "normal", "the guest device of a virtio disk uses scheduler `none`",
         "The host already schedules the real device; a guest scheduler on a virtio disk reorders twice.",
         "virtio disks of running domains on live hosts", "guest", _guest_virtio),
    Rule("guest-scheduler-persistent", "disk", "normal",
         "a virtio disk's guest scheduler `none` survives a reboot: the kernel's default (more than one hardware "
         "queue), a udev rule, or a boot script or enabled unit sets it",
         "A scheduler written by hand lasts until the next reboot; what sets `none` must be part of the guest's boot.",
         "virtio disks of running domains on live hosts whose guest scheduler is none now", "guest", _guest_virtio,
         cites="Linux block/elevator.c elevator_get_default (none for more than one hardware queue; elevator= ignored "
               "by blk-mq); udev(7) rules files and their order; systemd rc-local.service; OpenRC local.d"),
    Rule("guest-queues-active", "disk", "normal",
         "the guest sees as many hardware queues (`/sys/block/DEV/mq/*`) as configured (or QEMU's default)",
         "Queues configured in libvirt help only if the guest driver really opens them.",
         "virtio disks of running domains on live hosts", "guest", _guest_virtio),
    Rule("guest-irq-spread", "disk", "minor",
         "under a read-only fio load, the disk's virtio request interrupts land on more than one CPU",
         "If every completion interrupt lands on one vCPU, that vCPU caps the disk's IOPS.",
         "virtio disks of running domains with 2 or more vCPUs on live hosts", "guest", _guest_irq),
    Rule("perf-<profile>", "disk", "normal", "the median of a profile's metric meets the storage class's floor/ceiling",
         "The storage class promises a floor or ceiling for this profile; a median beyond it is broken storage.",
         "disks whose storage class sets a limit for the profile and metric", "measurement", _perf_limit),
    Rule("perf-baseline", "disk", "critical", "the median has not regressed beyond the recorded baseline's band",
         "A change (kernel, QEMU, io mode, template) must not make a disk slower than its recorded baseline.",
         "disks with a recorded baseline for the profile and metric", "measurement", _perf_baseline),
    Rule("perf-host-cpu", "disk", "normal", "host CPU µs per I/O of QEMU (and of a vhost-user disk's backend) within the class's bound (else reported)",
         "CPU the hypervisor spends per guest I/O is what io_uring saves over native and threads; bound it per class.",
         "disks with a storage class", "measurement", _perf_class),
    Rule("perf-history", "disk", "critical",
         "no change point for the worse beyond the class's tolerance stands in the results history",
         "A disk that got slower at some run stays flagged until it recovers or the change is accepted: the nightly "
         "history shows when it happened and what changed in the environment then.",
         "disks measured in a run with a results history (`--kvmio-history`)", "measurement", _perf_history),
    Rule("ab-expect", "host", "critical",
         "an A/B experiment (`--kvmio-ab`) shows B better than A, or not worse beyond the margin (`--kvmio-ab-expect`)",
         "A storage change ships on evidence: B must beat A, or not be worse than A beyond the margin, with 95% confidence.",
         "live hosts, once per `--kvmio-ab` experiment", "measurement", _ab_requested),
)
BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


def lookup(rule_id: str) -> Rule | None:
    """Return the catalogue entry of a rule id (`perf-<profile>` ids match their pattern)."""
    found = BY_ID.get(rule_id)
    if found is None and rule_id.startswith("perf-"):
        found = next((r for r in RULES if "<" in r.id and fnmatch.fnmatchcase(rule_id, r.id.replace("<profile>", "*"))), None)
    return found


# --- the rule of a test item ------------------------------------------------------------------

def rule_of(item: pytest.Item) -> tuple[str, str] | None:
    """Return (rule id, severity) of an item's `rule` marker; a malformed marker is a usage error.

    The severity is the marker's, else the catalogue's, else normal.
    """
    marker = item.get_closest_marker("rule")
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.rule takes one rule id string, e.g. rule('disk-cache-safe')")
    entry = lookup(marker.args[0])
    severity = marker.kwargs.get("severity", entry.severity if entry else "normal")
    if severity not in SEVERITIES:
        raise pytest.UsageError(
            f"{item.nodeid}: rule severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    return marker.args[0], severity


def applies_of(item: pytest.Item) -> Applies | None:
    """Return the applicability check of an item's rule: the marker's `applies=`, else the catalogue's."""
    marker = item.get_closest_marker("rule")
    if marker is None:
        return None
    own = marker.kwargs.get("applies")
    if own is not None:
        if not callable(own):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.rule(applies=...) takes a callable of the Scope")
        return own  # type: ignore[no-any-return]
    entry = lookup(str(marker.args[0])) if marker.args else None
    return entry.not_applicable if entry is not None else None
