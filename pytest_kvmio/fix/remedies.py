"""What fixes each rule, computed from the domain model: XML edits, virt-xml commands, host and guest commands.

`remedies(rule, target, facts)` returns the honest fixes of one rule on one target, the preferred first, or an empty
list when the target already meets the rule: a disk or domain rule asks the same check its suite test asserts on
(model/checks.py), never a copy of it. Remedies are looked up by rule id (`XML_REMEDIES`, `OTHER_REMEDIES`).

XML fixes respect what is there: an existing IOThread is reused (a pool never shrinks), explicit queue→IOThread
mappings are kept and completed, `<iothreads>` is added only to a domain without any, and IOThreads are pinned only
when the host's CPUs are known.
"""

from __future__ import annotations

import difflib
import shlex
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.facts.targets import HostTarget, Target
from pytest_kvmio.fix import edits
from pytest_kvmio.fix.placement import crowding, place_iothreads
from pytest_kvmio.model.checks import (
    async_io_is_direct,
    cache_is_safe,
    io_mode_valid,
    io_uring_supported,
    iothread_pinning,
    iothread_use,
    native_image_not_sparse,
    queue_layout,
    runtime_pinning,
    thin_image_discards,
    vhost_memory,
)
from pytest_kvmio.model.cpuset import format_cpuset
from pytest_kvmio.model.domain import (
    DIRECT_CACHE_MODES,
    RECONNECT_TIMEOUT,
    VALID_IO_MODES,
    Disk,
    Domain,
)
from pytest_kvmio.model.hostcpus import HostCpus
from pytest_kvmio.verdict.catalogue import Scope, lookup

#: When a change takes effect: `define` (a file or a stopped domain: when it is defined), `restart` (a running domain
#: needs a full stop and start), `live` (at once, on a running host or guest).
TAKES_EFFECT = ("define", "live", "restart")
#: Host commands that allow io_uring now and at boot.
ALLOW_IO_URING = ["sysctl -w kernel.io_uring_disabled=0",
                  "echo 'kernel.io_uring_disabled = 0' > /etc/sysctl.d/90-kvmio-io-uring.conf"]


@dataclass
class Remedy:
    """One honest fix of a rule on a target."""

    summary: str
    edits: list[edits.Edit] = field(default_factory=list)
    virt_xml: list[str] = field(default_factory=list)
    host_commands: list[str] = field(default_factory=list)
    guest_commands: list[str] = field(default_factory=list)
    takes_effect: str = "define"
    #: What kvmio would need to compute the XML fix (e.g. the host's CPU count); None when nothing is missing.
    needs: str | None = None

    @property
    def fixes_xml(self) -> bool:
        return bool(self.edits)


#: A rule's remedies on a target: (target, host facts) -> remedies, preferred first; [] when the target meets the rule.
Remedies = Callable[[Target, HostFacts | None], list[Remedy]]


def _effect(domain: Domain | None) -> str:
    return "restart" if domain is not None and domain.running else "define"


def _virt_xml_disk(disk: Disk, **options: str) -> str:
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"virt-xml {shlex.quote(disk.domain.name)} --edit target={shlex.quote(disk.target)} --disk {shlex.quote(opts)}"


def _driver_fix(disk: Disk, summary: str, virt: dict[str, str] | None, **attrs: str) -> Remedy:
    return Remedy(summary, [edits.disk_driver(disk.target, **attrs)],
                  virt_xml=[_virt_xml_disk(disk, **virt)] if virt else [], takes_effect=_effect(disk.domain))


# --- disk rules ----------------------------------------------------------------------------------------------------


