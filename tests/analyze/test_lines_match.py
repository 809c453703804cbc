"""How fold matches perf's samples to the companion's snapshots (analyze/lines.py), and
how the companion reads a line from a code object's location table (record/companion.py's
reader for 3.14), without perf: the rules that decide a line, or none."""
from __future__ import annotations

import bisect
import json
import sys

import pytest

from mixedstack.analyze.lines import Snapshots
from mixedstack.model import PyFrame
from mixedstack.perf.recording import LINES_FILE
from mixedstack.record.companion import line_ranges

MS = 1_000_000


def snapshots(tmp_path, *rows):
    """Snapshots from rows of (ms, tid, [(function, path, line), ...] innermost first)."""
    with open(tmp_path / LINES_FILE, "w") as f:
        for ms, tid, frames in rows:
            f.write(json.dumps([ms * MS, tid, [list(frame) for frame in frames]]) + "\n")
        f.write(json.dumps(["end", len(rows), 0, 0.1]) + "\n")
    return Snapshots.read(str(tmp_path))


MODULE = ("<module>", "/srv/app.py", 30)
SAMPLE = [PyFrame("<module>", "app.py"), PyFrame("handle", "app.py"), PyFrame("parse", "app.py")]


def test_the_nearest_agreeing_snapshot_gives_the_lines(tmp_path):
    found = snapshots(tmp_path,
                      (10, 1, [("parse", "/srv/app.py", 7), ("handle", "/srv/app.py", 20), MODULE]),
                      (12, 1, [("parse", "/srv/app.py", 8), ("handle", "/srv/app.py", 21), MODULE]),
                      (11, 2, [("parse", "/srv/app.py", 9), ("handle", "/srv/app.py", 22), MODULE]))
    assert found.place(1, 11 * MS + MS // 2, SAMPLE) == [30, 21, 8]  # thread 1's, the nearer
    assert found.place(1, 10 * MS, SAMPLE) == [30, 20, 7]


def test_a_snapshot_of_other_functions_gives_no_line(tmp_path):
    found = snapshots(tmp_path, (10, 1, [("render", "/srv/app.py", 40), ("handle", "/srv/app.py", 20), MODULE]),
                      (11, 1, [("parse", "/srv/other.py", 7), ("handle", "/srv/app.py", 20), MODULE]))
    assert found.place(1, 10 * MS, SAMPLE) is None  # render is not parse; other.py is not app.py
    assert found.place(1, 100 * MS, SAMPLE) is None  # none within the window
    assert found.place(7, 10 * MS, SAMPLE) is None  # no snapshot of that thread
    assert found.placed() == (0, 1, 2)


def test_a_call_being_made_gives_the_callers_their_lines_only(tmp_path):
    """perf sees a callee's trampoline before its frame is linked: the nearest snapshot
    still shows the caller innermost. Its lines are the callers'; the callee gets none,
    and a full agreement within the window comes first."""
    found = snapshots(tmp_path, (10, 1, [("handle", "/srv/app.py", 21), MODULE]))
    assert found.place(1, 10 * MS, SAMPLE) == [30, 21, 0]
    fuller = snapshots(tmp_path, (10, 1, [("handle", "/srv/app.py", 21), MODULE]),
                       (15, 1, [("parse", "/srv/app.py", 8), ("handle", "/srv/app.py", 22), MODULE]))
    assert fuller.place(1, 10 * MS, SAMPLE) == [30, 22, 8]
    # two frames short is not a call being made
    assert snapshots(tmp_path, (10, 1, [MODULE])).place(1, 10 * MS, SAMPLE) is None


def test_a_snapshot_cut_short_gives_the_frames_it_reaches_when_nothing_fuller_is_near(tmp_path):
    """A snapshot read while a call was made can stop at its innermost frame; a fuller
    one a little further away comes first, else the cut one gives what it has."""
    cut = ("parse", "/srv/app.py", 5)
    found = snapshots(tmp_path, (10, 1, [cut]),
                      (14, 1, [("parse", "/srv/app.py", 8), ("handle", "/srv/app.py", 22), MODULE]))
    assert found.place(1, 10 * MS, SAMPLE) == [30, 22, 8]
    assert snapshots(tmp_path, (10, 1, [cut])).place(1, 10 * MS, SAMPLE) == [0, 0, 5]
    # and a sample perf cut short at its root side agrees with a fuller snapshot
    assert found.place(1, 14 * MS, SAMPLE[1:]) == [22, 8]


def sample_function(n):
    total = 0
    for i in range(n):
        if i % 3:
            total += i
        else:
            total -= (
                i * 2
            )
    try:
        return total // n
    except ZeroDivisionError:
        return None


@pytest.mark.parametrize("code", [sample_function.__code__, line_ranges.__code__, compile(
    "x = 1\n\n\n" + "y = [i for i in range(3)]\n" * 3 + "\n" * 400 + "z = x\n", "m.py", "exec")],
    ids=["branches", "companion", "module"])
def test_the_location_table_reads_as_cpython_reads_it(code):
    """line_ranges decodes co_linetable (short, one-line, no-column, long and no-location
    entries) to the lines co_lines() gives, for every code unit."""
    if sys.version_info < (3, 11):
        pytest.skip("the location table format is 3.11's")
    starts, lines = line_ranges(code.co_linetable, code.co_firstlineno)
    for start, end, line in code.co_lines():
        for unit in range(start // 2, end // 2):
            assert lines[bisect.bisect_right(starts, unit) - 1] == (line or 0), (unit, line)
