"""The `mixedstack` command line.

    mixedstack record [-o perf.data] [-F HZ] [--call-graph auto|fp|dwarf] [--off-cpu] [--user USER] -- CMD ARGS...
    mixedstack record --pid PID [-d SECONDS] [--activate|--no-activate] [-o perf.data]
    mixedstack doctor [-- CMD ARGS...]
    mixedstack fold [INPUT] [-o FILE] [--format folded|speedscope|pprof] [--pid] [--tid] [--kernel]
                    [--jit] [--all] [--addrs] [--event-filter EV] [--keep-interpreter] [--inline]
                    [--what cpu|off|wall]
    mixedstack flamegraph [INPUT] [-o FILE.svg] [--title T] [--what cpu|off|wall]
    mixedstack diff BEFORE AFTER [-o diff.svg] [--title T] [--what cpu|off|wall]

Exit status: record passes the target's through (128+N when a signal N ended it,
or when record itself was stopped by signal N: SIGINT, SIGTERM, SIGHUP);
1 when mixedstack could not do its job (perf failed, unreadable input); 2 for bad
usage (click's convention); 130 after Ctrl-C during fold.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import re
import signal
import sys
import threading
import time
from typing import IO, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import click

from mixedstack import __version__
from mixedstack.analyze.processors import offcpu
from mixedstack.perf import command as perf
from mixedstack.analyze.fold import Folder
from mixedstack.analyze.fold import FoldOptions
from mixedstack.model import Sample, Stacks
from mixedstack.perf.command import PerfError
from mixedstack.perf.recording import Recording
from mixedstack.renderers import folded
from mixedstack.analyze.parse import EventFilter
from mixedstack.analyze.parse import ProcessLabel
from mixedstack.analyze.parse import parse
from mixedstack.analyze.sources import InputError
from mixedstack.analyze.sources import folded_unit
from mixedstack.analyze.sources import is_recording
from mixedstack.analyze.sources import open_input
from mixedstack.analyze.sources import parse_folded
from mixedstack.analyze.sources import split_folded


def fail(message: str, status: int = 1) -> None:
    click.echo("mixedstack: error: %s" % message, err=True)
    sys.exit(status)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixedstack")
def main() -> None:
    """One stack for Python, C and kernel frames, from Linux perf."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-o", "--output", default="perf.data", show_default=True, metavar="FILE",
              help="Write the recording to FILE (and its side files to FILE.d/).")
@click.option("-F", "--frequency", default=perf.DEFAULT_FREQUENCY, show_default=True,
              type=click.IntRange(1, 100000),
              metavar="HZ", help="Sample this many times a second.")
@click.option("--call-graph", type=click.Choice(["auto", "fp", "dwarf"]), default="auto",
              show_default=True, help="Unwind with frame pointers, DWARF, or what suits the interpreter.")
@click.option("--stack-size", default=perf.DEFAULT_STACK_SIZE, show_default=True,
              type=click.IntRange(1024, perf.MAX_STACK_SIZE),
              metavar="BYTES", help="User stack copied per sample in DWARF mode.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing recording without asking.")
@click.option("--agent", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Use mixedstack's trampoline agent where CPython's own perf support is missing "
                   "(3.8-3.12 without frame pointers), always, or never.")
@click.option("-p", "--pid", type=int, default=None, metavar="PID",
              help="Attach to a running process instead of running COMMAND.")
@click.option("-d", "--duration", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="With --pid: stop after SECONDS (default: when it exits, or Ctrl-C).")
@click.option("--off-cpu", is_flag=True,
              help="Also record every switch of the target's threads off and back onto a CPU, with "
                   "its stack: time spent blocked (sleep, I/O, locks, the GIL); see fold --what.")
@click.option("--activate/--no-activate", default=None,
              help="With --pid: let gdb run code in the process to turn its perf trampoline on "
                   "(it stays on) and flush its jitdump at the end (default: ask on a terminal, else don't).")
