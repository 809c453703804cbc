"""One program on two interpreters, compared (analyze/compare.py, `mixedstack diff`)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from conftest import WORKLOADS, interpreter, mixedstack
from mixedstack.analyze.compare import root_of, same_program
from mixedstack.model import PyFrame, Stacks

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("label, root", [
    ("python3.11", "python"), ("python3.13", "python"), ("python", "python"), ("python3", "python"),
    ("python3.13t", "python"), ("python3.11-4242/4243", "python-4242/4243"), ("pythonista", "pythonista"),
    ("uwsgi", "uwsgi"), ("Thread-1_(spinn", "Thread-1_(spinn"),
])
def test_interpreter_roots_are_one_root(label, root):
    assert root_of(label) == root


def test_stacks_of_two_interpreters_merge_under_one_root():
    main = PyFrame("main", "app.py")
    stacks = Stacks({("python3.11", main): 2, ("python", main): 3}, "samples", {("python3.11", main): 2})
    merged = same_program(stacks)
    assert merged.weights == {("python", main): 5} and merged.counts == {("python", main): 2}


@pytest.mark.perf
def test_a_program_on_311_and_313_differs_only_where_it_changed(perf_ok, tmp_path):
    """3.11 records through the agent, 3.13 through CPython's perf_jit: the same
    functions have the same names, and the diff's one strongly red Python frame is the
    function made 2x slower (with what runs under it)."""
    before, after = tmp_path / "on311.data", tmp_path / "on313.data"
    for data, version, factor in ((before, (3, 11), "1"), (after, (3, 13), "2")):
        done = mixedstack("record", "-o", str(data), "--", interpreter(version), str(WORKLOADS / "upgrade.py"), factor)
        assert done.returncode == 0, done.stderr
    names = []
    for data in (before, after):
        folded = mixedstack("fold", str(data)).stdout
        names.append({frame for line in folded.splitlines() for frame in line.rpartition(" ")[0].split(";")
                      if frame.endswith(("(upgrade.py)", "(phases.py)"))})
    assert names[0] == names[1] >= {"<module> (upgrade.py)", "main (upgrade.py)", "steady (upgrade.py)",
                                    "slow (upgrade.py)", "py_hot (phases.py)"}, names
    out = tmp_path / "upgrade.svg"
    done = mixedstack("diff", str(before), str(after), "-o", str(out))
    assert done.returncode == 0, done.stderr
    drawn = []
    root = ET.fromstring(out.read_bytes())
    for group in root.find(SVG + "g[@id='frames']"):
        rect = group.find(SVG + "rect")
        name, _, numbers = group.find(SVG + "title").text.partition("\n")
        change = re.search(r"change ([+-]\d+\.\d+) points", numbers)
        drawn.append((name, float(change.group(1)) if change else 0.0, float(rect.get("x")),
                      float(rect.get("width")), float(rect.get("y"))))
    (slow,) = [frame for frame in drawn if frame[0] == "slow (upgrade.py)"]
    assert slow[1] >= 10, drawn  # 1/3 of the time before, 1/2 after
    assert slow[1] >= max(change for _, change, _, _, _ in drawn), drawn  # no frame grew more
    # every strongly red Python frame is slow itself or runs under it (the interpreter's
    # own C under py_hot() is another on 3.13 than on 3.11: a real difference, drawn so)
    for name, change, x, width, y in drawn:
        # (the root `<module>` is as wide as all but start-up and exit, whose share each
        # interpreter sets: a CI run drew it +5.7 points wider on 3.13, correctly)
        if change >= 5 and name.endswith(".py)") and not name.startswith("<module> ("):  # a Python frame
            assert slow[2] - 0.01 <= x and x + width <= slow[2] + slow[3] + 0.01 and y <= slow[4], (name, change)
