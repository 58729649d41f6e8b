"""Fix a domain's XML: plan the remedies of every failed rule, apply their edits, and diff redacted text.

Fixing is repeated until nothing changes (a disk given an IOThread makes `domain-iothread-pinned` apply), so the
patched XML meets every rule kvmio can fix in XML, and fixing it again changes nothing.
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.facts.targets import Target
from pytest_kvmio.fix.edits import Edit
from pytest_kvmio.fix.remedies import XML_REMEDIES, Remedy, offline_target, remedies
from pytest_kvmio.fix.sourcetext import Change, NotEditable, SourceText, changes, decode, encode, redacted_source
from pytest_kvmio.model.domain import SAFE_PARSER, Domain, DomainXMLError, domain_of, parse_documents
from pytest_kvmio.model.redact import redacted_text
from pytest_kvmio.verdict.catalogue import lookup

#: Rounds of plan-and-apply (one remedy each) before giving up; a domain has far fewer findings than this.
MAX_ROUNDS = 256


@dataclass
class Finding:
    """A rule that failed on a target and what fixes it."""

    rule: str
    target: str
    remedies: list[Remedy]

    @property
    def applied(self) -> Remedy | None:
        """Return the remedy kvmio applies: the first that edits XML."""
        return next((r for r in self.remedies if r.fixes_xml), None)

    @property
    def why_left(self) -> str:
        """Say why no XML edit fixes it (a host or guest change, or a fact kvmio lacks)."""
        first = self.remedies[0]
        if first.needs:
            return f"needs {first.needs}"
        if first.host_commands:
            return "a host change: " + "; ".join(first.host_commands)
        if first.guest_commands:
            return "a guest change: " + "; ".join(first.guest_commands)
        return first.summary


@dataclass
class FixResult:
    """The outcome of fixing one domain's XML."""

    name: str
    before: str  # redacted
    after: str  # redacted
    fixed: list[Finding] = field(default_factory=list)
    left: list[Finding] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self, label: str | None = None) -> str:
        """Return the unified diff of the redacted XML."""
        name = label or self.name
        return "".join(difflib.unified_diff(
            _lines(self.before), _lines(self.after), fromfile=f"a/{name}", tofile=f"b/{name}"))


def _lines(text: str) -> list[str]:
    return [line + "\n" for line in text.splitlines()]


def targets_of(domain: Domain, facts: HostFacts, neighbours: Sequence[Domain] = ()) -> Iterable[tuple[str, Target]]:
    """Yield (level, target) for the domain and each of its storage disks (`neighbours`: the host's other domains)."""
    yield "domain", offline_target(domain, facts, neighbours=neighbours)
    for disk in domain.disks:
        if disk.is_storage:
            yield "disk", offline_target(domain, facts, disk, neighbours=neighbours)


def findings(domain: Domain, facts: HostFacts, rules: Iterable[str], neighbours: Sequence[Domain] = ()) -> list[Finding]:
    """Return every rule of `rules` that fails on the domain or its disks (by the catalogue's level), with its remedies.

    `neighbours`: the host's other domains (live), whose pins IOThread placement avoids crowding.
    """
    out = []
    levels = {rule: entry.level for rule in rules if (entry := lookup(rule)) is not None}
    for level, target in targets_of(domain, facts, neighbours):
        for rule, rule_level in levels.items():
            if rule_level != level:
                continue
            found = remedies(rule, target, facts)
            if found:
                out.append(Finding(rule, target.id, found))
    return out


