"""Running Linux `perf`: the only module that builds perf command lines.

perf.data -> `perf script` text is the first step of fold's data flow; `perf record`
and `perf inject` are record's. Errors become UsageError-style one-liners.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import subprocess
import threading
import time
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from mixedstack.errors import MixedstackError

from mixedstack.perf import data as perfdata
from mixedstack.perf.text import Text
from mixedstack.perf.tmpview import PerfView


# What `perf script` prints for fold: the fields stackcollapse-perf.pl reads.
SCRIPT_FIELDS = "comm,pid,tid,time,period,event,ip,sym,dso"
# perf cuts call chains at 127 frames by default; a Python level costs 3-5 frames.
MAX_STACK = "4096"
# record's defaults. DWARF mode copies this much user stack per sample: perf's
# maximum, since every Python call costs C stack and real programs run deep enough
# to be cut at less (the figures: bench/results.md, "Why the defaults"). tidy() keeps
# only the bytes each stack used, so the file grows by what deep stacks really hold.
MAX_STACK_SIZE = 65528
DEFAULT_STACK_SIZE = MAX_STACK_SIZE
# Each cpu-clock sample interrupts the target, so the rate is a trade between
# resolution (2 ms) and slowing the target (bench/results.md, "Why the defaults");
# py-spy's default is 100 Hz, perf's 4000.
DEFAULT_FREQUENCY = 499
CHUNK = 1 << 18  # bytes read from perf script at a time (and its pipe's size)
BATCH_WAIT = 0.002  # seconds: ~100 KB of perf script's output
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Python < 3.10 lacks the name

# perf 6.1 on newer kernels warns about record types it does not know: harmless.
NOISE = re.compile(
    r"unknown record type|not valid for .* events\. Ignoring|^\s*$|"
    r"Warning:\s*$|Processed \d+ events and lost|Check IO/CPU overload|"
    r"kernel address maps .* restricted|kptr_restrict|perf_event_paranoid"
)


class PerfError(MixedstackError):
    """A one-line message for the user: what failed, why, what to do."""


def perf_binary() -> str:
    path = shutil.which("perf")
    if path is None:
        raise PerfError(
            "perf not found: mixedstack runs Linux perf; install it "
            "(Debian/Ubuntu: apt install linux-perf) and check `perf --version`"
        )
    return path


def perf_command(subcommand: str, buildid_dir: Optional[str] = None) -> List[str]:
    """`perf [--buildid-dir DIR] SUBCOMMAND`: the build-id cache kept with the recording."""
    command = [perf_binary()]
    if buildid_dir:
        command += ["--buildid-dir", buildid_dir]
    return command + [subcommand]


CPU_EVENT = "cpu-clock"  # software: this machine has no hardware PMU, and VMs often lack one
SWITCH_EVENT = "sched:sched_switch"  # every switch of a thread off a CPU, with its stack
# every wake-up a thread of the target makes, without a stack: whoever releases a lock
# wakes its waiter (report's "released by"; offcpu.Switches)
WAKING_EVENT = "sched:sched_waking"
BIG_BUFFER = "16M"  # perf's ring buffer a CPU in DWARF mode, where the memory may be locked
PIECE = "8M"  # perf's file is closed and taken into the recording every PIECE (raw, before tidy)


def off_cpu_events(frequency: int) -> List[str]:
    """perf record's events for on- and off-CPU: the cpu-clock rate is set on the event
    (a global -F would also turn the switch tracepoint into a sampled one)."""
    return ["-e", "%s/freq=%d,name=%s/" % (CPU_EVENT, frequency, CPU_EVENT),
            "-e", SWITCH_EVENT, "-e", WAKING_EVENT + "/call-graph=no/", "--switch-events"]


def record_command(output: str, buildid_dir: str, frequency: int, call_graph: str, stack_size: int,
                   off_cpu: bool = False, monotonic: bool = False, lock_memory: bool = False,
                   syscalls: bool = False, realtime: bool = False) -> List[str]:
    """`perf record` for mixedstack: the target (-p PID, or `-- CMD`) comes after."""
    from mixedstack.perf.syscalls import record_events

    command = perf_command("record", buildid_dir)
    if off_cpu:
        command += off_cpu_events(frequency)
    elif syscalls:  # the rate on the event: a global -F would sample the syscalls' tracepoints too
        command += ["-e", "%s/freq=%d,name=%s/" % (CPU_EVENT, frequency, CPU_EVENT)]
    else:
        command += ["-F", str(frequency)]
    if syscalls:
        command += record_events(frequency, off_cpu)
        if realtime:  # (root only: perf refuses to start without the right)
            # two records a call, at up to ~300,000 calls a second: perf must empty its
            # buffers as they fill, even when other work keeps the CPUs busy (without
            # it, 8,344 of 124,000 records were lost beside two other recordings; with
            # it, none in 15 runs)
            command += ["-r", "1"]
    command += ["-o", output, "-q"]
    # perf record waits ~1 s at exit for its BPF side-band thread; we need no BPF symbols.
    command.append("--no-bpf-event")
    # Each file's build id in its own map record (the kernel reads it at mmap time),
    # instead of perf's table of them, which perf builds at exit and at each new piece
    # by walking all it wrote: at the end of 60 s of phases.py that kept record waiting
    # 0.96 s for perf (0.16 s this way), and it grows with the run. It implies -N: no
    # build-id cache in ~/.debug (record/keep.py's SystemFiles puts what fold needs,
    # the kernel's symbols and the vDSO, in the recording's own cache meanwhile)
    command.append("--buildid-mmap")
    # perf closes its file every PIECE bytes and starts the next: record takes each
    # closed piece into the recording at once (record/collect.py), so the disk used
    # stays near the recording's final size however long it runs
    command.append("--switch-output=%s" % PIECE)
    if call_graph == "dwarf":
        command += ["--call-graph", "dwarf,%d" % stack_size]
    else:
        command.append("-g")
    if lock_memory and (call_graph == "dwarf" or syscalls):
        # every sample (with --off-cpu, every context switch) carries a whole stack
        # copy: perf's default buffer overflows at a few thousand a second, or while
        # perf starts a new piece (11% of samples lost at 499 Hz), and the samples
        # lost take their time with them (bench/results.md); --syscalls adds two
        # records a call (4.6% of them lost at ~300,000 calls a second without it)
        command += ["-m", BIG_BUFFER]
    if monotonic:
        command += ["-k", "1"]  # jitdump timestamps are CLOCK_MONOTONIC
    return command


def trial_record_command(output: str, events: List[str]) -> List[str]:
    """A short `perf record -- true` that tells whether recording `events` works here."""
    return [perf_binary(), "record", "-q", "--no-bpf-event", "-N", "-o", output, *events, "--", "true"]


class StderrCollector:
    """Drains a child's stderr in a thread, keeping the lines that are not noise."""

    def __init__(self, stream: IO[bytes]):
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if not NOISE.search(line):
                self.lines.append(line)

    def join(self) -> List[str]:
        self._thread.join()
        return self.lines


