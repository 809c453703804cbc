"""`mixedstack top` in a real terminal (tmux: its own server, send-keys, capture-pane):
the hottest Python, C and kernel functions of a program whose hot spot moves, on the
three ways record names Python frames; q ends it and keeps the recording.

How soon a function shows is measured in `make bench`, not asserted here: the program
moves on when the test has seen its phase."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, WORKLOADS, Terminal, current_python, interpreter, mixedstack

pytestmark = pytest.mark.perf

PYTHONS = [
    ("3.11-agent", lambda: interpreter((3, 11))),
    ("3.13-perf-jit", lambda: interpreter((3, 13))),
    ("3.15-debian", lambda: current_python((3, 15), "root")),
]
WAIT = 90  # seconds a screen may take to show what is looked for (a few, on a free machine)


@pytest.mark.parametrize("label,python", PYTHONS, ids=[label for label, _ in PYTHONS])
def test_top_shows_what_is_hot_as_it_moves_and_keeps_the_recording(perf_ok, tmp_path, label, python):
    """The program moves to its next phase when the test has seen what it looks for
    (moving.py --step): no deadline but a generous one, whatever the machine's load."""
    data = tmp_path / "top.data"
    status = tmp_path / "status"
    step = tmp_path / "step"
    step.mkdir()
    command = "sh -c 'cd %s && PYTHONPATH=%s %s -m mixedstack top --view a -o %s -- %s %s --step %s; " \
              "echo $? > %s; sleep 60'" % (tmp_path, ROOT, sys.executable, data, python(), WORKLOADS / "moving.py",
                                           step, status)
    terminal = Terminal(tmp_path, command)
    try:
        # each phase's function, at the top of its layer's view while the phase runs
        terminal.wait_for(r"alpha_python \(moving\.py\)", WAIT, rows=3)
        (step / "beta").touch()
        terminal.keys("k")
        terminal.wait_for(r"  k  (__x64_sys_newfstatat|__x64_sys_statx|vfs_statx|do_syscall_64|entry_SYSCALL)", WAIT,
                          rows=3)
        terminal.keys("p")
        terminal.wait_for(r"beta_syscalls \(moving\.py\)", WAIT, rows=2)
        (step / "gamma").touch()
        terminal.keys("l")
        terminal.wait_for(r"  l  (deflate|longest_match|compress|\[libz)", WAIT, rows=3)
        terminal.keys("c")
        terminal.wait_for(r"  c  \w", WAIT, rows=3)
        terminal.keys("p")
        screen = terminal.wait_for(r"gamma_zlib \(moving\.py\)", WAIT, rows=2)
        assert "view: Python (p)" in screen, screen
        terminal.keys("q")
        deadline = time.monotonic() + 30
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.exists() and status.read_text().strip() == "0", terminal.screen()
        after = terminal.screen()
        assert "next: mixedstack fold" in after and "Traceback" not in after, after
    finally:
        terminal.close()
    output = (Path(str(data) + ".d") / "output.txt").read_text()
    assert "gamma_zlib starts" in output, output  # the program's own output, kept aside
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0 and "gamma_zlib (moving.py)" in folded.stdout, folded.stderr
    meta = json.loads((Path(str(data) + ".d") / "meta.json").read_text())
    assert meta["unwound_while_recording"]["kept"], meta


def test_top_wants_a_terminal(tmp_path):
    done = mixedstack("top", "-o", str(tmp_path / "t.data"), "--", "true", stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "needs a terminal" in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(str(tmp_path / "t.data"))
