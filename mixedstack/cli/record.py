"""`mixedstack record` and `mixedstack doctor`: the recording side's commands."""
from __future__ import annotations

import sys

import click

from mixedstack.cli import group as cli
from mixedstack.errors import MixedstackError
from mixedstack.perf import command as perf
from mixedstack.perf.recording import Recording


# Options end at COMMAND's first word (allow_interspersed_args): its own options pass
# through untouched; an unknown option before it is a usage error, not a command.
@cli.main.command(context_settings={"allow_interspersed_args": False})
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
@click.option("-p", "--pid", "pids", type=int, multiple=True, metavar="PID",
              help="Attach to a running process, and every process descending from it, instead of "
                   "running COMMAND (repeat for more).")
@click.option("-a", "--all", "everything", is_flag=True,
              help="Record every process on the machine (as root; until -d SECONDS or Ctrl-C), each "
                   "Python process with its frames where its trampoline is on or --activate turns it on.")
@click.option("--children/--no-children", default=True, show_default=True,
              help="With --pid: record the processes descending from PID too (a prefork master's "
                   "workers, those it starts while recording), or PID alone.")
@click.option("-d", "--duration", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Stop recording after SECONDS (default: when the target exits, or Ctrl-C).")
@click.option("--stop-target/--keep-target", default=True, show_default=True,
              help="When --duration runs out, stop the COMMAND as Ctrl-C would, or let it run on "
                   "to its end (record waits for it and passes its exit status on).")
@click.option("--off-cpu", is_flag=True,
              help="Also record every switch of the target's threads off and back onto a CPU, with "
                   "its stack: time spent blocked (sleep, I/O, locks, the GIL); see fold --what.")
@click.option("--activate/--no-activate", default=None,
              help="With --pid: let gdb run code in the process to turn its perf trampoline on "
                   "(it stays on) and flush its jitdump at the end (default: ask on a terminal, else don't).")
@click.option("-u", "--user", default=None, metavar="USER",
              help="Run COMMAND as USER, with that user's groups and environment, while perf keeps "
                   "the privileges it needs (for sudo: --user \"$SUDO_USER\").")
@click.option("--drop-stacks", is_flag=True,
              help="Keep perf.data small: once its samples are unwound (while recording), leave out "
                   "perf's copies of their stacks (~300 bytes a sample kept instead of ~3.5 KB). "
                   "mixedstack reads it as before; perf script can no longer unwind it.")
@click.option("--syscalls", is_flag=True,
              help="Also record every system call of the target's threads, entry and exit, and a sample "
                   "of them with stacks: report then gives each syscall's calls, errors and latency "
                   "(p50, p99, max), and the Python functions that made them.")
@click.option("--lines/--no-lines", default=None,
              help="On CPython 3.14+ (default there): a companion sampler notes the line each Python "
                   "frame is on, for fold --lines and the timelines; elsewhere record says why not.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(output, frequency, call_graph, stack_size, force, agent, pids, everything, children, duration,
           stop_target, off_cpu, activate, user, drop_stacks, syscalls, lines, command) -> None:
    """Run COMMAND under perf record, with Python frames where the interpreter allows.

    Examples: mixedstack record -o app.data -- python app.py --its-args;
    mixedstack record --pid 1234 -d 10
    """
    if everything and (command or pids):
        cli.fail("-a records every process: give no COMMAND and no --pid with it", 2)
    pid = pids[0] if pids else (1 if everything else None)  # below: what goes for --pid goes for -a
    if bool(command) == (pid is not None):
        cli.fail("give either a COMMAND to run (after --), --pid PID to attach to, or -a for every process", 2)
    if not stop_target and (duration is None or pid is not None):
        cli.fail("--keep-target goes with --duration and a COMMAND: a process attached to with --pid "
                 "always runs on", 2)
    if not children and pid is None:
        cli.fail("--no-children goes with --pid; a COMMAND's children are always recorded", 2)
    if activate is not None and pid is None:
        cli.fail("--activate/--no-activate go with --pid; a COMMAND is started with its trampoline on", 2)
    if user is not None and pid is not None:
        cli.fail("--user goes with a COMMAND; a process attached to with --pid keeps its own user", 2)
    if drop_stacks and pid is not None:
        cli.fail("--drop-stacks goes with a COMMAND, whose samples record unwinds as it records; "
                 "a recording of running processes (--pid, -a) is unwound by its first fold", 2)
    from mixedstack.record.session import RecordOptions, record as run_record  # fold and report start without it

    on_terminal = sys.stdin.isatty() and sys.stderr.isatty()
    make_room_for(output, force, on_terminal)
    try:
        result = run_record(
            RecordOptions(list(command), output, frequency, call_graph, stack_size, agent, list(pids), children,
                          everything, duration, stop_target, off_cpu, activate, user, drop_stacks=drop_stacks, syscalls=syscalls, lines=lines,
                          progress=cli.StatusLine(sys.stderr) if sys.stderr.isatty() else None),
            say=cli.say,
            ask=(lambda question: click.confirm(question, err=True)) if on_terminal else None,
        )
    except MixedstackError as error:
        cli.fail(str(error), error.status)
    except OSError as error:  # e.g. a file system that refuses new files (/proc, /sys)
        cli.fail("cannot record to %s: %s; choose another -o" % (output, error.strerror or error))
    lines_placed(output)
    cli.say(result.summary)  # last: it names the next command
    sys.exit(result.status)


def lines_placed(output: str) -> None:
    """Where the companion sampler ran (3.14+): how many samples its lines reached."""
    if not (Recording(output).meta().get("lines") or {}).get("snapshots"):
        return
    from mixedstack.analyze.load import read

    try:
        placed = read(output, lines=True).lines
    except MixedstackError:
        return
    if placed is not None:
        cli.say("mixedstack: %s (fold --lines shows them)" % placed.text())


def make_room_for(output: str, force: bool, on_terminal: bool) -> None:
    """A recording to be written at `output`: one there already is replaced only when
    the user says so (--force, or yes on a terminal), or left unfinished by a record
    that was interrupted."""
    existing = Recording(output)
    problem = existing.unusable_output()
    if problem:
        cli.fail(problem)
    if existing.unfinished():
        cli.say("mixedstack: replacing %s, left unfinished by an interrupted record" % existing.folder)
        existing.remove()
    if existing.exists() and not force:
        if on_terminal:
            if not click.confirm("mixedstack: %s exists: replace that recording?" % output, err=True):
                cli.fail("kept the earlier recording %s; record to another file with -o" % output, 1)
        else:
            cli.fail("%s already exists: an earlier recording is never replaced silently; "
                     "record with -o NEW.data, or pass --force to replace it" % output, 1)
    if existing.exists():
        existing.remove()


@cli.main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
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
