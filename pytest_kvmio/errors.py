"""The exception that turns an item into an error: kvmio could not observe what a rule needs."""

from __future__ import annotations


class CouldNotJudge(Exception):
    """Raised where a rule's facts can't be observed (fio failed, the guest or daemon went away).

    Not an AssertionError: the item's outcome is `error`, never a failed rule. The message names
    the target, what was being observed and the cause.
    """
