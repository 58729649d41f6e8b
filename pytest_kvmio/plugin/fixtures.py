"""kvmio's public fixtures; registered in pytest_configure so they win over pytest-testinfra's `host`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_kvmio.errors import CouldNotJudge
from pytest_kvmio.facts.guest import guest_host
from pytest_kvmio.facts.guest_errors import GuestError, GuestUnavailable
from pytest_kvmio.facts.guestboot import read_guest_boot
from pytest_kvmio.facts.guestmap import Unmapped, map_guest_disks
from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.facts.targets import Target
from pytest_kvmio.model.domain import Disk, Domain
from pytest_kvmio.perf.diskfio import DiskFio
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.state import STATE
from pytest_kvmio.verdict.record import EXTRA_FACTS, REC_NOTE, REC_OUTCOME, item_record


def _target(request: pytest.FixtureRequest) -> Target:
    target = getattr(request, "param", None)
    if not isinstance(target, Target):
        pytest.fail(
            f"{request.node.nodeid}: kvmio_target is set by kvmio's parametrization; "
            "request host/hypervisor/domain/disk directly instead of parametrizing kvmio_target",
            pytrace=False,
        )
    if target.host.error is not None:
        pytest.fail(target.host.error, pytrace=False)
    return target


@pytest.fixture
def kvmio_target(request: pytest.FixtureRequest) -> Target:
    """The host, domain or disk this test item checks (kvmio parametrizes it)."""
    return _target(request)


@pytest.fixture
def host(kvmio_target: Target) -> Any:
    """The hypervisor as a testinfra Host (`host.run`, `host.file`, `host.sysctl`), facts in `host.kvmio`."""
    if kvmio_target.host.offline:
        pytest.skip("offline lint (--domain-xml): there is no host to check; pass --host to check one")
    testinfra_host = kvmio_target.host.testinfra_host
    testinfra_host.kvmio = kvmio_target.host.facts
    return testinfra_host


@pytest.fixture
def hypervisor(kvmio_target: Target) -> HostFacts:
    """Facts of the hypervisor: versions, io_uring support, block devices, read-only libvirt connection."""
    facts = kvmio_target.host.facts
    facts.connection = kvmio_target.host.connection
    return facts


@pytest.fixture
def domain(kvmio_target: Target) -> Domain:
    """One libvirt domain, parsed from its XML."""
    assert kvmio_target.domain is not None, "kvmio parametrizes `domain` per domain"
    return kvmio_target.domain


@pytest.fixture
def disk(kvmio_target: Target) -> Disk:
    """One data disk (device disk or lun) of one domain."""
    assert kvmio_target.disk is not None, "kvmio parametrizes `disk` per disk"
    return kvmio_target.disk


@pytest.fixture
def kvmio_facts(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict a rule fills with the values its verdict used; they go to the JSON summary and reports."""
    return request.node.stash.setdefault(EXTRA_FACTS, {})


