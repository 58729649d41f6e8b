"""Facts about a hypervisor, collected once per host in as few round trips as possible."""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from dataclasses import dataclass, field, fields
from typing import Any

from lxml import etree

from pytest_kvmio.facts.connection import libvirt_module
from pytest_kvmio.model.domain import SAFE_PARSER, Domain, DomainXMLError, ImageFacts, parse_domain
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.model.versions import Requirement, Version
from pytest_kvmio.model.vhost import VhostBackend, parse_backend_lines

#: Requirements io_uring needs (kernel 5.1 has it; 5.10 is the first LTS with a stable one).
IO_URING_KERNEL = Requirement.parse(">=5.1")
IO_URING_QEMU = Requirement.parse(">=5.0")
IO_URING_LIBVIRT = Requirement.parse(">=6.3")
#: Block devices that have no scheduler of their own or are not real disks.
VIRTUAL_BLOCK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "nbd", "drbd", "rbd")
COMMAND_TIMEOUT = 120


class FactsError(Exception):
    """Facts could not be gathered; the message names the host and the step."""


@dataclass(frozen=True)
class BlockDevice:
    """A host block device's queue settings."""

    name: str
    rotational: bool | None
    scheduler: str | None
    schedulers: tuple[str, ...] = ()

    @property
    def is_nvme(self) -> bool:
        return self.name.startswith("nvme")

    @property
    def is_virtual(self) -> bool:
        return self.name.startswith(VIRTUAL_BLOCK_PREFIXES)


@dataclass(frozen=True)
class Assumptions:
    """Host facts assumed for offline linting and fixing (`--assume kernel=6.1,qemu=7.2,libvirt=9.0,cpus=16`), typed."""

    kernel: Version | None = None
    qemu: Version | None = None
    libvirt: Version | None = None
    io_uring_disabled: int | None = None
    cpus: int | None = None

    @property
    def given(self) -> tuple[str, ...]:
        """Return the names of the facts assumed, sorted."""
        return tuple(sorted(f.name for f in fields(self) if getattr(self, f.name) is not None))


#: What `--assume` may name, in the order its error message lists them.
ASSUMABLE = tuple(f.name for f in fields(Assumptions))


@dataclass
class HostFacts:
    """What a hypervisor runs: versions, io_uring switch, block queues, images, domains.

    `offline` is decided once, by the run's mode, where the facts are made: assumed (`--domain-xml`, `kvmio fix`
    FILE), read from `--fio-results`, or read from a live host (the only facts that are not offline).
    """

    name: str
    kernel: Version | None = None
    qemu: Version | None = None
    libvirt: Version | None = None
    hypervisor_type: str | None = None
    io_uring_disabled: int | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    block_devices: list[BlockDevice] = field(default_factory=list)
    images: dict[str, ImageFacts] = field(default_factory=dict)
    #: vhost-user sockets of the host's domains and the processes serving them, by socket path.
    vhost_backends: dict[str, VhostBackend] = field(default_factory=dict)
    libvirt_uri: str | None = None
    #: libvirt's host UUID (capabilities <host><uuid>): the machine's identity whatever spec reached it.
    host_uuid: str | None = None
    offline: bool = False
    assumed: tuple[str, ...] = ()
    #: The read-only libvirt connection (None offline); not part of the facts' value.
    connection: Any = field(default=None, repr=False, compare=False)

    def io_uring_support(self) -> tuple[bool | None, str]:
        """Return (supported, reason): True/False when known, None when a fact is missing."""
        missing = [n for n in ("kernel", "qemu", "libvirt") if getattr(self, n) is None]
        if missing:
            return None, f"{', '.join(missing)} version unknown"
        assert self.kernel and self.qemu and self.libvirt
        problems = []
        if not IO_URING_KERNEL(self.kernel):
            problems.append(f"kernel {self.kernel} < 5.1")
        if not IO_URING_QEMU(self.qemu):
            problems.append(f"QEMU {self.qemu} < 5.0")
        if not IO_URING_LIBVIRT(self.libvirt):
            problems.append(f"libvirt {self.libvirt} < 6.3")
        if self.io_uring_disabled not in (None, 0):
            problems.append(f"kernel.io_uring_disabled = {self.io_uring_disabled}")
        if problems:
            return False, "; ".join(problems)
        sysctl = (
            "kernel.io_uring_disabled = 0"
            if self.io_uring_disabled == 0
            else "no kernel.io_uring_disabled sysctl"
        )
        return True, f"kernel {self.kernel}, QEMU {self.qemu}, libvirt {self.libvirt}, {sysctl}"

    def as_dict(self) -> dict[str, Any]:
        """Return the facts as plain values (JSON summary, Allure attachment)."""
        return {
            "host": self.name,
            "kernel": str(self.kernel) if self.kernel else None,
            "qemu": str(self.qemu) if self.qemu else None,
            "libvirt": str(self.libvirt) if self.libvirt else None,
            "hypervisor_type": self.hypervisor_type,
            "kernel.io_uring_disabled": self.io_uring_disabled,
            "cpu_model": self.cpu_model,
            "cpu_count": self.cpu_count,
            "libvirt_uri": redact_uri(self.libvirt_uri) if self.libvirt_uri else None,
            "host_uuid": self.host_uuid,
            "offline": self.offline,
            "assumed": list(self.assumed),
            "block_devices": [
                {"name": b.name, "rotational": b.rotational, "scheduler": b.scheduler}
                for b in self.block_devices
            ],
        }


