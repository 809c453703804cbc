"""`perf script` text -> samples.

The state machine mirrors FlameGraph's stackcollapse-perf.pl line for line (header
regex, Perl truthiness, event filter, blank line ends a sample), because `fold` must
give its exact output on stacks without Python. Standard library only.

Text is handled as latin-1 so that every byte round-trips unchanged and regexes see
bytes the way Perl does (ASCII character classes).

Fast path: text given as a `Text` (byte chunks, which is what sources.py gives) is
read a block at a time. Identical stacks are the norm (here 12,000 samples had
1,700 distinct blocks of frame lines), so the frame lines of a block are parsed
once and their result reused, as are header lines and single frame lines; only a
block that is not one header followed by indented frame lines (comments, several
headers, odd text) goes through the line-by-line state machine. Both paths give
the same samples in the same order.
"""
from __future__ import annotations

import itertools
import re
import sys
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from mixedstack.model import Frame, Sample
from mixedstack.perf.text import Text, split_lines

# "comm pid/tid [cpu] time: period event:" -- comm may contain spaces.
HEADER = re.compile(r"^(\S.+?)\s+(\d+)/*(\d+)*\s+", re.ASCII)
# ": period event:" at the end of the header; absent for tracepoints with a payload.
HEADER_EVENT = re.compile(r":\s*(\d+)*\s+(\S+):\s*$", re.ASCII)
# the timestamp in a header: " 12345.678901234: "
HEADER_TIME = re.compile(r"\s(\d+\.\d+):\s", re.ASCII)
# The header as perf script prints fold's fields, "comm pid/tid time: period event: ",
# for a comm of two or more characters without blanks: one match gives what HEADER,
# HEADER_EVENT and HEADER_TIME would (tests/analyze/test_fuzz_parser.py checks that they agree).
COMMON_HEADER = re.compile(r"(\S\S+) +(\d+)/(\d+) +(\d+\.\d+): +(\d+) +(\S+): *$", re.ASCII)
# "\t pc symbol+0xoff (dso)"
FRAME = re.compile(r"^\s*(\w+)\s*(.+) \((.*)\)", re.ASCII)


def perl_true(value: Optional[str]) -> bool:
    """Perl's truth for a scalar string: undef, "" and "0" are false."""
    return value is not None and value != "" and value != "0"


class ProcessLabel:
    """How a sample's process is named: comm, comm-PID, or comm-PID/TID."""

    def __init__(self, include_pid: bool = False, include_tid: bool = False):
        self.include_pid = include_pid
        self.include_tid = include_tid

    def __call__(self, comm: str, pid: str, tid: str) -> str:
        if self.include_tid:
            label = "%s-%s/%s" % (comm, pid, tid)
        elif self.include_pid:
            label = "%s-%s" % (comm, pid)
        else:
            label = comm
        return label.replace(" ", "_")


class EventFilter:
    """Keep one event type: the one asked for, else the first one seen."""

    def __init__(self, wanted: Optional[str] = None, warn: Callable[[str], None] = None,
                 also: Iterable[str] = ()):
        self.wanted = wanted or ""
        self.also = frozenset(also)  # kept besides the wanted one (off-CPU switches)
        self.defaulted = False
        self.warned = False
        self.warn = warn or (lambda message: sys.stderr.write(message + "\n"))

    def accepts(self, event: str) -> bool:
        if event in self.also:
            return True
        if self.wanted == "":
            self.wanted = event
            self.defaulted = True
            return True
        if event == self.wanted:
            return True
        if self.defaulted and not self.warned:
            # stackcollapse-perf.pl prints the name of the event it found, not the kept one
            self.warn("Filtering for events of type: %s" % event)
            self.warned = True
        return False


class Frames(list):
    """A sample's frames as the Text path reads them: one list, shared by every
    sample whose frame lines read the same, and `key` names them, so that Folder
    knows the stack without hashing it. Build a new list to change a stack; never
    change one of these in place."""

    __slots__ = ("key",)


def parse(
    lines: Union[Iterable[str], Text],
    label: Callable[[str, str, str], str] = ProcessLabel(),
    events: Optional[EventFilter] = None,
    on_unrecognized: Optional[Callable[[str], None]] = None,
) -> Iterator[Sample]:
    """Yield one Sample per blank-line-terminated block of `perf script` text
    (lines, or a Text: the same samples, faster)."""
    events = events or EventFilter()
    if isinstance(lines, Text):
        return _parse_text(lines, label, events, on_unrecognized)
    return _parse_lines(lines, label, events, on_unrecognized)


Header = Tuple[str, str, str, str, Optional[str], str]  # comm, pid, tid, period text, event, time


