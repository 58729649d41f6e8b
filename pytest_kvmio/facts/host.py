"""Facts about a hypervisor, collected once per host in as few round trips as possible."""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Any

from lxml import etree

from pytest_kvmio.facts.connection import libvirt_module
from pytest_kvmio.model.domain import SAFE_PARSER, Domain, DomainXMLError, ImageFacts, parse_domain
from pytest_kvmio.model.hostcpus import HostCpus, host_cpus_from_capabilities
from pytest_kvmio.model.machine import HostMachines, host_machines_from_capabilities
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.model.runtime import QemuRuntime, QemuThread, build_runtime, parse_thread_line
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
    #: The host's CPUs by NUMA node (libvirt's capabilities live; `--assume cpus=N` is N CPUs on node 0).
    host_cpus: HostCpus | None = None
    #: The host's architecture (capabilities <host><cpu><arch>): a domain without <type arch> gets it.
    arch: str | None = None
    #: The machine types QEMU offers, by guest architecture (capabilities <guest><arch><machine>).
    machine_types: dict[str, HostMachines] = field(default_factory=dict)
    block_devices: list[BlockDevice] = field(default_factory=list)
    images: dict[str, ImageFacts] = field(default_factory=dict)
    #: vhost-user sockets of the host's domains and the processes serving them, by socket path.
    vhost_backends: dict[str, VhostBackend] = field(default_factory=dict)
    #: Each running domain's QEMU process (threads, command line), by domain name.
    runtime: dict[str, QemuRuntime] = field(default_factory=dict)
    libvirt_uri: str | None = None
    #: libvirt's host UUID (capabilities <host><uuid>): the machine's identity whatever spec reached it.
    host_uuid: str | None = None
    offline: bool = False
    assumed: tuple[str, ...] = ()
    #: The `--host-facts` file these facts were read from (offline replay of `kvmio facts save`), and the name of the
    #: host they were saved from.
    facts_file: str | None = None
    saved_from: str | None = None
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
            **({"host_facts_file": self.facts_file, "saved_from": self.saved_from} if self.facts_file else {}),
            "block_devices": [
                {"name": b.name, "rotational": b.rotational, "scheduler": b.scheduler}
                for b in self.block_devices
            ],
        }


def assumed_facts(name: str, assumptions: Assumptions) -> HostFacts:
    """Build offline facts from `--assume kernel=6.1,qemu=7.2,libvirt=9.0` (settings.assumptions parsed it)."""
    return HostFacts(name=name, offline=True, assumed=assumptions.given, kernel=assumptions.kernel,
                     qemu=assumptions.qemu, libvirt=assumptions.libvirt,
                     io_uring_disabled=assumptions.io_uring_disabled, cpu_count=assumptions.cpus,
                     host_cpus=HostCpus.flat(assumptions.cpus) if assumptions.cpus else None)


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

