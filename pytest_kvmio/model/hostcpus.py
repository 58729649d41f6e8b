"""A host's CPUs and the NUMA nodes they sit on: what IOThread placement and host facts files carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from pytest_kvmio.model.cpuset import format_cpuset, parse_cpuset


@dataclass(frozen=True)
class HostCpus:
    """The host's CPUs by NUMA node (node id -> CPU ids); a host without NUMA information is one node, 0."""

    nodes: Mapping[int, frozenset[int]]

    @classmethod
    def flat(cls, count: int) -> HostCpus:
        """Return `count` CPUs on one node (what `--assume cpus=N` says)."""
        return cls({0: frozenset(range(count))})

    @property
    def cpus(self) -> frozenset[int]:
        """Return every CPU of the host."""
        return frozenset().union(*self.nodes.values()) if self.nodes else frozenset()

    @property
    def count(self) -> int:
        return len(self.cpus)

    def node_of(self, cpu: int) -> int | None:
        """Return the NUMA node a CPU sits on, None for a CPU the host does not have."""
        return next((node for node, cpus in self.nodes.items() if cpu in cpus), None)

    def as_dict(self) -> dict[str, str]:
        """Return {node id: cpuset} as strings (a host facts file's `numa_nodes`)."""
        return {str(node): format_cpuset(set(cpus)) for node, cpus in sorted(self.nodes.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> HostCpus:
        """Read `as_dict`'s form back; `source` names the file and field in errors."""
        nodes: dict[int, frozenset[int]] = {}
        for key, value in data.items():
            if not str(key).isdigit() or not isinstance(value, str):
                raise ValueError(f"{source}: expected {{node id: cpuset}} such as {{'0': '0-7'}}, got {key!r}: {value!r}")
            nodes[int(key)] = parse_cpuset(value, source=f"{source}.{key}")
        return cls(nodes)


def host_cpus_from_capabilities(capabilities_xml: str) -> HostCpus | None:
    """Return the CPUs by NUMA cell from libvirt's capabilities (<host><topology><cells>), None when it has none."""
    try:
        root = etree.fromstring(capabilities_xml.encode(), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    nodes: dict[int, frozenset[int]] = {}
    for cell in root.iterfind("host/topology/cells/cell"):
        cell_id = cell.get("id", "")
        ids = [c.get("id", "") for c in cell.iterfind("cpus/cpu")]
        if cell_id.isdigit() and ids and all(i.isdigit() for i in ids):
            nodes[int(cell_id)] = frozenset(int(i) for i in ids)
    return HostCpus(nodes) if nodes else None
