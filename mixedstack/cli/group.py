"""The `mixedstack` group, and how the library's errors become exit statuses."""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Iterator, NoReturn

import click

from mixedstack import __version__
from mixedstack.errors import Interrupted, MixedstackError


def fail(message: str, status: int = 1) -> NoReturn:
    click.echo("mixedstack: error: %s" % message, err=True)
    sys.exit(status)


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """The library's errors -> their one line on stderr and their exit status; Ctrl-C
    (and SIGTERM/SIGHUP, raised as it) wherever it lands -> "interrupted", 130."""
    try:
        yield
    except MixedstackError as error:
        fail(str(error), error.status)
    except KeyboardInterrupt:
        interrupted = Interrupted()
        fail(str(interrupted), interrupted.status)


def say(message: str) -> None:
    """A line for the user, on stderr (stdout carries the output)."""
    click.echo(message, err=True)


class StatusLine:
    """record's live line on a terminal (samples, lost, disk, elapsed), rewritten in place;
    called with None, it goes."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __call__(self, status) -> None:
        from mixedstack.record.collect import status_line

        self.stream.write("\r\x1b[K" + (status_line(status) if status is not None else ""))
        self.stream.flush()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixedstack")
def main() -> None:
    """One stack for Python, C and kernel frames, from Linux perf."""


def run() -> None:
    """The `mixedstack` command: main(), then, once its output is flushed, an
    immediate exit. The interpreter's own tear-down would free fold's caches (a
    large recording's stacks, frames and lines: millions of small objects) one by
    one, time spent on what the process's exit frees at once anyway (docs/speed.md)."""
    try:
        main()
    except SystemExit as exit:
        status = exit.code
        if not (status is None or isinstance(status, int)) or threading.active_count() > 1:
            raise  # a message to print, or threads to wait for: the normal exit
    else:
        status = 0
    atexit._run_exitfuncs()  # what libraries asked to run at exit still runs
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `mixedstack fold | head`: what was read is what was wanted
        pass
    os._exit(status or 0)