def fix_domain(root: etree._Element, facts: HostFacts, rules: Iterable[str] | None = None, *,
               source: str = "domain", running: bool | None = None, template: Domain | None = None,
               stand_in: tuple[str, ...] = (), label: str | None = None,
               neighbours: Sequence[Domain] = ()) -> FixResult:
    """Fix the XML rules' failures of a parsed `<domain>` in place; return what changed and what is left.

    `root` may carry secrets (a file, or XML read with VIR_DOMAIN_XML_SECURE): the result's texts are redacted.
    `template` is the domain as read with its host facts (image allocation, vhost-user backends), kept across edits.
    `stand_in`: domain types fixed as QEMU's all the same (libvirt's test driver, see collect.targets).
    `label`: what target ids say instead of the name (offline: `<file>:<name>`, as lint names them).
    `neighbours`: the host's other domains (live): IOThreads are placed where their pins crowd least.
    """
    wanted = list(rules) if rules is not None else list(XML_REMEDIES)
    before = redacted_text(root)
    result = FixResult(source, before, before)
    if _reparse(root, source, facts, running, label).not_run_by_qemu(stand_in) is not None:
        return result  # another hypervisor driver's domain: kvmio's rules (and so its fixes) don't concern it
    seen_fixed: dict[tuple[str, str], Finding] = {}
    left: dict[tuple[str, str], Finding] = {}
    stuck: dict[tuple[str, str], Finding] = {}
    for _ in range(MAX_ROUNDS):
        domain = _reparse(root, source, facts, running, label)
        if template is not None:
            with_images(domain, template)
        found = findings(domain, facts, wanted, neighbours)
        left = {}
        applied = False
        for finding in found:
            remedy = finding.applied
            key = (finding.rule, finding.target)
            if remedy is None or key in stuck:
                left[key] = stuck.get(key, finding)
                continue
            text = etree.tostring(root)
            for edit in remedy.edits:
                edit(root)
                result.edits.append(edit)
            if etree.tostring(root) == text:  # an edit that changes nothing would be planned forever
                stuck[key] = finding
                finding.remedies.insert(0, Remedy(f"{remedy.summary}: kvmio's edit changed nothing; fix it by hand",
                                                  needs="a fix by hand (kvmio's edit changed nothing)"))
                left[key] = finding
                continue
            seen_fixed.setdefault(key, finding)
            applied = True
            break  # re-plan on the changed model: one rule's fix may settle or change another's
        if not applied:
            break
    result.after = redacted_text(root)
    result.fixed = [f for k, f in seen_fixed.items() if k not in left]
    result.left = list(left.values())
    return result


def _reparse(root: etree._Element, source: str, facts: HostFacts, running: bool | None,
             label: str | None = None) -> Domain:
    # A template without <name> is fixed under its file's name, as lint judges it.
    domain = domain_of(root, source=source, host=facts.name, name=Path(source).stem)
    domain.label = label
    domain.running = running
    return domain


def with_images(domain: Domain, template: Domain) -> Domain:
    """Give a reparsed domain the image facts of the domain it was read from (live allocation), by disk target."""
    images = {d.target: (d.image, d.backend) for d in template.disks}
    for disk in domain.disks:
        disk.image, disk.backend = images.get(disk.target, (None, None))
    domain.machine_on_host = template.machine_on_host  # an alias as the host resolves it (facts/host.py)
    return domain


@dataclass
class FixedDocument:
    """A document fixed as text: the input's bytes, edited where the fix changed something."""

    result: FixResult
    data: bytes
    #: Why the tree was written out anew instead of edited in place (None: edited in place, or nothing to change).
    rewritten: str | None = None
    encoding: str = "utf-8"
    #: The changes as XPath settings (virt-xml --xml), when the text was edited in place.
    changes: list[Change] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.data.decode(self.encoding)


