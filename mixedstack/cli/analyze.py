"""`mixedstack fold`, `flamegraph`, `diff` and `report`: options -> one library call -> output."""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time

import click

from mixedstack.cli import group as cli
from mixedstack.analyze.compare import same_program
from mixedstack.analyze.fold import FoldOptions
from mixedstack.analyze.load import Loaded, read
from mixedstack.perf.parse import ProcessLabel
from mixedstack.analyze.processors import offcpu
from mixedstack.perf.data import is_recording
from mixedstack.renderers import render, renderer, write_output

STACK_FORMATS = ["folded", "speedscope", "pprof", "gecko"]
TIMELINES = ("speedscope", "gecko")  # formats that show each thread's samples in time order
LINED = ("speedscope", "gecko", "pprof")  # formats that keep a line as a field of its own


def only_processes(command):
    """--process PID|NAME, repeatable: for recordings of many processes (record -a, --pid's trees)."""
    return click.option("--process", "processes", multiple=True, metavar="PID|NAME",
                        help="Only the samples of this process (a pid, or a command name as perf "
                             "shows it); repeat for more.")(command)


@cli.main.command()
@click.argument("input", default="perf.data", metavar="[INPUT]")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write to FILE instead of standard output.")
@click.option("--format", "format_", type=click.Choice(STACK_FORMATS), default="folded",
              show_default=True, help="Folded text, speedscope's JSON (each thread's timeline), "
                                      "pprof's gzipped profile.proto, or the Firefox Profiler's "
                                      "gecko JSON (threads as tracks, waits and syscalls as markers).")
@click.option("--pid", is_flag=True, help="Include the PID with process names.")
@click.option("--tid", is_flag=True, help="Include the PID and TID with process names.")
@click.option("--kernel", is_flag=True, help="Annotate kernel functions with _[k].")
@click.option("--jit", is_flag=True, help="Annotate perf-map (JIT) functions with _[j].")
@click.option("--all", "all_", is_flag=True, help="All annotations (--kernel --jit).")
@click.option("--addrs", is_flag=True, help="Include raw addresses where symbols are unknown.")
@click.option("--event-filter", metavar="EV", default=None,
              help="Keep samples of event EV only (default: the first event seen).")
@click.option("--keep-interpreter", is_flag=True,
              help="Show every frame as perf saw it: no Python merge, no plumbing dropped.")
@click.option("--inline/--no-inline", default=False, show_default=True,
              help="Show inlined C functions (perf script is twice as slow with them).")
@click.option("--what", type=click.Choice(offcpu.WHATS), default="cpu", show_default=True,
              help="On-CPU samples (cpu), time spent blocked (off), both on one time scale (wall), "
                   "or the threads that held the GIL while others waited, weighed by those waits "
                   "(gil-holders); all but cpu need a recording made with `record --off-cpu`.")
@click.option("--lines", is_flag=True,
              help="One frame per line of a Python function (`handler (app.py:42)`) where record's "
                   "companion noted them (CPython 3.14+); speedscope, pprof and gecko carry lines anyway.")
@only_processes
def fold(input, output, format_, pid, tid, kernel, jit, all_, addrs, event_filter, keep_interpreter, inline,
         what, lines, processes):
    """Fold INPUT into one `frame;frame;... count` line per distinct stack.

    INPUT is a recording (default ./perf.data) or `perf script` text in a file or on
    standard input (-). Stacks without Python frames come out exactly as
    FlameGraph's stackcollapse-perf.pl writes them, with the same options.
    Folded text as INPUT is read as it is (to convert it with --format).
    """
    refuse_to_overwrite(output)
    if format_ == "pprof" and output == "-" and sys.stdout.isatty():
        cli.fail("pprof output is binary: write it to a file with -o FILE.pb.gz", 2)
    if format_ == "speedscope" and not pid:
        tid = True  # one speedscope profile per thread
    loaded = load(input, options=FoldOptions(kernel=kernel, jit=jit, all=all_, addrs=addrs,
                                             keep_interpreter=keep_interpreter),
                  inline=inline, label=ProcessLabel(pid, tid), event_filter=event_filter,
                  detail=format_ == "pprof", what=what, processes=processes, timeline=format_ in TIMELINES,
                  lines=lines or format_ in LINED)
    options = {"name": input} if format_ in TIMELINES else {}
    write(output, format_, loaded, **options)
    if output != "-" or sys.stderr.isatty():
        cli.say("mixedstack: %s%s" % (loaded.summary, "" if output == "-" else ", written to %s" % output))


