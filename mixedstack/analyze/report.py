"""`mixedstack report`: the figures a performance engineer reads first.

Samples (on-CPU, and off-CPU ones weighed by offcpu.weigh) -> one Report, a plain
dict of figures (renderers/report_text.py prints it; `--format json` dumps it):

    layers    where on-CPU time went: the bytecode loop, C in the interpreter, C in
              extensions and libraries, kernel (by each sample's leaf frame)
    syscalls  per system call: on-CPU and blocked time, and the Python function that
              issued most of it
    gil       per thread: time waiting for the GIL (blocked in take_gil/drop_gil, or
              on a CPU inside them) and its share of the thread's wall time; the
              Python functions that waited most; and, with --off-cpu, who held the
              GIL while each thread waited, doing what (processors/gil.py)
    locks     free-threaded CPython: blocked time on its locks (a PyMutex, a per-object
              critical section, a stop-the-world pause), by kind, thread and Python function
    threads   name, tid, on-CPU, blocked, GIL
    functions top Python functions by self and total time
    health    samples, lost samples, broken and unresolved stacks

Standard library only.
"""
from __future__ import annotations

import collections
import os
import re
from typing import Callable, Counter, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from mixedstack.analyze.load import LATE_TRAMPOLINE_MODES, samples_of, select_events
from mixedstack.analyze.processors import layers
from mixedstack.analyze.sources import FOLDED, open_input
from mixedstack.errors import InputError, Interrupted
from mixedstack.perf import command as perf
from mixedstack.perf.data import KERNEL_NOT_SAMPLED, kernel_excluded
from mixedstack import markers
from mixedstack.analyze.processors import gil, offcpu
from mixedstack.analyze import syscalls as syscall_figures
from mixedstack.perf.syscalls import BLOCK_EVENT, SYSCALL_STACKS
from mixedstack.model import NO_PYTHON, Frame, PyFrame, Sample
from mixedstack.markers import off_cpu_reason
from mixedstack.analyze.processors import apply, stack_processors
from mixedstack.analyze.processors.compiled import demangle
from mixedstack.analyze.processors.python import is_entry
from mixedstack.analyze.processors.python import TRAMPOLINE_DSO, is_python, is_unnamed_interpreter
from mixedstack.analyze.processors.python import symbol_name

LAYERS = tuple(layers.NAMES[kind] for kind in (layers.BYTECODE, layers.COMPILED, layers.INTERPRETER, layers.LIBRARY,
                                                 layers.KERNEL, layers.UNRESOLVED))
EVAL_LOOP = re.compile(r"^_?PyEval_EvalFrame(?:Default|Ex)?$", re.ASCII)
# threading's own functions (qualified names from 3.11; bare ones before)
THREAD_BOOTSTRAP = frozenset(["_bootstrap", "_bootstrap_inner", "Thread._bootstrap", "Thread._bootstrap_inner"])
THREAD_RUN = frozenset(["run", "Thread.run"])


def layer(frame: Frame) -> str:
    """The layer of a sample's leaf frame: layers.py's, with the bytecode loop and
    unresolved frames told apart."""
    name = symbol_name(frame)
    if layers.is_kernel(frame.dso):
        kind = layers.KERNEL
    elif is_python(frame) or EVAL_LOOP.match(name):
        kind = layers.BYTECODE
    elif frame.dso == "[unknown]":  # a stripped file's frames count in its layer (no_symbols)
        kind = layers.UNRESOLVED
    elif demangle(name):
        kind = layers.COMPILED
    else:
        kind = layers.of_native(frame, name)
    return layers.NAMES[kind]


def in_threading(frame: PyFrame, functions: frozenset) -> bool:
    return frame.function in functions and os.path.basename(frame.file) == "threading.py"


def thread_name(python_frames: Sequence[PyFrame]) -> Optional[str]:
    """What Python's threading would call the thread, from its outer frames:
    `Thread (spinner)` for Thread(target=spinner), the class name for a subclass."""
    for i, frame in enumerate(python_frames):
        if in_threading(frame, THREAD_BOOTSTRAP):
            continue
        if i == 0:
            return None
        if in_threading(frame, THREAD_RUN):
            return "Thread (%s)" % python_frames[i + 1].function if i + 1 < len(python_frames) else "Thread"
        return frame.function.rsplit(".", 1)[0]
    return None


class ThreadFigures:
    def __init__(self, pid: str, tid: str, comm: str):
        self.pid, self.tid, self.comm = pid, tid, comm
        self.on_cpu = 0
        self.blocked = 0
        self.gil = 0
        self.names: Counter[str] = collections.Counter()