def _header(line: str) -> Optional[Header]:
    """A header line's fields (event None when the line has no `period event:` tail)."""
    common = COMMON_HEADER.match(line)
    if common:
        comm, pid, tid, stamp, period, event = common.groups()
        if tid == "0":
            tid, pid = pid, "?"
        return comm, pid, tid, period, event, stamp
    return _any_header(line)


def _any_header(line: str) -> Optional[Header]:
    """_header for every form stackcollapse-perf.pl reads (its regexes)."""
    header = None if line[0] in " \t" else HEADER.match(line)
    if not header:
        return None
    comm, pid, tid = header.groups()
    if tid is None or tid == "" or tid == "0":  # perl_true(tid), inline: this runs per sample
        tid, pid = pid, "?"
    tail = HEADER_EVENT.search(line)
    if not tail:
        return comm, pid, tid, "", None, ""
    period, event = tail.groups()
    timed = HEADER_TIME.search(line)
    return comm, pid, tid, period or "", event, timed.group(1) if timed else ""


def _parse_lines(
    lines: Iterable[str],
    label: Callable[[str, str, str], str],
    events: EventFilter,
    on_unrecognized: Optional[Callable[[str], None]],
) -> Iterator[Sample]:
    return _Machine(label, events, on_unrecognized).run(lines)


class _Machine:
    """The line-by-line state machine (stackcollapse-perf.pl's); its state carries
    over from one run() to the next, as if their lines were one text."""

    def __init__(self, label: Callable[[str, str, str], str], events: EventFilter,
                 on_unrecognized: Optional[Callable[[str], None]]):
        self.label = label
        self.events = events
        self.on_unrecognized = on_unrecognized
        self.reset()

    def reset(self) -> None:
        self.stack: List[Frame] = []
        self.pname: Optional[str] = None
        self.sample = ("", "", "", 1, None, "")  # comm, pid, tid, period, event, time

    def run(self, lines: Iterable[str]) -> Iterator[Sample]:
        label, events, on_unrecognized = self.label, self.events, self.on_unrecognized
        stack, pname = self.stack, self.pname
        comm, pid, tid, period, event, stamp = self.sample
        for line in lines:
            if line.startswith("#"):
                continue
            if line.endswith("\n"):
                line = line[:-1]
            if line == "":
                if perl_true(pname):
                    yield Sample(pname, period, event, stack, comm, pid, tid, stamp)
                stack = []
                pname = None
                continue
            header = _header(line)
            if header:
                h_comm, h_pid, h_tid, h_period, h_event, h_stamp = header
                if h_event is not None and not events.accepts(h_event):
                    continue
                period = int(h_period) if perl_true(h_period) else 1
                comm, pid, tid, event, stamp = h_comm, h_pid, h_tid, h_event, h_stamp
                pname = label(comm, pid, tid)
                continue
            frame = FRAME.match(line)
            if frame:
                if not perl_true(pname):
                    continue
                stack.append(Frame(*frame.groups()))
                continue
            if on_unrecognized is not None:
                on_unrecognized(line)
        self.stack, self.pname = stack, pname
        self.sample = (comm, pid, tid, period, event, stamp)


# What one block of text becomes, replayed in order by _parse_text: a Sample
# (yielded if its event is kept); a Ready (event to check, Sample or None for a
# process whose name is false, lines to report as unrecognized); or an Odd: lines
# for the state machine, with what follows them: END_BLOCK (a blank line), None
# (more lines of the same block) or END_TEXT (nothing: the stream ended).
Ready = Tuple[Optional[str], Optional[Sample], Tuple[str, ...]]
Odd = Tuple[List[str], Optional[str]]
Entry = Union[Sample, Ready, Odd]
END_BLOCK, END_TEXT = "block", "text"

_stack_keys = itertools.count()  # Frames.key: never reused, so never a wrong match
ODD_BLOCK = 1 << 22  # bytes without a blank line before the state machine takes them as they come


