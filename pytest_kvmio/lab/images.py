"""Create the lab's disk images (raw preallocated/sparse/full, qcow2 thin/full), only when missing."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_kvmio.lab.shell import run
from pytest_kvmio.lab.topology import ImageSpec


def info(path: Path) -> dict[str, object]:
    """Return `qemu-img info -U --output=json` of an image."""
    return json.loads(run(["qemu-img", "info", "-U", "--output=json", path], timeout=30).stdout)


def _matches(spec: ImageSpec, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        facts = info(path)
    except Exception:
        return False
    size = spec.size_mib << 20
    if facts.get("format") != spec.fmt or facts.get("virtual-size") != size:
        return False
    actual = int(str(facts.get("actual-size", 0)))
    # The guest may have written to a sparse image; only a sparse/allocated flip means rebuild.
    return (actual < size) == spec.sparse


def create(spec: ImageSpec, path: Path) -> None:
    """Create one image file as its spec says."""
    size = f"{spec.size_mib}M"
    path.unlink(missing_ok=True)
    if spec.fmt == "raw" and spec.alloc == "prealloc":
        run(["fallocate", "-l", size, path], timeout=120)
    elif spec.fmt == "raw" and spec.alloc == "sparse":
        run(["truncate", "-s", size, path], timeout=30)
    elif spec.fmt == "qcow2" and spec.alloc == "thin":
        run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], timeout=60)
    elif spec.fmt == "raw" and spec.alloc == "full":
        run(["qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=full", path, size], timeout=300)
    elif spec.fmt == "qcow2" and spec.alloc == "full":
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", path, size], timeout=300)
    else:
        raise ValueError(f"unknown image layout {spec.fmt}/{spec.alloc}")
    path.chmod(0o644)


def ensure(specs: list[ImageSpec], image_dir: Path) -> tuple[list[Path], list[Path]]:
    """Create missing or mismatching images; return (created, kept)."""
    image_dir.mkdir(parents=True, exist_ok=True)
    image_dir.chmod(0o755)
    created, kept = [], []
    for spec in specs:
        path = image_dir / spec.filename
        if _matches(spec, path):
            kept.append(path)
            continue
        try:
            create(spec, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        created.append(path)
    return created, kept
