"""INPUT -> Stacks: the one pipeline that fold, flamegraph, diff and report read through.

    path --sources.open_input--> Source (recording | perf script text | folded text)
      recording, perf script text:
        --parse--> samples --select_events, offcpu.weigh--> samples of the chosen events
        --fold.Folder (the processors)--> Stacks
      folded text --read_folded--> Stacks, as it is

Errors are MixedstackError (a one-line message); warnings go to `warn`, progress
(samples read so far) to `progress`: the caller decides what to show. Standard
library only.
"""
from __future__ import annotations

import contextlib
import gc
import os
import re
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from mixedstack.analyze.fold import Folder, FoldOptions
from mixedstack.analyze.lines import Placed, Snapshots
from mixedstack.markers import is_off_cpu
from mixedstack import store
from mixedstack.perf.parse import EventFilter, ProcessLabel, parse, perl_true
from mixedstack.analyze.processors import gil, offcpu
from mixedstack.analyze.processors.python import TRAMPOLINE_FILE
from mixedstack.analyze.sources import FOLDED, RECORDING, Source, folded_unit, open_input, parse_folded
from mixedstack.errors import InputError, Interrupted
from mixedstack.model import Mark, Sample, Stacks, Track, innermost_python
from mixedstack.analyze import syscalls as syscall_figures
from mixedstack.perf.syscalls import SYSCALL_STACKS
from mixedstack.perf import command as perf
from mixedstack.perf.recording import Recording

Warn = Callable[[str], None]
# record's mode whose trampolines start after Python code has run: the agent, turned
# on by a sitecustomize, after the interpreter's own start-up imports (what runs in the
# interpreter's initialisation is marked in any mode: processors/python.py)
LATE_TRAMPOLINE_MODES = ("agent",)
Progress = Callable[[int], None]


def _ignore(message: str) -> None:
    pass


class Selection(NamedTuple):
    """Which samples of an input are read, and how off-CPU ones are weighed."""

    events: EventFilter  # the on-CPU event (and the context switches, for off/wall)
    switches: Optional[offcpu.Switches]  # blocked times of the switches, for off/wall
    what: str  # cpu, off or wall
    processes: Tuple[str, ...] = ()  # only the samples of these pids or command names (none: all)


class Loaded(NamedTuple):
    """INPUT read into stacks, with what a summary line says about it."""

    stacks: Stacks
    summary: str
    lines: Optional[Placed] = None  # with lines=True: how many samples got their lines


def load(path: str = "perf.data", what: Optional[str] = None, options: Optional[FoldOptions] = None,
         inline: bool = False, label: Optional[ProcessLabel] = None, event_filter: Optional[str] = None,
         detail: bool = True, warn: Warn = _ignore, progress: Optional[Progress] = None) -> Stacks:
    """A recording, `perf script` text or folded text -> Stacks (see read)."""
    return read(path, what, options, inline, label, event_filter, detail, warn, progress).stacks


def read(path: str, what: Optional[str] = None, options: Optional[FoldOptions] = None,
         inline: bool = False, label: Optional[ProcessLabel] = None, event_filter: Optional[str] = None,
         detail: bool = False, warn: Warn = _ignore, progress: Optional[Progress] = None,
         processes: Sequence[str] = (), timeline: bool = False, lines: bool = False) -> Loaded:
    """INPUT -> stacks, with the summary the CLI prints.

    `what` is cpu, off or wall; None means wall for a recording made with --off-cpu,
    else cpu, and the whole file for folded text. detail=True adds sample counts and
    each frame's layer (from DSOs) for pictures; timeline=True each thread's samples
    in time order, with its waits and (record --syscalls) its system calls as marks;
    lines=True the line of each Python frame where record's companion noted it (3.14+).
    """
    options = options or FoldOptions()
    warnings: List[str] = []
    try:
        with open_input(path, inline=inline) as source:
            if source.kind == FOLDED:
                return read_folded(source, what, warn)
            if source.recording:
                meta = source.recording.meta()
                options.activated = bool(meta.get("activated"))
                options.trampolined = meta.get("mode") in LATE_TRAMPOLINE_MODES
            calls = syscall_figures.calls_of(source.recording) if timeline and source.recording else None
            selection = select_events(source, what, event_filter, warn, processes,
                                      also=SYSCALL_STACKS if calls is not None else ())
            snapshots = Snapshots.read(source.recording.folder) if lines and source.recording else None
            folder = Folder(options, detail=detail, timeline=timeline, lines=snapshots)
            entries: List[Tuple[str, str, int, str]] = []  # the syscalls' own stacks: not time
            with samples_of(source, selection, label, warnings.append, progress) as samples:
                if calls is not None:
                    samples = _syscall_stacks(samples, Folder(options), entries)
                folder.add_all(samples)
    except KeyboardInterrupt:
        raise Interrupted()
    if folder.samples == 0:
        raise InputError("%s holds no samples: it is not `perf script` output, folded stacks or a recording%s" % (
            path, " (first line not understood: %r)" % warnings[0][:60] if warnings else ""))
    if folder.stackless_samples == folder.samples:
        # stackcollapse-perf.pl prints the process names alone here: so do we
        warn("mixedstack: warning: no frame lines found in %s (perf script needs the ip, sym and dso "
             "fields, and a recording with call graphs)" % path)
    if source.kind == RECORDING:
        unnamed_python_warning(source, folder.stacks, warn)
    unit = "nanoseconds" if selection.events.wanted.startswith(("cpu-clock", "task-clock")) else "events"
    summary = "%s samples -> %s stacks, %.1f%% with Python frames" % (
        format(folder.samples, ","), format(len(folder.stacks), ","),
        100.0 * folder.python_samples / folder.samples)
    if snapshots is not None:
        summary += "; " + snapshots.placed().text()
    stacks = folder.result(unit)
    if calls is not None and stacks.timeline is not None:
        add_marks(stacks.timeline, syscall_figures.marks(calls, syscall_figures.sampled_from(stacks.timeline, entries)),
                  set(selection.processes))
    return Loaded(stacks, summary, snapshots.placed() if snapshots is not None else None)


