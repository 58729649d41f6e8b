"""Runtime rules: what the running QEMU really does, read from the host, not what the domain XML declares."""

from __future__ import annotations

import pytest

from pytest_kvmio.model.checks import pending_changes, runtime_pinning, runtime_settings
from pytest_kvmio.model.cpuset import format_cpuset


@pytest.mark.rule("domain-runtime-pinning")
def test_threads_run_where_the_xml_pins_them(domain, hypervisor, kvmio_facts):
    """Threads moved behind libvirt's back (tuned, a hook, a taskset, a narrowed cgroup) run elsewhere than the XML says."""
    host_cpus = hypervisor.host_cpus.cpus if hypervisor.host_cpus else None
    pinning = runtime_pinning(domain, host_cpus)
    kvmio_facts.update(threads={t.name: format_cpuset(t.runs_on) for t in domain.runtime.threads if t.runs_on}
                       if domain.runtime else {}, not_compared=pinning.unknown)
    if pinning.holds is None:
        pytest.skip(f"{domain.id}: no thread could be compared: {'; '.join(pinning.unknown)}")
    drifts = [f"{d.thread} declared {format_cpuset(d.declared)} ({d.declared_by}) but runs on {format_cpuset(d.actual)}"
              for d in pinning.drifts]
    assert pinning.holds, (
        f"{domain.id}: " + "; ".join(drifts) + ". Find what moved them (tuned, a hook, taskset, the cgroup's cpuset) "
        "and re-apply the XML's pins: virsh vcpupin / virsh iothreadpin DOMAIN N CPUS --live"
    )


@pytest.mark.rule("disk-runtime-settings")
def test_qemu_runs_the_disk_settings_the_xml_declares(disk, kvmio_facts):
    """The other disk rules judge the XML; this one checks QEMU runs what the XML says, so their verdicts hold."""
    found = runtime_settings(disk)
    if found.holds is None:
        pytest.skip(f"{disk.id}: {found.unknown}")
    settings = disk.domain.runtime.disks[disk.alias]
    kvmio_facts.update(qemu=settings.as_dict())
    differences = ", ".join(f"{name} {xml} in the XML but {qemu} in QEMU" for name, xml, qemu in found.differences)
    assert found.holds, (
        f"{disk.id}: {differences} ({found.source}); the running QEMU does not do what libvirt reports: restart the "
        "domain so it runs its XML, and look for what changed it (a hook, a QMP command, a wrapper around QEMU)"
    )


@pytest.mark.rule("domain-pending-restart")
def test_no_storage_change_waits_for_a_restart(domain, kvmio_facts):
    """A definition changed on a running domain (virsh define, kvmio fix --apply) takes effect only at its restart."""
    changes = pending_changes(domain)
    if changes is None:
        pytest.skip(f"{domain.id}: transient domain: no persistent definition to compare")
    kvmio_facts.update(pending={name: {"running": now, "persistent": then} for name, now, then in changes})
    listed = "; ".join(f"{name}: {now} → {then}" for name, now, then in changes)
    assert not changes, (
        f"{domain.id}: the persistent definition differs from the running domain in {listed}; these take effect at the "
        "next restart (virsh shutdown, then virsh start; `kvmio fix --apply --restart` does it and checks the result)"
    )
