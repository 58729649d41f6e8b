"""pytest-kvmio: acceptance tests for KVM/QEMU/libvirt storage configurations."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-kvmio")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