# Every image's path and qemu-img output, NUL-separated (neither can hold a NUL), base64-encoded as one line, so
# a newline in a path or a message can't start a line of its own; one base64 for all images, not one per image
# (at 800 images the per-image encoders took a third of the command). The loop over "$@":
IMAGE_LOOP = r"""for f in "$@"; do
  printf '%s\0' "$f"
  if [ -b "$f" ]; then printf '{"kvmio-block-device": true}';
  elif [ ! -e "$f" ]; then printf '{"kvmio-error": "no such file on the host"}';
  else timeout 60 qemu-img info -U --output=json -- "$f" 2>&1 || printf '{"kvmio-error": "qemu-img info failed"}'; fi
  printf '\0'
done"""
#: Images a batch (one `sh`) reads, and the most batches run at once (never more than the host's online CPUs).
IMAGE_BATCH = 16
IMAGE_JOBS = 8
# qemu-img is a process per image (about 4 ms each, most of it loading the program), so the batches run on up to
# IMAGE_JOBS CPUs at once (xargs -P), each into its own file of a temporary directory (concurrent writers to one
# pipe would interleave), read back whole; records are keyed by path, so their order does not matter. A host with
# one CPU, no mktemp or an xargs without -0/-P reads them one after another in the command's own shell.
#
# Regular files every disk using them declares raw are not probed at all: one GNU `stat` reads all their sizes
# (virtual = the file's size, allocated = its blocks, what qemu-img reports for raw), and a raw image whose guest
# wrote another format's header is not taken for that format. Without GNU stat they go to qemu-img like the rest.
IMAGE_SCRIPT = r"""
kvmio_images=@LOOP@
kvmio_jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null)
kvmio_tmp=
if [ "${kvmio_jobs:-1}" -gt 1 ] 2>/dev/null && printf '' | xargs -0 -P 2 true 2>/dev/null; then
  [ "$kvmio_jobs" -gt @JOBS@ ] && kvmio_jobs=@JOBS@
  kvmio_tmp=$(mktemp -d 2>/dev/null) && trap 'rm -rf -- "$kvmio_tmp"' EXIT && trap 'exit 143' HUP INT TERM
fi
printf 'images='
{
  set -- @RAW@
  if [ $# -gt 0 ]; then
    if stat -L --printf '' -- / 2>/dev/null; then
      kvmio_n=$#
      for f; do
        if [ -b "$f" ]; then printf '%s\0{"kvmio-block-device": true}\0' "$f"
        elif [ ! -e "$f" ]; then printf '%s\0{"kvmio-error": "no such file on the host"}\0' "$f"
        elif [ -f "$f" ]; then set -- "$@" "$f"
        else kvmio_one=$f; (set -- "$kvmio_one"; eval "$kvmio_images")
        fi
      done
      shift "$kvmio_n"
      [ $# -gt 0 ] && stat -L --printf '%n\0{"kvmio-stat": [%s, %b, %B]}\0' -- "$@"
    else
      eval "$kvmio_images"
    fi
  fi
  set -- @PATHS@
  if [ $# -eq 0 ]; then :
  elif [ -n "$kvmio_tmp" ]; then
    printf '%s\0' "$@" | xargs -0 -n @BATCH@ -P "$kvmio_jobs" sh -c "exec > \"\$(mktemp \"\$0/XXXXXX\")\" || exit 1
$kvmio_images" "$kvmio_tmp"
    cat "$kvmio_tmp"/*
    rm -rf -- "$kvmio_tmp"
  else
    eval "$kvmio_images"
  fi
} | base64 | tr -d '\n'
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


# Each running domain's QEMU process (issue 20): its pid from libvirt's pid file (qemu:///system, then a session's
# XDG_RUNTIME_DIR; else the process whose -name says guest=NAME), every thread's name, affinity (Cpus_allowed_list)
# and its cgroup's effective cpuset (cgroup v1 cpuset controller or v2), and the command line (base64: NUL-separated).
# Shell builtins only per thread (`read`, `case`, `set --`), so a host with many threads pays no process per thread.
RUNTIME_SCRIPT = r"""
kvmio_qemu() {
  kvmio_pid=
  for kvmio_dir in /run/libvirt/qemu "${XDG_RUNTIME_DIR:-/nonexistent}/libvirt/qemu/run"; do
    [ -z "$kvmio_pid" ] && [ -r "$kvmio_dir/$1.pid" ] && read -r kvmio_pid < "$kvmio_dir/$1.pid"
  done
  if [ -z "$kvmio_pid" ] || [ ! -d "/proc/$kvmio_pid/task" ]; then
    kvmio_pid=$(grep -laF -- "guest=$1," /proc/[0-9]*/cmdline 2>/dev/null | head -n 1 | cut -d/ -f3)
  fi
  if [ -z "$kvmio_pid" ] || [ ! -d "/proc/$kvmio_pid/task" ]; then
    echo "qemu-error=no QEMU process found (no pid file under /run/libvirt/qemu, no process with -name guest=$1)"
    return
  fi
  echo "qemu-pid=$kvmio_pid"
  for t in /proc/$kvmio_pid/task/*; do
    aff=-; eff=-; cg=-; cg1=; cg2=; name=
    while IFS= read -r l; do case "$l" in Cpus_allowed_list:*) set -- ${l#Cpus_allowed_list:}; aff=${1:--} ;; esac
    done < "$t/status" 2>/dev/null
    while IFS=: read -r _n ctl path; do case ",$ctl," in *,cpuset,*) cg1=$path ;; ,,) cg2=$path ;; esac
    done < "$t/cgroup" 2>/dev/null
    if [ -n "$cg1" ] && [ -r "/sys/fs/cgroup/cpuset$cg1/cpuset.effective_cpus" ]; then
      read -r eff < "/sys/fs/cgroup/cpuset$cg1/cpuset.effective_cpus"; cg=$cg1
    elif [ -n "$cg2" ] && [ -r "/sys/fs/cgroup$cg2/cpuset.cpus.effective" ]; then
      read -r eff < "/sys/fs/cgroup$cg2/cpuset.cpus.effective"; cg=$cg2
    fi
    read -r name < "$t/comm" 2>/dev/null
    printf 'qemu-thread=%s %s %s %s\t%s\n' "${t##*/}" "$aff" "${eff:--}" "$name" "$cg"
  done
  echo "qemu-cmdline=$(base64 < "/proc/$kvmio_pid/cmdline" | tr -d '\n')"
}
"""


def host_script(image_paths: list[str], vhost_sockets: list[str] | None = None, running: list[str] | None = None,
                *, raw: Collection[str] = ()) -> str:
    """Return the one shell script that reads every host fact, image, vhost-user backend and running QEMU of a host.

    `running` names the running domains whose QEMU process is read; their output comes in that order, numbered.
    `raw` are the image paths every disk using them declares raw: a regular file among them is read with `stat`.
    """
    script = HOST_SCRIPT
    if image_paths:
        by_stat = [p for p in image_paths if p in raw]
        probed = [p for p in image_paths if p not in raw]
        values = {"@LOOP@": shlex.quote(IMAGE_LOOP), "@JOBS@": str(IMAGE_JOBS), "@BATCH@": str(IMAGE_BATCH),
                  "@RAW@": " ".join(shlex.quote(p) for p in by_stat),
                  "@PATHS@": " ".join(shlex.quote(p) for p in probed)}
        script += re.sub("@(LOOP|JOBS|BATCH|RAW|PATHS)@", lambda m: values[m[0]], IMAGE_SCRIPT)  # one pass: a path
        # that reads "@PATHS@" stays a path
    if vhost_sockets:
        script += VHOST_SCRIPT.replace("@PATHS@", " ".join(shlex.quote(p) for p in vhost_sockets))
    if running:
        script += RUNTIME_SCRIPT
        for index, name in enumerate(running):
            script += f"echo qemu-begin={index}; kvmio_qemu {shlex.quote(name)}; echo qemu-end\n"
    return script


def parse_host_output(facts: HostFacts, output: str, running: list[str] | None = None) -> None:
    """Fill `facts` from the output of `host_script` (`running`: the names it was given, for the runtime part)."""
    socket: str | None = None
    socket_lines: list[str] = []
    uid: int | None = None
    qemu: _QemuLines | None = None
    for line in output.splitlines():
        if qemu is not None:
            if line == "qemu-end":
                facts.runtime[qemu.name] = qemu.build()
                qemu = None
            else:
                qemu.add(line)
            continue
        if line.startswith("qemu-begin=") and running:
            index = line.partition("=")[2]
            if index.isdigit() and int(index) < len(running):
                qemu = _QemuLines(running[int(index)])
            continue
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


@dataclass
class _QemuLines:
    """The runtime lines of one running domain, gathered until `qemu-end`."""

    name: str
    pid: int | None = None
    error: str | None = None
    cmdline: bytes | None = None
    threads: list[QemuThread] = field(default_factory=list)

    def add(self, line: str) -> None:
        key, _, value = line.partition("=")
        if key == "qemu-pid" and value.strip().isdigit():
            self.pid = int(value)
        elif key == "qemu-error":
            self.error = value.strip()
        elif key == "qemu-thread":
            thread = parse_thread_line(value)
            if thread is not None:
                self.threads.append(thread)
        elif key == "qemu-cmdline":
            try:
                self.cmdline = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                self.error = "QEMU's command line could not be decoded"

    def build(self) -> QemuRuntime:
        return build_runtime(self.pid, self.threads, self.cmdline, self.error)


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
    if "kvmio-stat" in data:  # a regular file the XML declares raw: its size and allocated blocks, as qemu-img has them
        size, blocks, block_size = data["kvmio-stat"]
        return ImageFacts(path, "raw", size, blocks * block_size)
    return ImageFacts(
        path=path,
        format=data.get("format"),
        virtual_size=data.get("virtual-size"),
        actual_size=data.get("actual-size"),
    )


def host_arch(capabilities_xml: str) -> str | None:
    """Return the host's architecture from libvirt's capabilities XML (<host><cpu><arch>), None when it has none."""
    try:
        arch = etree.fromstring(capabilities_xml.encode(), parser=SAFE_PARSER).findtext("host/cpu/arch")
    except etree.XMLSyntaxError:
        return None
    return arch.strip() if arch and arch.strip() else None


def host_uuid(capabilities_xml: str) -> str | None:
    """Return the host UUID from libvirt's capabilities XML, None when it has none."""
    try:
        uuid = etree.fromstring(capabilities_xml.encode(), parser=SAFE_PARSER).findtext("host/uuid")
    except etree.XMLSyntaxError:
        return None
    return uuid.strip() if uuid else None


