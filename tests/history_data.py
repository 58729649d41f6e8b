"""Build --fio-results run directories for the results history tests from a recorded fio run, scaled.

Each run is `ROOT/run-NN/hv01/vm01/` with the domain's XML (io= as asked) and `vdb/<profile>.<n>.json`: the recorded
fio output of tests/data/fio/randread-qd128.json with IOPS, bandwidth and I/O counts scaled by the run's factor,
latencies by its inverse (Little's law holds), and fio's timestamp one day per run.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from tests.conftest import DATA

PROFILE = "randread-4k-qd128"
RECORDED = DATA / "fio" / "randread-qd128.json"
START = 1_780_000_000  # fio's timestamp of run 1 (2026-05-28)
DAY = 86_400

DOMAIN_XML = """<domain type='kvm'>
  <name>vm01</name>
  <vcpu placement='static'>2</vcpu>
  <iothreads>1</iothreads>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='{io}' iothread='1'/>
      <source dev='/dev/nvme0n1p3'/>
      <target dev='vdb' bus='virtio'/>
      <serial>data-vdb</serial>
    </disk>
  </devices>
</domain>
"""

PROFILES = """version: 1
defaults: {runtime: 10, ramp_time: 2, repeat: 3}
profiles:
  randread-4k-qd128:
    description: campaign profile
    rw: randread
    bs: 4k
    iodepth: 128
    numjobs: 1
"""
CLASSES = """version: 1
classes:
  nvme:
    description: test class
    match:
      - target: "hv01/*/*"
    max_spread: 0.3
    tolerance: 0.15
    limits:
      randread-4k-qd128:
        iops: {floor: 1000}
"""


def scaled(document: dict[str, Any], factor: float, timestamp: int) -> dict[str, Any]:
    """Return a fio document whose read side is `factor` times as fast, written at `timestamp`."""
    doc = copy.deepcopy(document)
    doc["timestamp"], doc["timestamp_ms"] = timestamp, timestamp * 1000
    for job in doc["jobs"]:
        side = job["read"]
        for key in ("io_bytes", "io_kbytes", "total_ios"):
            side[key] = int(side[key] * factor)
        for key in ("bw_bytes", "bw", "iops", "bw_min", "bw_max", "bw_mean", "iops_min", "iops_max", "iops_mean"):
            if key in side:
                side[key] = side[key] * factor
        for lat in ("slat_ns", "clat_ns", "lat_ns"):
            stats = side.get(lat)
            if not stats:
                continue
            for key in ("min", "max", "mean", "stddev"):
                if key in stats:
                    stats[key] = stats[key] / factor
            for pct, value in stats.get("percentile", {}).items():
                stats["percentile"][pct] = int(value / factor)
    return doc


def write_runs(root: Path, runs: int, *, change_at: int, drop: float, noise: float = 0.03, seed: int = 22,
               io_before: str = "native", io_after: str = "threads", first: int = 1, base: float = 1.0) -> list[Path]:
    """Write runs `first`..`first + runs - 1` (run-NN) at `base` times the recorded IOPS; from run `change_at` on,
    io= changes and IOPS drop by `drop` (a negative drop is a rise)."""
    recorded = json.loads(RECORDED.read_text())
    rng = random.Random(seed)
    written = []
    for number in range(first, first + runs):
        after = number >= change_at
        directory = root / f"run-{number:02d}"
        disk = directory / "hv01" / "vm01" / "vdb"
        disk.mkdir(parents=True)
        (directory / "hv01" / "vm01" / "domain.xml").write_text(DOMAIN_XML.format(io=io_after if after else io_before))
        level = base * ((1 - drop) if after else 1.0)
        for n in (1, 2, 3):
            factor = level * (1 + rng.uniform(-noise, noise))
            stamp = START + number * DAY + n * 20
            (disk / f"{PROFILE}.{n}.json").write_text(json.dumps(scaled(recorded, factor, stamp)))
        written.append(directory)
    return written


def write_thresholds(directory: Path) -> Path:
    """Write a thresholds directory with the profile and a class (tolerance 15 %) for hv01's disks."""
    (directory / "baselines").mkdir(parents=True, exist_ok=True)
    (directory / "profiles.yaml").write_text(PROFILES)
    (directory / "classes.yaml").write_text(CLASSES)
    return directory