def fix_document(data: bytes, facts: HostFacts, rules: Iterable[str] | None = None, *, source: str,
                 **options: Any) -> FixedDocument:
    """Fix one domain's XML document (a file's bytes, or XML libvirt returned) keeping its text outside the edits.

    `options` are fix_domain's. The result's diff is of the redacted texts, so it shows what `diff -u` shows.
    """
    root = parse_root(data, source)
    encoding = root.getroottree().docinfo.encoding or "utf-8"
    why: str | None = None
    try:
        text: SourceText | None = SourceText(decode(data, root), root)
    except NotEditable as exc:
        text, why = None, str(exc)
    result = fix_domain(root, facts, rules, source=source, **options)
    if not result.changed:
        return FixedDocument(result, data, None, encoding)
    if text is not None:
        try:
            patched = text.patched()
        except NotEditable as exc:
            why = str(exc)
        else:
            result.before, result.after = redacted_source(text.text), redacted_source(patched)
            return FixedDocument(result, encode(patched, root), None, encoding, changes(text))
    return FixedDocument(result, etree.tostring(root, encoding="utf-8") + b"\n", why, "utf-8")


def parse_root(data: bytes, source: str) -> etree._Element:
    """Parse a file's one <domain> with kvmio's safe parser; DomainXMLError names the file (and line) otherwise."""
    roots = parse_documents(data, source=source)
    if len(roots) > 1:
        raise DomainXMLError(f"{source}: holds {len(roots)} <domain> documents; kvmio fix edits files of one domain")
    domain_of(roots[0], source=source, name=Path(source).stem)  # the model's checks, for a useful error
    return roots[0]


def as_json(remedies_: list[Remedy], domain_root: etree._Element | None, before: str | None = None) -> dict[str, Any]:
    """Return the `fix` of a failed verdict: the preferred remedy, its diff, then the alternatives.

    `before` is the redacted text of `domain_root` when the caller has it (the root is never changed: edits go to a
    copy).
    """
    if domain_root is not None and before is None and any(r.edits for r in remedies_):
        before = redacted_text(domain_root)
    before_lines = _lines(before) if before is not None else []

    def one(remedy: Remedy) -> dict[str, Any]:
        patch = None
        if remedy.edits and domain_root is not None and before is not None:
            patched = copy.deepcopy(domain_root)
            for edit in remedy.edits:
                edit(patched)
            name = domain_root.findtext("name") or "domain"
            patch = "".join(difflib.unified_diff(before_lines, _lines(redacted_text(patched, in_place=True)),
                                                 fromfile=f"a/{name}.xml", tofile=f"b/{name}.xml"))
        out: dict[str, Any] = {
            "summary": remedy.summary, "xml_patch": patch,
            "virt_xml": "\n".join(remedy.virt_xml) or None,
            "host_commands": remedy.host_commands, "takes_effect": remedy.takes_effect,
        }
        if remedy.guest_commands:
            out["guest_commands"] = remedy.guest_commands
        if remedy.needs:
            out["needs"] = remedy.needs
        return out
    first, *rest = remedies_
    record = one(first)
    if rest:
        record["alternatives"] = [one(r) for r in rest]
    return record


def verdict_fix(rule: str, target: Target) -> dict[str, Any]:
    """Return the `fix` of a failed verdict of `rule` on `target`, computed from its model and its host's facts."""
    entry = lookup(rule)
    if entry is not None and entry.fix == "measurement":
        return {"summary": f"{target.id}: no XML fix: {rule} is a measurement; change what its message names and measure again",
                "xml_patch": None, "virt_xml": None, "host_commands": [], "takes_effect": None}
    found = remedies(rule, target, target.host.facts)
    if not found:
        return {"summary": f"{target.id}: kvmio has no computed fix for {rule}; see the message",
                "xml_patch": None, "virt_xml": None, "host_commands": [], "takes_effect": None}
    if target.domain is not None and any(r.edits for r in found):
        return as_json(found, *_redacted_tree(target.domain.xml))
    return as_json(found, None)


@functools.lru_cache(maxsize=1024)  # items run rule by rule over every domain: hold a fleet's
def _redacted_tree(xml: str) -> tuple[etree._Element, str]:
    """Return a domain's XML parsed, and its redacted text: read once for every failed verdict of the domain (as_json
    only ever edits a copy of the tree)."""
    root = etree.fromstring(xml.encode(), parser=SAFE_PARSER)  # the redacted XML: diffs show no secrets
    return root, redacted_text(root)