def collect_host_facts(name: str, testinfra_host: Any, conn: Any, uri: str,
                       wanted: Callable[[str], bool] | None = None) -> tuple[HostFacts, list[Domain]]:
    """Read versions over libvirt, domains' XML, then every other fact in one host command.

    `wanted` (a domain name → selected: `--domain`) picks the domains whose images, vhost-user sockets and QEMU
    processes the command reads; every domain's XML is still read (a fix places IOThreads away from its neighbours'
    pins), but a narrow glob no longer pays for every image on the host.
    """
    facts = HostFacts(name=name, libvirt_uri=uri)
    libvirt = _libvirt()
    try:
        facts.hypervisor_type = conn.getType()
        if facts.hypervisor_type == "QEMU":  # other drivers report their own version numbers
            facts.qemu = Version.from_libvirt(conn.getVersion())
        facts.libvirt = Version.from_libvirt(conn.getLibVersion())
        capabilities = conn.getCapabilities()
        facts.host_uuid = host_uuid(capabilities)
        facts.host_cpus = host_cpus_from_capabilities(capabilities)
        facts.arch = host_arch(capabilities)
        facts.machine_types = host_machines_from_capabilities(capabilities)
        raw_domains = [_read_domain(d, libvirt) for d in conn.listAllDomains(0)]
    except libvirt.libvirtError as exc:
        raise FactsError(f"{name}: libvirt at {uri} failed while reading facts: {exc.get_error_message()}") from None
    domains: list[Domain] = []
    for dom_name, xml, active, persistent_xml in sorted(raw_domains):
        try:
            dom = parse_domain(xml, source=f"{name}: libvirt domain {dom_name}", host=name)
            if persistent_xml is not None:
                dom.persistent = parse_domain(persistent_xml, source=f"{name}: libvirt domain {dom_name} (persistent "
                                              "definition)", host=name)
        except DomainXMLError as exc:
            raise FactsError(str(exc)) from None
        dom.running = active
        domains.append(dom)
    selected = [dom for dom in domains if wanted is None or wanted(dom.name)]
    paths = sorted({d.source_file for dom in selected for d in dom.disks if d.source_file and d.is_storage}
                   | {d.source_dev for dom in selected for d in dom.disks if d.source_dev and d.is_storage})
    sockets = sorted({d.source_path for dom in selected for d in dom.disks if d.is_vhost_user and d.source_path})
    running = [dom.name for dom in selected if dom.running]
    formats: dict[str, set[str | None]] = {}
    for dom in domains:
        for d in dom.disks:
            if d.source_file or d.source_dev:
                formats.setdefault(d.source_file or d.source_dev or "", set()).add(d.format)
    raw = {p for p in paths if formats.get(p) == {"raw"}}  # every disk on it says raw: no need to probe its format
    script = host_script(paths, sockets, running, raw=raw)
    result = testinfra_host.run(f"timeout {COMMAND_TIMEOUT} sh -c {shlex.quote(script)}")
    if result.rc not in (0,):
        raise FactsError(f"{name}: the host facts command failed (exit {result.rc}): {result.stderr.strip()[:500]}")
    parse_host_output(facts, result.stdout, running)
    for dom in domains:
        dom.runtime = facts.runtime.get(dom.name) if dom.running else None
    apply_host_facts(facts, domains)
    return facts, domains


def apply_host_facts(facts: HostFacts, domains: list[Domain]) -> None:
    """Give domains what their host says about them: each disk its image's allocation (by path) and its vhost-user
    backend (by socket), each domain the versioned machine type its alias (or missing machine) is on the host.

    Live facts and facts read back from a `kvmio facts save` file (`--host-facts`) go through here alike, so a
    replayed lint sees what the live run saw.
    """
    for dom in domains:
        machines = facts.machine_types.get(dom.arch or facts.arch or "")
        if machines is not None:
            dom.machine_on_host = machines.canonical(dom.machine)
        for disk in dom.disks:
            path = disk.source_file or disk.source_dev
            if path and path in facts.images:
                disk.image = facts.images[path]
            if disk.is_vhost_user and disk.source_path in facts.vhost_backends:
                disk.backend = facts.vhost_backends[disk.source_path]


def _read_domain(dom: Any, libvirt: Any) -> tuple[str, str, bool, str | None]:
    """Return a domain's name, live XML, whether it runs, and its persistent XML when it runs and has one."""
    active = bool(dom.isActive())
    persistent = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if active and dom.isPersistent() else None
    return dom.name(), dom.XMLDesc(0), active, persistent


def _libvirt() -> Any:
    return libvirt_module()
