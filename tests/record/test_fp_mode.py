"""Frame-pointer mode end to end, on a CPython 3.13 built with frame pointers.

`make fp-python` builds one (tests/tools/build-python.sh fp) into
~/.cache/mixedstack/fp-python; MIXEDSTACK_FP_PYTHON may name another. A local
`make test` skips these tests without it; CI builds it and requires them.
"""
from __future__ import annotations

import json
import os

import pytest

from conftest import FP_PYTHON
from conftest import WORKLOADS, interpreter, perf_problem, record_and_fold, skip_or_fail
from mixedstack.record.target import find_interpreter
from mixedstack.record.target import perf_mode

pytestmark = pytest.mark.perf



@pytest.fixture(scope="module")
def fp_python() -> str:
    if not os.access(FP_PYTHON, os.X_OK):
        skip_or_fail("no frame-pointer CPython at %s: build it with `make fp-python`" % FP_PYTHON)
    return FP_PYTHON


@pytest.fixture(scope="module")
def fp_phases(fp_python, tmp_path_factory):
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("fp")
    recorded, folded = record_and_fold(
        tmp, [fp_python, str(WORKLOADS / "phases.py"), str(tmp / "t.json"), "1.0"], "--kernel",
        record_args=("--call-graph", "fp"))
    assert recorded.returncode == 0, recorded.stderr
    return recorded, folded, json.loads((tmp / "t.json").read_text()), tmp


def test_frame_pointers_are_read_from_the_binary(fp_python):
    interp = find_interpreter([fp_python])
    assert interp.frame_pointers and interp.perf_trampoline
    # DWARF stays the default (the libraries it loads may have no frame pointers) ...
    assert perf_mode(interp).name == "perf-jit"
    # ... and --call-graph fp gets the perf map and frame-pointer unwinding
    mode = perf_mode(interp, "fp")
    assert (mode.name, mode.call_graph, mode.env) == ("perf-map", "fp", {"PYTHONPERFSUPPORT": "1"})


def test_record_uses_the_perf_map_and_keeps_it(fp_phases):
    recorded, _, _, tmp = fp_phases
    assert "mode perf-map" in recorded.stderr.splitlines()[-1]
    kept = os.listdir(tmp / "perf.data.d" / "tmp")
    assert any(name.startswith("perf-") and name.endswith(".map") for name in kept), kept
    assert not any(name in os.listdir("/tmp") for name in kept)  # moved, not left behind


def test_python_and_kernel_stacks_are_whole(fp_phases):
    _, folded, _, _ = fp_phases
    # Pure Python and syscalls run through code built with frame pointers (libpython,
    # the kernel): those stacks reach <module>. (Debian's libz and libcrypto have no
    # frame pointers, so c_heavy's stacks stop inside them: not asserted here.)
    for function in ("py_hot", "sys_heavy"):
        part = folded.under(function)
        rooted = part.total(lambda f: f[1] == "<module> (phases.py)")
        assert rooted / part.total() >= 0.99, (function, rooted / part.total())
    sys_heavy = folded.under("sys_heavy")
    assert sys_heavy.total(lambda f: any(x.endswith("_[k]") for x in f)) / sys_heavy.total() >= 0.5


def test_same_shape_as_dwarf_mode(fp_phases):
    _, folded, _, _ = fp_phases
    python_frames = {tuple(x for x in f if x.endswith(")")) for f in folded.under("py_hot").stacks}
    assert ("<module> (phases.py)", "main (phases.py)", "py_hot (phases.py)") in python_frames
    seen = {x for f in folded.stacks if any(y.endswith(")") for y in f) for x in f}
    assert not {"_PyEval_EvalFrameDefault", "py_trampoline_evaluator", "PyObject_Vectorcall"} & seen


def test_py_hot_share_matches_its_timing(fp_phases):
    _, folded, timings, _ = fp_phases
    main = folded.total(lambda f: "main (phases.py)" in f)
    # c_heavy's broken stacks lose `main`, so compare py_hot with sys_heavy only
    both = folded.under("py_hot").total() + folded.under("sys_heavy").total()
    measured = timings["py_hot"] / (timings["py_hot"] + timings["sys_heavy"])
    assert abs(folded.under("py_hot").total() / both - measured) <= 0.03
    assert main > 0


def test_a_sample_costs_a_fraction_of_dwarf_mode(fp_phases, tmp_path):
    recorded, _, _, tmp = fp_phases
    fp_size = (tmp / "perf.data").stat().st_size / json.loads((tmp / "perf.data.d" / "meta.json").read_text())["samples"]
    dwarf_tmp = tmp_path / "dwarf"
    dwarf_tmp.mkdir()
    _, _ = record_and_fold(dwarf_tmp, [interpreter((3, 13)), str(WORKLOADS / "phases.py"),
                                      str(dwarf_tmp / "t.json"), "0.3"])
    meta = json.loads((dwarf_tmp / "perf.data.d" / "meta.json").read_text())
    dwarf_size = (dwarf_tmp / "perf.data").stat().st_size / meta["samples"]
    assert fp_size * 20 < dwarf_size, (fp_size, dwarf_size)