class _Blocks:
    """Reads blocks of text into entries, remembering what repeats."""

    STACK_BYTES = 32 << 20  # frame-line text remembered, in bytes
    LINES = 200_000  # single frame lines remembered
    LABELS = 100_000  # process labels remembered

    def __init__(self, label: Callable[[str, str, str], str]):
        self.label = label
        self.labels: Dict[Tuple[str, str, str], str] = {}
        self.stacks: Dict[bytes, Union[tuple, bool]] = {}
        self.stack_bytes = 0
        self.lines: Dict[bytes, Union[Frame, str]] = {}

    def read(self, blocks: List[bytes], odd_first: bool = False) -> List[Entry]:
        """Entries for blocks of text, each of which a blank line ended (the first
        one goes on from lines the state machine already has, with `odd_first`)."""
        entries: List[Entry] = []
        append = entries.append
        if odd_first:
            append((split_lines(blocks[0]), END_BLOCK))
            blocks = blocks[1:]
        stacks, header_of = self.stacks, self._header
        for block in blocks:
            if block[:1] == b"\n":  # more blank lines: nothing to end
                block = block.lstrip(b"\n")
                if not block:
                    continue
            newline = block.find(b"\n")
            if newline < 0:
                head, rest = block, b""
            else:
                head, rest = block[:newline], block[newline + 1:]
            header = header_of(head)  # headers hold a timestamp: they rarely repeat
            stack = stacks.get(rest)
            if stack is None:
                stack = self._remember(rest)
            if header is None or stack is False:
                append((block.decode("latin-1").split("\n"), END_BLOCK))
                continue
            event, pname, period, comm, pid, tid, stamp = header
            frames, unknown = stack
            if pname is None:
                append((event, None, unknown))
                continue
            sample = Sample(pname, period, event, frames, comm, pid, tid, stamp)
            append((event, sample, unknown) if unknown else sample)
        return entries

    def _header(self, head: bytes) -> Optional[tuple]:
        """(event to check, pname or None, period, comm, pid, tid, time), or None: not
        a header line (the block then takes the state machine)."""
        line = head.decode("latin-1")
        fields = _header(line) if line and line[0] != "#" else None
        if fields is None:
            return None
        comm, pid, tid, period, event, stamp = fields
        pname = self.labels.get((comm, pid, tid))
        if pname is None:
            if len(self.labels) >= self.LABELS:
                self.labels.clear()
            pname = self.labels[comm, pid, tid] = self.label(comm, pid, tid)
        return (event, pname if perl_true(pname) else None, int(period) if perl_true(period) else 1,
                comm, pid, tid, stamp)

    def _remember(self, rest: bytes) -> Union[tuple, bool]:
        if self.stack_bytes > self.STACK_BYTES:
            self.stacks.clear()
            self.stack_bytes = 0
        self.stack_bytes += len(rest)
        stack = self.stacks[rest] = self._stack(rest) or False
        return stack

    def _stack(self, rest: bytes) -> Optional[tuple]:
        """(frames, unrecognized lines) of indented frame lines, or None when a line
        is not indented (a header, a comment...: the state machine's case)."""
        frames = Frames()
        frames.key = next(_stack_keys)
        unknown: List[str] = []
        if rest:
            cache = self.lines
            for raw in rest.split(b"\n"):
                item = cache.get(raw)
                if item is None:
                    if raw[:1] not in (b" ", b"\t"):
                        return None
                    line = raw.decode("latin-1")
                    frame = FRAME.match(line)
                    if len(cache) >= self.LINES:
                        cache.clear()
                    item = cache[raw] = Frame(*frame.groups()) if frame else line
                if type(item) is str:
                    unknown.append(item)
                else:
                    frames.append(item)
        return frames, tuple(unknown)


def _parse_text(
    text: Text,
    label: Callable[[str, str, str], str],
    events: EventFilter,
    on_unrecognized: Optional[Callable[[str], None]],
) -> Iterator[Sample]:
    blocks = _Blocks(label)
    pending = [b""] * text.streams
    odd = [False] * text.streams  # the state machine holds the start of the stream's current block

    def convert(stream: int, chunk: bytes) -> List[Entry]:
        data = pending[stream] + chunk
        if not chunk:  # the stream's end: the rest was never ended by a blank line
            pending[stream], odd[stream] = b"", False
            return [(split_lines(data), END_TEXT)]
        # split as the whole text would be: the last piece may go on in the next chunk
        pieces = data.split(b"\n\n")
        last = pieces.pop()
        if len(last) > ODD_BLOCK and pieces == []:  # no blank line for long (e.g. CRLF text)
            cut = last.rfind(b"\n") + 1
            pending[stream], odd[stream] = last[cut:], True
            return [(split_lines(last[:cut]), None)]
        pending[stream] = last
        was_odd, odd[stream] = odd[stream], False
        return blocks.read(pieces, odd_first=was_odd) if pieces else []

    machine = _Machine(label, events, on_unrecognized)
    kept = set()  # events accepted once: EventFilter accepts them again, without side effects

    def accepts(event: str) -> bool:
        if events.accepts(event):
            kept.add(event)
            return True
        return False

    for entry in text.in_order(convert):
        if type(entry) is Sample:
            event = entry.event
            if event is None or event in kept or accepts(event):
                yield entry
        elif len(entry) == 3:
            event, sample, unknown = entry
            accepted = event is None or event in kept or accepts(event)
            if on_unrecognized is not None:
                for line in unknown:
                    on_unrecognized(line)
            if accepted and sample is not None:
                yield sample
        else:
            lines, then = entry
            yield from machine.run(lines + [""] if then == END_BLOCK else lines)
            if then == END_TEXT:
                machine.reset()
