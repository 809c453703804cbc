"""Samples -> stacks: run the processors over each sample and count the results.

Memory grows with the number of distinct stacks, not with samples: samples are
consumed one at a time, and the per-stack cache is bounded. Standard library only.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from mixedstack.analyze.processors import layers
from mixedstack.model import Mark, PyFrame, Sample, Span, Stack, StackFrame, Stacks, Track, frame_text
from mixedstack.markers import off_cpu_reason
from mixedstack.perf.command import SWITCH_EVENT
from mixedstack.analyze.processors.offcpu import nanoseconds
from mixedstack.analyze.lines import Snapshots
from mixedstack.analyze.processors.names import NativeNames
from mixedstack.analyze.processors import apply, stack_processors
from mixedstack.perf.parse import Frames

CACHE_LIMIT = 200_000  # distinct raw stacks remembered; identical stacks are the norm


class FoldOptions:
    """What `fold` was asked for; the CLI and the perf script share it."""

    def __init__(
        self,
        kernel: bool = False,
        jit: bool = False,
        all: bool = False,
        addrs: bool = False,
        keep_interpreter: bool = False,
        activated: bool = False,
        trampolined: bool = False,
    ):
        self.kernel = kernel or all
        self.jit = jit or all
        self.addrs = addrs
        self.keep_interpreter = keep_interpreter
        self.activated = activated  # a recording whose trampoline record --pid turned on
        self.trampolined = trampolined  # a recording whose trampolines came on late (the agent's; meta.json)


class Folder:
    """Accumulates samples into {folded stack: total period}.

    With detail=True it also counts samples per stack and notes each frame's layer
    from its DSO (for pictures); the folded text itself does not change.
    """

    def __init__(self, options: Optional[FoldOptions] = None, detail: bool = False, timeline: bool = False,
                 lines: Optional[Snapshots] = None):
        options = options or FoldOptions()
        self.native = NativeNames(kernel=options.kernel, jit=options.jit, addrs=options.addrs)
        self.processors = stack_processors(options.keep_interpreter, options.activated, options.trampolined)
        self.stacks: Dict[str, int] = {}
        self.samples = 0
        self.python_samples = 0
        self.stackless_samples = 0  # samples that carried no call chain at all
        self.addrs = options.addrs  # addresses are part of names: no two pcs fold alike
        self._cache: Dict[Tuple[str, object], Tuple[str, bool]] = {}
        self._named: Dict[Tuple[str, tuple], Tuple[str, bool]] = {}  # by (symbol, dso) of each frame
        self.counts: Optional[Dict[str, int]] = {} if detail else None
        # each folded text's frames: samples are counted by the text, whose hash Python
        # keeps (a tuple's it computes again at every sample); result() hands on the frames
        self._frames: Dict[str, Stack] = {}
        self.layers: Optional[Dict[str, Tuple[str, ...]]] = {} if detail else None
        self.last = ""  # the folded text of the last sample added
        # timeline=True: each thread's samples in time order, (start ns, length ns, folded text)
        self.spans: Optional[Dict[Tuple[int, int], List[Tuple[int, int, str]]]] = {} if timeline else None
        self.comms: Dict[Tuple[int, int], str] = {}
        # record's companion snapshots (3.14+): each sample's Python frames get their lines
        self.lines = lines

    def add(self, sample: Sample) -> str:
        """One sample; its stack's folded text (the key of `stacks`)."""
        self.add_all((sample,))
        return self.last

    def add_all(self, samples: Iterable[Sample]) -> "Folder":
        cache, stacks, counts = self._cache, self.stacks, self.counts
        count = python = stackless = 0
        for sample in samples:
            frames = sample.frames
            # frames from a block of text seen before carry its key: no need to hash them
            key = (sample.label, frames.key if type(frames) is Frames else tuple(frames))
            cached = cache.get(key)
            if cached is None:
                cached = self._miss(key, sample)
            stack = cached[0]
            if self.lines is not None and cached[1] and sample.time and sample.tid.isdigit():
                stack = self._with_lines(stack, int(sample.tid), nanoseconds(sample.time))
            self.last = stack
            if self.spans is not None and sample.time and sample.tid.isdigit():
                self._span(sample, stack)
            stacks[stack] = stacks.get(stack, 0) + sample.period
            if counts is not None:
                counts[stack] = counts.get(stack, 0) + 1
            count += 1
            python += cached[1]
            stackless += not frames
        self.samples += count
        self.python_samples += python
        self.stackless_samples += stackless
        return self

    def _with_lines(self, stack: str, tid: int, when: int) -> str:
        """The folded text of `stack` with its Python frames' lines, where the companion's
        snapshots give them (analyze/lines.py)."""
        frames = self._frames[stack]
        python = [frame for frame in frames if type(frame) is PyFrame]
        lines = self.lines.place(tid, when, python)
        if lines is None:
            return stack
        given = iter(lines)
        parts = tuple(frame._replace(line=next(given) or frame.line) if type(frame) is PyFrame else frame
                      for frame in frames)
        text = ";".join([frame_text(part) for part in parts])
        if text not in self._frames:
            self._frames[text] = parts
            if self.layers is not None:
                self.layers[text] = self.layers[stack]
        return text

    def _span(self, sample: Sample, stack: str) -> None:
        when = nanoseconds(sample.time)
        key = (int(sample.pid) if sample.pid.isdigit() else -1, int(sample.tid))
        self.comms[key] = sample.comm
        if sample.event == SWITCH_EVENT:  # blocked from its switch on (offcpu.weigh's period)
            self.spans.setdefault(key, []).append((when, sample.period, stack))
        else:  # on the CPU for the period up to its time
            self.spans.setdefault(key, []).append((when - sample.period, sample.period, stack))

    def timeline(self) -> Optional[List[Track]]:
        """Each thread's samples in time order, and its off-CPU waits as marks."""
        if self.spans is None:
            return None
        tracks = []
        for (pid, tid), spans in self.spans.items():
            spans.sort()
            marks = []
            for start, length, text in spans:
                frames = self._frames[text]
                why = off_cpu_reason(frames[-1]) if type(frames[-1]) is str else None
                if why is not None:
                    python = [frame for frame in frames if type(frame) is PyFrame]
                    marks.append(Mark(start, length, "off-cpu", why, python[-1].text() if python else ""))
            tracks.append(Track(pid, tid, self.comms[(pid, tid)],
                                [Span(start, length, self._frames[text]) for start, length, text in spans], marks))
        tracks.sort(key=lambda track: (track.spans[0].start if track.spans else 0, track.pid, track.tid))
        return tracks

    def frames(self, stack: str) -> Stack:
        """A folded text's frames as data (the process label first)."""
        return self._frames[stack]

    def result(self, unit: str = "nanoseconds") -> Stacks:
        """The stacks, their frames as data (Python frames as PyFrame), for renderers."""
        frames = self._frames
        weights = {frames[text]: weight for text, weight in self.stacks.items()}
        counts = None if self.counts is None else {frames[text]: n for text, n in self.counts.items()}
        kinds = None if self.layers is None else {frames[text]: k for text, k in self.layers.items()}
        return Stacks(weights, unit, counts, kinds, self.timeline())

    def _miss(self, key: Tuple[str, object], sample: Sample) -> Tuple[str, bool]:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
            self._named.clear()
        # the same functions at other addresses (a leaf's exact pc) fold alike
        named = None if self.addrs else (sample.label, tuple([frame[1:] for frame in sample.frames]))
        cached = self._named.get(named) if named else None
        if cached is None:
            cached = self._fold(sample)
            if named:
                self._named[named] = cached
        self._cache[key] = cached
        return cached

    def _fold(self, sample: Sample) -> Tuple[str, bool]:
        parts: List[StackFrame] = [sample.label]
        kinds: Optional[List[str]] = None if self.layers is None else [layers.PROCESS]
        items = apply(self.processors, sample.frames[::-1])  # root first
        python = False
        for item in items:
            if type(item) is PyFrame or type(item) is str:  # a Python frame, or a marker, the merge named
                parts.append(item)
                python = python or type(item) is PyFrame
                if kinds is not None:
                    kinds.append(layers.of_frame(item) if type(item) is PyFrame else layers.of_marker(item) or layers.PYTHON)
                continue
            names = self.native(item, sample.label)
            parts.extend(names)
            if kinds is not None and names:
                kind = layers.of_marker(names[0]) or layers.of_native(item, self.native.symbol(item))
                kinds.extend([kind] * len(names))
        stack = ";".join([frame_text(part) for part in parts])
        self._frames.setdefault(stack, tuple(parts))
        if kinds is not None:
            self.layers.setdefault(stack, tuple(kinds))
        return stack, python