def _syscall_stacks(samples: Iterable[Sample], folder: Folder, entries: List[Tuple[str, str, int, str]]) -> Iterator[Sample]:
    """Pass the samples on but the syscalls' stacks, noted as (event, tid, ns, Python function)."""
    for sample in samples:
        if sample.event in SYSCALL_STACKS:
            if sample.time:
                stack = folder.frames(folder.add(sample))
                entries.append((sample.event, sample.tid, offcpu.nanoseconds(sample.time), innermost_python(stack)))
            continue
        yield sample


def add_marks(tracks: List[Track], marks: Dict[Tuple[int, int], List[Mark]], processes: set) -> None:
    """Each thread's marks into its track (a thread with marks and no samples gets one)."""
    by_thread = {(track.pid, track.tid): track for track in tracks}
    comm_of = {track.pid: track.comm for track in tracks}
    for (pid, tid), found in marks.items():
        track = by_thread.get((pid, tid))
        if track is None:
            if processes and str(pid) not in processes and comm_of.get(pid) not in processes:
                continue
            track = Track(pid, tid, comm_of.get(pid, "?"), [], [])
            tracks.append(track)
        track.marks.extend(found)
        track.marks.sort()


def select_events(source: Source, what: Optional[str], wanted: Optional[str], warn: Warn = _ignore,
                  processes: Sequence[str] = (), also: Sequence[str] = ()) -> Selection:
    """Which samples to read: in a recording made with --off-cpu, the on-CPU event
    and, for --what off|wall, the context switches (with their blocked times);
    `processes` (pids or command names): only theirs (`record -a` records them all);
    `also`: other events besides (report: --syscalls' sampled stacks).
    `what` None: wall where the recording has switches, else cpu."""
    names = perf.event_names(source.name) if source.kind == RECORDING else []
    switched = perf.SWITCH_EVENT in names
    if what is None:
        what = "wall" if switched else "cpu"
    if what != "cpu" and not switched:
        raise InputError("%s holds no context switches, so no off-CPU time: record with "
                         "`mixedstack record --off-cpu -- CMD`, or fold with --what cpu" % source.name)
    if wanted is None and len(names) > 1 and perf.CPU_EVENT in names:
        wanted = perf.CPU_EVENT  # not the first event perf happened to write (a syscall's stack)
    also = tuple(also) + (() if what == "cpu" else (perf.SWITCH_EVENT,))
    switches = None if what == "cpu" else offcpu.Switches.read(
        source.name, source.recording.folder if source.keep or source.kept is not None else None)
    return Selection(EventFilter(wanted, warn=warn, also=also), switches, what, tuple(processes))


@contextlib.contextmanager
def samples_of(source: Source, selection: Selection, label: Optional[ProcessLabel] = None,
               on_unrecognized: Optional[Callable[[str], None]] = None,
               progress: Optional[Progress] = None) -> Iterator[Iterator[Sample]]:
    """perf script text -> the samples `selection` chose, off-CPU ones weighed: what
    fold, flamegraph, diff and report all read.

    No cyclic garbage collection meanwhile: parsing makes a great many small
    objects, none of them in cycles, and the collector's passes over them are pure
    cost (docs/speed.md)."""
    samples = unwound(source, label or ProcessLabel(), selection.events, on_unrecognized)
    if selection.processes:
        wanted = set(selection.processes)
        samples = (sample for sample in samples if sample.pid in wanted or sample.comm in wanted)
    if selection.what == offcpu.GIL_HOLDERS:  # the holders' samples, weighed by the waits they caused
        weighed = gil.blame(offcpu.weigh(samples, "wall", selection.switches))
    else:
        weighed = offcpu.weigh(samples, selection.what, selection.switches)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield counted(weighed, progress) if progress else weighed
    finally:
        if enabled:
            gc.enable()


