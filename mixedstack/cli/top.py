"""`mixedstack top`: the hottest functions of a command while it runs, refreshed every
second, by layer; the recording is kept, as `record` keeps it.

record unwinds what it records in batches (record/unwind.py), here every half second;
each batch's samples go to analyze/live.py's Top, and a curses screen (a thread of its
own: record's signal handling needs the main thread) shows its table:

    mixedstack top   view: Python (p)   12.3 s, 6,012 samples   python app.py
      now%  total%   self s  total s  L  function
      41.2    62.0     3.10     5.02  p  parse_rows (app.py)
      ...
    L, and views: a all  p Python  c C in the interpreter  l library C  k kernel   q quit

L is the layer (the key of its view). now%: the share of the last second of samples;
self s and total s: since the start.

q or Ctrl-C stops the command as Ctrl-C would and ends the recording; record's summary
is printed once the screen is gone.
"""
from __future__ import annotations

import curses
import os
import signal
import sys
import tempfile
import threading
import time
from typing import List

import click

from mixedstack.analyze.live import VIEWS
from mixedstack.cli import group as cli
from mixedstack.cli.record import make_room_for
from mixedstack.errors import MixedstackError
from mixedstack.perf import command as perf

REFRESH = 1.0  # seconds between screens at most
KEYS_EVERY = 0.2  # seconds between looks at the keyboard (and at new samples)
UNWIND_EVERY = 0.5  # seconds between record's batches, at least


@cli.main.command(context_settings={"allow_interspersed_args": False})
@click.option("-o", "--output", default="top.data", show_default=True, metavar="FILE",
              help="Keep the recording in FILE (and FILE.d/), as record does.")
@click.option("-F", "--frequency", default=perf.DEFAULT_FREQUENCY, show_default=True,
              type=click.IntRange(1, 100000), metavar="HZ", help="Sample this many times a second.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing recording without asking.")
@click.option("--view", type=click.Choice(list(VIEWS)), default="p",
              show_default=True, help="The layer shown first: a(ll), p(ython), c (the interpreter's C), "
                                      "l(ibrary C), k(ernel); keys switch it while it runs.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def top(output, frequency, force, view, command) -> None:
    """Run COMMAND and show its hottest functions live: Python, C and kernel.

    Example: mixedstack top -- python app.py. Keys: a p c l k switch the layer, q quits
    (stopping COMMAND as Ctrl-C would); the recording is kept in FILE for fold and report.
    """
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        cli.fail("top needs a terminal; to record without one: mixedstack record -- COMMAND", 2)
    from mixedstack.analyze.live import Top
    from mixedstack.record.session import RecordOptions, record as run_record

    make_room_for(output, force, on_terminal=True)
    table = Top()
    lines: List[str] = []  # record's messages, printed once the screen is gone
    screen = Screen(table, " ".join(command), view)
    # the screen is the terminal's: COMMAND writes to a file kept with the recording,
    # perf's own messages wait in another until the screen is gone
    target_output = os.path.join(output + ".d", "output.txt")
    perf_messages = tempfile.TemporaryFile()
    stderr = os.dup(2)
    os.dup2(perf_messages.fileno(), 2)
    screen.start()
    try:
        result = run_record(RecordOptions(list(command), output, frequency, on_samples=table.add,
                                          unwind_every=UNWIND_EVERY, target_output=target_output),
                            say=lines.append)
    except MixedstackError as error:
        result = error
    finally:
        screen.close()
        os.dup2(stderr, 2)
        perf_messages.seek(0)
        sys.stderr.write(perf_messages.read().decode("utf-8", "replace"))
    for line in lines:
        cli.say(line)
    if isinstance(result, MixedstackError):
        cli.fail(str(result), result.status)
    cli.say(result.summary)
    if os.path.exists(target_output):
        cli.say("mixedstack: %s's output: %s" % (command[0], target_output))
    # q is a user's end, not the program's failure
    sys.exit(0 if screen.quit and result.status == 128 + signal.SIGINT else result.status)


class Screen(threading.Thread):
    """The table, drawn every second until close(); its keys."""

    def __init__(self, table, title: str, view: str):
        super().__init__(daemon=True)
        self.table, self.title, self.view = table, title, view
        self.began = time.monotonic()
        self.quit = False
        self._done = threading.Event()

    def run(self) -> None:
        curses.wrapper(self._loop)

    def close(self) -> None:
        self._done.set()
        self.join()

    def _loop(self, window) -> None:
        curses.curs_set(0)
        window.timeout(int(KEYS_EVERY * 1000))
        drawn, shown = (None, None), 0.0
        while not self._done.is_set():
            # every second, and as soon as a batch of samples or a key changed what is shown
            if (self.table.samples, self.view) != drawn or time.monotonic() - shown >= REFRESH:
                self._draw(window, VIEWS)
                drawn, shown = (self.table.samples, self.view), time.monotonic()
            key = window.getch()
            if key in (ord("q"), ord("Q")) and not self.quit:
                self.quit = True
                # to the main thread, where record's handler runs (and whose wait it interrupts):
                # record stops the command as Ctrl-C would
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            elif 0 <= key < 256 and chr(key) in VIEWS:
                self.view = chr(key)

    def _draw(self, window, views) -> None:
        height, width = window.getmaxyx()
        window.erase()
        rows = self.table.rows(self.view, top=max(1, height - 4))
        head = "mixedstack top   view: %s (%s)   %.1f s, %s samples%s   %s" % (
            views[self.view][0], self.view, time.monotonic() - self.began, format(self.table.samples, ","),
            "   stopping..." if self.quit else "", self.title)
        lines = [head, "%6s %7s %8s %8s  %s  %s" % ("now%", "total%", "self s", "total s", "L", "function")]
        lines += ["%6.1f %7.1f %8.2f %8.2f  %s  %s" % (100 * row.self_now, 100 * row.total_now, row.self_s,
                                                      row.total_s, row.layer, row.function) for row in rows]
        for y, line in enumerate(lines[:height - 1]):
            window.addnstr(y, 0, line, max(1, width - 1))
        keys = "L, and views: " + "  ".join("%s %s" % (key, name) for key, (name, _) in views.items()) + "   q quit"
        window.addnstr(height - 1, 0, keys, max(1, width - 1), curses.A_REVERSE)
        window.refresh()
