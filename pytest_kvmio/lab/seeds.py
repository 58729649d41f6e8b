"""The lab's runtime seeds (issue 20): what only a running domain can be given, applied after boot on every
`kvmio lab up`. A restart loses each of them; applying one that already holds changes nothing.

- An IOThread moved off its pin behind libvirt's back (topology `drift_iothreads`). libvirt puts a pinned thread in
  a cpuset cgroup of its own holding just its pin, so a `taskset` to another CPU is refused (EINVAL: no CPU of the
  new mask is in the cpuset); the seed narrows that cgroup's cpuset instead, which is what a host slice or a tuned
  profile does, and the kernel moves the thread's affinity with it. Without a cpuset cgroup it uses
  sched_setaffinity (taskset).
- A pending restart (topology `pending_restart`): a <driver> attribute changed in the persistent definition only.
- A guest scheduler set by hand (topology `guest_scheduler_by_hand`), lost at the next reboot.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import libvirt
from lxml import etree

from pytest_kvmio.errors import CommandError
from pytest_kvmio.facts.guest import agent_host
from pytest_kvmio.facts.guest_errors import GuestError
from pytest_kvmio.lab import topology
from pytest_kvmio.model.cpuset import format_cpuset, parse_cpuset

PID_DIR = Path("/run/libvirt/qemu")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def apply(conn: libvirt.virConnect) -> list[str]:
    """Apply every runtime seed of the running lab domains; return one line per seed saying what was done."""
    notes: list[str] = []
    for spec in topology.DOMAINS:
        if not spec.running:
            continue
        dom = conn.lookupByName(spec.name)
        if not dom.isActive():
            continue
        for target, attribute, value in spec.pending_restart:
            notes.append(pending_restart(conn, dom, target, attribute, value))
        for iothread, cpus in sorted(spec.drift_iothreads.items()):
            notes.append(drift_iothread(spec.name, iothread, parse_cpuset(cpus)))
        for disk in spec.disks:
            if disk.guest_scheduler_by_hand is not None:
                notes.append(scheduler_by_hand(conn, dom, disk))
    return notes


def _driver(root: etree._Element, target: str) -> etree._Element | None:
    """Return the <driver> of disk `target` in a domain's XML, None without one."""
    return next((d.find("driver") for d in root.iterfind("devices/disk")
                 if d.find(f"target[@dev='{target}']") is not None), None)


def pending_in_effect(dom: libvirt.virDomain, spec: topology.DomainSpec) -> list[str]:
    """Return the pending-restart seeds a domain already runs with, or would start with when stopped.

    A seed lives in the persistent definition only, so it becomes real as soon as the domain starts from that
    definition: after a host reboot, a crash or a `virsh start`. The lab must then define the domain afresh (and start
    it again) for the seed to be pending once more; `kvmio lab up` does that in its define step.
    """
    if not spec.pending_restart:
        return []
    root = etree.fromstring(dom.XMLDesc(0).encode())  # the live XML when running, the persistent one when stopped
    found = []
    for target, attribute, value in spec.pending_restart:
        driver = _driver(root, target)
        if driver is not None and driver.get(attribute) == value:
            found.append(f"{target} {attribute}='{value}'")
    return found


