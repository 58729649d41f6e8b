"""Offline perf (`--fio-results DIR`): the files' directories are the targets, nothing runs.

fio JSON files are read from

    DIR/<host>/<domain>/<disk>/<profile>.json            one run, or
    DIR/<host>/<domain>/<disk>/<profile>.<n>.json        run n (1, 2, 3, ...; numeric order)

where <disk> is the libvirt target dev (vdb, sda) and <profile> a profile name of profiles.yaml.
Each file is one fio run's JSON output (text before it and interim `--status-interval` documents
are fine: the last document is the result). Optional `DIR/<host>/<domain>/domain.xml`
(`virsh dumpxml`) supplies serials, bus, io mode and cache, so storage classes that match by serial
work offline; without it a disk matches classes by target glob only. Optional
`<profile>[.<n>].hostcpu` files hold the QEMU CPU µs per I/O of that run (one number).
Every other file is ignored; a directory level that doesn't fit the layout is a usage error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.facts.host import HostFacts
from pytest_kvmio.facts.targets import HostTarget, filter_domains
from pytest_kvmio.model.domain import Disk, Domain, DomainXMLError, parse_domain

#: `<profile>.json` or `<profile>.<n>.json`: one fio run; `<profile>[.<n>].hostcpu`: its QEMU CPU µs per I/O.
RUN_FILE = re.compile(r"^(?P<profile>.+?)(?:\.(?P<n>\d+))?\.json$")
HOSTCPU_FILE = re.compile(r"^(?P<profile>.+?)(?:\.(?P<n>\d+))?\.hostcpu$")

def run_files(directory: Path, pattern: re.Pattern[str]) -> dict[str, list[tuple[int, Path]]]:
    found: dict[str, list[tuple[int, Path]]] = {}
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.setdefault(match["profile"], []).append((int(match["n"] or 0), path))
    return found

def offline_hosts(root: str, domain_globs: list[str] | None = None) -> list[Any]:
    """Return host targets built from a --fio-results directory (DIR/<host>/<domain>/<disk>/...)."""

    base = Path(root)
    hosts = []
    for host_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        facts = HostFacts(name=host_dir.name, offline=True)
        domains = []
        for dom_dir in sorted(p for p in host_dir.iterdir() if p.is_dir()):
            xml = dom_dir / "domain.xml"
            if xml.is_file():
                try:
                    dom = parse_domain(xml.read_bytes(), source=str(xml), host=host_dir.name)
                except DomainXMLError as exc:
                    raise pytest.UsageError(f"--fio-results: {exc}") from None
                dom.name = dom_dir.name
            else:
                dom = Domain(name=dom_dir.name, host=host_dir.name, source=str(dom_dir), xml="")
            known = {d.target for d in dom.disks}
            for disk_dir in sorted(p for p in dom_dir.iterdir() if p.is_dir()):
                if disk_dir.name not in known:
                    dom.disks.append(Disk(domain=dom, type="file", device="disk", target=disk_dir.name, bus=None))
            present = {p.name for p in dom_dir.iterdir() if p.is_dir()}
            dom.disks = [d for d in dom.disks if d.target in present]
            if dom.disks:
                domains.append(dom)
        hosts.append(HostTarget(name=host_dir.name, spec=None, facts=facts, domains=domains))

    unmatched = filter_domains(hosts, domain_globs)
    if unmatched:
        raise pytest.UsageError(f"--domain {', '.join(unmatched)}: matches no domain in --fio-results {root}")
    if not any(h.domains for h in hosts):
        raise pytest.UsageError(
            f"--fio-results {root}: no <host>/<domain>/<disk>/<profile>.json files found; "
            "expected e.g. hv01/vm01/vdb/randread-4k-qd32x4.1.json"
        )
    return hosts