@pytest.fixture
def kvmio_record(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """Set part of this item's verdict record: `kvmio_record("kvmio_note", text)` (shown for a pass) or
    `kvmio_record("kvmio_outcome", "inconclusive")`. Unlike `record_property`, nothing goes to JUnit's
    per-testcase properties, which the xunit2 family forbids."""
    record = item_record(request.node)

    def set_value(name: str, value: object) -> None:
        key = {"kvmio_note": REC_NOTE, "kvmio_outcome": REC_OUTCOME}.get(name)
        if key is None:
            raise ValueError(f"kvmio_record: unknown key {name!r}; use kvmio_note or kvmio_outcome")
        record[key] = value

    return set_value


def _state(request: pytest.FixtureRequest) -> Any:

    return request.config.stash[STATE]


#: Why a guest can't be used that is the guest's own state or configuration (the rule could be judged
#: once that changes): its items skip. Anything else (libvirt gone, agent silent) is an error.
GUEST_SKIP_REASONS = (
    "domain not running", "domain not found", "agent not configured", "guest-exec disabled",
    "no agent support in the libvirt driver",
)


def _open_guest(target: Target, spec: str | None) -> Any:
    """Return the guest Host, a skip reason (str), or CouldNotJudge for an infrastructure fault."""

    assert target.domain is not None
    if target.domain.running is False:
        return f"{target.domain.id}: domain not running; start it to check the guest side"
    try:
        dom = target.host.connection.lookupByName(target.domain.name)
        return guest_host(spec, dom, target.host.facts.libvirt_uri)
    except GuestUnavailable as exc:
        if exc.reason in GUEST_SKIP_REASONS:
            return f"{target.domain.id}: guest unavailable: {exc}"
        return CouldNotJudge(f"{target.domain.id}: guest unreachable: {exc}")
    except GuestError as exc:
        return CouldNotJudge(f"{target.domain.id}: guest unreachable: {exc}")
    except Exception as exc:
        if type(exc).__name__ != "libvirtError":  # a dead libvirtd: the lookup itself fails
            raise
        return CouldNotJudge(f"{target.domain.id}: libvirt error while opening the guest: {exc}")


def guest_or_reason(config: pytest.Config, target: Target) -> Any:
    """Return the target domain's guest Host, or why it can't be reached (asked once per domain)."""
    if target.host.offline or target.domain is None:
        return "offline lint (--domain-xml): no guest to reach; pass --host"

    state = config.stash[STATE]
    key = target.domain.id
    if key not in state.guests:
        state.guests[key] = _open_guest(target, run_config(config).guest)
    return state.guests[key]


@pytest.fixture
def guest(kvmio_target: Target, request: pytest.FixtureRequest) -> Any:
    """The domain's guest as a testinfra Host: QEMU guest agent by default, SSH with --guest."""
    found = guest_or_reason(request.config, kvmio_target)
    if isinstance(found, str):
        pytest.skip(found)
    if isinstance(found, CouldNotJudge):
        raise found
    return found


@pytest.fixture
def guest_disk(disk: Disk, guest: Any, request: pytest.FixtureRequest) -> Any:
    """The guest block device of `disk`, found by serial or SCSI address (never by vdX name)."""

    state = _state(request)
    key = disk.domain.id
    if key not in state.guest_disks:
        try:
            state.guest_disks[key] = map_guest_disks(guest, [d for d in disk.domain.disks if d.is_storage])
        except GuestError as exc:  # the guest (or the daemon behind its agent) went away after it answered
            raise CouldNotJudge(f"{key}: guest unreachable: {exc}") from None
    found = state.guest_disks[key].get(disk.target)
    if found is None or isinstance(found, Unmapped):
        why = found.reason if found is not None else "not probed"
        pytest.fail(f"{disk.id}: cannot find this disk in the guest: {why}", pytrace=False)
    return found


@pytest.fixture
def guest_boot(domain: Domain, guest: Any, request: pytest.FixtureRequest) -> Any:
    """What sets the guest's I/O schedulers at boot (`model.guestboot.BootProbe`), read once per guest."""
    state = _state(request)
    if domain.id not in state.guest_boots:
        try:
            state.guest_boots[domain.id] = read_guest_boot(guest)
        except GuestError as exc:  # the guest (or the daemon behind its agent) went away after it answered
            raise CouldNotJudge(f"{domain.id}: guest unreachable: {exc}") from None
    return state.guest_boots[domain.id]


@pytest.fixture
def fio(kvmio_target: Target, request: pytest.FixtureRequest) -> Any:
    """fio for this disk: `fio.run("randread-4k-qd32x4")` → PerfResult (repeated runs, medians, host CPU/IO).

    Write profiles run only on scratch disks (serial glob + no signature, checked in the guest first);
    read profiles run with --readonly. With --fio-results, results are read from files instead.
    """

    if kvmio_target.disk is None:
        pytest.fail(f"{request.node.nodeid}: the fio fixture needs a disk-level target", pytrace=False)
    return DiskFio(request, kvmio_target)
