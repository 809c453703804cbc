"""Where fold's text comes from: a recording (through `perf script`) or text.

INPUT is told apart by content, not by name: perf.data files start with PERFILE2;
text whose first lines all read `frame;frame;... COUNT` is folded text (a
flame graph of a folded file); anything else is read as `perf script` output, so
fold drops in for stackcollapse-perf.pl in a pipe.
"""
from __future__ import annotations

import contextlib
import itertools
import re
import sys
from typing import IO, Dict, Iterable, Iterator, List, Tuple

from . import perf
from .perfdata import has_call_graphs, truncation
from .recording import Recording


class InputError(Exception):
    """A one-line message: what is wrong with INPUT and what to do."""


@contextlib.contextmanager
def open_input(path: str, inline: bool = False) -> Iterator[Iterator[str]]:
    """Yield the lines of `perf script` text for INPUT ("-" is standard input)."""
    if path == "-":
        stream = sys.stdin.buffer
        head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
        if perf.is_perf_data(head):
            raise InputError(
                "standard input holds perf.data, not perf script text: "
                "give the file name instead of '-'"
            )
        yield text_lines(stream)
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
    if perf.is_perf_data(head):
        cut = truncation(path)
        if cut:
            raise InputError("%s is truncated (%s): the recording was cut short; record it again" % (path, cut))
        if has_call_graphs(path) is False:
            raise InputError("%s was recorded without call graphs: record with `mixedstack record` "
                             "(or perf record -g / --call-graph dwarf)" % path)
        recording = Recording(path)
        with recording.perf_maps_in_tmp():
            yield perf.script_lines(path, recording.buildid_dir_if_any(), inline=inline)
    else:
        if not head:
            raise InputError("%s is empty: nothing to fold" % path)
        with open(path, "rb") as f:
            yield text_lines(f)


def text_lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines split on \\n only and decoded byte for byte, as Perl reads them."""
    for raw in stream:  # binary iteration splits on b"\n" only
        yield raw.decode("latin-1")


def is_recording(path: str) -> bool:
    """Whether PATH is a perf.data file (False when it cannot be read: open_input says why)."""
    try:
        with open(path, "rb") as f:
            return perf.is_perf_data(f.read(8))
    except OSError:
        return False


# `frame;frame;... COUNT`: never starts with a blank (perf script's frame lines
# do), never ends with `event:` (its sample headers do).
FOLDED_LINE = re.compile(r"^(\S.*) (\d+)\r?$", re.ASCII | re.DOTALL)
FOLDED_PROBE_LINES = 50


def split_folded(lines: Iterable[str]) -> Tuple[bool, Iterator[str]]:
    """(whether the text is folded, all its lines again): the first non-blank lines
    decide, so a perf script text (headers, then indented frames) never passes."""
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
    at least 100 us (fold and stackcollapse-perf.pl write cpu-clock periods, ~1 ms
    a sample at 999 Hz), else "samples" (py-spy and friends count samples)."""
    values = sorted(weights.values())
    return "nanoseconds" if values and values[len(values) // 2] >= 100_000 else "samples"
