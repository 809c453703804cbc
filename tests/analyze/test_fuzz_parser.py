"""The `perf script` text parser and the fold survive anything (hypothesis).

Inputs are real ones (the conformance corpus when present, our odd and Python texts)
mutated line by line and byte by byte; no input may raise or hang.
"""
from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from folding import OPTIONS, fold_text, read_text

from conftest import ROOT, TESTS

DATA = TESTS / "data"
SEEDS = sorted(DATA.glob("odd/*.txt")) + sorted(DATA.glob("python/*.txt"))
CORPUS = os.environ.get("MIXEDSTACK_CONFORMANCE_DIR",
                        str(ROOT.parent / "shared" / "conformance" / "flamegraph"))
SEEDS += sorted(Path(CORPUS).glob("*.txt"))[:4]
LINES = [line for path in SEEDS for line in read_text(path).split("\n")[:400]]


def mutate(line: str, data) -> str:
    kind = data.draw(st.sampled_from(["keep", "cut", "insert", "replace", "garbage"]))
    if kind == "keep" or not line:
        return line
    at = data.draw(st.integers(0, len(line)))
    if kind == "cut":
        return line[:at]
    junk = data.draw(st.text(alphabet=st.characters(max_codepoint=255), max_size=12))
    if kind == "insert":
        return line[:at] + junk + line[at:]
    if kind == "replace":
        return line[:at] + junk + line[at + len(junk):]
    return junk


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_input_never_breaks_fold(data):
    start = data.draw(st.integers(0, max(0, len(LINES) - 1)))
    count = data.draw(st.integers(0, 60))
    lines = [mutate(line, data) for line in LINES[start:start + count]]
    option = data.draw(st.sampled_from(OPTIONS + ("",)))
    keep = data.draw(st.booleans())
    out = fold_text("\n".join(lines) + data.draw(st.sampled_from(["", "\n", "\n\n"])), option,
                    keep_interpreter=keep)
    for line in out:
        stack, _, count = line.rpartition(" ")
        assert stack and int(count) >= 0


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_break_fold(raw):
    fold_text(raw.decode("latin-1"))


HEADER_PARTS = st.fixed_dictionaries({
    "comm": st.text(alphabet=st.sampled_from("ab:/. 0\t-"), min_size=1, max_size=8),
    "pid": st.from_regex(r"\A\d{1,6}\Z"),
    "tid": st.from_regex(r"\A\d{1,6}\Z"),
    "time": st.from_regex(r"\A\d{1,6}\.\d{1,9}\Z"),
    "period": st.from_regex(r"\A\d{1,8}\Z"),
    "event": st.sampled_from(["cpu-clock:pppH", "cpu-clock", "sched:sched_switch", "a:b:", ":", "0"]),
    "gaps": st.lists(st.sampled_from([" ", "  ", "    ", "\t", ""]), min_size=5, max_size=5),
})


@settings(max_examples=500)
@given(HEADER_PARTS)
def test_the_fast_header_reads_what_stackcollapses_regexes_read(parts):
    """samples._header's one-regex path for perf script's usual header gives the
    fields the three regexes (stackcollapse-perf.pl's) give, on lines near that form."""
    from mixedstack.perf import parse as samples

    g = parts["gaps"]
    line = "%s%s%s/%s%s%s:%s%s%s%s:%s" % (parts["comm"], g[0] or " ", parts["pid"], parts["tid"], g[1],
                                          parts["time"], g[2], parts["period"], g[3], parts["event"], g[4])
    assert samples._header(line) == samples._any_header(line)
    if samples.COMMON_HEADER.match(line) is None:
        return
    assert samples._header(line) is not None  # the fast path was taken, on a real header