def switch_events_text(data: str) -> bytes:
    """perf script's text of a recording's context switches and task events, without
    call chains (offcpu.Switches reads it)."""
    command = perf_command("script") + [
        "-i", data, "-F", "tid,time,event,trace", "--ns", "--show-switch-events", "--show-task-events"]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        reason = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise PerfError("perf script failed on %s: %s" % (data, reason))
    return done.stdout


def script_command(data: str, buildid_dir: Optional[str] = None, inline: bool = False,
                   fields: str = SCRIPT_FIELDS, extra: Sequence[str] = (),
                   kallsyms: Optional[str] = None) -> List[str]:
    """`perf script` for fold; `kallsyms`: the kernel's symbols saved with the recording."""
    return perf_command("script", buildid_dir) + [
        "-i", data, "-F", fields, "--max-stack", MAX_STACK, "--inline" if inline else "--no-inline",
    ] + (["--kallsyms", kallsyms] if kallsyms else []) + list(extra)


def script_chunks(
    data: str,
    ready: Callable[[int], bool] = lambda index: True,
    buildid_dir: Optional[str] = None,
    inline: bool = False,
    fields: str = SCRIPT_FIELDS,
    spans: Sequence[Optional[str]] = (None,),
    extra: Sequence[str] = (),
    kallsyms: Optional[str] = None,
    view: Optional[PerfView] = None,
    nice: bool = False,
    cwd: Optional[str] = None,
) -> Iterator[Tuple[int, bytes]]:
    """Run one `perf script` per time span (perf's --time START,END; None: all) at
    once and yield (span index, bytes) as their output arrives, (index, b"") when
    one ends; a span's output is read only while `ready(index)` says so. `view`: the
    perf maps perf is to see (tmpview.perf_view). `nice`: perf script runs at the lowest
    priority (beside the program being recorded: on the cores it leaves idle). `cwd`:
    where the recording's relative names are (perf inject's ./jitted-PID-N.so)."""
    def preexec() -> None:
        if view is not None and view.preexec is not None:
            view.preexec()
        if nice:
            os.nice(19)

    runs: List[Tuple[subprocess.Popen, StderrCollector]] = []
    reading: Dict[int, int] = {}  # pipe -> span index
    try:
        for index, span in enumerate(spans):
            command = script_command(data, buildid_dir, inline, fields, extra, kallsyms)
            process = subprocess.Popen(command + (["--time", span] if span else []),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       preexec_fn=preexec if (view and view.preexec) or nice else None, cwd=cwd)
            runs.append((process, StderrCollector(process.stderr)))
            _widen(process.stdout.fileno())
            reading[process.stdout.fileno()] = index
        while reading:
            wanted = [fd for fd, index in reading.items() if ready(index)] or list(reading)
            full = False
            for fd in select.select(wanted, [], [])[0]:
                chunk = os.read(fd, CHUNK)
                index = reading[fd]
                if not chunk:
                    del reading[fd]
                    _finished(*runs[index], data)
                full |= len(chunk) >= CHUNK // 4
                yield index, chunk
            if not full:
                # perf writes 4 KB at a time: reading each costs more than the parse
                # of it; let some accumulate (the cores meanwhile go to perf)
                time.sleep(BATCH_WAIT)
    finally:
        for process, errors in runs:
            process.stdout.close()
            if process.returncode is None:  # stopped early (an error, Ctrl-C): stop it too
                process.terminate()
                process.wait()
                errors.join()


