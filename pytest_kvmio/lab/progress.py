"""Print one line per lab step with its elapsed time, and name the step that failed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pytest_kvmio.errors import CommandError


class Progress:
    """Step reporter; `step()` turns any exception into a CommandError naming the step."""

    def __init__(self, out: Callable[[str], None] | None = None) -> None:
        self.start = time.monotonic()
        self._out = out or (lambda line: print(line, file=sys.stderr, flush=True))

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        self._out(f"[{self.elapsed():6.1f}s] {text}")

    @contextmanager
    def step(self, name: str, cleanup: Callable[[], None] | None = None) -> Iterator[StepInfo]:
        """Run one step; on failure run `cleanup`, then raise `step NAME failed: ...`."""
        info = StepInfo()
        t0 = time.monotonic()
        try:
            yield info
        except BaseException as exc:
            if cleanup is not None:
                try:
                    cleanup()
                except Exception as cexc:  # cleanup must not hide the original failure
                    self.say(f"{name}: cleanup also failed: {cexc}")
            if isinstance(exc, KeyboardInterrupt):
                raise
            detail = str(exc) if isinstance(exc, CommandError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, CommandError) and detail.startswith("step "):
                raise
            raise CommandError(f"step {name} failed: {detail}") from exc
        note = f" ({info.note})" if info.note else ""
        self.say(f"{name}: done in {time.monotonic() - t0:.1f}s{note}")


class StepInfo:
    """What a step reports on success (e.g. 'cache hit')."""

    note: str = ""
