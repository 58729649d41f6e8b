"""Check that every binary, package and Python module the lab needs is present."""

from __future__ import annotations

import importlib.util
import pwd
import shutil

from pytest_kvmio.errors import CommandError

# binary -> Debian package that provides it
BINARIES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "qemu-storage-daemon": "qemu-system-common",  # the backend of the lab's vhost-user disks
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "fio": "fio",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "gzip": "gzip",
    "modprobe": "kmod",
    "depmod": "kmod",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
    "ldd": "libc-bin",
    "fallocate": "util-linux",
    "truncate": "coreutils",
}
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing() -> list[str]:
    """Return one line per missing piece, each naming what provides it."""
    problems: list[str] = []
    packages: dict[str, list[str]] = {}
    for binary, package in BINARIES.items():
        if shutil.which(binary, path=SEARCH_PATH) is None:
            packages.setdefault(package, []).append(binary)
    for package, binaries in packages.items():
        problems.append(f"{', '.join(binaries)}: apt-get install -y {package}")
    busybox = shutil.which("busybox", path=SEARCH_PATH)
    if busybox and "busybox-static" not in packages:
        with open(busybox, "rb") as fh:
            head = fh.read(1 << 16)
        if b"ld-linux" in head:
            problems.append(f"{busybox} is dynamically linked; the guest needs a static one: "
                            "apt-get install -y busybox-static")
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        problems.append("user libvirt-qemu (libvirtd: \"Failed to parse user 'libvirt-qemu'\"): "
                        "apt-get install -y -o Dpkg::Options::=--force-confnew libvirt-daemon-system")
    if importlib.util.find_spec("libvirt") is None:
        problems.append("Python module libvirt: pip install libvirt-python (needs libvirt-dev pkg-config) "
                        "or apt-get install -y python3-libvirt")
    return problems


def check() -> None:
    """Raise a CommandError listing every missing piece at once."""
    import os

    if os.geteuid() != 0:
        raise CommandError("the lab manages libvirtd, sshd and root's authorized_keys; run it as root")
    problems = missing()
    if problems:
        raise CommandError("missing:\n  " + "\n  ".join(problems) +
                           "\nInstall them, then run `kvmio lab up` again.")