def unwound(source: Source, label: ProcessLabel, events: EventFilter,
            on_unrecognized: Optional[Callable[[str], None]] = None) -> Iterator[Sample]:
    """A recording's samples (or perf script text's): from what was kept of them when
    there is (store.py), else parsed from perf script, and kept as they pass when the
    recording is to keep them. Either way the same samples: kept ones are labelled and
    filtered by event here, in order, as parse labels and filters them."""
    if source.kept is not None:
        return store.read(source.recording.folder, source.kept, label, events.accepts)
    if not source.keep:
        return parse(source.text, label, events, on_unrecognized=on_unrecognized)
    return _kept_as_parsed(source, label, events, on_unrecognized)


def _kept_as_parsed(source: Source, label: ProcessLabel, events: EventFilter,
                    on_unrecognized: Optional[Callable[[str], None]]) -> Iterator[Sample]:
    try:
        os.makedirs(source.recording.folder, mode=0o700, exist_ok=True)
        writer = store.Writer(source.recording.folder)
    except OSError:  # a folder we may not write: read as before, keep nothing
        yield from parse(source.text, label, events, on_unrecognized=on_unrecognized)
        return
    labels: Dict[Tuple[str, str, str], str] = {}
    finished = False
    try:
        for sample in writer.parsed(source.text, on_unrecognized):
            if sample.event is not None and not events.accepts(sample.event):
                continue
            key = (sample.comm, sample.pid, sample.tid)
            name = labels.get(key)
            if name is None:
                name = labels[key] = label(*key)
            if perl_true(name):
                yield sample._replace(label=name)
        finished = True
    finally:
        try:
            if finished:
                writer.finish(source.name)
        except OSError:
            pass
        if not finished or writer.broken:
            writer.abandon()


def counted(samples: Iterable[Sample], progress: Progress, every: int = 1000) -> Iterator[Sample]:
    """Pass samples through, telling `progress` the count every `every` samples."""
    count = 0
    for count, sample in enumerate(samples, 1):
        if count % every == 0:
            progress(count)
        yield sample


def read_folded(source: Source, what: Optional[str], warn: Warn = _ignore) -> Loaded:
    """Folded text -> stacks; --what cpu/off keeps the stacks without/with an off-CPU leaf."""
    weights, bad = parse_folded(source.text)
    if bad:
        warn("mixedstack: warning: skipped %d lines of %s that are not `stack COUNT` (first: %r)"
             % (len(bad), source.name, bad[0][:60]))
    if what == offcpu.GIL_HOLDERS:
        raise InputError("%s is folded text: --what gil-holders needs a recording made with --off-cpu "
                         "(each sample's time and thread)" % source.name)
    if what in ("cpu", "off"):
        weights = {stack: value for stack, value in weights.items()
                   if is_off_cpu(stack.rpartition(";")[2]) == (what == "off")}
        if not weights:
            raise InputError("%s holds no %s stacks; choose another --what" % (
                source.name, "off-CPU (leaf [off-cpu: ...])" if what == "off" else "on-CPU"))
    return Loaded(Stacks.from_folded(weights, folded_unit(weights)),
                  "%s stacks of folded text" % format(len(weights), ","))


# a trampoline perf had no name for: FlameGraph names it by its file, `[jitted-PID-N.so]`
UNNAMED_TRAMPOLINE = re.compile(r"\[%s\]" % TRAMPOLINE_FILE)


def unnamed_python_warning(source: Source, stacks: Dict[str, int], warn: Warn) -> None:
    """Trampolines perf could not name are Python frames lost: say where their names went."""
    total = sum(stacks.values()) or 1
    unnamed = sum(weight for stack, weight in stacks.items() if UNNAMED_TRAMPOLINE.search(stack))
    if unnamed / total < 0.01:
        return
    recording = source.recording or Recording(source.name)
    why = ("%s is not beside it: the jitted code and maps that name Python frames are kept there; move or "
           "copy that folder with the recording" % recording.folder if not os.path.isdir(recording.folder) else
           "their processes' jitdumps or perf maps did not name them (killed before they flushed them?)")
    warn("mixedstack: warning: %.1f%% of %s's samples have Python frames without names "
         "([jitted-PID-N.so]): %s" % (100.0 * unnamed / total, source.name, why))
