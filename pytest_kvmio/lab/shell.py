"""Run host commands with a timeout, and fail with the command and its stderr."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pytest_kvmio.errors import CommandError


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 120,
    cwd: Path | None = None,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell); raise CommandError naming the command on failure or timeout."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"`{shlex.join(args)}` did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise CommandError(f"`{args[0]}` not found; run `kvmio lab up` to get the preflight list") from exc
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise CommandError(f"`{shlex.join(args)}` exited {proc.returncode}: {' | '.join(err)}")
    return proc


def tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a (possibly missing) text file."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"