def _io_mode(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    if io_mode_valid(disk):
        return []
    guess = difflib.get_close_matches(str(disk.io).replace("uring", "io_uring"), VALID_IO_MODES[:3], n=1, cutoff=0.6)
    if guess:
        return [_driver_fix(disk, f"{disk.id}: set io='{guess[0]}' (io={disk.io!r} is not a mode libvirt knows)",
                            {"io": guess[0]}, io=guess[0])]
    return [Remedy(f"{disk.id}: remove io={disk.io!r} (not a mode libvirt knows): QEMU then uses threads",
                   [edits.disk_driver(disk.target, io=None)], takes_effect=_effect(disk.domain))]


def _direct_io(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    if async_io_is_direct(disk)[0] is not False:
        return []
    direct = _driver_fix(disk, f"{disk.id}: set cache='none' (io='{disk.io}' needs O_DIRECT)", {"cache": "none"},
                         cache="none")
    reaches, why = disk.aio_backend
    if reaches is False:  # io reaches no backend here: dropping it keeps the cache mode the storage wants (rbd: writeback)
        drop = Remedy(f"{disk.id}: remove io='{disk.io}' ({why}: it has no effect, and libvirt refuses native without "
                      "cache none or directsync)", [edits.disk_driver(disk.target, io=None)],
                      takes_effect=_effect(disk.domain))
        return [drop, direct]
    return [direct]


def _not_sparse(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    if native_image_not_sparse(disk)[0] is not False:
        return []
    out = []
    if disk.source_file and disk.type == "file":
        fmt = disk.format or "raw"
        path = disk.source_file
        tmp = f"{path}.prealloc"
        out.append(Remedy(
            f"{disk.id}: preallocate {path} (keeps io='native'); stop the domain first",
            host_commands=[
                f"qemu-img convert -p -O {shlex.quote(fmt)} -o preallocation=full {shlex.quote(path)} {shlex.quote(tmp)}",
                f"chown --reference={shlex.quote(path)} {shlex.quote(tmp)}",
                f"mv {shlex.quote(tmp)} {shlex.quote(path)}",
            ],
            takes_effect="restart" if disk.domain.running else "define",
        ))
    out.append(_driver_fix(disk, f"{disk.id}: set io='io_uring' (does not block while the image grows)",
                           {"io": "io_uring"}, io="io_uring"))
    return out


def _io_uring_host(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    if facts is None:
        return []
    supported, why = io_uring_supported(disk, facts.io_uring_support(), facts.offline)
    if supported is not False:
        return []
    out = []
    if facts.io_uring_disabled not in (None, 0):
        out.append(Remedy(
            f"{facts.name}: allow io_uring (kernel.io_uring_disabled = {facts.io_uring_disabled})",
            host_commands=list(ALLOW_IO_URING), takes_effect="live"))
    else:
        out.append(Remedy(f"{facts.name}: upgrade to kernel ≥ 5.10, QEMU ≥ 5.0, libvirt ≥ 6.3 ({why})",
                          host_commands=["apt-get install --only-upgrade linux-image-amd64 qemu-system-x86 libvirt-daemon"],
                          takes_effect="restart"))
    native = _driver_fix(disk, f"{disk.id}: set io='native' until the host supports io_uring", {"io": "native"},
                         io="native")
    if disk.allocation.thin is not True and disk.effective_cache in DIRECT_CACHE_MODES:
        out.append(native)
    return out


def _least_used(domain: Domain) -> int:
    used: Counter[int] = Counter({t: 0 for t in domain.iothread_ids})
    for disk in domain.disks:
        used.update(t for t in disk.iothreads if t in used)
    for ctl in domain.controllers:
        used.update(t for t in ctl.iothreads if t in used)
    return min(domain.iothread_ids, key=lambda t: (used[t], domain.iothread_ids.index(t)))


def _pool_with(domain: Domain, wanted: list[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(list(domain.iothread_ids) + wanted))


def _iothread(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    domain = disk.domain
    use = iothread_use(disk)
    if use.holds:
        return []
    ctl = use.controller
    owner = "its <driver>" if ctl is None else f"virtio-scsi controller {ctl.index}"
    if use.missing:
        pool = _pool_with(domain, use.missing)
        return [Remedy(f"{domain.id}: define IOThread(s) {use.missing} that {owner} of {disk.target} uses "
                       f"(IOThreads {list(pool)})", [edits.iothread_pool(pool)], takes_effect=_effect(domain))]
    if domain.iothread_ids:
        tid, pool, grow = _least_used(domain), domain.iothread_ids, []
        summary = f"{disk.id}: use the domain's IOThread {tid} (least used of {list(pool)})"
    else:
        tid, pool = 1, (1,)
        grow = [edits.iothread_pool(pool)]
        summary = f"{disk.id}: add <iothreads>1</iothreads> (then pin it: domain-iothread-pinned) and use IOThread 1"
    set_it = (edits.disk_driver(disk.target, iothread=str(tid)) if ctl is None
              else edits.controller_driver("scsi", ctl.index, iothread=str(tid)))
    virt = [_virt_xml_disk(disk, **{"driver.iothread": str(tid)})] if ctl is None and not grow else []
    return [Remedy(summary + f" on {owner}", grow + [set_it], virt_xml=virt, takes_effect=_effect(domain))]


def _multiqueue(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    layout = queue_layout(disk, facts.qemu if facts else None)
    if layout.holds is not False:
        return []
    ctl = disk.controller if not disk.is_virtio_blk else None
    effect = _effect(disk.domain)
    if layout.unmapped:
        threads = list(layout.mapping)
        additions: dict[int, list[int]] = {}
        for i, queue in enumerate(layout.unmapped):  # round-robin over the IOThreads the mapping already uses
            additions.setdefault(threads[i % len(threads)], []).append(queue)
        owner: tuple[str, str | int] = ("disk", disk.target) if ctl is None else ("controller", ctl.index)
        shown = ", ".join(f"queues {q} to IOThread {t}" for t, q in additions.items())
        return [Remedy(f"{disk.id}: map {shown}, keeping the existing mapping", [edits.map_queues(owner, additions)],
                       takes_effect=effect)]
    wanted = str(layout.vcpus)
    if ctl is None:
        return [_driver_fix(disk, f"{disk.id}: set queues='{wanted}' ({layout.where}; {layout.vcpus} vCPUs)",
                            {"driver.queues": wanted}, queues=wanted)]
    return [Remedy(f"{disk.id}: set queues='{wanted}' on virtio-scsi controller {ctl.index} ({layout.where})",
                   [edits.controller_driver("scsi", ctl.index, queues=wanted)], takes_effect=effect)]


def _discard(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    discards, why = thin_image_discards(disk)
    if discards is not False:
        return []
    return [_driver_fix(disk, f"{disk.id}: set discard='unmap' ({why})", {"discard": "unmap"},
                        discard="unmap")]


def _cache_safe(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    if cache_is_safe(disk):
        return []
    return [_driver_fix(disk, f"{disk.id}: set cache='none' (cache='unsafe' ignores guest flushes)",
                        {"cache": "none"}, cache="none")]


def _vhost_memory(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    memory = vhost_memory(disk)
    if memory.holds:
        return []
    if memory.spdk is not None and memory.shared:  # a host change too: hugepages must be reserved before they are used
        return [Remedy(f"{disk.id}: back guest memory with hugepages for {memory.spdk.describe()} (SPDK): add "
                       "<hugepages/> to <memoryBacking> and reserve them on the host (vm.nr_hugepages)",
                       takes_effect="restart")]
    cells = len(disk.domain.numa_access)
    what = "memAccess='shared' on every NUMA cell" if cells else "<memoryBacking> memfd with <access mode='shared'/>"
    return [Remedy(f"{disk.domain.id}: share guest memory ({memory.why}): {what}", [edits.shared_memory(cells)],
                   takes_effect=_effect(disk.domain))]


def _vhost_reconnect(target: Target, facts: HostFacts | None) -> list[Remedy]:
    disk = target.disk
    assert disk is not None
    if disk.reconnects:
        return []
    return [Remedy(f"{disk.id}: add <reconnect enabled='yes' timeout='{RECONNECT_TIMEOUT}'/> to its <source>",
                   [edits.reconnect(disk.target, RECONNECT_TIMEOUT)], takes_effect=_effect(disk.domain))]


# --- domain rules --------------------------------------------------------------------------------------------------


def _pinned(target: Target, facts: HostFacts | None) -> list[Remedy]:
    domain = target.domain
    assert domain is not None
    if iothread_pinning(domain).holds:
        return []
    host = _host_cpus(facts)
    if host is None:
        return [Remedy(f"{domain.id}: pin IOThreads {list(domain.iothread_ids)} to host CPUs no vCPU may use",
                       needs="the host's CPU count: run against the host (--host) or pass --assume cpus=N")]
    # A pin of an IOThread the domain does not define (libvirt refuses it) goes: no vCPU can be kept off it.
    stray = sorted(t for t in domain.iothread_pins if t not in domain.iothread_ids)
    others = [d for d in target.host.domains if d is not domain and d.name != domain.name]
    placed = place_iothreads(host, domain.iothread_ids, {v: domain.vcpu_cpus(v) for v in range(domain.vcpus)},
                             emulator=domain.emulator_pin, pinned=domain.iothread_pins,
                             crowd=crowding([p for d in others for p in _pins_of(d)]))
    if placed.needs is not None:
        return [Remedy(f"{domain.id}: cannot place IOThreads {list(domain.iothread_ids)} apart from the vCPUs on "
                       f"{host.count} host CPU(s)", needs=placed.needs)]
    iothread_pins: dict[int, str | None] = {t: format_cpuset(set(c)) for t, c in placed.iothreads.items()}
    vcpu_pins = {v: format_cpuset(set(c)) for v, c in placed.vcpus.items()}
    what = [placed.describe(host)] if iothread_pins or vcpu_pins else []
    if stray:
        what.append(f"drop the <iothreadpin> of undefined IOThread(s) {stray}")
        iothread_pins.update(dict.fromkeys(stray))
    return [Remedy(f"{domain.id}: " + ", ".join(what), [edits.pins(vcpu_pins, iothread_pins)],
                   takes_effect=_effect(domain))]


def _host_cpus(facts: HostFacts | None) -> HostCpus | None:
    """Return the host's CPUs by NUMA node: from its facts, else `cpu_count` CPUs on one node; None when unknown."""
    if facts is None:
        return None
    if facts.host_cpus is not None and facts.host_cpus.count:
        return facts.host_cpus
    return HostCpus.flat(facts.cpu_count) if facts.cpu_count else None


def _pins_of(domain: Domain) -> list[frozenset[int]]:
    """Return the CPU sets a domain pins its threads to (vCPUs, IOThreads, emulator): what crowds a host CPU."""
    pins = [c for v in range(domain.vcpus) if (c := domain.vcpu_cpus(v)) is not None]
    pins.extend(domain.iothread_pins.values())
    if domain.emulator_pin is not None:
        pins.append(domain.emulator_pin)
    return pins


# --- host and guest rules: text and commands, never applied -------------------------------------------------------


def _upgrade(what: str, package: str) -> Remedies:
    def remedy(target: Target, facts: HostFacts | None) -> list[Remedy]:
        return [Remedy(f"{target.host.name}: upgrade to {what}",
                       host_commands=[f"apt-get install --only-upgrade {package}"], takes_effect="restart")]
    return remedy


def _allow_io_uring(target: Target, facts: HostFacts | None) -> list[Remedy]:
    return [Remedy(f"{target.host.name}: set kernel.io_uring_disabled = 0", host_commands=list(ALLOW_IO_URING),
                   takes_effect="live")]


def _host_scheduler(target: Target, facts: HostFacts | None) -> list[Remedy]:
    devices = [b.name for b in (facts.block_devices if facts else [])
               if not b.is_virtual and (b.is_nvme or b.rotational is False) and b.scheduler not in (None, "none")]
    return [Remedy(f"{target.host.name}: scheduler none on {', '.join(devices) or 'its flash devices'} (now and at boot)",
                   host_commands=[f"echo none > /sys/block/{d}/queue/scheduler" for d in devices] + [
                       ("echo 'ACTION==\"add|change\", KERNEL==\"nvme[0-9]*n[0-9]*|sd[a-z]*\", "
                        "ATTR{queue/rotational}==\"0\", ATTR{queue/scheduler}=\"none\"' "
                        "> /etc/udev/rules.d/60-kvmio-scheduler.rules")],
                   takes_effect="live")]


def _start_backend(what: str) -> Remedies:
    def remedy(target: Target, facts: HostFacts | None) -> list[Remedy]:
        sock = target.disk.source_path if target.disk is not None else None
        return [Remedy(f"{target.id}: {what} {sock}", takes_effect="live")]
    return remedy


def _guest_scheduler(target: Target, facts: HostFacts | None) -> list[Remedy]:
    return [Remedy(f"{target.id}: in the guest, scheduler none on virtio disks (now and at boot)",
                   guest_commands=["for q in /sys/block/vd*/queue/scheduler; do echo none > \"$q\"; done",
                                   ("echo 'ACTION==\"add|change\", KERNEL==\"vd[a-z]*\", "
                                    "ATTR{queue/scheduler}=\"none\"' > /etc/udev/rules.d/60-kvmio-scheduler.rules")],
                   takes_effect="live")]


def _guest_queues(target: Target, facts: HostFacts | None) -> list[Remedy]:
    return [Remedy(f"{target.id}: the guest's virtio driver opens fewer queues than configured; use a guest "
                   "kernel ≥ 5.0 (virtio-blk multiqueue) or check virtio_blk.num_request_queues on its command line",
                   takes_effect="restart")]


def _guest_irq(target: Target, facts: HostFacts | None) -> list[Remedy]:
    return [Remedy(f"{target.id}: spread the disk's virtio interrupts in the guest (irqbalance, or "
                   "smp_affinity per queue)", guest_commands=["systemctl enable --now irqbalance"], takes_effect="live")]


def _runtime_pinning(target: Target, facts: HostFacts | None) -> list[Remedy]:
    domain = target.domain
    assert domain is not None
    host_cpus = facts.host_cpus.cpus if facts is not None and facts.host_cpus else None
    commands = []
    for drift in runtime_pinning(domain, host_cpus).drifts:
        cpus = format_cpuset(drift.declared)
        if drift.declared_by.startswith("unpinned"):
            commands.append(f"taskset -pc {cpus} {drift.tid}")
        else:
            verb = "vcpupin" if drift.kind == "vCPU" else "iothreadpin"
            commands.append(f"virsh {verb} {shlex.quote(domain.name)} {drift.number} {cpus} --live")
    return [Remedy(f"{target.id}: put the threads back on the CPUs the XML pins them to (libvirt resets the thread's "
                   "cgroup cpuset and affinity); then find what moved them", host_commands=commands,
                   takes_effect="live")] if commands else []


def _restart(what: str) -> Remedies:
    def remedy(target: Target, facts: HostFacts | None) -> list[Remedy]:
        domain = target.domain
        assert domain is not None
        name = shlex.quote(domain.name)
        wait = shlex.quote(f"until virsh domstate {name} | grep -q 'shut off'; do sleep 2; done")
        return [Remedy(f"{target.id}: {what}", host_commands=[
            f"virsh shutdown {name}", f"timeout 300 sh -c {wait}", f"virsh start {name}"], takes_effect="restart")]
    return remedy


def _scheduler_at_boot(target: Target, facts: HostFacts | None) -> list[Remedy]:
    return [Remedy(f"{target.id}: in the guest, a udev rule that sets none on virtio disks at every boot",
                   guest_commands=[("echo 'ACTION==\"add|change\", KERNEL==\"vd[a-z]*\", "
                                    "ATTR{queue/scheduler}=\"none\"' > /etc/udev/rules.d/60-kvmio-scheduler.rules")],
                   takes_effect="live")]


XML_REMEDIES: dict[str, Remedies] = {
    "disk-io-mode-valid": _io_mode,
    "disk-direct-io-for-async": _direct_io,
    "disk-native-not-sparse": _not_sparse,
    "disk-iothread-assigned": _iothread,
    "disk-multiqueue": _multiqueue,
    "disk-discard-unmap": _discard,
    "disk-cache-safe": _cache_safe,
    "disk-vhost-shared-memory": _vhost_memory,
    "disk-vhost-reconnect": _vhost_reconnect,
    "domain-iothread-pinned": _pinned,
}
OTHER_REMEDIES: dict[str, Remedies] = {
    "disk-io-uring-supported": _io_uring_host,
    "host-kernel-min": _upgrade("kernel ≥ 5.10", "linux-image-amd64"),
    "host-qemu-min": _upgrade("QEMU ≥ 5.0", "qemu-system-x86"),
    "host-libvirt-min": _upgrade("libvirt ≥ 6.3", "libvirt-daemon"),
    "host-io-uring-enabled": _allow_io_uring,
    "host-scheduler-none": _host_scheduler,
    "disk-vhost-backend-queues": _start_backend(
        "start the vhost-user backend with at least as many queues as the disk asks for, serving"),
    "disk-vhost-backend-serving": _start_backend("start the vhost-user backend serving"),
    "guest-scheduler-none": _guest_scheduler,
    "guest-queues-active": _guest_queues,
    "guest-irq-spread": _guest_irq,
    "guest-scheduler-persistent": _scheduler_at_boot,
    "domain-runtime-pinning": _runtime_pinning,
    "disk-runtime-settings": _restart("restart the domain so QEMU runs the disk settings of its XML (shut down, start)"),
    "domain-pending-restart": _restart("restart the domain so its persistent definition takes effect (or `kvmio fix "
                                       "--apply --restart`, which checks the result)"),
}


def remedies(rule: str, target: Target, facts: HostFacts | None) -> list[Remedy]:
    """Return the fixes of `rule` on `target`, preferred first ([] when it meets the rule or the rule has none)."""
    entry = lookup(rule)
    if entry is not None and entry.applies is not None and entry.fix != "measurement" and entry.applies(Scope(target)):
        return []
    found = XML_REMEDIES.get(rule) or OTHER_REMEDIES.get(rule)
    return found(target, facts) if found else []


def offline_target(domain: Domain, facts: HostFacts, disk: Disk | None = None, *,
                   neighbours: Sequence[Domain] = ()) -> Target:
    """Return a target of a domain (or one of its disks) on a host with `facts` (and `neighbours`, its other domains)."""
    host = HostTarget(name=facts.name, spec=None, facts=facts, domains=[domain, *neighbours])
    return Target(host, domain, disk)
