"""Off-CPU time: how long each thread was switched out, and why.

`record --off-cpu` adds two things to the on-CPU samples: a `sched:sched_switch`
sample (with its full stack) each time a thread of the target leaves a CPU, and
perf's switch records (PERF_RECORD_SWITCH IN/OUT) for when it comes back. A
switch-out sample at time T of thread X weighs (X's next switch-in after T) - T
nanoseconds. Those times come from a second, cheap `perf script` pass without
call chains (Switches.read); the main pass brings the stacks.

Each off-CPU stack gets a marker frame as its leaf saying how the thread was
blocked, decided from the stack and the task state perf saw at switch-out:

    [off-cpu: GIL]        waiting to take (or hand over) CPython's GIL
    [off-cpu: mutex]      free-threaded CPython: a PyMutex (threading.Lock, RLock, internal
                          locks), spinning in sched_yield or parked
    [off-cpu: critical section]  free-threaded: a per-object lock (a dict, a list...)
    [off-cpu: stop-the-world]    free-threaded: paused for (or waiting on) a stop-the-world (GC)
    [off-cpu: sleep]      time.sleep, nanosleep
    [off-cpu: lock]       a futex (threading.Lock, Condition, queue...) other than the GIL
    [off-cpu: io]         a read, write, poll, accept... or uninterruptible (disk) wait
    [off-cpu: wait]       waiting for a child process (wait4, waitid)
    [off-cpu: preempted]  runnable, but another task had the CPU
    [off-cpu: blocked]    anything else

Standard library only.
"""
from __future__ import annotations

import contextlib
import re
from typing import Dict, Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple

from mixedstack import store
from mixedstack import markers
from mixedstack.perf import command as perf
from mixedstack.perf.command import SWITCH_EVENT, WAKING_EVENT
from mixedstack.analyze.processors.layers import is_kernel
from mixedstack.model import Frame, Sample
from mixedstack.analyze.processors.python import is_entry
from mixedstack.analyze.processors.python import is_unnamed_interpreter
from mixedstack.analyze.processors.python import symbol_name

MARKER_DSO = "off-cpu"  # the marker frame's module: not a kernel, JIT or start-up one
GIL_HOLDERS = "gil-holders"  # the threads that held the GIL, weighed by the waits they caused (gil.py)
WHATS = ("cpu", "off", "wall", GIL_HOLDERS)

# CPython's GIL hand-over, 3.8-3.15: a thread blocked in these waits for the GIL.
GIL_FUNCTIONS = frozenset(["take_gil", "drop_gil"])
# They are static: a stripped interpreter has no name for them. What it exports and
# calls them (measured in 3.14/3.15's stacks): a thread waiting on a condition variable
# right under one of these (the unnamed take_gil between) waits for the GIL.
GIL_CALLERS = frozenset(["PyEval_RestoreThread", "PyEval_AcquireThread", "PyEval_AcquireLock",
                         "_PyThreadState_Attach", "PyGILState_Ensure", "_Py_HandlePending",
                         "_PyEval_AcquireLock", "PyEval_RestoreThread_Ex"])
# The GIL is a mutex and a condition variable: take_gil locks the one, then waits on the other.
CONDITION_WAIT = re.compile(r"^_*pthread_(?:cond_(?:timed|clock)?wait|mutex_(?:timed|clock)?lock)\w*$", re.ASCII)
SLEEP_FUNCTIONS = frozenset(["time_sleep", "pysleep", "do_nanosleep", "hrtimer_nanosleep",
                             "common_nsleep", "common_nsleep_timens"])
LOCK_FUNCTIONS = frozenset(["futex_wait", "futex_wait_queue", "futex_do_wait", "__futex_wait",
                            "futex_wait_queue_me", "do_futex"])
