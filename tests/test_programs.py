"""Profiles a real third-party program at record's defaults: pytest running networkx's
own test suite (installed by `make programs`). pytest's plugin hooks make for deep
stacks: at the old 32 KB stack copy, 18% of a pytest run's samples were cut.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import current_python, interpreter, perf_problem, record_and_fold, skip_or_fail

pytestmark = pytest.mark.perf

PROGRAMS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixedstack" / "programs"
SUITE = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "networkx.algorithms.shortest_paths"]


def run_suite(tmp_path, python):
    if not (PROGRAMS / "networkx").is_dir():
        skip_or_fail("no networkx/pytest at %s: install them with `make programs`" % PROGRAMS)
    if perf_problem():
        skip_or_fail(perf_problem())
    env = dict(os.environ, PYTHONPATH=str(PROGRAMS))
    recorded, folded = record_and_fold(tmp_path, [python, *SUITE], record_args=(), cwd=tmp_path, env=env)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    return recorded, folded


def test_pytest_on_networkx_is_complete_on_313(tmp_path):
    recorded, folded = run_suite(tmp_path, interpreter((3, 13)))
    assert folded.complete_share() >= 0.99, folded.complete_share()
    names = {frame for stack in folded.stacks for frame in stack}
    assert any(name.startswith("pytest_runtest_call (_pytest/") for name in names), sorted(names)[:20]
    assert any("(networkx/algorithms/shortest_paths/" in name for name in names)


def test_a_stack_deeper_than_perf_copies_is_marked_not_disguised(tmp_path):
    """3.15's eval loop keeps ~1 KB of C stack a Python call, so some of pytest's
    stacks go past the 64 KB perf copies at most: each is rooted at [truncated], and
    record's summary gives their share."""
    recorded, folded = run_suite(tmp_path, current_python((3, 15), "bare"))
    python_stacks = {f: n for f, n in folded.stacks.items() if any(x.endswith(")") for x in f)}
    for frames in python_stacks:
        root = frames[1]
        assert root == "[truncated]" or root.startswith(("<module> (", "Thread._bootstrap (")) \
            or not root.endswith(")") or "<frozen" in root, frames[:4]
    assert folded.complete_share() >= 0.95, folded.complete_share()
