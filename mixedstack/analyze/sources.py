"""Where fold's text comes from: a recording (through `perf script`) or text.

A recording whose samples were unwound before (store.py) is read from what was kept,
without perf script (Source.kept).

INPUT is told apart by content, not by name: perf.data files start with PERFILE2;
text whose first lines all read `frame;frame;... COUNT` is folded text (a
flame graph of a folded file); anything else is read as `perf script` output, so
fold drops in for stackcollapse-perf.pl in a pipe.

Text comes as a perf.text.Text: byte chunks, which parse() reads fastest. A large
recording is read by one `perf script` per core, each over its own slice of the
recording's time (perf script is single-threaded and the slowest step); the
slices' texts are read at once and parsed in time order, so the samples are the
same as from one perf script.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import sys
from typing import IO, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from mixedstack import store
from mixedstack.errors import InputError
from mixedstack.perf import command as perf
from mixedstack.perf import data as perfdata
from mixedstack.perf.data import has_call_graphs
from mixedstack.perf.data import truncation
from mixedstack.perf.recording import Recording
from mixedstack.perf.text import Text
from mixedstack.perf.text import split_lines
from mixedstack.perf.tmpview import perf_view

# A slice's perf script reads the whole file and loads every symbol table again
# before it unwinds its own samples (twice as slowly with inline frames): below this
# many samples a slice does not pay for itself (docs/speed.md).
SLICE_SAMPLES = 4000
CHUNK = 1 << 20


RECORDING = "recording"  # perf.data: read through perf script
PERF_SCRIPT = "perf script"  # perf script's text, from a file or standard input
FOLDED = "folded"  # `frame;frame;... COUNT` lines


class Source(NamedTuple):
    """An input, classified: the one place that tells what INPUT is."""

    name: str  # the path, or "-" for standard input
    kind: str  # RECORDING, PERF_SCRIPT or FOLDED
    text: Text  # perf script's text (a recording's, read lazily) or the file's own
    recording: Optional[Recording]  # the recording's files, for RECORDING
    kept: Optional[dict] = None  # a RECORDING's samples kept unwound (store.py): its index; text then unused
    keep: bool = False  # a RECORDING whose samples, once read through perf script, are to be kept


@contextlib.contextmanager
def open_input(path: str, inline: bool = False, slices: Optional[int] = None, reuse: bool = True) -> Iterator[Source]:
    """Yield INPUT ("-" is standard input) as a classified Source. A recording's text
    comes from perf script, started only when the text is read, in `slices` time
    slices at once (None: as many as pay off on this machine); `reuse`: or from its
    samples kept unwound (store.py) where there are."""
    if path == "-":
        stream = sys.stdin.buffer
        head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
        if perfdata.is_perf_data(head):
            raise InputError(
                "standard input holds perf.data, not perf script text: "
                "give the file name instead of '-'"
            )
        if hasattr(stream, "peek"):
            refuse_binary("standard input", stream.peek(TEXT_PROBE)[:TEXT_PROBE])
        yield classified(path, Text(lambda ready: byte_chunks(stream)))
        return
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        hint = " (record one with: mixedstack record -- python app.py)" if path == "perf.data" else ""
        raise InputError("no such file: %s%s" % (path, hint))
    except IsADirectoryError:
        raise InputError("%s is a folder: give the perf.data file (or perf script text)" % path)
    except OSError as error:
        raise InputError("cannot read %s: %s" % (path, error.strerror))
    if perfdata.is_perf_data(head):
        cut = truncation(path)
        if cut:
            raise InputError("%s is truncated (%s): the recording was cut short; record it again" % (path, cut))
        if has_call_graphs(path) is False:
            raise InputError("%s was recorded without call graphs: record with `mixedstack record` "
                             "(or perf record -g / --call-graph dwarf)" % path)
        recording = Recording(path)
        kept = None if inline or not reuse else store.kept(recording.folder, path)
        if kept is not None:  # unwound before: perf script need not run
            yield Source(path, RECORDING, Text(lambda ready: iter(())), recording, kept)
            return
        if recording.meta().get("stacks_dropped"):
            raise InputError("%s was recorded with --drop-stacks: only its unwound samples in %s%s%s can be read%s" % (
                path, recording.folder, os.sep, store.SAMPLES_FILE,
                ", which --inline cannot use (fold without it)" if inline else
                ", and they are missing or of another perf.data: copy the recording with its folder"))
        spans = script_spans(recording, inline, slices)
        # perf script reads /tmp/perf-PID.map for every process with anonymous code:
        # it is to see the recording's own maps there, not whatever /tmp holds now
        with perf_view(recording.tmp_dir) as view:
            yield Source(path, RECORDING,
                         Text(functools.partial(perf.script_chunks, path, buildid_dir=recording.buildid_dir_if_any(),
                                                inline=inline, spans=spans, kallsyms=recording.kallsyms(),
                                                view=view),
                              len(spans)),
                         recording, keep=not inline and recording.finished())
    else:
        if not head:
            raise InputError("%s is empty: nothing to fold" % path)
        with open(path, "rb") as f:
            refuse_binary(path, f.read(TEXT_PROBE))
            f.seek(0)
            yield classified(path, Text(lambda ready: byte_chunks(f)))


def classified(name: str, text: Text) -> Source:
    """Text is folded or perf script's, by its first lines (see split_folded)."""
    folded, text = split_folded_text(text)
    return Source(name, FOLDED if folded else PERF_SCRIPT, text, None)