def assumed_facts(name: str, assumptions: Assumptions) -> HostFacts:
    """Build offline facts from `--assume kernel=6.1,qemu=7.2,libvirt=9.0` (settings.assumptions parsed it)."""
    return HostFacts(name=name, offline=True, assumed=assumptions.given, kernel=assumptions.kernel,
                     qemu=assumptions.qemu, libvirt=assumptions.libvirt,
                     io_uring_disabled=assumptions.io_uring_disabled, cpu_count=assumptions.cpus)


HOST_SCRIPT = r"""
echo "kernel=$(uname -r)"
echo "io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null)"
echo "cpu_model=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2-)"
echo "cpu_count=$(getconf _NPROCESSORS_ONLN 2>/dev/null)"
for d in /sys/block/*; do
  [ -e "$d/queue" ] || continue
  echo "blockdev=${d##*/} $(cat "$d/queue/rotational" 2>/dev/null) $(cat "$d/queue/scheduler" 2>/dev/null)"
done
"""

# One line per image, `image=<path> <qemu-img output>`, both base64: a path or a qemu-img message holding a
# newline (libvirt accepts one in <source file>) can't end the record early and pass its own lines as host facts.
# Every image's path and qemu-img output, NUL-separated (neither can hold a NUL), base64-encoded as one line, so
# a newline in a path or a message can't start a line of its own; one base64 for all images, not one per image
# (at 800 images the per-image encoders took a third of the command).
IMAGE_SCRIPT = r"""
printf 'images='
for f in {paths}; do
  printf '%s\0' "$f"
  if [ -b "$f" ]; then printf '{{"kvmio-block-device": true}}';
  elif [ ! -e "$f" ]; then printf '{{"kvmio-error": "no such file on the host"}}';
  else timeout 60 qemu-img info -U --output=json -- "$f" 2>&1 || printf '{{"kvmio-error": "qemu-img info failed"}}'; fi
  printf '\0'
done | base64 | tr -d '\n'
echo
"""

