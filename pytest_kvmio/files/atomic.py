"""The one way kvmio writes an output file: whole or not at all (the JSON summary, perf results, baselines, the lab's
manifest)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) so that a reader sees the old file or the new one, never half of it.

    The text goes to a temporary file beside `path`, then is renamed over it. The parent directory is created when
    missing; a file that exists keeps its permission bits (a new one gets 0644). On failure the temporary file is
    removed and the OSError raised, for the caller to name its option.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
