"""Who held the GIL while others waited, and doing what.

Reads the one sample stream (offcpu.weigh's, `wall`: on-CPU samples and off-CPU ones
with their blocked time), each sample with its time and thread:

- every off-CPU sample marked `[off-cpu: GIL]` is an interval, [its switch-out, +
  the time it was blocked), in which its thread waited for the GIL;
- every on-CPU sample of another thread of the same process inside that interval
  whose thread runs Python (`holds_gil`) was holding it then.

Each wait's time is shared among the holder samples inside it, in proportion to their
periods: a holder's blame is the part of the waits it was seen holding through. A wait
shorter than the sampling period (at 499 Hz, 2 ms: the GIL's switch interval is 5 ms)
often holds no sample: the holders sampled within one period before or after it stand
for it. A wait with no holder sampled even there (its holder off the CPU while holding
the GIL, say) is blamed on `[GIL held by no sampled thread]`, so that the blame adds
up to the GIL waits `fold --what off` shows. Whether a thread holds the GIL is read from its stack, which cannot say it
exactly (docs/off-cpu.md, "Who held the GIL"): Python code, the interpreter's own C
code and extension modules hold it; a thread in a system call, in a GIL hand-over, or
in a library's code under an extension (zlib's deflate, OpenBLAS: extensions release
the GIL around such calls) does not.

Standard library only.
"""
from __future__ import annotations

import bisect
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from mixedstack import markers
from mixedstack.analyze.processors import offcpu
from mixedstack.analyze.processors.layers import is_kernel
from mixedstack.analyze.processors.python import (INTERPRETER_DSO, LIBC, TRAMPOLINE_DSO, is_python,
                                                  is_unnamed_interpreter, symbol_name)
from mixedstack.model import Frame, Sample

# Code that runs for whoever calls it, GIL held or not: the C library, the loader, the vDSO.
SYSTEM_DSO = re.compile(r"(?:^|/)(?:%s|ld-linux[^/]*|libpthread[^/]*|libm[.-][^/]*)$|^\[vdso\]$" % LIBC, re.ASCII)
# CPython's extension modules: lib-dynload's and site-packages' (`_json.cpython-313-x86_64-linux-gnu.so`,
# `_foo.abi3.so`), Cython's and mypyc's among them.
EXTENSION_DSO = re.compile(r"\.(?:cpython-[^/]*|abi3)\.so$", re.ASCII)
NO_HOLDER = markers.NO_GIL_HOLDER


def holds_gil(frames: Sequence[Frame]) -> bool:
    """Whether an on-CPU sample's thread (its frames, leaf first) runs Python code
    with the GIL held: the first frame from the leaf that is neither the kernel nor the
    C library decides (the interpreter, a trampoline, an extension module: held; any
    other library: released around it). In a system call, or in the GIL's own hand-over:
    not held."""
    if offcpu.syscall(frames) is not None or offcpu.waits_for_gil(frames):
        return False
    for frame in frames:
        if is_kernel(frame.dso) or SYSTEM_DSO.search(frame.dso):
            continue
        return (is_python(frame) or TRAMPOLINE_DSO.search(frame.dso) is not None
                or INTERPRETER_DSO.search(frame.dso) is not None or is_unnamed_interpreter(frame)
                or EXTENSION_DSO.search(frame.dso) is not None)
    return False


def is_gil_wait(sample: Sample) -> bool:
    return bool(sample.frames) and offcpu.is_marker(sample.frames[0]) \
        and markers.off_cpu_reason(symbol_name(sample.frames[0])) == "GIL"


class Blame:
    """Collects the stream (add), then `shares()` gives each wait's blame, and
    `holders()` the holders' samples, each weighing the GIL waits it is blamed for, and
    one `[GIL held by no sampled thread]` sample a process for the rest."""

    def __init__(self) -> None:
        # pid -> [(start, end, waiting sample, ns)] and [(time, tid, sample)]
        self.waits: Dict[str, List[Tuple[int, int, Sample, int]]] = {}
        self.running: Dict[str, List[Tuple[int, str, Sample]]] = {}

    def add(self, sample: Sample) -> None:
        if not sample.time:
            return
        when = offcpu.nanoseconds(sample.time)
        if sample.event == offcpu.SWITCH_EVENT:
            if is_gil_wait(sample):
                self.waits.setdefault(sample.pid, []).append((when, when + sample.period, sample, sample.period))
            return
        if holds_gil(sample.frames):
            self.running.setdefault(sample.pid, []).append((when, sample.tid, sample))

    def add_all(self, samples: Iterable[Sample]) -> "Blame":
        for sample in samples:
            self.add(sample)
        return self

    def shares(self) -> Iterator[Tuple[Sample, Optional[Sample], float]]:
        """(the waiting sample, a holder's sample or None, ns of that wait blamed on it)."""
        for pid, waits in self.waits.items():
            running = sorted(self.running.get(pid, ()), key=lambda entry: entry[0])
            times = [entry[0] for entry in running]
            reach = max((entry[2].period for entry in running), default=0)
            for start, end, waiter, ns in waits:
                # a wait shorter than the sampling period often holds no sample: the holders
                # sampled within one period of it stand for it
                inside = self._running(running, times, start, end, waiter.tid) or \
                    self._running(running, times, start - reach, end + reach, waiter.tid)
                periods = sum(running[index][2].period for index in inside)
                if not periods:
                    yield waiter, None, ns
                for index in inside:
                    yield waiter, running[index][2], ns * running[index][2].period / periods

    @staticmethod
    def _running(running: List[Tuple[int, str, Sample]], times: List[int], start: int, end: int,
                 waiting: str) -> List[int]:
        return [index for index in range(bisect.bisect_left(times, start), bisect.bisect_left(times, end))
                if running[index][1] != waiting]

    def holders(self) -> Iterator[Sample]:
        blamed: Dict[int, List] = {}  # id(holder sample) -> [sample, ns]
        unheld: Dict[str, List] = {}  # pid -> [a waiting sample, ns]
        for waiter, holder, ns in self.shares():
            if holder is None:
                unheld.setdefault(waiter.pid, [waiter, 0])[1] += ns
            else:
                blamed.setdefault(id(holder), [holder, 0.0])[1] += ns
        for holder, ns in blamed.values():
            if ns >= 0.5:
                yield holder._replace(period=round(ns))
        for waiter, ns in unheld.values():
            yield waiter._replace(period=ns, frames=[Frame("0", NO_HOLDER, offcpu.MARKER_DSO)])


def blame(samples: Iterable[Sample]) -> Iterator[Sample]:
    """Processor on the stream (offcpu.weigh's, wall): the GIL holders' samples weighed by
    the waits they caused, for fold/flamegraph/diff --what gil-holders."""
    return Blame().add_all(samples).holders()
