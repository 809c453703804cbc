"""Profiles a real third-party program at record's defaults: pytest running networkx's
own test suite (installed by `make programs`). pytest's plugin hooks make for deep
stacks: at the old 32 KB stack copy, 18% of a pytest run's samples were cut.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import (WORKLOADS, Folded, current_python, interpreter, mixedstack, perf_problem, record_and_fold,
                      skip_or_fail)

pytestmark = pytest.mark.perf

PROGRAMS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixedstack" / "programs"
# The outermost frame of a whole stack, unmerged: the process's entry, or a thread's
# start in a stripped libc (no start_thread/clone3 names there)
RAW_ENTRIES = {"_start", "__libc_start_call_main", "__libc_start_main", "start_thread", "clone", "clone3",
               "[libc.so.6]"}
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
    stacks go past the 64 KB perf copies at most. Each such stack is rooted at
    [truncated]: checked against the same recording folded without the merge, where a
    cut stack is one whose outermost frame is not the process's or a thread's entry."""
    recorded, folded = run_suite(tmp_path, current_python((3, 15), "bare"))
    raw = Folded(mixedstack("fold", "--keep-interpreter", str(tmp_path / "perf.data")).stdout)
    python_raw = {f: n for f, n in raw.stacks.items() if any(x.startswith("py::") for x in f)}
    cut = sum(n for f, n in python_raw.items() if f[1] not in RAW_ENTRIES)
    marked = folded.total(lambda f: f[1] == "[truncated]")
    assert marked == cut, (marked, cut)
    assert folded.complete_share() >= 0.95, folded.complete_share()


def test_compiled_python_reads_as_python(tmp_path):
    """msgpack (Cython) and black (mypyc) from PyPI on 3.13: their functions by their
    Python names, a wrapper and its implementation as one frame, the C they call under
    them, and report's function tables counting them."""
    if not (PROGRAMS / "msgpack").is_dir() or not (PROGRAMS / "black").is_dir():
        skip_or_fail("no msgpack/black at %s: install them with `make programs`" % PROGRAMS)
    if perf_problem():
        skip_or_fail(perf_problem())
    env = dict(os.environ, PYTHONPATH=str(PROGRAMS))
    recorded, folded = record_and_fold(tmp_path, [interpreter((3, 13)), str(WORKLOADS / "compiled.py"), "1.0"],
                                       record_args=(), env=env)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    names = {frame for stack in folded.stacks for frame in stack}
    mangled = sorted(name for name in names if name.startswith(("__pyx_pw_", "__pyx_pf_", "__pyx_f_", "CPyDef_",
                                                                  "CPyPy_")))
    assert not mangled, mangled[:10]
    assert "msgpack._cmsgpack.Packer.pack" in names and "black.format_str" in names
    packing = folded.under("msgpack_part")
    assert packing.total(lambda f: "msgpack._cmsgpack.Packer.pack" in f) > 0.3 * packing.total()
    for stack in folded.stacks:  # a wrapper and its implementation are one frame
        assert not any(a == b and a.startswith(("msgpack.", "black.")) for a, b in zip(stack, stack[1:])), stack
    assert folded.complete_share() >= 0.97, folded.complete_share()
    done = mixedstack("report", "--format", "json", "--top", "40", str(tmp_path / "perf.data"))
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    by_total = [row["function"] for row in figures["functions"]["by_total"]]
    assert "black.format_str" in by_total and "msgpack._cmsgpack.Packer.pack" in by_total, by_total
    layers = {row["layer"]: row["share"] for row in figures["layers"]}
    assert layers["compiled Python"] > 0, layers  # leaf time: how much of it calls C varies
    # all of black_part's work runs in black's compiled code (its loop around it is nothing)
    formatting = folded.under("black_part")
    assert formatting.total(lambda f: "black.format_str" in f) >= 0.9 * formatting.total()
