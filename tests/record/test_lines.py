"""Line numbers on CPython 3.14 and 3.15 (Debian sid's, stripped): record's companion
sampler notes the line each Python frame is on, fold --lines puts it in the frames.

workloads/lines.py spends its time in three loops of one long function, for known
shares of its on-CPU time (it measures them: the truth), and prints the lines of each
loop and of the function.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Dict

import pytest

from conftest import WORKLOADS, Folded, current_python, interpreter, mixedstack, perf_problem, skip_or_fail

pytestmark = pytest.mark.perf

FUNCTION = "long_function (lines.py"


def line_of(frame: str) -> int:
    match = re.search(r":(\d+)\)$", frame)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("calls", ["", "calls"], ids=["innermost", "caller"])
@pytest.mark.parametrize("version", [(3, 14), (3, 15)])
def test_lines_shares_match_the_truth(tmp_path, version, calls):
    """With `calls`, long_function is the caller of the function its loops call: its
    lines are those of a frame under another (which 3.14's own reader does not reach
    under a perf trampoline; the companion reads them itself)."""
    if perf_problem():
        skip_or_fail(perf_problem())
    data = tmp_path / "perf.data"
    done = mixedstack("record", "-o", str(data), "--", current_python(version, "bare"), str(WORKLOADS / "lines.py"), "3",
                      *([calls] if calls else []))
    assert done.returncode == 0, done.stderr
    assert "no line numbers" not in done.stderr, done.stderr
    truth = json.loads(done.stdout.strip().splitlines()[-1])
    first, last = truth["function"]

    folded = mixedstack("fold", "--lines", str(data))
    assert folded.returncode == 0, folded.stderr
    assert "lines on" in folded.stderr or folded.stderr == ""
    by_line: Dict[int, int] = collections.Counter()
    for frames, weight in Folded(folded.stdout).stacks.items():
        mine = [frame for frame in frames if frame.startswith(FUNCTION)]
        if mine:
            by_line[line_of(mine[-1])] += weight
    total = sum(by_line.values())
    assert total > 0
    # >= 95% of the function's samples carry a line, and every line is the function's
    assert by_line.get(0, 0) <= 0.05 * total, by_line
    assert all(first <= line <= last for line in by_line if line), (first, last, by_line)
    # each loop's share of the function's samples, within 3 points of its share of its on-CPU time
    cpu = sum(loop["seconds"] for loop in truth["loops"])
    for loop in truth["loops"]:
        share = sum(by_line.get(line, 0) for line in loop["lines"]) / total
        assert abs(share - loop["seconds"] / cpu) <= 0.03, (loop, share, by_line)

    # by default one name a function, as before
    plain = Folded(mixedstack("fold", str(data)).stdout)
    assert not [frame for frames in plain.stacks for frame in frames if frame.startswith(FUNCTION + ":")]
    assert any(frame == FUNCTION + ")" for frames in plain.stacks for frame in frames)
    # speedscope carries the line as a field of its own
    speedscope = json.loads(mixedstack("fold", "--format", "speedscope", str(data)).stdout)
    lines = {frame.get("line") for frame in speedscope["shared"]["frames"] if frame["name"] == "long_function"}
    assert {line for loop in truth["loops"] for line in loop["lines"]} & lines, lines


def test_before_3_14_record_says_why_and_fold_is_unchanged(tmp_path):
    if perf_problem():
        skip_or_fail(perf_problem())
    data = tmp_path / "perf.data"
    done = mixedstack("record", "-o", str(data), "--", interpreter((3, 13)), str(WORKLOADS / "lines.py"), "0.6")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "line numbers" in line]
    assert notes == ["mixedstack: note: no line numbers: lines need CPython 3.14+ (its _remote_debugging "
                     "module); the target is 3.13"], done.stderr
    assert not (tmp_path / "perf.data.d" / "lines.jsonl").exists()
    assert mixedstack("fold", "--lines", str(data)).stdout == mixedstack("fold", str(data)).stdout


def test_a_target_that_turned_remote_debugging_off_records_without_lines(tmp_path):
    if perf_problem():
        skip_or_fail(perf_problem())
    data = tmp_path / "perf.data"
    done = mixedstack("record", "-o", str(data), "--", current_python((3, 14), "bare"), "-X", "disable-remote-debug",
                      str(WORKLOADS / "lines.py"), "0.6")
    assert done.returncode == 0, done.stderr
    assert "no line numbers: the target turned remote debugging off" in done.stderr, done.stderr
    assert mixedstack("fold", "--lines", str(data)).stdout == mixedstack("fold", str(data)).stdout
    again = mixedstack("record", "-f", "--no-lines", "-o", str(data), "--", current_python((3, 14), "bare"),
                       str(WORKLOADS / "lines.py"), "0.3")
    assert again.returncode == 0 and "line numbers" not in again.stderr, again.stderr
