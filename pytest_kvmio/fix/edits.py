"""Edits of a domain's XML tree: each finds its element by what the model knows (a disk's target, a controller's index).

An edit is a function of the `<domain>` root, so the same edit patches the redacted XML a diff is shown from and the
secure XML `--apply` defines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lxml import etree

Edit = Callable[[etree._Element], None]
_INDENT = "  "


def _depth(el: etree._Element) -> int:
    return sum(1 for _ in el.iterancestors())


def _append(parent: etree._Element, child: etree._Element) -> etree._Element:
    """Append `child` to `parent`, indented like libvirt writes its XML."""
    inner = "\n" + _INDENT * (_depth(parent) + 1)
    outer = "\n" + _INDENT * _depth(parent)
    children = [c for c in parent if isinstance(c.tag, str)]
    if children:
        children[-1].tail = inner
    else:
        parent.text = inner
    parent.append(child)
    child.tail = outer
    return child


def _insert_after(parent: etree._Element, after: tuple[str, ...], child: etree._Element) -> etree._Element:
    """Insert `child` after the last of the elements named in `after` (in that order of preference), else first."""
    for name in after:
        ref = parent.find(name)
        if ref is not None:
            ref.addnext(child)
            child.tail = ref.tail
            ref.tail = "\n" + _INDENT * (_depth(parent) + 1)
            return child
    first = next((c for c in parent if isinstance(c.tag, str)), None)
    if first is None:
        return _append(parent, child)
    first.addprevious(child)
    child.tail = parent.text
    return child


def _remove(el: etree._Element) -> None:
    """Remove `el`, keeping its siblings indented like libvirt writes its XML."""
    parent = el.getparent()
    assert parent is not None, "the <domain> root is never removed"
    before = el.getprevious()
    if before is not None:
        before.tail = el.tail
    else:
        parent.text = el.tail
    parent.remove(el)


def _child(parent: etree._Element, tag: str, after: tuple[str, ...] = ()) -> etree._Element:
    found = parent.find(tag)
    if found is not None:
        return found
    new = etree.Element(tag)
    return _insert_after(parent, after, new) if after else _append(parent, new)


def _disk(root: etree._Element, dev: str) -> etree._Element:
    for el in root.findall("devices/disk"):
        target = el.find("target")
        if target is not None and target.get("dev") == dev:
            return el
    raise LookupError(f"no <disk> with <target dev='{dev}'>")


def _controller(root: etree._Element, ctype: str, index: int) -> etree._Element:
    for el in root.findall("devices/controller"):
        if el.get("type") == ctype and int(el.get("index", "0")) == index:
            return el
    raise LookupError(f"no <controller type='{ctype}' index='{index}'>")


def _driver(owner: etree._Element, name: str | None) -> etree._Element:
    drv = owner.find("driver")
    if drv is None:
        drv = etree.Element("driver")
        if name:
            drv.set("name", name)
        first = next((c for c in owner if isinstance(c.tag, str)), None)
        if first is None:
            _append(owner, drv)
        else:
            first.addprevious(drv)
            drv.tail = owner.text
    return drv


def _set(el: etree._Element, attrs: dict[str, str | None]) -> None:
    for key, value in attrs.items():
        if value is None:
            if key in el.attrib:
                del el.attrib[key]
        else:
            el.set(key, value)


def disk_driver(dev: str, **attrs: str | None) -> Edit:
    """Set (None: remove) attributes of a disk's <driver>, creating <driver name='qemu'> when there is none."""
    def edit(root: etree._Element) -> None:
        _set(_driver(_disk(root, dev), "qemu"), attrs)
    return edit


def controller_driver(ctype: str, index: int, **attrs: str | None) -> Edit:
    """Set attributes of a controller's <driver>, creating it when there is none."""
    def edit(root: etree._Element) -> None:
        _set(_driver(_controller(root, ctype, index), None), attrs)
    return edit


def map_queues(owner: tuple[str, str | int], additions: dict[int, list[int]]) -> Edit:
    """Add queue ids to an explicit queue→IOThread mapping (<driver><iothreads><iothread id><queue id/>)."""
    def edit(root: etree._Element) -> None:
        kind, key = owner
        el = _disk(root, str(key)) if kind == "disk" else _controller(root, "scsi", int(key))
        mapping = _child(_driver(el, "qemu" if kind == "disk" else None), "iothreads")
        for tid, queues in additions.items():
            thread = next((t for t in mapping.findall("iothread") if t.get("id") == str(tid)), None)
            if thread is None:
                thread = _append(mapping, etree.Element("iothread", id=str(tid)))
            for queue in queues:
                _append(thread, etree.Element("queue", id=str(queue)))
    return edit


def iothread_pool(ids: tuple[int, ...]) -> Edit:
    """Make the domain's IOThreads exactly `ids` (a superset of what it had: pools only grow)."""
    def edit(root: etree._Element) -> None:
        count = _child(root, "iothreads", after=("vcpus", "vcpu"))
        count.text = str(len(ids))
        listed = root.find("iothreadids")
        if listed is None and ids == tuple(range(1, len(ids) + 1)):
            return  # libvirt numbers a bare <iothreads>N</iothreads> 1..N itself
        listed = _child(root, "iothreadids", after=("iothreads",))
        have = {el.get("id") for el in listed.findall("iothread")}
        for tid in ids:
            if str(tid) not in have:
                _append(listed, etree.Element("iothread", id=str(tid)))
    return edit


def pins(vcpus: Mapping[int, str], iothreads: Mapping[int, str | None]) -> Edit:
    """Set <vcpupin>/<iothreadpin> cpusets in <cputune> (created when absent); a None cpuset removes the pin."""
    def edit(root: etree._Element) -> None:
        tune = _child(root, "cputune", after=("iothreadids", "iothreads", "vcpus", "vcpu"))
        wanted: tuple[tuple[str, str, Mapping[int, str | None]], ...] = (
            ("vcpupin", "vcpu", vcpus), ("iothreadpin", "iothread", iothreads))
        for tag, key, cpusets in wanted:
            for ident, cpuset in sorted(cpusets.items()):
                pin = next((p for p in tune.findall(tag) if p.get(key) == str(ident)), None)
                if cpuset is None:
                    if pin is not None:
                        _remove(pin)
                    continue
                if pin is None:
                    pin = _append(tune, etree.Element(tag, {key: str(ident)}))
                pin.set("cpuset", cpuset)
    return edit


def shared_memory(numa_cells: int) -> Edit:
    """Share guest memory: memAccess='shared' on NUMA cells, else <memoryBacking> memfd + <access mode='shared'/>."""
    def edit(root: etree._Element) -> None:
        if numa_cells:
            for cell in root.findall("cpu/numa/cell"):
                cell.set("memAccess", "shared")
            return
        backing = _child(root, "memoryBacking", after=("currentMemory", "memory"))
        source = backing.find("source")
        if backing.find("hugepages") is None and source is None:
            _append(backing, etree.Element("source", type="memfd"))
        elif source is not None and source.get("type") == "anonymous":  # anonymous memory has no fd to share
            source.set("type", "memfd")
        _child(backing, "access").set("mode", "shared")
    return edit


def reconnect(dev: str, timeout: int) -> Edit:
    """Set <source><reconnect enabled='yes' timeout='N'/> on a vhost-user disk."""
    def edit(root: etree._Element) -> None:
        source = _child(_disk(root, dev), "source")
        _set(_child(source, "reconnect"), {"enabled": "yes", "timeout": str(timeout)})
    return edit