@cli.main.command()
@click.argument("input", default="perf.data", metavar="[INPUT]")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the SVG to FILE (default: INPUT's name with .svg; - for standard output).")
@click.option("--title", default=None, help="The title above the graph (default: from INPUT).")
@click.option("--what", type=click.Choice(offcpu.WHATS), default=None,
              help="On-CPU samples, off-CPU waits, both, or the GIL's holders weighed by the waits "
                   "they caused (default: wall for a recording made with --off-cpu, else cpu; a "
                   "folded file as it is).")
@only_processes
def flamegraph(input, output, title, what, processes):
    """Draw INPUT as an interactive flame graph: one SVG that a browser opens.

    INPUT is a recording (default ./perf.data), `perf script` text, or folded text.
    Click a frame to zoom, search with a regular expression, hover for numbers;
    colours tell Python, interpreter C, library C, kernel and off-CPU apart.
    """
    if output is None:
        output = "-" if input == "-" else os.path.splitext(input)[0] + renderer("flamegraph").EXTENSION
    refuse_to_overwrite(output, input)
    loaded = load(input, what=what, detail=True, processes=processes)
    if title is None:
        title = "Flame graph: %s%s" % (os.path.basename(input) if input != "-" else "standard input",
                                       " (%s)" % what if what else "")
    write(output, "flamegraph", loaded, title=title)
    if output != "-":
        cli.say("mixedstack: %s, flame graph written to %s" % (loaded.summary, output))


@cli.main.command()
@click.argument("before", metavar="BEFORE")
@click.argument("after", metavar="AFTER")
@click.option("-o", "--output", default="diff.svg", show_default=True, metavar="FILE",
              help="Write the SVG to FILE (- for standard output).")
@click.option("--title", default=None, help="The title above the graph.")
@click.option("--what", type=click.Choice(offcpu.WHATS), default=None,
              help="On-CPU samples, off-CPU waits, both, or the GIL's holders weighed by the waits "
                   "they caused (default: wall for recordings made with --off-cpu, else cpu; folded "
                   "files as they are).")
@click.option("--exact-roots", is_flag=True,
              help="Compare process roots as they are (by default python3.11, python3.13 and a venv's "
                   "python are one root: the same program on another interpreter).")
def diff(before, after, output, title, what, exact_roots):
    """Draw how AFTER differs from BEFORE: a differential flame graph (SVG).

    BEFORE and AFTER are recordings, `perf script` texts or folded files, of one
    program on one interpreter or two (python3.11 and python3.13 are one root). Each is
    normalised by its total; a frame is red where its share grew, blue where it
    shrank, and its tooltip gives both shares and the change.
    """
    if before == "-" and after == "-":
        cli.fail("only one of BEFORE and AFTER can be standard input", 2)
    refuse_to_overwrite(output, before, after)
    first = load(before, what=what, detail=True)
    second = load(after, what=what, detail=True)
    if not exact_roots:
        first, second = (loaded._replace(stacks=same_program(loaded.stacks)) for loaded in (first, second))
    title = title or "Differential flame graph: %s -> %s" % (os.path.basename(before), os.path.basename(after))
    svg = renderer("flamegraph")
    with cli.errors_to_exit():
        write_output(output, lambda stream: svg.render_diff(first.stacks, second.stacks, stream, title),
                     svg.ENCODING)
    if output != "-":
        cli.say("mixedstack: before %s; after %s; differential flame graph written to %s"
                % (first.summary, second.summary, output))


@cli.main.command()
@click.argument("input", default="perf.data", metavar="[INPUT]")
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="A terminal summary, or the same figures as JSON for scripts.")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write to FILE instead of standard output.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 10000), metavar="N",
              help="Rows in each top-N table.")
@only_processes
def report(input, format_, output, top, processes):
    """Summarise INPUT: on-CPU time by layer, syscalls, GIL waits, threads, top Python
    functions, and the recording's health.

    Off-CPU figures (blocked time, GIL waits) need a recording made with
    `mixedstack record --off-cpu`. Example: mixedstack report perf.data --format json
    """
    from mixedstack.analyze.report import report as figures_of
    from mixedstack.renderers import report_text

    refuse_to_overwrite(output)
    stop_like_ctrl_c()
    with cli.errors_to_exit():
        figures = figures_of(input, top=top, warn=cli.say, processes=processes)
        text = io.StringIO()
        if format_ == "json":
            json.dump(figures, text, indent=2)
            text.write("\n")
        else:
            report_text.render(figures, text, source=input)
        write_output(output, lambda stream: stream.write(text.getvalue()), report_text.ENCODING)


def load(input: str, **how) -> Loaded:
    """INPUT -> stacks (analyze.load.read), with the CLI's progress, warnings and errors."""
    stop_like_ctrl_c()
    progress = TerminalProgress() if sys.stderr.isatty() else None
    try:
        with cli.errors_to_exit():
            return read(input, warn=cli.say, progress=progress, **how)
    finally:
        if progress:
            progress.clear()


def write(output: str, format: str, loaded: Loaded, **options) -> None:
    with cli.errors_to_exit():
        render(loaded.stacks, format, output, **options)


class TerminalProgress:
    """On a terminal, a count of the samples read, at most once a second, cleared at the end."""

    def __init__(self) -> None:
        self.shown = time.monotonic()
        self.written = False

    def __call__(self, count: int) -> None:
        if time.monotonic() - self.shown > 1:
            self.shown = time.monotonic()
            self.written = True
            click.echo("\rmixedstack: %s samples read..." % format(count, ","), err=True, nl=False)

    def clear(self) -> None:
        if self.written:
            click.echo("\r" + " " * 60 + "\r", err=True, nl=False)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """`kill` and a closed terminal end a fold as Ctrl-C does: through its clean-up
    (the perf processes stopped, any /tmp name lent to perf taken back)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _interrupt)


def refuse_to_overwrite(output: str, *inputs: str) -> None:
    """Output never replaces a recording (`fold x.data -o x.data`), nor an input file
    (a folded file, say)."""
    if output != "-" and os.path.isfile(output) and is_recording(output):
        cli.fail("%s is a perf recording: mixedstack does not write over it; choose another -o" % output)
    for name in inputs:
        if output != "-" and name != "-" and os.path.exists(output) and os.path.exists(name) \
                and os.path.samefile(output, name):
            cli.fail("%s is an input: mixedstack does not write over it; choose another -o" % output)
