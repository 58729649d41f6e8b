"""Serialize `kvmio lab up/down` runs on one state directory (several users share a machine)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_kvmio.errors import CommandError

LOCK_DIR = Path("/run/lock")


@contextmanager
def exclusive(root: Path, timeout: float = 900, say: object = print) -> Iterator[None]:
    """Hold an exclusive lock for `root` (outside it: `down --purge` removes the directory)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    path = LOCK_DIR / f"kvmio-lab-{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and callable(say):
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                    say(f"waiting for another `kvmio lab` command on {root} (pid {holder or '?'})")
                    waited = True
                if time.monotonic() > deadline:
                    raise CommandError(f"another `kvmio lab` command holds {path} for over {timeout:.0f}s; "
                                       "wait for it or stop it") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