TEXT_PROBE = 1 << 16  # bytes looked at to tell text from binary
PRINTABLE = bytes(range(32, 127)) + b"\t\n\r"


def refuse_binary(name: str, head: bytes) -> None:
    """perf script's and folded text is printable ASCII but for a few names: a NUL
    byte, or a head that is mostly not text (random bytes: ~37% printable), is some
    other file, which the lenient perf script parser would otherwise read as frames."""
    if not head:
        return
    others = len(head.translate(None, PRINTABLE))
    if b"\0" in head or others > 0.25 * len(head):
        raise InputError("%s is binary, not a recording (perf.data), perf script text or folded stacks: "
                         "give fold one of those" % name)


def byte_chunks(stream: IO[bytes]) -> Iterator[Tuple[int, bytes]]:
    """A file or pipe as Text chunks: big reads, then the end mark."""
    read = getattr(stream, "read1", stream.read)  # a pipe: what is there, without waiting for more
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        yield 0, chunk
    yield 0, b""


def script_spans(recording: Recording, inline: bool, slices: Optional[int] = None) -> List[Optional[str]]:
    """The time spans (perf's --time START,END) to read the recording in, at once."""
    if slices == 1:
        return [None]
    meta = recording.meta()
    if meta.get("sample_times") and meta.get("bytes") == os.path.getsize(recording.data):
        count, ranked = meta.get("samples", 0), meta["sample_times"]  # record's summary of them
    else:
        times = perfdata.sample_times(recording.data) or []
        count, ranked = len(times), sorted(times)
    if slices is None:
        per_sample = 2 if inline else 1
        slices = min(free_cores(), count * per_sample // SLICE_SAMPLES)
    return time_spans(ranked, slices)


def free_cores() -> int:
    """Cores this process may use that nothing else is running on right now: a
    slice's perf script only helps on a free core (on a busy one it costs its
    start-up twice). /proc/loadavg counts the runnable tasks, this one included."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cores
    return max(1, min(cores, cores - (running - 1)))


def time_spans(ranked: List[int], slices: int) -> List[Optional[str]]:
    """Spans of about the same number of samples that hold each sample once, from
    sorted sample times (all of them, or evenly ranked ones). perf's --time
    bounds are inclusive: a span starts 1 ns after the one before it ends."""
    ends = sorted({ranked[round((len(ranked) - 1) * k / slices)] for k in range(1, slices)}) if ranked else []
    if slices < 2 or not ends:
        return [None]
    stamp = lambda ns: "%d.%09d" % divmod(ns, 1000000000)  # noqa: E731
    starts = [""] + [stamp(end + 1) for end in ends]
    return ["%s,%s" % span for span in zip(starts, [stamp(end) for end in ends] + [""])]


# `frame;frame;... COUNT`: never starts with a blank (perf script's frame lines
# do), never ends with `event:` (its sample headers do).
FOLDED_LINE = re.compile(r"^(\S.*) (\d+)\r?$", re.ASCII | re.DOTALL)
FOLDED_PROBE_LINES = 50


def split_folded(lines: Iterable[str]) -> Tuple[bool, Iterable[str]]:
    """(whether the text is folded, all its lines again): the first non-blank lines
    decide, so a perf script text (headers, then indented frames) never passes. A
    Text comes back as a Text (parse() reads it fastest)."""
    if isinstance(lines, Text):
        return split_folded_text(lines)
    lines = iter(lines)
    head: List[str] = []
    filled = 0
    for line in lines:
        head.append(line)
        filled += bool(line.strip())
        if filled >= FOLDED_PROBE_LINES:
            break
    texts = [line.rstrip("\n") for line in head if line.strip()]
    folded = bool(texts) and all(FOLDED_LINE.match(text) for text in texts)
    return folded, itertools.chain(head, lines)


def split_folded_text(text: Text) -> Tuple[bool, Text]:
    """split_folded for a Text: the chunks read to decide come first in the Text returned."""
    chunks = text.chunks(lambda stream: True)
    read: List[Tuple[int, bytes]] = []
    head = b""
    for stream, chunk in chunks:
        read.append((stream, chunk))
        head += chunk
        complete = head if not chunk else head[:head.rfind(b"\n") + 1]
        if not chunk or sum(1 for line in complete.split(b"\n") if line.strip()) >= FOLDED_PROBE_LINES:
            break
    folded, _ = split_folded(split_lines(complete))
    return folded, Text(lambda ready: itertools.chain(read, chunks), text.streams)


def parse_folded(lines: Iterable[str]) -> Tuple[Dict[str, int], List[str]]:
    """Folded lines -> ({stack: total}, the lines that were not `stack COUNT`)."""
    stacks: Dict[str, int] = {}
    bad: List[str] = []
    for line in lines:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        match = FOLDED_LINE.match(text)
        if match is None:
            bad.append(text)
            continue
        stack = match.group(1)
        stacks[stack] = stacks.get(stack, 0) + int(match.group(2))
    return stacks, bad


def folded_unit(weights: Dict[str, int]) -> str:
    """What a folded file's counts are: "nanoseconds" when the typical stack weighs
    at least 100 us (fold and stackcollapse-perf.pl write cpu-clock periods, ~2 ms
    a sample at 499 Hz), else "samples" (py-spy and friends count samples)."""
    values = sorted(weights.values())
    return "nanoseconds" if values and values[len(values) // 2] >= 100_000 else "samples"