def pending_restart(conn: libvirt.virConnect, dom: libvirt.virDomain, target: str, attribute: str, value: str) -> str:
    """Set <driver attribute=value> of disk `target` in the persistent definition of a running domain."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    root = etree.fromstring(dom.XMLDesc(flags).encode())
    driver = _driver(root, target)
    if driver is None:
        raise CommandError(f"{dom.name()}: no disk {target} with a <driver> to seed a pending restart on")
    live = _driver(etree.fromstring(dom.XMLDesc(0).encode()), target)
    if live is not None and live.get(attribute) == value:
        raise CommandError(f"{dom.name()}: {target} already runs with {attribute}='{value}', so a restart would change "
                           "nothing; `kvmio lab up` defines the domain afresh and starts it again when it finds this")
    if driver.get(attribute) == value:
        return f"{dom.name()}/{target}: {attribute}='{value}' already waits for a restart"
    driver.set(attribute, value)
    try:
        conn.defineXML(etree.tostring(root, encoding="unicode"))
    except libvirt.libvirtError as exc:
        raise CommandError(f"{dom.name()}: libvirt refused the pending-restart seed ({attribute}='{value}' on "
                           f"{target}): {exc.get_error_message()}") from exc
    return f"{dom.name()}/{target}: {attribute}='{value}' defined, in effect at the next restart"


def _thread(name: str, comm: str) -> tuple[int, int]:
    """Return (QEMU pid, thread id) of the thread named `comm` in domain `name`'s QEMU."""
    try:
        pid = int((PID_DIR / f"{name}.pid").read_text().strip())
    except (OSError, ValueError) as exc:
        raise CommandError(f"{name}: no QEMU pid in {PID_DIR / (name + '.pid')}: {exc}") from exc
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == comm:
                return pid, int(task.name)
        except OSError:
            continue
    raise CommandError(f"{name}: QEMU (pid {pid}) has no thread named {comm!r}")


def _cpuset_file(tid: int) -> Path | None:
    """Return the cpuset.cpus file of the thread's cpuset cgroup (v1 controller, else v2), None without one."""
    for line in Path(f"/proc/{tid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuset" in controllers.split(","):
            candidate = CGROUP_ROOT / "cpuset" / path.lstrip("/") / "cpuset.cpus"
            if candidate.exists():
                return candidate
        if controllers == "":
            candidate = CGROUP_ROOT / path.lstrip("/") / "cpuset.cpus"
            if candidate.exists():
                return candidate
    return None


def drift_iothread(name: str, iothread: int, cpus: frozenset[int]) -> str:
    """Move IOThread `iothread` of domain `name` onto `cpus` behind libvirt's back."""
    _, tid = _thread(name, f"IO iothread{iothread}")
    if os.sched_getaffinity(tid) == cpus:
        return f"{name}: IOThread {iothread} (thread {tid}) already runs on {format_cpuset(cpus)}"
    cpuset = _cpuset_file(tid)
    how = "sched_setaffinity"
    if cpuset is not None:
        cpuset.write_text(format_cpuset(cpus))
        how = f"its cgroup's {cpuset}"
    else:
        os.sched_setaffinity(tid, cpus)
    if os.sched_getaffinity(tid) != cpus:
        raise CommandError(f"{name}: IOThread {iothread} (thread {tid}) still runs on "
                           f"{format_cpuset(os.sched_getaffinity(tid))} after setting {format_cpuset(cpus)} via {how}")
    return f"{name}: IOThread {iothread} (thread {tid}) moved to {format_cpuset(cpus)} via {how}"


def scheduler_by_hand(conn: libvirt.virConnect, dom: libvirt.virDomain, disk: topology.DiskSpec) -> str:
    """Write the disk's scheduler in the guest over the agent, found by serial (what a reboot undoes)."""
    sched, serial = disk.guest_scheduler_by_hand, disk.serial
    if serial is None or sched is None:
        raise CommandError(f"{dom.name()}/{disk.target}: a scheduler set by hand needs the disk's serial to find it")
    cmd = (f"for d in /sys/block/*; do [ \"$(cat $d/serial 2>/dev/null)\" = {shlex.quote(serial)} ] && "
           f"echo {shlex.quote(sched)} > $d/queue/scheduler && echo ${{d##*/}}; done; true")
    try:
        result = agent_host(dom, conn=conn, command_timeout=30).run(cmd)
    except GuestError as exc:
        raise CommandError(f"{dom.name()}/{disk.target}: could not set the guest scheduler over the agent: {exc}") from exc
    device = result.stdout.strip()
    if result.rc != 0 or not device:
        raise CommandError(f"{dom.name()}/{disk.target}: no guest disk with serial {serial} took scheduler {sched} "
                           f"(exit {result.rc}: {(result.stderr or result.stdout).strip()[:200]})")
    return f"{dom.name()}/{disk.target}: guest {device} set to {sched} by hand (until the next reboot)"
