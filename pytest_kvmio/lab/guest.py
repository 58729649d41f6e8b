"""Build the lab guest (Debian kernel + busybox/fio/qemu-ga initramfs), cached by content hash."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pytest_kvmio.errors import CommandError
from pytest_kvmio.lab.paths import LabPaths
from pytest_kvmio.lab.shell import run

BUILD_FORMAT = "3"  # bump when the build procedure changes in a way the inputs don't show
KERNEL_META = "linux-image-amd64"
AGENT_PACKAGE = "qemu-guest-agent"
MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "virtio_scsi", "sd_mod", "virtio_net")
MODULE_PARAMS = {"scsi_mod": "scan=sync"}  # scan LUNs during probe, so init sees every disk
GUEST_BINARIES = ("/usr/bin/fio",)
# SSH server of guests with a NIC (see topology.DomainSpec.ssh): Debian's dropbear and the libraries
# it needs that the host need not have installed. Host key made at boot, client key pushed by `lab up`.
SSH_PACKAGES = ("dropbear-bin", "libtomcrypt1", "libtommath1")
SSH_BINARIES = ("/usr/sbin/dropbear", "/usr/bin/dropbearkey")


@dataclass(frozen=True)
class GuestInputs:
    """Everything the guest build depends on; its hash is the cache key."""

    kernel_package: str
    kernel_version: str
    agent_version: str
    fio_version: str
    busybox_version: str
    init_sha: str
    modules: tuple[str, ...]
    ssh_packages: tuple[str, ...] = ()  # "name=version" of SSH_PACKAGES

    @property
    def key(self) -> str:
        doc = json.dumps([BUILD_FORMAT, self.__dict__, MODULE_PARAMS], sort_keys=True, default=list)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    @property
    def kernel_release(self) -> str:
        return self.kernel_package.removeprefix("linux-image-")


@dataclass(frozen=True)
class Guest:
    """A built guest in the cache."""

    kernel: Path
    initrd: Path
    key: str
    kernel_release: str
    cache_hit: bool


def init_script() -> bytes:
    """Return the guest's /init (shipped as package data)."""
    return resources.files("pytest_kvmio.lab").joinpath("guest-init.sh").read_bytes()


def _candidate_version(package: str) -> str:
    out = run(["apt-cache", "show", "--no-all-versions", package], timeout=60).stdout
    match = re.search(r"^Version: (\S+)", out, re.M)
    if not match:
        raise CommandError(f"apt-cache knows no version of {package}; run `apt-get update`")
    return match.group(1)


def _installed_version(package: str) -> str:
    proc = run(["dpkg-query", "-W", "-f", "${Version}", package], check=False, timeout=30)
    if proc.returncode != 0 or not proc.stdout:
        raise CommandError(f"package {package} is not installed; run `apt-get install -y {package}`")
    return proc.stdout


def _apt_fingerprint() -> str:
    """Return what changes when apt's package lists or the installed packages change."""
    parts = [BUILD_FORMAT, hashlib.sha256(init_script()).hexdigest()]
    for path in ("/var/lib/apt/lists", "/var/lib/dpkg/status", "/var/cache/apt/pkgcache.bin"):
        try:
            parts.append(f"{path}:{os.stat(path).st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:-")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def resolve_inputs(cache_dir: Path | None = None) -> GuestInputs:
    """Return the inputs, reusing the last answer while apt and dpkg state is unchanged."""
    if cache_dir is None:
        return _resolve_inputs()
    memo = cache_dir / "inputs-memo.json"
    fingerprint = _apt_fingerprint()
    try:
        doc = json.loads(memo.read_text())
        if doc["fingerprint"] == fingerprint:
            fields = dict(doc["inputs"])
            fields["modules"] = tuple(fields["modules"])
            fields["ssh_packages"] = tuple(fields["ssh_packages"])
            inputs = GuestInputs(**fields)
            if inputs.modules == MODULES and [p.split("=")[0] for p in inputs.ssh_packages] == list(SSH_PACKAGES):
                return inputs
    except (OSError, ValueError, KeyError, TypeError):
        pass
    inputs = _resolve_inputs()
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"fingerprint": fingerprint, "inputs": inputs.__dict__}, default=list) + "\n")
    return inputs


