"""A recording read by several perf script processes over time slices gives the
samples one perf script gives, in the same order (analyze/sources.py)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import Folded, mixedstack
from mixedstack.perf.parse import parse
from mixedstack.analyze.sources import open_input
from mixedstack.analyze.sources import time_spans


def samples_of(data: Path, slices):
    with open_input(str(data), slices=slices, reuse=False) as source:
        text = source.text
        assert text.streams == (slices or text.streams)
        return [tuple(s[:3]) + (list(map(tuple, s.frames)),) + tuple(s[4:]) for s in parse(text)]


def test_time_slices_give_the_samples_one_perf_script_gives(phases):
    data, folded = phases
    whole = samples_of(data, 1)
    assert len(whole) > 100  # 1.2 s of phases at 499 Hz: ~600 samples on a free CPU, fewer on a busy one
    for slices in (2, 3, 5):
        assert samples_of(data, slices) == whole, slices
    # the slices come from record's summary of the sample times; without it, from the file
    meta_path = Path(str(data) + ".d") / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert len(meta["sample_times"]) == 65 and meta["bytes"] == data.stat().st_size
    meta_path.write_text(json.dumps(dict(meta, sample_times=[])))
    try:
        assert samples_of(data, 3) == whole
    finally:
        meta_path.write_text(json.dumps(meta))
    again = mixedstack("fold", str(data))
    assert again.returncode == 0, again.stderr
    assert Folded(again.stdout).stacks == folded.stacks


def span_bounds(span):
    start, _, end = span.partition(",")
    ns = lambda text: int(text.replace(".", ""))  # noqa: E731  ("SECONDS.NNNNNNNNN")
    return (ns(start) if start else None), (ns(end) if end else None)


@pytest.mark.parametrize("slices", [2, 3, 7])
def test_time_spans_hold_each_sample_once(slices):
    rng = random.Random(slices)
    # some samples at the same time: they cannot be split apart
    times = sorted(10**12 + 5 * 10**8 if rng.random() < 0.05 else rng.randrange(10**12, 10**12 + 10**9)
                   for _ in range(5000))
    same = times.count(10**12 + 5 * 10**8)
    spans = time_spans(times, slices)
    assert 1 < len(spans) <= slices
    bounds = [span_bounds(span) for span in spans]
    assert bounds[0][0] is None and bounds[-1][1] is None
    for t in set(times):
        assert sum((a is None or a <= t) and (b is None or t <= b) for a, b in bounds) == 1, t
    counts = [sum(1 for t in times if (a is None or a <= t) and (b is None or t <= b)) for a, b in bounds]
    assert max(counts) <= len(times) / slices + same + 1, counts
    assert time_spans(times, 1) == [None] and time_spans([], 4) == [None]
