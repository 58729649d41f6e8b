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
    """kvmio's one usage error: an input (a file, a value, an option) is unusable. `ERROR: ...` and exit code 4 in
    every `kvmio` command (`cli.main`); in pytest, where it becomes pytest's UsageError (`runconfig`, `settings`), too.

    `command`: the command that refused it, when not the one running (argparse's prog); `usage`: its usage lines,
    printed after the message.
    """

    def __init__(self, message: str, *, command: str | None = None, usage: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.usage = usage