def _resolve_inputs() -> GuestInputs:
    """Return the package versions and scripts the guest would be built from (no download)."""
    depends = run(["apt-cache", "depends", KERNEL_META], timeout=60).stdout
    match = re.search(r"Depends: (linux-image-\S+)", depends)
    if not match:
        raise CommandError(f"`apt-cache depends {KERNEL_META}` names no linux-image package; run `apt-get update`")
    kernel_package = match.group(1)
    return GuestInputs(
        kernel_package=kernel_package,
        kernel_version=_candidate_version(kernel_package),
        agent_version=_candidate_version(AGENT_PACKAGE),
        fio_version=_installed_version("fio"),
        busybox_version=_installed_version("busybox-static"),
        init_sha=hashlib.sha256(init_script()).hexdigest(),
        modules=MODULES,
        ssh_packages=tuple(f"{p}={_candidate_version(p)}" for p in SSH_PACKAGES),
    )


def cached(paths: LabPaths, inputs: GuestInputs) -> Guest | None:
    """Return the cached guest for these inputs, if complete."""
    out = paths.cache / f"guest-{inputs.key}"
    kernel, initrd = out / "vmlinuz", out / "initrd.gz"
    if kernel.is_file() and initrd.is_file() and (out / "inputs.json").is_file():
        return Guest(kernel, initrd, inputs.key, inputs.kernel_release, cache_hit=True)
    return None


def _download(paths: LabPaths, package: str, version: str) -> Path:
    paths.debs.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.debs, 0o755)
    quoted = version.replace(":", "%3a")
    for deb in paths.debs.glob(f"{package}_*.deb"):
        if deb.name.startswith(f"{package}_{quoted}_") or deb.name.startswith(f"{package}_{version}_"):
            return deb
    run(["apt-get", "download", f"{package}={version}"], cwd=paths.debs, timeout=600)
    found = sorted(paths.debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CommandError(f"apt-get download {package} left no .deb in {paths.debs}")
    return found[-1]


def _module_order(kroot: Path, release: str) -> list[tuple[str, str]]:
    """Return (guest path, params) of each module in `modprobe --show-depends` order."""
    run(["depmod", "-b", kroot, release], timeout=300)
    out = run(["modprobe", "-d", kroot, "-S", release, "--show-depends", "-a", *MODULES], timeout=60).stdout
    order: list[tuple[str, str]] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "insmod":
            continue  # "builtin X" lines: nothing to load
        host_path = parts[1]
        guest_path = "/" + str(Path(host_path).relative_to(kroot))
        name = Path(host_path).name.removesuffix(".ko").replace("-", "_")
        params = MODULE_PARAMS.get(name, "")
        if all(p != guest_path for p, _ in order):
            order.append((guest_path, params))
    if not order:
        raise CommandError(f"modprobe --show-depends {' '.join(MODULES)} listed no module under {kroot}")
    return order


def _copy_with_libs(binary: Path, dest_path: str, stage: Path, sysroot: Path | None = None) -> None:
    """Copy a dynamically linked binary and every library ldd lists into the stage.

    With ``sysroot`` (packages unpacked with dpkg-deb -x), libraries are looked up there first and
    keep their path relative to it in the guest.
    """
    target = stage / dest_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, target)
    env = None
    if sysroot is not None:
        libdirs = [sysroot.resolve() / d for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(d) for d in libdirs)}
    out = run(["ldd", binary], timeout=60, env=env).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if missing:
        raise CommandError(f"{binary} needs libraries this host lacks: {', '.join(missing)}; "
                           "install the packages that provide them (apt-file search NAME)")
    for line in out.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if not match:
            continue
        lib = match.group(1)
        guest_lib = lib
        if sysroot is not None and Path(lib).is_relative_to(sysroot.resolve()):
            guest_lib = "/" + str(Path(lib).relative_to(sysroot.resolve()))
        lib_target = stage / guest_lib.lstrip("/")
        if lib_target.exists():
            continue
        lib_target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), lib_target)


