"""Host facts saved as JSON (`kvmio facts save`) and read back for offline lint (`--host-facts FILE`).

The file holds what the rules read from a live host: versions, the io_uring switch, CPUs by NUMA node, machine types
and their aliases, block devices and their schedulers, every image's allocation (by path) and the vhost-user
backends (by socket). `format` and `version` say what it is; `schemas/host-facts.schema.json` says what each field
may hold, checked on load. Secrets stay out: the libvirt URI goes through `redact_uri`, and a backend's command line
keeps only its `--export` options (what its queue count is read from), masked the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_kvmio import __version__
from pytest_kvmio.errors import InputError
from pytest_kvmio.facts.host import Assumptions, BlockDevice, HostFacts
from pytest_kvmio.files.yamldoc import schema_errors
from pytest_kvmio.model.domain import ImageFacts
from pytest_kvmio.model.hostcpus import HostCpus
from pytest_kvmio.model.machine import HostMachines
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.model.versions import Version
from pytest_kvmio.model.vhost import BackendProcess, VhostBackend

#: What the `format` field of a host facts file says, and the one `version` this kvmio reads and writes.
FORMAT = "kvmio-host-facts"
VERSION = 1
SCHEMA = "host-facts"
#: How to get a good file, for error messages.
HOW_TO_SAVE = "write it with `kvmio facts save --host HOST --out FILE`"


@dataclass(frozen=True)
class SavedFacts:
    """A host facts file read back: where it is, the host it was saved from, when, and the facts (offline)."""

    path: str
    host: str
    saved_at: str | None
    facts: HostFacts


def facts_document(facts: HostFacts, *, name: str | None = None, saved_at: datetime | None = None) -> dict[str, Any]:
    """Return the host facts file's document for `facts` (`name`: the host name it is saved under)."""
    when = (saved_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "saved_by": f"kvmio {__version__}",
        "host": name or facts.name,
        "libvirt_uri": redact_uri(facts.libvirt_uri) if facts.libvirt_uri else None,
        "host_uuid": facts.host_uuid,
        "hypervisor_type": facts.hypervisor_type,
        "versions": {what: _text(getattr(facts, what)) for what in ("kernel", "qemu", "libvirt")},
        "io_uring_disabled": facts.io_uring_disabled,
        "cpu": {"model": facts.cpu_model, "count": facts.cpu_count,
                "numa_nodes": facts.host_cpus.as_dict() if facts.host_cpus is not None else None},
        "arch": facts.arch,
        "machine_types": {arch: machines.as_dict() for arch, machines in sorted(facts.machine_types.items())},
        "block_devices": [{"name": b.name, "rotational": b.rotational, "scheduler": b.scheduler,
                           "schedulers": list(b.schedulers)} for b in facts.block_devices],
        "images": {path: {"format": i.format, "virtual_size": i.virtual_size, "actual_size": i.actual_size,
                          "block_device": i.is_block_device, "error": i.error}
                   for path, i in sorted(facts.images.items())},
        "vhost_backends": {socket: _backend(b) for socket, b in sorted(facts.vhost_backends.items())},
    }


def facts_json(facts: HostFacts, *, name: str | None = None, saved_at: datetime | None = None) -> str:
    """Return the host facts file's text (JSON, keys in a stable order, one trailing newline)."""
    return json.dumps(facts_document(facts, name=name, saved_at=saved_at), indent=2, ensure_ascii=False) + "\n"


def _text(version: Version | None) -> str | None:
    return str(version) if version is not None else None


def _backend(backend: VhostBackend) -> dict[str, Any]:
    return {
        "exists": backend.exists, "owner": backend.owner, "mode": backend.mode, "connections": backend.connections,
        "unreadable": backend.unreadable,
        "listeners": [{"pid": p.pid, "comm": p.comm, "exe": p.exe, "exports": export_options(p.cmdline)}
                      for p in backend.listeners],
    }


def export_options(cmdline: tuple[str, ...]) -> list[str]:
    """Return the `--export` options of a backend's command line, as separate `--export VALUE` arguments, masked.

    Only these are kept: a queue count is read from them (model/vhost.py), while the rest of a command line may carry
    secrets (`--object secret,data=...`, passwords in URIs).
    """
    kept: list[str] = []
    args = list(cmdline)
    for i, arg in enumerate(args):
        if arg in ("--export", "-export") and i + 1 < len(args):
            kept += ["--export", redact_uri(args[i + 1])]
        elif arg.startswith(("--export=", "-export=")):
            kept += ["--export", redact_uri(arg.split("=", 1)[1])]
    return kept


