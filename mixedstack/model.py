"""The core data model: a frame as perf printed it, a sample (one stack), a Python
frame as data, and the stacks renderers draw.

Standard library only (perf's embedded Python imports it too).
"""
from __future__ import annotations

import re
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union


class Frame(NamedTuple):
    """One call-chain entry as perf printed it: `pc symbol+0xoff (dso)`."""

    pc: str  # the address text, e.g. "7f0a1b2c3d"
    symbol: str  # raw symbol text, offset included, e.g. "os_stat+0x150" or "[unknown]"
    dso: str  # module text, e.g. "/usr/lib/libc.so.6", "[kernel.kallsyms]", "inlined"


class Sample(NamedTuple):
    """One sample: who it belongs to, its weight, and its frames leaf first."""

    label: str  # process label: comm, or comm-PID, or comm-PID/TID (spaces -> _)
    period: int  # weight (event period; 1 when perf printed none)
    event: Optional[str]
    frames: List[Frame]  # leaf first, as perf prints them
    # comm/pid/tid are kept for processors that need them (e.g. per-thread output).
    comm: str = ""
    pid: str = "?"
    tid: str = ""
    # perf's timestamp text ("12345.678901234"; "" where perf printed none): off-CPU
    # time is measured from a switch's, and GIL blame puts samples in the waits' intervals.
    time: str = ""


class PyFrame(NamedTuple):
    """A Python function's frame, as data: renderers format it (`text`), and speedscope
    and pprof keep its file and line as fields of their own."""

    function: str  # the qualified name: `Handler.get`, `<module>`, `main.<locals>.inner`
    file: str = ""  # shortened as py-spy does: `pkg/sub/mod.py`, `app.py`; "" when unknown
    line: int = 0  # its first line where the trampoline says it (the agent), else 0
    compiled: bool = False  # Python compiled to C (Cython, mypyc): a C function by its Python name

    def text(self) -> str:
        """`function (file:line)`, `function (file)` or `function`: its folded name."""
        if not self.file:
            return self.function
        return "%s (%s:%d)" % (self.function, self.file, self.line) if self.line else \
            "%s (%s)" % (self.function, self.file)

    @classmethod
    def parse(cls, name: str) -> Optional["PyFrame"]:
        """A folded name back into a PyFrame (folded text keeps no structure), or None
        for any other frame. Native names never end in ` (...)`: fold cuts a C++
        signature at its "(" (but for `(anonymous namespace)`), as stackcollapse does."""
        match = PYTHON_TEXT.match(name)
        if match is None:
            return None
        return cls(match.group(1), match.group(2), int(match.group(3) or 0))


# `func (file.py)` / `func (file.py:LINE)`; `(anonymous namespace)` is C++'s
PYTHON_TEXT = re.compile(r"^(.+) \((?!anonymous namespace\))([^()]+?)(?::(\d+))?\)$", re.DOTALL)

StackFrame = Union[str, PyFrame]  # a native name or a synthetic marker, or a Python frame
Stack = Tuple[StackFrame, ...]  # root first: the process (or thread) label, then its frames


def frame_text(frame: StackFrame) -> str:
    return frame if type(frame) is str else frame.text()


NO_PYTHON = "(no Python frame)"


def innermost_python(stack: Stack) -> str:
    """The innermost Python function of a stack, as text (NO_PYTHON when it has none)."""
    for frame in reversed(stack):
        if type(frame) is PyFrame:
            return frame.text()
    return NO_PYTHON


class Span(NamedTuple):
    """A sample on a thread's timeline: an on-CPU sample covers the period before its
    time, an off-CPU one the time blocked after its switch."""

    start: int  # ns, perf's clock
    length: int  # ns
    stack: Stack  # root first, as in Stacks


class Mark(NamedTuple):
    """An interval on a thread's timeline that is not a sample: a wait, a system call."""

    start: int  # ns, perf's clock
    length: int  # ns
    kind: str  # MARK_KINDS: "off-cpu" (name: why, the off-CPU marker's reason), "syscall" (name: the call)
    name: str
    function: str = ""  # the Python function it happened in, as text ("" when none)
    error: str = ""  # a failed system call's errno name


MARK_KINDS = ("off-cpu", "syscall")


class Track(NamedTuple):
    """One thread's samples and marks, in time order."""

    pid: int
    tid: int
    comm: str
    spans: List[Span]
    marks: List[Mark]

    @property
    def name(self) -> str:
        return "%s-%d/%d" % (self.comm, self.pid, self.tid)


class Stacks(NamedTuple):
    """What renderers draw: stacks of frames (root first) and their weights; with
    `timeline`, each thread's samples in time order too (speedscope, gecko)."""

    weights: Dict[Stack, int]  # stack -> total period (what folded output prints)
    unit: str = "nanoseconds"  # of the weights: "nanoseconds" (cpu-clock), "events" (other periods), "samples"
    counts: Optional[Dict[Stack, int]] = None  # stack -> samples, when known (recordings)
    layers: Optional[Dict[Stack, Tuple[str, ...]]] = None  # stack -> each frame's layer, from DSOs
    timeline: Optional[List[Track]] = None  # per thread, in order of their first sample (recordings)

    @classmethod
    def from_folded(cls, weights: Dict[str, int], unit: str = "nanoseconds") -> "Stacks":
        """Stacks of folded text (`frame;frame;...` -> weight), Python frames parsed."""
        parsed: Dict[str, StackFrame] = {}

        def frame(name: str) -> StackFrame:
            known = parsed.get(name)
            if known is None:
                known = parsed[name] = PyFrame.parse(name) or name
            return known

        stacks: Dict[Stack, int] = {}
        for text, weight in weights.items():
            names = text.split(";")
            stack = (names[0],) + tuple(frame(name) for name in names[1:])
            stacks[stack] = stacks.get(stack, 0) + weight
        return cls(stacks, unit)

    def texts(self) -> Dict[Stack, str]:
        """Each stack's folded text (`frame;frame;...`), formatted once a frame."""
        names: Dict[StackFrame, str] = {}
        texts = {}
        for stack in self.weights:
            parts = []
            for frame in stack:
                name = names.get(frame)
                if name is None:
                    name = names[frame] = frame_text(frame)
                parts.append(name)
            texts[stack] = ";".join(parts)
        return texts

    def folded_lines(self) -> Iterator[str]:
        """`stack WEIGHT` lines, in byte order of the stacks (stackcollapse-perf.pl's)."""
        weights = self.weights
        texts = self.texts()
        for stack in sorted(weights, key=texts.__getitem__):
            yield "%s %d\n" % (texts[stack], weights[stack])

    def to_folded(self) -> str:
        """The folded text: one `frame;frame;... WEIGHT` line per distinct stack."""
        return "".join(self.folded_lines())
