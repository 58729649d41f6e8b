"""The one list of hosts, domains and disks that kvmio parametrizes tests over."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_kvmio.facts.connection import HostSpec, HostUnreachable, open_readonly
from pytest_kvmio.facts.host import FactsError, HostFacts, collect_host_facts
from pytest_kvmio.model.domain import Disk, Domain
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.model.xmlfiles import FileProblem

OFFLINE_HOST = "offline"
#: libvirt's test driver (test:///default) runs no QEMU, but kvmio's own tests use it as QEMU's stand-in:
#: over a test:// connection its type='test' domains are judged like QEMU's. Everywhere else they are left out.
TEST_DRIVER_STAND_IN = ("test",)


@dataclass(frozen=True)
class LeftOut:
    """A domain kvmio does not judge (another hypervisor driver runs it), with why."""

    domain: str
    source: str | None
    reason: str


@dataclass
class HostTarget:
    """A hypervisor with its facts and domains, or the reason it could not be read."""

    name: str
    spec: HostSpec | None
    facts: HostFacts
    domains: list[Domain] = field(default_factory=list)
    error: str | None = None
    testinfra_host: Any = None
    connection: Any = None
    #: Domains not judged: not run by QEMU (xen, lxc, bhyve, ...).
    left_out: list[LeftOut] = field(default_factory=list)
    #: Offline: files that could not be read or parsed (each becomes an error item).
    unreadable: list[FileProblem] = field(default_factory=list)

    @property
    def offline(self) -> bool:
        """Return True for the offline host of domain XML files or fio results (decided where its facts are made)."""
        return self.facts.offline

    @property
    def stand_in(self) -> tuple[str, ...]:
        """Return the domain types judged as QEMU's on this host besides kvm, qemu, hvf (see TEST_DRIVER_STAND_IN)."""
        return TEST_DRIVER_STAND_IN if (self.facts.libvirt_uri or "").startswith("test:") else ()

    def leave_out_other_drivers(self) -> None:
        """Keep the domains QEMU runs; list the others in `left_out` with why."""
        kept = []
        for dom in self.domains:
            why = dom.not_run_by_qemu(self.stand_in)
            if why is None:
                kept.append(dom)
            else:
                self.left_out.append(LeftOut(dom.id, dom.source if self.offline else None, why))
        self.domains = kept


@dataclass(frozen=True)
class Target:
    """One parametrization value: a host, a host's domain, or a domain's disk."""

    host: HostTarget
    domain: Domain | None = None
    disk: Disk | None = None

    @property
    def id(self) -> str:
        if self.disk is not None:
            return self.disk.id
        if self.domain is not None:
            return self.domain.id
        return self.host.name

    @property
    def level(self) -> str:
        return "disk" if self.disk else "domain" if self.domain else "host"


def load_host(spec: HostSpec, uri_template: str | None, progress: Callable[[str], None],
              domains: Sequence[str] = ()) -> HostTarget:
    """Connect to one host (testinfra + read-only libvirt) and read its facts; never raise.

    `domains` (`--domain` globs) selects the domains whose images and QEMU processes the host command reads (every
    domain's XML is still read: fixes place IOThreads away from the neighbours' pins).
    """
    import testinfra

    uri = spec.libvirt_uri(uri_template)
    target = HostTarget(name=spec.name, spec=spec, facts=HostFacts(name=spec.name, libvirt_uri=uri))
    progress(redact_uri(f"kvmio: reading facts of {spec.name} ({spec.testinfra_spec}, {uri})"))
    try:
        target.testinfra_host = testinfra.get_host(spec.testinfra_spec)
        try:
            probe = target.testinfra_host.run("true")
        except RuntimeError as exc:  # testinfra's ssh backend raises on exit 255 (ssh itself failed)
            probe = exc.args[0] if exc.args and hasattr(exc.args[0], "stderr") else None
            if probe is None:
                raise
        if probe.rc != 0:
            raise HostUnreachable(
                f"{spec.name}: cannot run commands via {spec.testinfra_spec} (exit {probe.rc}): "
                f"{probe.stderr.strip()[:300] or 'no error text'}; check the host name, SSH access and keys"
            )
        target.connection = open_readonly(uri, host=spec.name)
        target.facts, target.domains = collect_host_facts(
            spec.name, target.testinfra_host, target.connection, uri,
            wanted=(lambda name: matches_any(name, domains)) if domains else None,
        )
        target.facts.libvirt_uri = uri
        target.leave_out_other_drivers()
    except (HostUnreachable, FactsError) as exc:
        target.error = redact_uri(str(exc))
    except Exception as exc:  # testinfra backends raise their own types for connection failures
        target.error = redact_uri(f"{spec.name}: unreachable via {spec.testinfra_spec}: {type(exc).__name__}: {exc}")
    return target


def matches_any(name: str, globs: Sequence[str]) -> bool:
    """Return whether a domain name matches any `--domain` glob (case-sensitive, as libvirt's names are)."""
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def filter_domains(hosts: list[HostTarget], globs: list[str] | None) -> list[str]:
    """Keep domains matching any glob; return the globs that matched nothing on a readable host."""
    if not globs:
        return []
    used: set[str] = set()
    for host in hosts:
        kept = []
        for dom in host.domains:
            hits = [g for g in globs if fnmatch.fnmatchcase(dom.name, g)]
            used.update(hits)
            if hits:
                kept.append(dom)
        host.domains = kept
    readable = any(h.error is None for h in hosts)
    return [g for g in globs if g not in used] if readable else []


def iter_targets(hosts: list[HostTarget], level: str) -> Iterator[Target]:
    """Yield the targets of a level; an unreadable host yields one target that carries its error."""
    for host in hosts:
        if level == "host" or host.error is not None:
            yield Target(host)
            continue
        for dom in host.domains:
            if level == "domain":
                yield Target(host, dom)
            else:
                for disk in dom.disks:
                    if disk.is_storage:
                        yield Target(host, dom, disk)


def item_target(item: Any) -> Target | None:
    """Return the target kvmio parametrized a test item with (None for items that are not kvmio's)."""
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("kvmio_target") if callspec is not None else None
    return value if isinstance(value, Target) else None