@click.option("-u", "--user", default=None, metavar="USER",
              help="Run COMMAND as USER, with that user's groups and environment, while perf keeps "
                   "the privileges it needs (for sudo: --user \"$SUDO_USER\").")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(output, frequency, call_graph, stack_size, force, agent, pid, duration, off_cpu, activate,
           user, command) -> None:
    """Run COMMAND under perf record, with Python frames where the interpreter allows.

    Examples: mixedstack record -o app.data -- python app.py --its-args;
    mixedstack record --pid 1234 -d 10
    """
    if bool(command) == (pid is not None):
        fail("give either a COMMAND to run (after --) or --pid PID to attach to", 2)
    if duration is not None and pid is None:
        fail("--duration goes with --pid; a COMMAND is recorded until it ends", 2)
    if activate is not None and pid is None:
        fail("--activate/--no-activate go with --pid; a COMMAND is started with its trampoline on", 2)
    if user is not None and pid is not None:
        fail("--user goes with a COMMAND; a process attached to with --pid keeps its own user", 2)
    from mixedstack.record.agent import AgentError  # record's modules: fold and report start without them
    from mixedstack.record.session import RecordOptions
    from mixedstack.record.session import record as run_record
    from mixedstack.record.target import TargetError

    existing = Recording(output)
    problem = existing.unusable_output()
    if problem:
        fail(problem)
    on_terminal = sys.stdin.isatty() and sys.stderr.isatty()
    if existing.unfinished():
        click.echo("mixedstack: replacing %s, left unfinished by an interrupted record" % existing.folder, err=True)
        existing.remove()
    if existing.exists() and not force:
        if on_terminal:
            if not click.confirm("mixedstack: %s exists: replace that recording?" % output, err=True):
                fail("kept the earlier recording %s; record to another file with -o" % output, 1)
        else:
            fail("%s already exists: an earlier recording is never replaced silently; "
                 "record with -o NEW.data, or pass --force to replace it" % output, 1)
    if existing.exists():
        existing.remove()
    try:
        result = run_record(
            RecordOptions(list(command), output, frequency, call_graph, stack_size, agent, pid, duration,
                          off_cpu, activate, user),
            say=lambda message: click.echo(message, err=True),
            ask=(lambda question: click.confirm(question, err=True)) if on_terminal else None,
        )
    except (TargetError, PerfError, AgentError) as error:
        fail(str(error))
    except OSError as error:  # e.g. a file system that refuses new files (/proc, /sys)
        fail("cannot record to %s: %s; choose another -o" % (output, error.strerror or error))
    click.echo(result.summary, err=True)
    sys.exit(result.status)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def doctor(command) -> None:
    """Check what this machine allows and what record will do (for COMMAND, if given).

    Example: mixedstack doctor -- python3.12 app.py. Exit status 1 when record cannot work.
    """
    from mixedstack.record.doctor import doctor as run_checks

    checks = run_checks(list(command))
    for check in checks:
        click.echo(check.line())
    sys.exit(1 if any(check.level == "fail" for check in checks) else 0)


@main.command()
@click.argument("input", default="perf.data", metavar="[INPUT]")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write to FILE instead of standard output.")
@click.option("--format", "format_", type=click.Choice(["folded", "speedscope", "pprof"]), default="folded",
              show_default=True, help="Folded text, speedscope's JSON (one profile per thread), "
                                      "or pprof's gzipped profile.proto.")
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
              help="On-CPU samples (cpu), time spent blocked (off), or both on one time scale "
                   "(wall); off and wall need a recording made with `record --off-cpu`.")