# Which process serves a vhost-user socket: the inodes bound to the path in /proc/net/unix (the listening one has
# flags 00010000; accepted connections carry the path too), then the processes holding the listening inode, from
# one listing of every process's fds. Needs root to see other users' fds; vhost-uid says who read them.
VHOST_SCRIPT = r"""
echo "vhost-uid=$(id -u)"
kvmio_unix=$(cat /proc/net/unix 2>/dev/null)
kvmio_fds=$(ls -l /proc/[0-9]*/fd 2>/dev/null | awk '/^\/proc\/[0-9]+\/fd:$/ {split($0, a, "/"); pid = a[3]; next}
  /-> socket:\[[0-9]+\]$/ {split($NF, b, /[][]/); print b[2], pid}')
for s in @PATHS@; do
  echo "vhost-begin=$(printf '%s' "$s" | base64 | tr -d '\n')"
  [ -S "$s" ] && echo "vhost-socket=$(stat -c '%U:%G %a' -- "$s" 2>/dev/null)"
  listen=$(echo "$kvmio_unix" | awk -v p="$s" 'NF >= 8 && $8 == p && $4 == "00010000" {print $7}')
  echo "vhost-connections=$(echo "$kvmio_unix" | awk -v p="$s" 'NF >= 8 && $8 == p && $4 != "00010000"' | wc -l)"
  for ino in $listen; do
    for pid in $(echo "$kvmio_fds" | awk -v i="$ino" '$1 == i {print $2}' | sort -u); do
      echo "vhost-pid=$pid $(cat /proc/$pid/comm 2>/dev/null)"
      echo "vhost-exe=$pid $(readlink /proc/$pid/exe 2>/dev/null)"
      echo "vhost-cmdline=$pid $(tr '\000\n' '\037 ' < /proc/$pid/cmdline 2>/dev/null)"
    done
  done
  echo "vhost-end"
done
"""


def host_script(image_paths: list[str], vhost_sockets: list[str] | None = None) -> str:
    """Return the one shell script that reads every host fact, image and vhost-user backend of a host."""
    script = HOST_SCRIPT
    if image_paths:
        script += IMAGE_SCRIPT.format(paths=" ".join(shlex.quote(p) for p in image_paths))
    if vhost_sockets:
        script += VHOST_SCRIPT.replace("@PATHS@", " ".join(shlex.quote(p) for p in vhost_sockets))
    return script


def parse_host_output(facts: HostFacts, output: str) -> None:
    """Fill `facts` from the output of `host_script`."""
    socket: str | None = None
    socket_lines: list[str] = []
    uid: int | None = None
    for line in output.splitlines():
        if socket is not None:
            if line == "vhost-end":
                facts.vhost_backends[socket] = parse_backend_lines(socket, socket_lines, uid)
                socket, socket_lines = None, []
            else:
                socket_lines.append(line)
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if key == "kernel" and value:
            facts.kernel = Version.parse(value)
        elif key == "io_uring_disabled" and value:
            facts.io_uring_disabled = int(value)
        elif key == "cpu_model" and value:
            facts.cpu_model = value
        elif key == "cpu_count" and value.isdigit():
            facts.cpu_count = int(value)
        elif key == "blockdev":
            facts.block_devices.append(_block_device(value))
        elif key == "images":
            for path, output in _decode_images(value):
                facts.images[path] = _image_facts(path, output)
        elif key == "vhost-uid" and value.isdigit():
            uid = int(value)
        elif key == "vhost-begin":
            socket = _decode_path(value)


def _block_device(value: str) -> BlockDevice:
    name, *rest = value.split()
    rotational = rest[0] == "1" if rest and rest[0] in ("0", "1") else None
    names = tuple(s.strip("[]") for s in rest[1:])
    active = next((s.strip("[]") for s in rest[1:] if s.startswith("[")), None)
    if active is None and names == ("none",):
        active = "none"
    return BlockDevice(name=name, rotational=rotational, scheduler=active, schedulers=names)