def build(paths: LabPaths, inputs: GuestInputs) -> Guest:
    """Download the packages and build kernel + initramfs into cache/guest-KEY (atomically)."""
    out = paths.cache / f"guest-{inputs.key}"
    work = paths.cache / f"guest-{inputs.key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        kernel_deb = _download(paths, inputs.kernel_package, inputs.kernel_version)
        agent_deb = _download(paths, AGENT_PACKAGE, inputs.agent_version)
        kroot, aroot, stage = work / "kernel", work / "agent", work / "stage"
        run(["dpkg-deb", "-x", kernel_deb, kroot], timeout=600)
        run(["dpkg-deb", "-x", agent_deb, aroot], timeout=120)
        release = inputs.kernel_release
        vmlinuz = kroot / "boot" / f"vmlinuz-{release}"
        if not vmlinuz.is_file():
            raise CommandError(f"{kernel_deb.name} has no boot/vmlinuz-{release}")
        order = _module_order(kroot, release)
        for guest_path, _ in order:
            dst = stage / guest_path.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(kroot / guest_path.lstrip("/"), dst)
        (stage / "etc/kvmio").mkdir(parents=True)
        (stage / "etc/kvmio/modules").write_text("".join(f"{p} {a}\n" for p, a in order))
        (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (stage / "etc/group").write_text("root:x:0:\n")
        (stage / "bin").mkdir()
        shutil.copy2("/bin/busybox", stage / "bin/busybox")
        for name in ("sbin", "usr/bin", "usr/sbin", "root", "proc", "sys", "dev", "tmp", "run", "var"):
            (stage / name).mkdir(parents=True, exist_ok=True)
        for binary in GUEST_BINARIES:
            _copy_with_libs(Path(binary), binary, stage)
        _copy_with_libs(aroot / "usr/sbin/qemu-ga", "/usr/sbin/qemu-ga", stage)
        sroot = work / "ssh"
        for pin in inputs.ssh_packages:
            name, version = pin.split("=", 1)
            run(["dpkg-deb", "-x", _download(paths, name, version), sroot], timeout=120)
        for binary in SSH_BINARIES:
            _copy_with_libs(sroot / binary.lstrip("/"), binary, stage, sysroot=sroot)
        (stage / "etc/shells").write_text("/bin/sh\n")
        (stage / "etc/dropbear").mkdir(parents=True)
        (stage / "root").chmod(0o700)
        init = stage / "init"
        init.write_bytes(init_script())
        init.chmod(0o755)
        initrd = work / "initrd.gz"
        with initrd.open("wb") as fh:
            find = subprocess.Popen(["find", "."], cwd=stage, stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=stage,
                                    stdin=find.stdout, stdout=subprocess.PIPE)
            gz = subprocess.Popen(["gzip", "-6"], stdin=cpio.stdout, stdout=fh)
            assert find.stdout and cpio.stdout
            find.stdout.close()
            cpio.stdout.close()
            codes = (gz.wait(timeout=600), cpio.wait(timeout=60), find.wait(timeout=60))
        if any(codes):
            raise CommandError(f"find | cpio | gzip into {initrd} failed with exit codes {codes}")
        shutil.copy2(vmlinuz, work / "vmlinuz")
        (work / "inputs.json").write_text(json.dumps(inputs.__dict__, indent=2, default=list) + "\n")
        for name in ("kernel", "agent", "ssh", "stage"):
            shutil.rmtree(work / name, ignore_errors=True)
        for f in work.iterdir():
            f.chmod(0o644)
        work.chmod(0o755)
        shutil.rmtree(out, ignore_errors=True)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Guest(out / "vmlinuz", out / "initrd.gz", inputs.key, release, cache_hit=False)


def ensure(paths: LabPaths) -> Guest:
    """Return the guest for the current inputs, building it on a cache miss."""
    inputs = resolve_inputs(paths.cache)
    return cached(paths, inputs) or build(paths, inputs)