FACTS_LIMIT = 200_000  # distinct stacks whose facts are remembered


class StackFacts(NamedTuple):
    """What one distinct stack adds to the report, whichever sample has it."""

    off: bool  # an off-CPU sample (its leaf is offcpu's marker)
    reason: Optional[str]  # why it was off the CPU
    innermost: Optional[PyFrame]  # the Python function running (or waiting)
    caller: str  # its text, or NO_PYTHON
    python_set: Tuple[PyFrame, ...]  # every Python function on the stack, once, outermost first
    # (a set's order would change with the hash seed, and the order of ties with it)
    thread_name: Optional[str]  # what threading would call the thread
    gil: bool  # waiting for the GIL
    syscall: Optional[str]  # the system call it is in, "(GIL)" added when that waits for the GIL
    layer: Optional[str]  # the leaf's layer (on-CPU samples)
    broken_in: Optional[str]  # where a stack that reaches no entry stopped
    unresolved: bool  # a frame perf could not name
    no_symbols: Tuple[str, ...]  # files of those frames that have no symbols (stripped)


class ReportBuilder:
    """Processor: consumes samples, then `result()` gives the figures as a dict."""

    def __init__(self, switches: Optional[offcpu.Switches] = None, activated: bool = False,
                 trampolined: bool = False, syscalls: bool = False):
        self.switches = switches
        self.processors = stack_processors(activated=activated, trampolined=trampolined)
        self.layers: Counter[str] = collections.Counter()
        self.syscalls: Dict[str, List] = {}  # name -> [on-CPU, blocked, Counter of Python callers]
        self.threads: Dict[Tuple[str, str], ThreadFigures] = {}
        self.gil_waiters: Counter[PyFrame] = collections.Counter()
        # free-threaded builds' lock waits: (kind, pid, tid, Python function) -> blocked ns,
        # and who woke them (released the lock): the same key -> waker's tid -> ns
        self.lock_waits: Counter[Tuple[str, str, str, str]] = collections.Counter()
        self.lock_wakers: Dict[Tuple[str, str, str, str], Counter[str]] = {}
        self.self_time: Counter[PyFrame] = collections.Counter()
        self.total_time: Counter[PyFrame] = collections.Counter()
        self.off_self: Counter[PyFrame] = collections.Counter()
        self.samples = self.switch_samples = self.broken = self.unresolved = self.with_python = 0
        self.on_cpu_ns = 0
        self.broken_in: Counter[str] = collections.Counter()
        # files whose frames perf could not name (stripped): samples through each
        self.no_symbols: Counter[str] = collections.Counter()
        # who held the GIL while others waited: needs each switch's time (--off-cpu)
        self.blame = gil.Blame() if switches is not None else None
        # record --syscalls: the stacks the calls take their Python functions from (None: no calls)
        self.sampled = syscall_figures.Sampled() if syscalls else None
        self._facts: Dict[object, StackFacts] = {}  # by a stack's frames
        self._named_facts: Dict[tuple, StackFacts] = {}  # by their (symbol, dso)

    def add(self, sample: Sample) -> None:
        facts = self.facts(sample.frames)
        if sample.event in SYSCALL_STACKS:  # a system call's entry, or a thread blocking: who made it
            if self.sampled is not None:
                self.sampled.add(syscall_figures.BLOCKED if sample.event == BLOCK_EVENT else syscall_figures.ENTRY,
                                 sample.tid, offcpu.nanoseconds(sample.time) if sample.time else 0, facts.caller)
            return
        period = sample.period
        thread = self.threads.get((sample.pid, sample.tid))
        if thread is None:
            thread = self.threads[(sample.pid, sample.tid)] = ThreadFigures(sample.pid, sample.tid, sample.comm)
        thread.comm = sample.comm  # the last: a process's first samples can predate its exec
        if facts.thread_name:
            thread.names[facts.thread_name] += period
        innermost = facts.innermost
        if facts.gil:
            thread.gil += period
            if innermost:
                self.gil_waiters[innermost] += period
        if facts.syscall is not None:
            figures = self.syscalls.setdefault(facts.syscall, [0, 0, collections.Counter()])
            figures[1 if facts.off else 0] += period
            figures[2][facts.caller] += period

        if facts.off:
            if sample.time and self.sampled is not None:  # (with --off-cpu, the switch out of a call is its stack)
                self.sampled.add(syscall_figures.BLOCKED, sample.tid, offcpu.nanoseconds(sample.time), facts.caller)
            self.switch_samples += 1
            thread.blocked += period
            if facts.reason in offcpu.FREE_THREADED_REASONS:
                key = (facts.reason, sample.pid, sample.tid, facts.caller)
                self.lock_waits[key] += period
                waker = self.switches.waker(sample.tid, sample.time) if self.switches else None
                if waker is not None:
                    self.lock_wakers.setdefault(key, collections.Counter())[str(waker)] += period
            if innermost:
                self.off_self[innermost] += period
            return
        if sample.time and self.sampled is not None:
            self.sampled.add(syscall_figures.RUNNING, sample.tid, offcpu.nanoseconds(sample.time), facts.caller)
        self.samples += 1
        self.on_cpu_ns += period
        thread.on_cpu += period
        if facts.layer:
            self.layers[facts.layer] += period
        if innermost:
            self.with_python += 1
            self.self_time[innermost] += period
            for frame in facts.python_set:
                self.total_time[frame] += period
        if facts.broken_in is not None:
            self.broken += 1
            self.broken_in[facts.broken_in] += 1
        if facts.unresolved:
            self.unresolved += 1
            for dso in facts.no_symbols:
                self.no_symbols[dso] += 1

    def facts(self, frames: List[Frame]) -> "StackFacts":
        """What report takes from a stack, worked out once a distinct stack (a long
        recording has few of them: ~1,000 in 100,000 samples)."""
        key = getattr(frames, "key", None)
        if key is None:
            key = tuple(frames)
        known = self._facts.get(key)
        if known is None:
            if len(self._facts) >= FACTS_LIMIT:
                self._facts.clear()
                self._named_facts.clear()
            # the same functions at other addresses (a leaf's exact pc) say the same
            named = tuple([frame[1:] for frame in frames])
            known = self._named_facts.get(named)
            if known is None:
                known = self._named_facts[named] = self._work_out(frames)
            self._facts[key] = known
        return known

    def _work_out(self, frames: List[Frame]) -> "StackFacts":
        off = bool(frames) and offcpu.is_marker(frames[0])
        reason = off_cpu_reason(symbol_name(frames[0])) if off else None
        if off:
            frames = frames[1:]
        python = [item for item in apply(self.processors, frames[::-1]) if type(item) is PyFrame]  # not markers
        innermost = python[-1] if python else None
        gil = reason == "GIL" if off else offcpu.waits_for_gil(frames)
        call = offcpu.syscall(frames)
        user = [frame for frame in frames if not layers.is_kernel(frame.dso)]
        broken_in = None
        if user and not is_entry(user[-1]):
            # where the unwind stopped: the outermost frame perf could still name
            named = [frame for frame in user if not frame.symbol.startswith("[unknown]")]
            broken_in = os.path.basename(named[-1].dso) if named else "[unknown]"
        unnamed = {frame.dso for frame in frames if frame.symbol.startswith("[unknown]")}
        no_symbols = tuple(dso for dso in unnamed - {"[unknown]"}
                           if not TRAMPOLINE_DSO.search(dso) and not is_unnamed_interpreter(Frame("0", "[unknown]", dso)))
        return StackFacts(off, reason, innermost, innermost.text() if innermost else NO_PYTHON,
                          tuple(dict.fromkeys(python)), thread_name(python), gil,
                          None if call is None else call + (" (GIL)" if gil else ""),
                          layer(frames[0]) if frames and not off else None, broken_in, bool(unnamed), no_symbols)

    def add_all(self, samples: Iterable[Sample]) -> "ReportBuilder":
        for sample in samples:
            self.add(sample)
            if self.blame is not None:
                self.blame.add(sample)
        return self

    def innermost(self, sample: Sample) -> Optional[PyFrame]:
        python = [item for item in apply(self.processors, sample.frames[::-1]) if type(item) is PyFrame]
        return python[-1] if python else None

    def gil_holders(self, top: int) -> Optional[List[dict]]:
        """Who held the GIL while each thread waited: per waiting thread, holder thread and
        the holder's Python function, the wait time blamed on it and its share."""
        if self.blame is None:
            return None
        blamed: Counter[Tuple[str, str, str, str]] = collections.Counter()
        waited: Counter[Tuple[str, str]] = collections.Counter()
        functions: Dict[tuple, str] = {}
        for waiter, holder, ns in self.blame.shares():
            waited[(waiter.pid, waiter.tid)] += ns
            if holder is None:
                blamed[(waiter.pid, waiter.tid, "", markers.NO_GIL_HOLDER)] += ns
                continue
            key = tuple(holder.frames)
            if key not in functions:
                innermost = self.innermost(holder)
                functions[key] = innermost.text() if innermost else NO_PYTHON
            blamed[(waiter.pid, waiter.tid, holder.tid, functions[key])] += ns
        rows = []
        for (pid, tid, holder, function), ns in blamed.most_common(top):
            rows.append({"tid": int(tid) if tid.isdigit() else tid, "thread": self.thread_name(pid, tid),
                         "holder_tid": int(holder) if holder.isdigit() else None,
                         "holder": self.thread_name(pid, holder) if holder else None,
                         "function": function, "blamed_s": round(ns / 1e9, 9),
                         "share": round(ns / waited[(pid, tid)], 4)})
        return rows

    def released_by(self, key: Tuple[str, str, str, str], ns: int) -> dict:
        """The thread that woke a lock's waiter most (it released the lock), its share of
        the waits something woke, and what share of the waits that was (a PyMutex spins in
        sched_yield before it parks: nothing wakes a spin)."""
        wakers = self.lock_wakers.get(key)
        if not wakers:
            return {"released_by_tid": None, "released_by": None, "released_share": None, "woken_share": 0.0}
        waker, woke = wakers.most_common(1)[0]
        woken = sum(wakers.values())
        return {"released_by_tid": int(waker), "released_by": self.thread_name(key[1], waker),
                "released_share": round(woke / woken, 4), "woken_share": round(woken / ns, 4)}

    def pids_of(self, processes: Sequence[str]) -> set:
        """The pids `processes` (pids or command names) stand for, among the samples'."""
        wanted = set(processes)
        return {int(pid) for (pid, _), figures in self.threads.items()
                if pid.isdigit() and (pid in wanted or figures.comm in wanted)}

    def thread_name(self, pid: str, tid: str) -> Optional[str]:
        figures = self.threads.get((pid, tid))
        if figures is not None and figures.names:
            return figures.names.most_common(1)[0][0]
        return "MainThread" if pid == tid else None

    def result(self, top: int = 10, lost: Optional[int] = None, notes: Sequence[str] = ()) -> dict:
        seconds = lambda ns: round(ns / 1e9, 9)  # noqa: E731
        on_cpu = self.on_cpu_ns or 1
        threads = []
        for (pid, tid), figures in sorted(self.threads.items(), key=lambda kv: -(kv[1].on_cpu + kv[1].blocked)):
            lifetime = self.switches.threads.get(int(tid)) if self.switches and tid.isdigit() else None
            wall = (lifetime.end - lifetime.start) if lifetime else None
            name = self.thread_name(pid, tid)
            threads.append({
                "tid": int(tid) if tid.isdigit() else tid,
                "pid": int(pid) if pid.isdigit() else pid,
                "comm": figures.comm,
                "name": name,
                "on_cpu_s": seconds(figures.on_cpu),
                "blocked_s": seconds(figures.blocked) if self.switches else None,
                "gil_wait_s": seconds(figures.gil),
                "wall_s": seconds(wall) if wall is not None else None,
                # shares of a wall time measured between switches, of times summed from
                # samples that each weigh a whole sampling period: capped at all of it
                "gil_share_of_wall": round(min(1.0, figures.gil / wall), 4) if wall else None,
                "blocked_share_of_wall": round(min(1.0, figures.blocked / wall), 4) if wall and self.switches else None,
            })
        syscalls = []
        for name, (on, blocked, callers) in sorted(self.syscalls.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
            caller, share = callers.most_common(1)[0]
            syscalls.append({
                "syscall": name, "on_cpu_s": seconds(on),
                "blocked_s": seconds(blocked) if self.switches else None,
                "top_python_caller": caller, "top_caller_share": round(share / (on + blocked), 4),
            })
        gil_total = sum(figures.gil for figures in self.threads.values()) or 1
        return {
            "off_cpu_recorded": self.switches is not None,
            "on_cpu_s": seconds(self.on_cpu_ns),
            "layers": [{"layer": name, "on_cpu_s": seconds(self.layers[name]),
                        "share": round(self.layers[name] / on_cpu, 4)} for name in LAYERS],
            "syscalls": syscalls[:top],
            "gil": {
                "threads": [{key: thread[key] for key in ("tid", "name", "gil_wait_s", "wall_s", "gil_share_of_wall")}
                            for thread in sorted((t for t in threads if t["gil_wait_s"]),
                                                 key=lambda t: -t["gil_wait_s"])][:top],
                "threads_waiting": sum(1 for thread in threads if thread["gil_wait_s"]),
                "top_waiters": [{"function": name.text(), "gil_wait_s": seconds(ns), "share": round(ns / gil_total, 4)}
                                for name, ns in self.gil_waiters.most_common(top)],
                # per waiting thread: who held it, in which Python function (None without --off-cpu)
                "holders": self.gil_holders(top),
            },
            # free-threaded builds' lock waits, the longest first (None: there were none)
            "locks": [dict({"kind": key[0], "tid": int(key[2]) if key[2].isdigit() else key[2],
                            "thread": self.thread_name(key[1], key[2]), "function": key[3], "blocked_s": seconds(ns)},
                           **self.released_by(key, ns)) for key, ns in self.lock_waits.most_common(top)] or None,
            "threads": threads[:top],
            "threads_total": len(threads),
            "functions": {
                "by_self": [{"function": name.text(), "on_cpu_s": seconds(ns), "share": round(ns / on_cpu, 4)}
                            for name, ns in self.self_time.most_common(top)],
                "by_total": [{"function": name.text(), "on_cpu_s": seconds(ns), "share": round(ns / on_cpu, 4)}
                             for name, ns in self.total_time.most_common(top)],
                "by_blocked": [{"function": name.text(), "blocked_s": seconds(ns)}
                               for name, ns in self.off_self.most_common(top)] if self.switches else None,
            },
            "health": {
                "samples": self.samples,
                "context_switches": self.switch_samples if self.switches else None,
                "lost_samples": lost,
                "with_python_frames": round(self.with_python / (self.samples or 1), 4),
                "broken_stacks": round(self.broken / (self.samples or 1), 4),
                "broken_stacks_end_in": [{"dso": dso, "share": round(n / (self.samples or 1), 4)}
                                         for dso, n in self.broken_in.most_common(3)],
                "unresolved_stacks": round(self.unresolved / (self.samples or 1), 4),
                # stripped libraries and extension modules (the interpreter has its own note)
                "no_symbols": [{"dso": dso, "share": round(n / (self.samples or 1), 4)}
                               for dso, n in self.no_symbols.most_common(top) if n >= 0.01 * self.samples],
                "notes": list(notes),  # record's own, kept in its meta.json
            },
        }


def report(path: str, top: int = 10, warn: Callable[[str], None] = lambda message: None,
           processes: Sequence[str] = ()) -> dict:
    """INPUT (a recording or `perf script` text) -> the report's figures (of `processes`
    only, pids or command names, when given)."""
    try:
        with open_input(path) as source:
            if source.kind == FOLDED:
                raise InputError("%s is folded text: report needs a recording or `perf script` text, "
                                 "which keep each sample's frames and times" % path)
            calls = syscall_figures.calls_of(source.recording) if source.recording else None
            selection = select_events(source, None, None, warn, processes,
                                      also=SYSCALL_STACKS if calls is not None else ())
            meta = source.recording.meta() if source.recording else {}
            builder = ReportBuilder(selection.switches, activated=bool(meta.get("activated")),
                                    trampolined=meta.get("mode") in LATE_TRAMPOLINE_MODES,
                                    syscalls=calls is not None)
            with samples_of(source, selection) as samples:
                builder.add_all(samples)
    except KeyboardInterrupt:
        raise Interrupted()
    if builder.samples == 0:
        raise InputError("%s holds no samples: it is not a recording or `perf script` output" % path)
    lost = None
    if source.recording:  # record counted them; a whole-file pass for any other recording
        lost = meta["lost"] if "lost" in meta and meta.get("bytes") == os.path.getsize(path) else \
            perf.sample_stats(path)["lost"]
    figures = builder.result(top=top, lost=lost, notes=meta.get("notes", []))
    # every call, with record --syscalls (None: not recorded)
    figures["syscall_calls"] = None if calls is None else syscall_figures.figures(
        calls, builder.sampled, top, builder.pids_of(processes) if processes else None)
    if calls is not None:  # records perf lost may be calls': the counts are then at least these
        figures["syscall_calls"]["lost_records"] = lost
    # samples that stopped in code without unwind information, resumed at their return
    # address by record or not (None: a recording that predates it, or not mixedstack's)
    figures["health"]["resumed"] = meta.get("resumed")
    figures["health"]["not_resumed"] = meta.get("not_resumed")
    # a kernel layer of 0% and no system calls, where the kernel was never sampled, say so
    figures["kernel_sampled"] = not (source.recording and kernel_excluded(source.recording.data))
    if not figures["kernel_sampled"]:
        figures["health"]["notes"].insert(0, KERNEL_NOT_SAMPLED)
    return figures