def fold(input, output, format_, pid, tid, kernel, jit, all_, addrs, event_filter, keep_interpreter, inline,
         what):
    """Fold INPUT into one `frame;frame;... count` line per distinct stack.

    INPUT is a recording (default ./perf.data) or `perf script` text in a file or on
    standard input (-). Stacks without Python frames come out exactly as
    FlameGraph's stackcollapse-perf.pl writes them, with the same options.
    Folded text as INPUT is read as it is (to convert it with --format).
    """
    refuse_to_overwrite_a_recording(output)
    if format_ == "pprof" and output == "-" and sys.stdout.isatty():
        fail("pprof output is binary: write it to a file with -o FILE.pb.gz", 2)
    if format_ == "speedscope" and not pid:
        tid = True  # one speedscope profile per thread
    loaded = read_stacks(input, options=FoldOptions(kernel=kernel, jit=jit, all=all_, addrs=addrs,
                                                    keep_interpreter=keep_interpreter),
                         inline=inline, label=ProcessLabel(pid, tid), event_filter=event_filter,
                         detail=format_ == "pprof", what=what)
    if format_ == "folded":
        write_output(output, lambda stream: folded.render(loaded.stacks.weights, stream), "latin-1")
    elif format_ == "speedscope":
        from mixedstack.renderers import speedscope
        write_output(output, lambda stream: speedscope.render(loaded.stacks, stream, name=input), "utf-8")
    else:
        from mixedstack.renderers import pprof
        write_output(output, lambda stream: pprof.render(loaded.stacks, stream), None)
    if output != "-" or sys.stderr.isatty():
        click.echo("mixedstack: %s%s" % (loaded.summary, "" if output == "-" else ", written to %s" % output),
                   err=True)


@main.command()
@click.argument("input", default="perf.data", metavar="[INPUT]")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the SVG to FILE (default: INPUT's name with .svg; - for standard output).")
@click.option("--title", default=None, help="The title above the graph (default: from INPUT).")
@click.option("--what", type=click.Choice(offcpu.WHATS), default=None,
              help="On-CPU samples, off-CPU waits, or both (default: wall for a recording made with "
                   "--off-cpu, else cpu; a folded file as it is).")
def flamegraph(input, output, title, what):
    """Draw INPUT as an interactive flame graph: one SVG that a browser opens.

    INPUT is a recording (default ./perf.data), `perf script` text, or folded text.
    Click a frame to zoom, search with a regular expression, hover for numbers;
    colours tell Python, interpreter C, library C, kernel and off-CPU apart.
    """
    if output is None:
        output = "-" if input == "-" else os.path.splitext(input)[0] + ".svg"
    refuse_to_overwrite(output, input)
    loaded = read_stacks(input, what=what, detail=True)
    from mixedstack.renderers import flamegraph_svg

    if title is None:
        title = "Flame graph: %s%s" % (os.path.basename(input) if input != "-" else "standard input",
                                       " (%s)" % what if what else "")
    write_output(output, lambda stream: flamegraph_svg.render(loaded.stacks, stream, title), "utf-8")
    if output != "-":
        click.echo("mixedstack: %s, flame graph written to %s" % (loaded.summary, output), err=True)


@main.command()
@click.argument("before", metavar="BEFORE")
@click.argument("after", metavar="AFTER")
@click.option("-o", "--output", default="diff.svg", show_default=True, metavar="FILE",
              help="Write the SVG to FILE (- for standard output).")
@click.option("--title", default=None, help="The title above the graph.")
@click.option("--what", type=click.Choice(offcpu.WHATS), default=None,
              help="On-CPU samples, off-CPU waits, or both (default: wall for recordings made with "
                   "--off-cpu, else cpu; folded files as they are).")
def diff(before, after, output, title, what):
    """Draw how AFTER differs from BEFORE: a differential flame graph (SVG).

    BEFORE and AFTER are recordings, `perf script` texts or folded files. Each is
    normalised by its total; a frame is red where its share grew, blue where it
    shrank, and its tooltip gives both shares and the change.
    """
    if before == "-" and after == "-":
        fail("only one of BEFORE and AFTER can be standard input", 2)
    refuse_to_overwrite(output, before, after)
    first = read_stacks(before, what=what, detail=True)
    second = read_stacks(after, what=what, detail=True)
    from mixedstack.renderers import flamegraph_svg

    title = title or "Differential flame graph: %s -> %s" % (os.path.basename(before), os.path.basename(after))
    write_output(output, lambda stream: flamegraph_svg.render_diff(first.stacks, second.stacks, stream, title),
                 "utf-8")
    if output != "-":
        click.echo("mixedstack: before %s; after %s; differential flame graph written to %s"
                   % (first.summary, second.summary, output), err=True)


@main.command()
@click.argument("input", default="perf.data", metavar="[INPUT]")
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="A terminal summary, or the same figures as JSON for scripts.")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write to FILE instead of standard output.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 10000), metavar="N",
              help="Rows in each top-N table.")
