"""Session state, in one low module: the loaded targets, the verdicts, what was asked of guests.

`plugin.pytest_configure` creates it and stores it under `STATE`; fixtures, reporters and the perf
glue read it from `config.stash[STATE]`. It imports nothing above the collection and report layers:
how targets are loaded is handed in (`loader`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_kvmio.facts.targets import HostTarget
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.verdict.record import Enricher, VerdictCollector


@dataclass
class KvmioState:
    """Session state: where targets come from, the loaded hosts, the verdicts, guests asked once."""

    config: pytest.Config
    loader: Callable[[], list[HostTarget]]
    collector: VerdictCollector = field(default_factory=VerdictCollector)
    _hosts: list[HostTarget] | None = None
    #: Per domain id: the guest's testinfra Host, or why it can't be reached (asked once per session).
    guests: dict[str, Any] = field(default_factory=dict)
    #: Per domain id: libvirt target dev -> GuestDisk or Unmapped.
    guest_disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each guest's boot-time scheduler settings (facts.guestboot), by domain id, read once.
    guest_boots: dict[str, Any] = field(default_factory=dict)
    #: Test functions (node ids) whose (target, case) pairs were judged applicable at parametrization.
    prechecked: set[str] = field(default_factory=set)
    #: Test functions (node ids) none of whose (target, case) pairs a rule concerns: their placeholder item goes.
    emptied: set[str] = field(default_factory=set)
    #: Per target (its host, domain and disk, by identity): its facts as the verdict records carry them, built once.
    target_facts: dict[tuple[int, int, int], dict[str, Any]] = field(default_factory=dict)
    #: Under pytest-xdist the controller loads no host: the workers' host summaries (see host_summaries).
    worker_hosts: list[dict[str, Any]] = field(default_factory=list)
    #: The verdict record's enrichers (waiver, fix, Allure), in the order they apply (report.plugin.register).
    enrichers: list[Enricher] = field(default_factory=list)
    #: Under pytest-xdist: the workers' list of domains left out (see left_out).
    worker_left_out: list[dict[str, Any]] = field(default_factory=list)

    def hosts(self) -> list[HostTarget]:
        """Load the targets on first use: offline XML files, fio result directories, or live hosts."""
        if self._hosts is None:
            self._hosts = self.loader()
        return self._hosts

    @property
    def loaded_hosts(self) -> list[HostTarget]:
        return self._hosts or []

    def left_out(self) -> list[dict[str, Any]]:
        """Return the domains no rule judged (another driver runs them), with why (the workers' under xdist)."""
        if self._hosts is None:
            return self.worker_left_out
        return [{"domain": d.domain, "source": d.source, "reason": d.reason} for h in self._hosts for d in h.left_out]

    def host_summaries(self) -> list[dict[str, Any]]:
        """Return each loaded host's facts as plain values with its error (the workers' under xdist)."""
        if self._hosts is None:
            return self.worker_hosts
        return [h.facts.as_dict() | {"error": h.error} for h in self._hosts]

    @property
    def in_use(self) -> bool:
        """Return True when this run checks something with kvmio (targets named, loaded, or rules run)."""
        return run_config(self.config).names_targets or self._hosts is not None or bool(self.collector.verdicts)


def describe_left_out(left_out: list[dict[str, Any]]) -> str:
    """Say how many domains were not judged and why, in one line (`3 domains not run by QEMU: xen 2, lxc 1 ...`)."""
    kinds: dict[str, int] = {}
    for entry in left_out:
        kind = str(entry["reason"]).split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    each = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
    return f"{len(left_out)} domain(s) not run by QEMU, not judged ({each}); kvmio's rules concern kvm, qemu and hvf domains"


STATE = pytest.StashKey[KvmioState]()

#: Per test function: the parameters a suite hands to kvmio to parametrize together with the targets.
CASES = pytest.StashKey[tuple[list[str], list[Any]]]()


def parametrize_with_targets(metafunc: pytest.Metafunc, argnames: str, params: list[Any]) -> None:
    """Parametrize `argnames` together with kvmio's targets (call it from a suite's `pytest_generate_tests`).

    kvmio then leaves out each (target, parameters) pair the rule does not concern before any test item
    is made, so a fleet's not-applicable pairs cost no item. `params` are `pytest.param(...)` with ids
    (and per-case `rule` marks) or plain values.
    """
    names = [n.strip() for n in argnames.split(",")]
    metafunc.definition.stash[CASES] = (names, list(params))
