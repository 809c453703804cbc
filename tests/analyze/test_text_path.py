"""parse() reads a Text (byte chunks, one or more streams) a block at a time with
caches; it must give exactly what the line-by-line state machine gives: the same
samples in the same order, the same unrecognized lines and event warnings, so
the same folded output, however the text is cut into chunks and streams.
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from folding import OPTIONS, read_text
from mixedstack.perf import parse as samples
from mixedstack.analyze.fold import Folder
from mixedstack.analyze.fold import FoldOptions
from mixedstack.model import Frame, Sample
from mixedstack.renderers.folded import render
from mixedstack.perf.parse import EventFilter
from mixedstack.perf.parse import ProcessLabel
from mixedstack.perf.text import Text
from mixedstack.perf.parse import parse

from conftest import ROOT, TESTS

DATA = TESTS / "data"
CORPUS = Path(os.environ.get("MIXEDSTACK_CONFORMANCE_DIR",
                             str(ROOT.parent / "shared" / "conformance" / "flamegraph")))
INPUTS = (sorted(DATA.glob("odd/*.txt")) + sorted(DATA.glob("python/*.txt"))
          + sorted(p for p in CORPUS.glob("*.txt") if not p.name.startswith("LICENSE")))


def as_text(streams: List[bytes], size: int, seed: int = 0) -> Text:
    """Streams cut into chunks of `size` bytes, delivered interleaved at random
    (as concurrent perf script processes would), only from streams parse() is
    ready to read."""
    def chunks(ready: Callable[[int], bool]) -> Iterator[Tuple[int, bytes]]:
        rng = random.Random(seed)
        left = [[data[i:i + size] for i in range(0, len(data), size)] + [b""] for data in streams]
        while any(left):
            open_ = [s for s, pieces in enumerate(left) if pieces]
            choice = [s for s in open_ if ready(s)] or open_
            stream = rng.choice(choice)
            yield stream, left[stream].pop(0)
    return Text(chunks, len(streams))


def read(source, option: str = "", event: Optional[str] = None):
    """(samples as plain tuples, unrecognized lines, warnings) of parse(source)."""
    unrecognized: List[str] = []
    warnings: List[str] = []
    found = parse(source, ProcessLabel(include_pid=option == "pid", include_tid=option == "tid"),
                  EventFilter(event, warn=warnings.append), on_unrecognized=unrecognized.append)
    return [plain(sample) for sample in found], unrecognized, warnings


def plain(sample: Sample) -> tuple:
    return tuple(sample[:3]) + (list(map(tuple, sample.frames)),) + tuple(sample[4:])


def lines_of(data: bytes) -> io.StringIO:
    return io.StringIO(data.decode("latin-1"), newline="\n")


def folded(samples_: List[Sample], option: str = "") -> str:
    folder = Folder(FoldOptions(kernel=option == "kernel", jit=option == "jit", all=option == "all",
                                addrs=option == "addrs")).add_all(samples_)
    out = io.StringIO(newline="\n")
    render(folder.result(), out)
    return out.getvalue()


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.parent.name + "/" + p.name)
def test_text_gives_the_samples_lines_give(path):
    data = read_text(path).encode("latin-1")
    expected = read(lines_of(data))
    sizes = [3, 61, 4096, len(data) + 1] + ([1] if len(data) < 20000 else [])
    for size in sizes:
        assert read(as_text([data], size)) == expected, size
    for option in OPTIONS:
        by_lines = parse(lines_of(data), ProcessLabel(option == "pid", option == "tid"), EventFilter(warn=id))
        by_text = parse(as_text([data], 4096), ProcessLabel(option == "pid", option == "tid"), EventFilter(warn=id))
        assert folded(list(by_text), option) == folded(list(by_lines), option), option


def test_event_filter_and_its_warning_come_in_text_order():
    data = (DATA / "odd" / "multi-event.txt").read_bytes()
    for event in (None, "instructions", "instructions:u"):
        expected = read(lines_of(data), event=event)
        assert expected[0], event
        assert read(as_text([data], 17), event=event) == expected


def blocks_in_streams(data: bytes, streams: int, seed: int) -> List[bytes]:
    """The text cut after blank lines into `streams` consecutive parts."""
    cuts = [i + 2 for i in range(len(data) - 1) if data[i:i + 2] == b"\n\n"]
    chosen = sorted(random.Random(seed).sample(cuts, min(streams - 1, len(cuts))))
    return [data[a:b] for a, b in zip([0] + chosen, chosen + [len(data)])]


@pytest.mark.parametrize("stash_limit", [20000, 2])
def test_streams_read_at_once_give_the_samples_in_text_order(monkeypatch, stash_limit):
    # a later stream waits (and, past the limit, stops being read) until its turn
    monkeypatch.setattr(Text, "STASH_LIMIT", stash_limit)
    data = b"".join(path.read_bytes() + b"\n\n" for path in sorted(DATA.glob("python/*.txt"))
                    + [DATA / "odd" / name for name in ("offsets.txt", "unknown.txt", "comm-spaces.txt")])
    expected = read(lines_of(data))
    assert len(expected[0]) >= 10 and expected[2]  # samples, and a warning for the other events
    for seed in range(5):
        streams = blocks_in_streams(data, 4, seed)
        assert b"".join(streams) == data
        assert read(as_text(streams, 97, seed)) == expected, seed


def test_a_long_text_without_blank_lines_goes_to_the_state_machine_as_it_comes(monkeypatch):
    monkeypatch.setattr(samples, "ODD_BLOCK", 64)
    data = (DATA / "odd" / "crlf-mixed.txt").read_bytes() + (DATA / "odd" / "crlf.txt").read_bytes()
    data += (DATA / "python" / "perf-jit-3.13.txt").read_bytes()
    expected = read(lines_of(data))
    for size in (5, 50, 500):
        assert read(as_text([data], size)) == expected, size


def test_iterating_a_text_gives_its_lines():
    data = (DATA / "odd" / "no-final-newline.txt").read_bytes()
    streams = [data[:40], data[40:]]
    assert "".join(as_text(streams, 7)) == data.decode("latin-1")


def test_identical_blocks_share_one_frames_list_and_its_key():
    block = b"perf 1/1 1.0: 1 cpu-clock: \n\t1 main (/bin/perf)\n\n"
    other = b"perf 1/1 2.0: 1 cpu-clock: \n\t2 main (/bin/perf)\n\n"
    first, second, third = parse(as_text([block * 2 + other], 4096))
    assert first.frames is second.frames and first.frames.key == second.frames.key
    assert third.frames != first.frames and third.frames.key != first.frames.key


def test_frames_at_other_addresses_fold_alike_unless_addresses_are_shown():
    def sample(pc: str) -> Sample:
        return Sample("app", 1, "cpu-clock", [Frame(pc, "[unknown]", "/lib/x.so"), Frame("1", "main", "/bin/app")])

    merged = Folder(FoldOptions()).add_all([sample("10"), sample("20")])
    assert merged.stacks == {"app;main;[x.so]": 2}
    kept = Folder(FoldOptions(addrs=True)).add_all([sample("10"), sample("20")])
    assert kept.stacks == {"app;main;[x.so <10>]": 1, "app;main;[x.so <20>]": 1}


SEEDS = sorted(DATA.glob("odd/*.txt")) + sorted(DATA.glob("python/*.txt"))
LINES = [line for path in SEEDS for line in read_text(path).split("\n")[:300]]


@settings(max_examples=300, deadline=4000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_text_in_any_chunks_gives_the_samples_lines_give(data):
    start = data.draw(st.integers(0, len(LINES) - 1))
    lines = LINES[start:start + data.draw(st.integers(0, 80))]
    if data.draw(st.booleans()):  # some damage: a line cut, doubled, or replaced by junk
        at = data.draw(st.integers(0, max(0, len(lines) - 1)))
        junk = data.draw(st.text(alphabet=st.sampled_from(" \t\r\n#:/0123456789abc()[]"), max_size=15))
        lines[at:at + 1] = [junk] if data.draw(st.booleans()) else lines[at:at + 1] * 2
    raw = ("\n".join(lines) + data.draw(st.sampled_from(["", "\n", "\n\n"]))).encode("latin-1")
    size = data.draw(st.integers(1, 300))
    streams = blocks_in_streams(raw, data.draw(st.integers(1, 3)), data.draw(st.integers(0, 9)))
    assert read(as_text(streams, size)) == read(lines_of(raw))
