"""Shared helpers for the plugin's own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import scipy.stats  # noqa: F401  # loaded before any in-process pytester run: numpy can't be imported twice per process
from hypothesis import settings as hypothesis_settings

# Property tests check logic, not speed: a busy CI machine must not turn them red with a deadline.
hypothesis_settings.register_profile("kvmio", deadline=None)
hypothesis_settings.load_profile("kvmio")

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


LAB_UP_TIMEOUT = 1500


def kvmio(*args: str, timeout: int = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `kvmio` command of this checkout (`env`: extra environment variables)."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from pytest_kvmio.cli import main; sys.exit(main())", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """Bring the lab up once per session (idempotent: seconds when it runs) and return its status.

    Tests marked `lab` get it automatically, so they run whatever their order; KVMIO_NO_LAB=1 skips
    them instead (for a machine that can't host guests), which then says so in the summary.
    """
    if os.environ.get("KVMIO_NO_LAB") == "1":
        pytest.skip("KVMIO_NO_LAB=1: lab tests not run")
    up = kvmio("lab", "up", timeout=LAB_UP_TIMEOUT)
    assert up.returncode == 0, f"kvmio lab up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    status = kvmio("lab", "status", "--json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


@pytest.fixture(autouse=True)
def _lab_for_lab_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("lab") is not None:
        request.getfixturevalue("lab")
