"""perf script's text as byte chunks: what perf/command.py reads from perf script and
perf/parse.py reads fastest. Standard library only.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Tuple


class Text:
    """`perf script` text as byte chunks, from one or more streams: the text is
    stream 0's bytes, then stream 1's... (time slices of one recording, read at
    once). `chunks(ready)` yields (stream, bytes) as they arrive, (stream, b"") at
    each stream's end, and reads from a stream only while `ready(stream)` says so.
    Iterating a Text gives its lines, like any other input of parse()."""

    # a later stream's results wait in memory until its turn; past this many, its
    # reading pauses (its perf script then waits on a full pipe)
    STASH_LIMIT = 20000

    def __init__(self, chunks: Callable[[Callable[[int], bool]], Iterator[Tuple[int, bytes]]],
                 streams: int = 1):
        self.chunks = chunks
        self.streams = streams

    def in_order(self, convert: Callable[[int, bytes], list]) -> Iterator:
        """What `convert(stream, chunk)` makes of each chunk (and of each stream's end,
        chunk b""), in the text's order."""
        stash: List[list] = [[] for _ in range(self.streams)]
        done = [False] * self.streams
        current = 0
        ready = lambda stream: stream == current or len(stash[stream]) < self.STASH_LIMIT  # noqa: E731
        for stream, chunk in self.chunks(ready):
            if stream != current:
                stash[stream].extend(convert(stream, chunk))
                done[stream] = not chunk
                continue
            yield from convert(stream, chunk)
            if chunk:
                continue
            current += 1
            while current < self.streams:
                waiting, stash[current] = stash[current], []
                yield from waiting
                if not done[current]:
                    break
                current += 1

    def __iter__(self) -> Iterator[str]:
        pending = [b""] * self.streams

        def lines(stream: int, chunk: bytes) -> List[str]:
            data = pending[stream] + chunk
            cut = len(data) if not chunk else data.rfind(b"\n") + 1
            pending[stream] = data[cut:]
            return split_lines(data[:cut])

        return self.in_order(lines)


def split_lines(data: bytes) -> List[str]:
    """Lines ending in \\n (the last one may not), split on \\n only, as Perl reads them."""
    text = data.decode("latin-1")
    lines = text.split("\n")
    last = lines.pop()
    lines = [line + "\n" for line in lines]
    if last:
        lines.append(last)
    return lines