def report(input, format_, output, top):
    """Summarise INPUT: on-CPU time by layer, syscalls, GIL waits, threads, top Python
    functions, and the recording's health.

    Off-CPU figures (blocked time, GIL waits) need a recording made with
    `mixedstack record --off-cpu`. Example: mixedstack report perf.data --format json
    """
    import json

    from mixedstack.renderers import report_text
    from mixedstack.analyze.report import ReportBuilder

    refuse_to_overwrite_a_recording(output)
    try:
        selection = select_events(input, None, None)
        builder = ReportBuilder(selection[1], activated=bool(Recording(input).meta().get("activated")))
        with open_input(input) as lines, collector_paused():
            builder.add_all(weighed_samples(lines, selection))
        if builder.samples == 0:
            fail("%s holds no samples: it is not a recording or `perf script` output" % input)
        lost = perf.sample_stats(input)["lost"] if is_recording(input) else None
        notes = Recording(input).meta().get("notes", []) if is_recording(input) else []
        figures = builder.result(top=top, lost=lost, notes=notes)
        text = io.StringIO()
        if format_ == "json":
            json.dump(figures, text, indent=2)
            text.write("\n")
        else:
            report_text.render(figures, input, text)
        write_text(text.getvalue(), output)
    except (InputError, PerfError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted: nothing was written", 130)


def select_events(input: str, what: Optional[str], wanted: Optional[str]
                  ) -> Tuple[EventFilter, Optional[offcpu.Switches], str]:
    """Which samples to read: in a recording made with --off-cpu, the on-CPU event
    and, for --what off|wall, the context switches (with their blocked times).
    `what` None: wall where the recording has switches, else cpu."""
    warn = lambda message: click.echo(message, err=True)  # noqa: E731
    switched = input != "-" and is_recording(input) and offcpu.SWITCH_EVENT in perf.event_names(input)
    if what is None:
        what = "wall" if switched else "cpu"
    if what != "cpu" and not switched:
        raise InputError("%s holds no context switches, so no off-CPU time: record with "
                         "`mixedstack record --off-cpu -- CMD`, or fold with --what cpu" % input)
    if not switched:
        return EventFilter(wanted, warn=warn), None, what
    also = () if what == "cpu" else (offcpu.SWITCH_EVENT,)
    switches = None if what == "cpu" else offcpu.Switches.read(input)
    return EventFilter(wanted or offcpu.CPU_EVENT, warn=warn, also=also), switches, what


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while samples are read: parsing makes a great
    many small objects, none of them in cycles, and the collector's passes over
    them cost ~5% of fold's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def weighed_samples(lines, selection: Tuple[EventFilter, Optional[offcpu.Switches], str],
                    label: Optional[ProcessLabel] = None,
                    on_unrecognized: Optional[Callable[[str], None]] = None) -> Iterator[Sample]:
    """perf script text -> the samples select_events chose, off-CPU ones weighed:
    what fold, flamegraph, diff and report all read."""
    events, switches, what = selection
    samples = parse(lines, label or ProcessLabel(), events, on_unrecognized=on_unrecognized)
    return with_progress(offcpu.weigh(samples, what, switches))


