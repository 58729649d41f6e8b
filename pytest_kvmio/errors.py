"""kvmio's own exceptions: what turns a test item into an error, and what a command reports without a traceback."""

from __future__ import annotations


class CouldNotJudge(Exception):
    """Raised where a rule's facts can't be observed (fio failed, the guest or daemon went away).

    Not an AssertionError: the item's outcome is `error`, never a failed rule. The message names
    the target, what was being observed and the cause.
    """


class CommandError(Exception):
    """A failure of a `kvmio` command the user can act on; printed without a traceback, exit code 1."""


class InputError(CommandError):
    """An input given to a `kvmio` command (a file, a value) is unusable: `ERROR: ...`, exit code 4, as pytest's usage errors."""
