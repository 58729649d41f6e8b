"""Shared helpers for the plugin's own tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"
DATA = Path(__file__).resolve().parent / "data"

VM_XML = """<domain type='kvm'>
  <name>{name}</name>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
{disks}
  </devices>
</domain>
"""
DISK_XML = """    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' {driver}/>
      <source file='/var/lib/libvirt/images/{name}-{dev}.img'/>
      <target dev='{dev}' bus='virtio'/>
    </disk>"""


def write_domain(directory: Path, name: str, disks: dict[str, str], vcpus: int = 1) -> Path:
    """Write a small domain XML whose disks carry the given <driver> attributes."""
    body = "\n".join(DISK_XML.format(name=name, dev=dev, driver=drv) for dev, drv in disks.items())
    path = directory / f"{name}.xml"
    path.write_text(VM_XML.format(name=name, vcpus=vcpus, disks=body))
    return path


def verdicts_of(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Return the JSON summary's verdicts keyed by (rule, target)."""
    document = json.loads(path.read_text())
    return {(v["rule"], v["target"]): v for v in document["verdicts"]}


@pytest.fixture
def xml_dir(pytester: pytest.Pytester) -> Path:
    directory = pytester.path / "domains"
    directory.mkdir()
    return directory