WHAT_LEAF = "[off-cpu"  # off-CPU stacks end in a marker frame: `[off-cpu: sleep]`, ...


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """`kill` and a closed terminal end a fold as Ctrl-C does: through its clean-up
    (the perf processes stopped, any /tmp name lent to perf taken back)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _interrupt)


class Loaded(NamedTuple):
    """INPUT read into stacks, with what the summary line says about it."""

    stacks: Stacks
    summary: str


def read_stacks(input: str, what: Optional[str] = None, options: Optional[FoldOptions] = None,
                inline: bool = False, label: Optional[ProcessLabel] = None,
                event_filter: Optional[str] = None, detail: bool = False) -> Loaded:
    """INPUT -> stacks, the one way fold, flamegraph and diff read their input.

    INPUT is a recording or `perf script` text (through the parser and the Folder;
    detail=True adds sample counts and layers from DSOs), or folded text (read as
    it is). `what` is cpu, off or wall; None means wall for a recording made with
    --off-cpu, else cpu, and the whole file for folded text. Bad input ends here
    with a one-line error.
    """
    options = options or FoldOptions()
    recording = input != "-" and is_recording(input)
    if recording:
        options.activated = bool(Recording(input).meta().get("activated"))
    folder = Folder(options, detail=detail)
    warnings: List[str] = []
    stop_like_ctrl_c()
    try:
        if recording:  # never folded text: pick its events before perf script starts
            selection = select_events(input, what, event_filter)
        with open_input(input, inline=inline) as lines:
            if not recording:
                is_folded, lines = split_folded(lines)
                if is_folded:
                    return read_folded(input, lines, what)
                selection = select_events(input, what, event_filter)
            with collector_paused():
                folder.add_all(weighed_samples(lines, selection, label, warnings.append))
    except (InputError, PerfError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted: nothing was written", 130)
    if folder.samples == 0:
        fail("%s holds no samples: it is not `perf script` output, folded stacks or a recording%s" % (
            input, " (first line not understood: %r)" % warnings[0][:60] if warnings else ""))
    if folder.stackless_samples == folder.samples:
        # stackcollapse-perf.pl prints the process names alone here: so do we
        click.echo("mixedstack: warning: no frame lines found in %s (perf script "
                   "needs the ip, sym and dso fields, and a recording with call graphs)" % input,
                   err=True)
    if recording:
        unnamed_python_warning(input, folder.stacks)
    events = selection[0]
    unit = "nanoseconds" if events.wanted.startswith(("cpu-clock", "task-clock")) else "events"
    summary = "%s samples -> %s stacks, %.1f%% with Python frames" % (
        format(folder.samples, ","), format(len(folder.stacks), ","),
        100.0 * folder.python_samples / folder.samples)
    return Loaded(folder.stacks_with_detail(unit), summary)


UNNAMED_TRAMPOLINE = re.compile(r"\[(?:jitted-\d+-\d+\.so|perf-\d+\.map)\]")


def unnamed_python_warning(input: str, stacks: Dict[str, int]) -> None:
    """Trampolines perf could not name are Python frames lost: say where their names went."""
    total = sum(stacks.values()) or 1
    unnamed = sum(weight for stack, weight in stacks.items() if UNNAMED_TRAMPOLINE.search(stack))
    if unnamed / total < 0.01:
        return
    recording = Recording(input)
    why = ("%s is not beside it: the jitted code and maps that name Python frames are kept there; move or "
           "copy that folder with the recording" % recording.folder if not os.path.isdir(recording.folder) else
           "their processes' jitdumps or perf maps did not name them (killed before they flushed them?)")
    click.echo("mixedstack: warning: %.1f%% of %s's samples have Python frames without names "
               "([jitted-PID-N.so]): %s" % (100.0 * unnamed / total, input, why), err=True)


def read_folded(input: str, lines: Iterable[str], what: Optional[str]) -> Loaded:
    """Folded text -> stacks; --what cpu/off keeps the stacks without/with an off-CPU leaf."""
    weights, bad = parse_folded(lines)
    if bad:
        click.echo("mixedstack: warning: skipped %d lines of %s that are not `stack COUNT` (first: %r)"
                   % (len(bad), input, bad[0][:60]), err=True)
    if what in ("cpu", "off"):
        weights = {stack: value for stack, value in weights.items()
                   if stack.rpartition(";")[2].startswith(WHAT_LEAF) == (what == "off")}
        if not weights:
            fail("%s holds no %s stacks; choose another --what" % (
                input, "off-CPU (leaf [off-cpu: ...])" if what == "off" else "on-CPU"))
    return Loaded(Stacks(weights, folded_unit(weights)),
                  "%s stacks of folded text" % format(len(weights), ","))


def with_progress(samples: Iterable[Sample]) -> Iterator[Sample]:
    """Pass samples through; on a terminal, show a count every second."""
    if not sys.stderr.isatty():
        yield from samples
        return
    shown, count = time.monotonic(), 0
    for count, sample in enumerate(samples, 1):
        if count % 1000 == 0 and time.monotonic() - shown > 1:
            shown = time.monotonic()
            click.echo("\rmixedstack: %s samples read..." % format(count, ","), err=True, nl=False)
        yield sample
    if time.monotonic() - shown > 0 and count >= 1000:
        click.echo("\r" + " " * 60 + "\r", err=True, nl=False)


def refuse_to_overwrite_a_recording(output: str) -> None:
    """Output never replaces a perf.data file (`fold x.data -o x.data`)."""
    if output == "-" or not os.path.isfile(output):
        return
    try:
        with open(output, "rb") as f:
            recorded = f.read(8).startswith(b"PERFILE2")
    except OSError:
        return
    if recorded:
        fail("%s is a perf recording: mixedstack does not write over it; choose another -o" % output)


def refuse_to_overwrite(output: str, *inputs: str) -> None:
    """Neither a recording nor an input file (a folded file, say) is written over."""
    refuse_to_overwrite_a_recording(output)
    for name in inputs:
        if output != "-" and name != "-" and os.path.exists(output) and os.path.exists(name) \
                and os.path.samefile(output, name):
            fail("%s is an input: mixedstack does not write over it; choose another -o" % output)


def write_text(text: str, output: str) -> None:
    """Write TEXT to standard output or, all or nothing, to a file."""
    write_output(output, lambda stream: stream.write(text), "utf-8")


def write_output(output: str, render: Callable[[IO], None], encoding: Optional[str]) -> None:
    """render(stream) into FILE (through FILE.partial, renamed when complete) or
    standard output ("-"); encoding None writes bytes."""
    mode = "wb" if encoding is None else "w"
    text = {} if encoding is None else {"encoding": encoding, "newline": "\n"}
    partial = output + ".partial"
    try:
        if output == "-":
            stream = open(sys.stdout.fileno(), mode, closefd=False, **text)
            try:
                render(stream)
                stream.flush()
            except BrokenPipeError:  # `mixedstack fold | head` is fine
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        if os.path.exists(output) and not os.path.isfile(output):  # /dev/null, a FIFO: never renamed over
            with open(output, mode, **text) as stream:
                render(stream)
            return
        with open(partial, mode, **text) as stream:
            render(stream)
        os.replace(partial, output)  # never leave a half-written file under the real name
    except OSError as error:
        remove_partial(output, partial)
        fail("cannot write %s: %s; choose another -o" % (output, error.strerror or error))
    except KeyboardInterrupt:
        remove_partial(output, partial)
        fail("interrupted: nothing was written", 130)


def remove_partial(output: str, partial: str) -> None:
    if output != "-" and os.path.exists(partial):
        os.remove(partial)


def run() -> None:
    """The `mixedstack` command: main(), then, once its output is flushed, an
    immediate exit. The interpreter's own tear-down would free fold's caches (a
    large recording's stacks, frames and lines: millions of small objects) one by
    one, ~25 ms spent on what the process's exit frees at once anyway."""
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


if __name__ == "__main__":  # pragma: no cover
    run()
