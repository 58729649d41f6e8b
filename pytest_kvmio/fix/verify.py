"""Whether a fix is in effect: judge a domain again on facts collected afresh from the host after it restarted.

`judge_in_effect` re-reads the host (facts/targets.load_host: a new read-only connection, the host's facts, each
domain's XML as it runs now) and runs the checks of the rules that were fixed on the domain's targets (the same
checks the suites assert on, through the remedies that ask them), then the runtime judges (`RUNTIME_JUDGES`: thread
affinity, QEMU's disk settings, a pending restart — model/checks.py's runtime checks, which the runtime suite asserts
on too); each returns its own judgements, none when the domain is not running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pytest_kvmio.facts.targets import HostTarget
from pytest_kvmio.fix.patch import findings
from pytest_kvmio.model.checks import pending_changes, runtime_pinning, runtime_settings
from pytest_kvmio.model.cpuset import format_cpuset
from pytest_kvmio.model.domain import Domain


@dataclass(frozen=True)
class Judgement:
    """One rule on one target after the restart."""

    rule: str
    target: str
    in_effect: bool
    #: What is still wrong (the remedy's summary, or a runtime judge's message); empty when in effect.
    message: str = ""

    def line(self) -> str:
        if self.in_effect:
            return f"{self.target}: {self.rule}: fixed and in effect"
        return f"{self.target}: {self.rule}: still wrong: {self.message}"


#: Judges of what runs: (host re-read, the domain as it runs) -> judgements. The live rules add theirs here.
RuntimeJudge = Callable[[HostTarget, Domain], list[Judgement]]


def _threads(host: HostTarget, domain: Domain) -> list[Judgement]:
    """domain-runtime-pinning: every vCPU and IOThread thread runs where the XML pins it."""
    host_cpus = host.facts.host_cpus.cpus if host.facts.host_cpus else None
    pinning = runtime_pinning(domain, host_cpus)
    if pinning.holds is None:
        return []
    drifts = "; ".join(f"{d.thread} runs on {format_cpuset(d.actual)}, declared {format_cpuset(d.declared)}"
                       for d in pinning.drifts)
    return [Judgement("domain-runtime-pinning", domain.id, bool(pinning.holds), drifts)]


def _qemu_settings(host: HostTarget, domain: Domain) -> list[Judgement]:
    """disk-runtime-settings: QEMU runs each disk's aio, cache and discard as the XML says."""
    out = []
    for disk in domain.disks:
        if not disk.is_storage or not disk.in_block_layer:
            continue
        found = runtime_settings(disk)
        if found.holds is not None:
            what = ", ".join(f"{name} {xml} in the XML but {qemu} in QEMU" for name, xml, qemu in found.differences)
            out.append(Judgement("disk-runtime-settings", disk.id, bool(found.holds), what))
    return out


def _pending(host: HostTarget, domain: Domain) -> list[Judgement]:
    """domain-pending-restart: nothing a storage rule judges waits for another restart."""
    changes = pending_changes(domain)
    if changes is None:
        return []
    waiting = "; ".join(f"{name}: {now} → {then}" for name, now, then in changes)
    return [Judgement("domain-pending-restart", domain.id, not changes, waiting)]


RUNTIME_JUDGES: list[RuntimeJudge] = [_threads, _qemu_settings, _pending]


def judge_in_effect(host: HostTarget, name: str, fixed: Iterable[tuple[str, str]]) -> list[Judgement]:
    """Judge domain `name` of a freshly loaded `host` on the rules fixed (`(rule, target id)` pairs), then every
    runtime judge; a rule that no longer fails on its target is in effect."""
    domain = next((d for d in host.domains if d.name == name), None)
    pairs = list(dict.fromkeys(fixed))
    if domain is None:
        return [Judgement(rule, target, False, f"{name} is no longer defined on {host.name}") for rule, target in pairs]
    rules = list(dict.fromkeys(rule for rule, _ in pairs))
    failing = {(f.rule, f.target): f for f in findings(domain, host.facts, rules)}
    out = []
    for rule, target in pairs:
        still = failing.pop((rule, target), None)
        out.append(Judgement(rule, target, still is None, still.remedies[0].summary if still is not None else ""))
    # A fixed rule failing on another target of the domain (a disk the fix did not touch) is wrong all the same.
    out.extend(Judgement(f.rule, f.target, False, f.remedies[0].summary) for f in failing.values())
    for judge in RUNTIME_JUDGES:
        out.extend(judge(host, domain))
    return out
