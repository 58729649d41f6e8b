"""kvmio's own exceptions: what turns a test item into an error, and what a command reports without a traceback."""

from __future__ import annotations


class CouldNotJudge(Exception):
    """Raised where a rule's facts can't be observed (fio failed, the guest or daemon went away).

    Not an AssertionError: the item's outcome is `error`, never a failed rule. The message names
    the target, what was being observed and the cause.
    """


class CommandError(Exception):
    """A failure of a `kvmio` command the user can act on; printed without a traceback, exit code 1."""
