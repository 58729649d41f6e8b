"""The environment a measurement ran on, stored with every point, and what changed between two of them.

A fingerprint holds the host's kernel, QEMU, libvirt and CPU model, the fio version, the guest's kernel where it was
read, the disk's storage XML (its <disk> element and the domain's IOThreads, secrets already masked) and that XML's
hash. Two fingerprints differ field by field; the storage XML is compared by meaning — element path and attribute
(`driver io: native → threads`), not as text — so whitespace or attribute order never reads as a change.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree

from pytest_kvmio.model.domain import DomainXMLError, parse_documents

#: Fields compared between segments, in the order a diff lists them (storage XML apart).
FIELDS = ("kernel", "qemu", "libvirt", "fio", "guest_kernel", "cpu_model", "storage_class", "device_model",
          "io_mode", "cache")
#: Fields the storage XML says more precisely: left out of a diff when both sides have the XML.
FROM_XML = ("device_model", "io_mode", "cache")
XML = "storage_xml"
XML_HASH = "storage_xml_hash"
#: env_diff keys of the storage XML start with this (`xml driver@io`).
XML_PREFIX = "xml "


def storage_xml(domain_xml: str, target: str) -> str | None:
    """Return the storage XML of one disk: its <disk> element and the domain's <iothreads>/<iothreadids>, or None.

    `domain_xml` is the domain's XML as kvmio keeps it (secrets masked); `target` the disk's target dev (vdb).
    """
    if not domain_xml:
        return None
    try:
        roots = parse_documents(domain_xml, source="domain XML")
    except DomainXMLError:
        return None
    root = roots[0]
    disk = next((d for d in root.iterfind("devices/disk") if d.find("target") is not None
                 and d.find("target").get("dev") == target), None)  # type: ignore[union-attr]
    if disk is None:
        return None
    storage = etree.Element("storage")
    for name in ("iothreads", "iothreadids"):
        found = root.find(name)
        if found is not None:
            storage.append(_clean(found))
    storage.append(_clean(disk))
    return etree.tostring(storage, encoding="unicode")


def _clean(element: etree._Element) -> etree._Element:
    """Return a copy without text-only whitespace, comments and the run-time alias (it is not configuration)."""
    copy = etree.fromstring(etree.tostring(element))
    for node in list(copy.iter()):
        if not isinstance(node.tag, str):
            parent = node.getparent()
            if parent is not None:
                parent.remove(node)
            continue
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    for alias in copy.findall(".//alias"):
        parent = alias.getparent()
        if parent is not None:
            parent.remove(alias)
    return copy


def xml_hash(xml: str | None) -> str | None:
    """Return the SHA-256 of the storage XML's meaning (its flattened attributes), None without XML."""
    if xml is None:
        return None
    flat = flatten_xml(xml)
    text = "\n".join(f"{k}={v}" for k, v in sorted(flat.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def flatten_xml(xml: str) -> dict[str, str]:
    """Return path -> value for every attribute and text of the storage XML (`disk/driver@io` -> `native`).

    Repeated siblings are numbered from the second on (`iothreadids/iothread[2]@id`).
    """
    try:
        root = etree.fromstring(xml.encode(), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return {"(unreadable)": xml}
    out: dict[str, str] = {}

    def walk(node: etree._Element, path: str) -> None:
        for name, value in sorted(node.attrib.items()):
            out[f"{path}@{name!s}"] = str(value)
        if node.text and node.text.strip():
            out[path] = node.text.strip()
        if not node.attrib and not (node.text and node.text.strip()) and not len(node):
            out[path] = "(present)"
        seen: Counter[str] = Counter()
        for child in node:
            if not isinstance(child.tag, str):
                continue
            tag = str(child.tag)
            seen[tag] += 1
            index = f"[{seen[tag]}]" if seen[tag] > 1 else ""
            walk(child, f"{path}/{tag}{index}" if path else f"{tag}{index}")

    for child in root:  # below <storage>: disk/..., iothreads
        if isinstance(child.tag, str):
            walk(child, str(child.tag))
    return out


def _xml_key(path: str) -> str:
    """Return how a diff names an XML path: `disk/driver@io` -> `xml driver@io` (the disk's own part is implied)."""
    return XML_PREFIX + (path.removeprefix("disk/") if path.startswith("disk/") else path)


def _mode(values: Sequence[Any]) -> Any:
    """Return the most common value (the latest among equals), None for no values."""
    if not values:
        return None
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in reversed(values) if counts[v] == best)


def segment_diff(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
                 runs_after: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Return what differs between two segments' fingerprints: field -> {before, after, run}.

    Each side is summarised by its most common value per field (one odd point does not make a difference); the
    storage XML is compared by meaning. `run` is the first run of the after-segment that shows the new value, when
    `runs_after` (one run id per after-point) is given.
    """
    diff: dict[str, dict[str, Any]] = {}
    both_xml = any(f.get(XML) for f in before) and any(f.get(XML) for f in after)

    def first_run(matches: Any) -> str | None:
        for fingerprint, run in zip(after, runs_after):
            if matches(fingerprint):
                return run
        return None

    for name in FIELDS:
        if both_xml and name in FROM_XML:
            continue
        old = _mode([_text(f.get(name)) for f in before])
        new = _mode([_text(f.get(name)) for f in after])
        if old != new and not (old is None and new is None):
            entry: dict[str, Any] = {"before": old, "after": new}
            run = first_run(lambda f, n=name, v=new: _text(f.get(n)) == v)
            if run is not None:
                entry["run"] = run
            diff[name] = entry
    if both_xml:
        old_xml = _mode([f.get(XML) for f in before if f.get(XML)])
        new_xml = _mode([f.get(XML) for f in after if f.get(XML)])
        if old_xml != new_xml:
            old_flat, new_flat = flatten_xml(old_xml), flatten_xml(new_xml)
            new_hash = xml_hash(new_xml)
            run = first_run(lambda f: f.get(XML) and xml_hash(f.get(XML)) == new_hash)
            for path in sorted(set(old_flat) | set(new_flat)):
                if old_flat.get(path) != new_flat.get(path):
                    entry = {"before": old_flat.get(path), "after": new_flat.get(path)}
                    if run is not None:
                        entry["run"] = run
                    diff[_xml_key(path)] = entry
    return diff


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def describe_diff(diff: Mapping[str, Mapping[str, Any]]) -> str:
    """Return a diff in words: `kernel 6.1.0 → 6.1.5 at run 37; domain XML: driver io native → threads at run 20`."""
    if not diff:
        return "no environment change recorded"
    plain, xml = [], []
    for key, entry in diff.items():
        old = "(none)" if entry.get("before") is None else entry["before"]
        new = "(none)" if entry.get("after") is None else entry["after"]
        at = f" at run {entry['run']}" if entry.get("run") is not None else ""
        if key.startswith(XML_PREFIX):
            xml.append(f"{key.removeprefix(XML_PREFIX).replace('@', ' ')} {old} → {new}{at}")
        else:
            plain.append(f"{key} {old} → {new}{at}")
    parts = plain + ([f"domain XML: {', '.join(xml)}"] if xml else [])
    return "; ".join(parts)