def _widen(pipe: int) -> None:
    """A bigger pipe (1 MB instead of 64 KB): fewer wake-ups for both sides."""
    try:
        fcntl.fcntl(pipe, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # the limit in /proc/sys/fs/pipe-max-size: the default size works too


def _finished(process: subprocess.Popen, errors: StderrCollector, data: str) -> None:
    status = process.wait()
    messages = errors.join()
    if status < 0:
        raise PerfError("perf script crashed (signal %d) on %s: the file is corrupt or cut short; "
                        "record it again" % (-status, data))
    if status != 0:
        reason = messages[-1] if messages else "exit status %d" % status
        raise PerfError("perf script failed on %s: %s" % (data, reason))


def script_lines(
    data: str,
    buildid_dir: Optional[str] = None,
    inline: bool = False,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """Stream `perf script` text for a recording, line by line (latin-1 text)."""
    return iter(Text(lambda ready: script_chunks(data, ready, buildid_dir, inline, extra=extra)))


def task_pids(data: str) -> set:
    """PIDs of every process the recording saw (COMM and FORK events), as perf
    script lists them (record reads them from the file itself: perf/rewrite.py)."""
    output = subprocess.run(
        [perf_binary(), "script", "-i", data, "--show-task-events", "-F", "pid,event"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
    ).stdout.decode("latin-1")
    pids = set()
    for line in output.splitlines():
        head = line.split(None, 1)  # "PID PERF_RECORD_COMM exec: ..."
        if len(head) == 2 and head[0].isdigit() and "PERF_RECORD_" in head[1]:
            pids.add(int(head[0]))
    return pids


def sample_stats(data: str) -> dict:
    """Sample and lost-sample counts, read from the file (no perf process needed)."""
    counts = perfdata.survey(data)
    return {"samples": counts.samples if counts else 0, "lost": counts.lost if counts else 0}


def event_names(data: str) -> List[str]:
    """The events a recording holds, as `perf evlist` names them."""
    names = perfdata.event_names(data)
    if names is not None:
        return names
    output = subprocess.run(
        [perf_binary(), "evlist", "-i", data],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
    ).stdout.decode("latin-1")
    return [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("#")]