def _decode_path(value: str) -> str | None:
    """Return a path the host script printed in base64 (so a newline in it can't start a line of its own)."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def _decode_images(value: str) -> list[tuple[str, str]]:
    """Return (path, qemu-img output) of each image on the `images=` line (base64 of NUL-separated pairs)."""
    try:
        fields = base64.b64decode(value, validate=True).split(b"\0")
    except (binascii.Error, ValueError):
        return []
    pairs = list(zip(fields[0:-1:2], fields[1::2]))  # the encoded text ends with a NUL: the last field is empty
    return [(path.decode("utf-8", "surrogateescape"), out.decode("utf-8", "replace")) for path, out in pairs]


def _image_facts(path: str, text: str) -> ImageFacts:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        first = text.strip().splitlines()[:1]
        return ImageFacts(path, None, None, None, error=f"qemu-img said: {first[0] if first else 'nothing'}")
    if not isinstance(data, dict):
        return ImageFacts(path, None, None, None, error=f"qemu-img said: {text.strip()[:200]}")
    if data.get("kvmio-block-device"):
        return ImageFacts(path, "raw", None, None, is_block_device=True)
    if "kvmio-error" in data:
        return ImageFacts(path, None, None, None, error=data["kvmio-error"])
    return ImageFacts(
        path=path,
        format=data.get("format"),
        virtual_size=data.get("virtual-size"),
        actual_size=data.get("actual-size"),
    )


def host_uuid(capabilities_xml: str) -> str | None:
    """Return the host UUID from libvirt's capabilities XML, None when it has none."""
    try:
        uuid = etree.fromstring(capabilities_xml.encode(), parser=SAFE_PARSER).findtext("host/uuid")
    except etree.XMLSyntaxError:
        return None
    return uuid.strip() if uuid else None


def collect_host_facts(name: str, testinfra_host: Any, conn: Any, uri: str) -> tuple[HostFacts, list[Domain]]:
    """Read versions over libvirt, domains' XML, then every other fact in one host command."""
    facts = HostFacts(name=name, libvirt_uri=uri)
    libvirt = _libvirt()
    try:
        facts.hypervisor_type = conn.getType()
        if facts.hypervisor_type == "QEMU":  # other drivers report their own version numbers
            facts.qemu = Version.from_libvirt(conn.getVersion())
        facts.libvirt = Version.from_libvirt(conn.getLibVersion())
        facts.host_uuid = host_uuid(conn.getCapabilities())
        raw_domains = [(d.name(), d.XMLDesc(0), bool(d.isActive())) for d in conn.listAllDomains(0)]
    except libvirt.libvirtError as exc:
        raise FactsError(f"{name}: libvirt at {uri} failed while reading facts: {exc.get_error_message()}") from None
    domains: list[Domain] = []
    for dom_name, xml, active in sorted(raw_domains):
        try:
            dom = parse_domain(xml, source=f"{name}: libvirt domain {dom_name}", host=name)
        except DomainXMLError as exc:
            raise FactsError(str(exc)) from None
        dom.running = active
        domains.append(dom)
    paths = sorted({d.source_file for dom in domains for d in dom.disks if d.source_file and d.is_storage}
                   | {d.source_dev for dom in domains for d in dom.disks if d.source_dev and d.is_storage})
    sockets = sorted({d.source_path for dom in domains for d in dom.disks if d.is_vhost_user and d.source_path})
    result = testinfra_host.run(f"timeout {COMMAND_TIMEOUT} sh -c {shlex.quote(host_script(paths, sockets))}")
    if result.rc not in (0,):
        raise FactsError(f"{name}: the host facts command failed (exit {result.rc}): {result.stderr.strip()[:500]}")
    parse_host_output(facts, result.stdout)
    for dom in domains:
        for disk in dom.disks:
            path = disk.source_file or disk.source_dev
            if path and path in facts.images:
                disk.image = facts.images[path]
            if disk.is_vhost_user and disk.source_path in facts.vhost_backends:
                disk.backend = facts.vhost_backends[disk.source_path]
    return facts, domains


def _libvirt() -> Any:
    return libvirt_module()
