"""The one error type the library raises: a one-line message (what is wrong, why,
what to do) that the command line prints as it is. Only the CLI turns errors into
exit statuses. Standard library only.
"""
from __future__ import annotations


class MixedstackError(Exception):
    """A one-line message for the user; `status` is the exit status the CLI gives it."""

    status = 1


class InputError(MixedstackError):
    """What is wrong with INPUT and what to do."""


class Interrupted(MixedstackError):
    """Ctrl-C (or SIGTERM/SIGHUP, handled like it) while reading: nothing was written."""

    status = 130

    def __init__(self, message: str = "interrupted: nothing was written"):
        super().__init__(message)