CHILD_FUNCTIONS = frozenset(["do_wait", "kernel_wait4", "kernel_waitid"])
# Free-threaded CPython's own waits (Python/lock.c, parking_lot.c, critical_section.c,
# pystate.c), by what a thread waits for; the first kind found in a stack names it (a
# critical section and a stop-the-world wait go through a PyMutex too).
FREE_THREADED_WAITS = (
    ("stop-the-world", frozenset(["_PyEval_StopTheWorld", "_PyEval_StopTheWorldAll", "stop_the_world",
                                  "_PyThreadState_Suspend", "tstate_wait_attach", "park_detached_threads"])),
    ("critical section", frozenset(["_PyCriticalSection_BeginSlow", "_PyCriticalSection2_BeginSlow"])),
    ("mutex", frozenset(["_PyMutex_LockTimed", "_PyMutex_LockSlow", "PyMutex_Lock", "_PyParkingLot_Park",
                         "_PySemaphore_Wait", "_PyRWMutex_RLock", "_PyRWMutex_Lock", "PyEvent_WaitTimed",
                         "_PyOnceFlag_CallOnceSlow", "_PyRecursiveMutex_LockTimed"])),
)
FREE_THREADED_REASONS = tuple(reason for reason, _ in FREE_THREADED_WAITS)
# The syscall's own function, just under do_syscall_64: __x64_sys_read, ksys_read, __do_sys_newstat...
SYSCALL_FUNCTION = re.compile(r"^(?:__x64_sys_|__ia32_sys_|__se_sys_|__do_sys_|__sys_|ksys_|do_sys_)(\w+)$",
                              re.ASCII)
SYSCALL_ENTRY = frozenset(["do_syscall_64", "x64_sys_call"])


def base_names(frames: Sequence[Frame]) -> set:
    """Function names without GCC's clone suffixes (take_gil.constprop.0 -> take_gil)."""
    return {symbol_name(frame).split(".", 1)[0] for frame in frames}


def microseconds(stamp: str) -> int:
    """perf's "SECONDS.FRACTION" (µs or ns) -> whole microseconds, the key both passes share."""
    seconds, _, fraction = stamp.partition(".")
    return int(seconds) * 1000000 + int((fraction + "000000")[:6])


def nanoseconds(stamp: str) -> int:
    seconds, _, fraction = stamp.partition(".")
    return int(seconds) * 1000000000 + int((fraction + "000000000")[:9])


class Thread(NamedTuple):
    tid: int
    start: int  # ns: fork, or first event seen
    end: int  # ns: exit, or last event seen


class Switches:
    """Every switch-out of the recording: {(tid, µs): (blocked ns, task state, the tid that
    woke it or None)}, and threads' lifetimes."""

    def __init__(self) -> None:
        self.blocked: Dict[Tuple[int, int], Tuple[int, str, Optional[int]]] = {}
        self.threads: Dict[int, Thread] = {}
        self.end = 0  # the recording's last timestamp (ns)

    def waker(self, tid: str, stamp: str) -> Optional[int]:
        """Who woke the thread from the switch-out at `stamp` (perf's time text), if known."""
        blocked = self.blocked.get((int(tid), microseconds(stamp))) if tid.isdigit() and stamp else None
        return blocked[2] if blocked else None

    @classmethod
    def read(cls, data: str, folder: Optional[str] = None) -> "Switches":
        """The switches of `data`, from perf script; `folder`: where its text is kept
        (store.py) once read, and read from after."""
        text = store.kept_text(folder, data, store.SWITCHES_FILE) if folder else None
        if text is None:
            text = perf.switch_events_text(data)
            if folder:
                with contextlib.suppress(OSError):
                    store.keep_text(folder, data, store.SWITCHES_FILE, text)
        return cls.parse(text.decode("latin-1").splitlines())

    @classmethod
    def parse(cls, lines: Iterable[str]) -> "Switches":
        """Lines of `perf script -F tid,time,event,trace --ns --show-switch-events --show-task-events`."""
        switches = cls()
        pending: Dict[int, Tuple[str, int, str]] = {}  # tid -> (stamp, ns, state) of its last switch-out
        woken: Dict[int, Tuple[int, int]] = {}  # tid -> (ns, waker's tid) of its last wake-up
        first: Dict[int, int] = {}
        last: Dict[int, int] = {}
        for line in lines:
            fields = line.split(None, 3)  # tid, time:, event, rest
            if len(fields) < 3 or not fields[0].isdigit() or not fields[1].endswith(":"):
                continue
            tid, stamp, event = int(fields[0]), fields[1][:-1], fields[2]
            if tid == 0:
                continue
            now = nanoseconds(stamp)
            first.setdefault(tid, now)
            last[tid] = now
            switches.end = max(switches.end, now)
            if event == SWITCH_EVENT + ":":
                state = re.search(r"prev_state=(\S+)", line)
                pending[tid] = (stamp, now, state.group(1) if state else "?")
            elif event == WAKING_EVENT + ":":
                target = re.search(r" pid=(\d+)", line)
                if target:
                    woken[int(target.group(1))] = (now, tid)
            elif event == "PERF_RECORD_SWITCH" and line.rstrip().endswith("IN"):
                out = pending.pop(tid, None)
                if out is not None:
                    wake = woken.get(tid)
                    switches.blocked[(tid, microseconds(out[0]))] = (
                        now - out[1], out[2], wake[1] if wake and out[1] <= wake[0] <= now and wake[1] != tid else None)
            elif event.startswith("PERF_RECORD_FORK("):
                child = re.match(r"PERF_RECORD_FORK\(\d+:(\d+)\)", event)
                if child:
                    first.setdefault(int(child.group(1)), now)
            elif event.startswith("PERF_RECORD_EXIT("):
                pending.pop(tid, None)
        # still switched out when the recording stopped (an attach): blocked until then
        for tid, (stamp, then, state) in pending.items():
            if not state.startswith(("X", "Z")):  # a dying task is not blocked
                switches.blocked[(tid, microseconds(stamp))] = (switches.end - then, state, None)
        switches.threads = {tid: Thread(tid, first[tid], last[tid]) for tid in first}
        return switches