def load_facts(path: str | Path) -> SavedFacts:
    """Read a host facts file; InputError naming the file, the field and how to fix it when it can't be used."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{shown}: not UTF-8 text, so not a host facts file; {HOW_TO_SAVE}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{shown}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {HOW_TO_SAVE}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InputError(f"{shown}: format: expected {FORMAT!r}, got {found!r}: not a kvmio host facts file; {HOW_TO_SAVE}")
    version = document.get("version")
    if version != VERSION:
        raise InputError(f"{shown}: version: this kvmio reads host facts files of version {VERSION}, the file is of "
                         f"version {version!r}; save the facts again with this kvmio ({HOW_TO_SAVE}) or use the "
                         f"kvmio that wrote it")
    problems = schema_errors(SCHEMA, document)
    if problems:
        first = problems[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise InputError(f"{shown}: {where}: {first.message}{more}; fix that field or {HOW_TO_SAVE} "
                         f"(schema: pytest_kvmio/schemas/{SCHEMA}.schema.json)")
    try:
        facts = _facts(document, shown)
    except ValueError as exc:
        raise InputError(f"{exc}; fix that field or {HOW_TO_SAVE}") from None
    return SavedFacts(path=shown, host=document["host"], saved_at=document.get("saved_at"), facts=facts)


def _facts(doc: dict[str, Any], source: str) -> HostFacts:
    """Build offline HostFacts from a schema-valid document; ValueError naming `source` and the field otherwise."""
    versions = doc.get("versions") or {}
    cpu = doc.get("cpu") or {}
    host = doc["host"]
    return HostFacts(
        name=host,
        kernel=_version(versions.get("kernel"), f"{source}: versions.kernel"),
        qemu=_version(versions.get("qemu"), f"{source}: versions.qemu"),
        libvirt=_version(versions.get("libvirt"), f"{source}: versions.libvirt"),
        hypervisor_type=doc.get("hypervisor_type"),
        io_uring_disabled=doc.get("io_uring_disabled"),
        cpu_model=cpu.get("model"),
        cpu_count=cpu.get("count"),
        host_cpus=(HostCpus.from_dict(cpu["numa_nodes"], source=f"{source}: cpu.numa_nodes")
                   if cpu.get("numa_nodes") else None),
        arch=doc.get("arch"),
        machine_types={arch: HostMachines(tuple(m["names"]), dict(m.get("aliases") or {}), m.get("default"))
                       for arch, m in (doc.get("machine_types") or {}).items()},
        block_devices=[BlockDevice(b["name"], b.get("rotational"), b.get("scheduler"), tuple(b.get("schedulers") or ()))
                       for b in doc.get("block_devices") or []],
        images={path: ImageFacts(path, i.get("format"), i.get("virtual_size"), i.get("actual_size"),
                                 is_block_device=bool(i.get("block_device")), error=i.get("error"))
                for path, i in (doc.get("images") or {}).items()},
        vhost_backends={socket: VhostBackend(
            socket, b["exists"], b.get("owner"), b.get("mode"),
            tuple(BackendProcess(p["pid"], p.get("comm", ""), p.get("exe", ""), tuple(p.get("exports") or ()))
                  for p in b.get("listeners") or []),
            b.get("connections", 0), b.get("unreadable"))
            for socket, b in (doc.get("vhost_backends") or {}).items()},
        libvirt_uri=doc.get("libvirt_uri"),
        host_uuid=doc.get("host_uuid"),
        offline=True,
        facts_file=source,
        saved_from=host,
    )


def _version(text: str | None, source: str) -> Version | None:
    if text is None:
        return None
    try:
        return Version.parse(text)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def as_target(saved: SavedFacts, name: str, assumptions: Assumptions | None = None) -> HostFacts:
    """Return a copy of a file's facts for the offline host target `name`, `--assume` overriding the facts it names."""
    facts = replace(saved.facts, name=name, images=dict(saved.facts.images),
                    vhost_backends=dict(saved.facts.vhost_backends), block_devices=list(saved.facts.block_devices),
                    machine_types=dict(saved.facts.machine_types))
    if assumptions is None or not assumptions.given:
        return facts
    for what in ("kernel", "qemu", "libvirt", "io_uring_disabled"):
        if getattr(assumptions, what) is not None:
            setattr(facts, what, getattr(assumptions, what))
    if assumptions.cpus is not None:
        facts.cpu_count = assumptions.cpus
        facts.host_cpus = HostCpus.flat(assumptions.cpus)
    facts.assumed = assumptions.given
    return facts
