"""kvmio's markers: registration and the `requires_*` checks against host facts."""

from __future__ import annotations

import pytest

from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.model.versions import Requirement

MARKERS = {
    "rule(id, severity=None, facts=None, applies=None)": "a catalogue rule; its id names the verdict in reports and "
    "waivers; severity and applicability come from the catalogue (pytest_kvmio.verdict.catalogue) unless given here",
    "requires_io_uring": "skip unless the host supports io_uring (kernel >= 5.1, QEMU >= 5.0, libvirt >= 6.3, "
    "kernel.io_uring_disabled = 0)",
    "requires_kernel(spec)": "skip unless the host kernel satisfies spec, e.g. '>=5.10'",
    "requires_qemu(spec)": "skip unless the host QEMU satisfies spec, e.g. '>=5.0'",
    "requires_libvirt(spec)": "skip unless the host libvirt satisfies spec, e.g. '>=6.3'",
    "requires_guest_agent": "skip unless the domain runs and its QEMU guest agent answers",
    "perf": "runs fio in guests (slow); deselect with -m 'not perf'",
}


def register(config: pytest.Config) -> None:
    """Declare every kvmio marker so --strict-markers accepts them."""
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


def unmet_requirement(item: pytest.Item, facts: HostFacts | None) -> str | None:
    """Return why an item's `requires_*` markers are not met on its host, or None."""
    for marker in item.iter_markers():
        name = marker.name
        if name == "requires_io_uring":
            if facts is None:
                return "requires io_uring: no host facts"
            ok, why = facts.io_uring_support()
            if ok is None:
                return f"requires io_uring: {why} on {facts.name}" + _offline_hint(facts)
            if not ok:
                return f"requires io_uring: {facts.name} has {why}"
        elif name in ("requires_kernel", "requires_qemu", "requires_libvirt"):
            what = name.removeprefix("requires_")
            if len(marker.args) != 1:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes one spec, e.g. '>=5.10'")
            try:
                req = Requirement.parse(str(marker.args[0]))
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name}: {exc}") from None
            found = getattr(facts, what, None) if facts else None
            if found is None:
                host = facts.name if facts else "the host"
                return f"requires {what} {req}: {what} version of {host} unknown" + (
                    _offline_hint(facts) if facts else ""
                )
            if not req(found):
                return f"requires {what} {req}: {facts.name if facts else 'host'} has {what} {found}"
    return None


def _offline_hint(facts: HostFacts) -> str:
    return " (offline; supply it with --assume kernel=...,qemu=...,libvirt=...)" if facts.offline else ""