def syscall(frames: Sequence[Frame]) -> Optional[str]:
    """The system call a stack (leaf first) is in: the function under do_syscall_64."""
    below = False
    for frame in reversed(frames):  # root first
        if not is_kernel(frame.dso):
            continue
        name = symbol_name(frame)
        if name in SYSCALL_ENTRY:
            below = True
        elif below:  # not a syscall's function (e.g. a reschedule on the way out): none
            match = SYSCALL_FUNCTION.match(name)
            return match.group(1) if match else None
    return None


def waits_for_gil(frames: Sequence[Frame]) -> bool:
    """Whether a stack (leaf first) is in CPython's GIL hand-over."""
    if base_names(frames) & GIL_FUNCTIONS:
        return True
    waiting = unnamed = False
    for frame in frames:
        name = symbol_name(frame)
        if not waiting:
            waiting = CONDITION_WAIT.match(name) is not None
        elif name in GIL_CALLERS:
            return True
        elif is_unnamed_interpreter(frame):
            unnamed = True
        else:
            # A new thread takes the GIL before its first Python frame: on a stripped
            # build its start (thread_run, with PyEval_AcquireThread and take_gil
            # inlined by LTO) is unnamed interpreter code right above the thread's entry.
            return unnamed and is_entry(frame)
    return False


def blocked_reason(frames: Sequence[Frame], state: str) -> str:
    names = base_names(frames)
    if waits_for_gil(frames):
        return "GIL"
    for reason, functions in FREE_THREADED_WAITS:  # (a PyMutex spins in sched_yield: runnable)
        if names & functions:
            return reason
    if state.startswith("R"):
        return "preempted"
    if names & SLEEP_FUNCTIONS:
        return "sleep"
    if state.startswith("D"):
        return "io"
    if names & LOCK_FUNCTIONS:
        return "lock"
    if names & CHILD_FUNCTIONS:
        return "wait"
    return "io" if syscall(frames) else "blocked"


def marker(reason: str) -> Frame:
    return Frame("0", markers.off_cpu(reason), MARKER_DSO)


def is_marker(frame: Frame) -> bool:
    return frame.dso == MARKER_DSO


def weigh(samples: Iterable[Sample], what: str, switches: Optional[Switches]) -> Iterator[Sample]:
    """Processor: keep on-CPU samples (cpu), off-CPU ones (off) or both (wall); an
    off-CPU sample weighs its blocked nanoseconds and ends in its marker frame."""
    for sample in samples:
        if sample.event != SWITCH_EVENT:
            if what != "off":
                yield sample
            continue
        if what == "cpu" or switches is None or not sample.tid.isdigit() or not sample.time:
            continue
        blocked = switches.blocked.get((int(sample.tid), microseconds(sample.time)))
        if blocked is None or blocked[0] <= 0:
            continue
        ns, state, _ = blocked
        yield sample._replace(period=ns, frames=[marker(blocked_reason(sample.frames, state))] + sample.frames)
