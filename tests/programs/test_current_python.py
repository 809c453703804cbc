"""Profiles CPython 3.14 and 3.15 as distributions ship them: Debian sid's binaries
(GCC 16, LTO, stripped; 3.15 with frame pointers), with the -dbg package's symbols in
the interpreter's root ("root") and without any ("bare"). `make current-python`
puts them in ~/.cache/mixedstack/current-python; CI requires them.

Plain `mixedstack record` then `fold`, as a new user would.
"""
from __future__ import annotations

import json
import os
import re

import pytest

from conftest import assert_shares_match, CURRENT_VERSIONS, WORKLOADS, current_python, perf_problem, record_and_fold, skip_or_fail

pytestmark = pytest.mark.perf

CASES = [(version, kind) for version in CURRENT_VERSIONS for kind in ("root", "bare")]
IDS = ["%d.%d-%s" % (version + (kind,)) for version, kind in CASES]

# Frames the merge must never show, in any compiler's spelling (an independent list).
PLUMBING = re.compile(r"^(?:_PyEval_EvalFrameDefault|_PyEval_EvalFrame|_PyEval_Vector|PyEval_EvalCode"
                      r"|py_trampoline_evaluator|_?PyObject_Vectorcall\w*|_PyFunction_Vectorcall"
                      r"|cfunction_vectorcall\w*|_Py_BuiltinCall\w*_StackRef|_Py_VectorCall\w*"
                      r"|_PyCallMethodDescriptor\w*|_TAIL_CALL_\w+)(?:\.\w+(?:\.\d+)?)*$")


def is_python_frame(frame: str) -> bool:
    return frame.endswith(")") and " (" in frame


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def phases(request, tmp_path_factory):
    version, kind = request.param
    python = current_python(version, kind)
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("current")
    timings = tmp / "timings.json"
    recorded, folded = record_and_fold(tmp, [python, str(WORKLOADS / "phases.py"), str(timings), "1.0"], "--kernel")
    assert recorded.returncode == 0, recorded.stderr
    return version, kind, recorded, folded, json.loads(timings.read_text())


def test_default_mode_gives_complete_stacks(phases):
    version, _, recorded, folded, _ = phases
    assert "mode perf-jit" in recorded.stderr.splitlines()[-1], recorded.stderr
    assert folded.complete_share() >= 0.99, "%.2f%% complete" % (100 * folded.complete_share())
    unknown = folded.total(lambda f: any("[unknown]" in x for x in f)) / folded.total()
    assert unknown <= 0.01, unknown


def test_shares_match_the_workloads_own_timing(phases):
    _, _, _, folded, timings = phases
    assert_shares_match(folded, timings)


def test_c_and_kernel_frames_under_their_parts(phases):
    _, _, _, folded, _ = phases
    c_heavy = folded.under("c_heavy")
    assert c_heavy.total(lambda f: not is_python_frame(f[-1])) / c_heavy.total() >= 0.90
    names = {frame for frames in c_heavy.stacks for frame in frames}
    assert "deflate" in names, sorted(names)[:40]  # libz's exported function, named in both cases
    sys_heavy = folded.under("sys_heavy")
    assert sys_heavy.total(lambda f: any(x.endswith("_[k]") for x in f)) / sys_heavy.total() >= 0.50


def test_no_plumbing_no_unnamed_frames_between_python_frames(phases):
    version, _, _, folded, _ = phases
    binary = "[python%d.%d]" % version
    for frames in folded.stacks:
        python_at = [i for i, x in enumerate(frames) if is_python_frame(x)]
        if python_at:  # (start-up and shutdown run the interpreter's C as it is)
            assert not [x for x in frames if PLUMBING.match(x)], frames
            between = frames[python_at[0]:python_at[-1]]
            assert binary not in between, frames
            assert frames[python_at[-1]:].count(binary) <= 1, frames  # unnamed work: once
    depth = sum(len(f) * c for f, c in folded.stacks.items()) / folded.total()
    assert depth <= 20, depth


def test_symbols_are_found_in_the_interpreters_root_or_their_absence_is_said(phases):
    version, kind, recorded, folded, _ = phases
    names = {frame.replace("_[k]", "") for frames in folded.stacks for frame in frames}
    if kind == "root":
        # static functions of the stripped binary, named from the -dbg file lent to perf
        # (no GCC suffix: `zlib_compress.lto_priv.0` is zlib_compress)
        assert {"zlib_compress", "os_read"} <= names, sorted(names)[:60]
        python_stacks = [f for f in folded.stacks if any(map(is_python_frame, f))]
        suffixed = [x for f in python_stacks for x in f if re.search(r"\.(lto_priv|cold|constprop|isra|part)\b", x)]
        assert not suffixed, suffixed[:5]
        assert "no debug symbols" not in recorded.stderr
    else:
        assert "[python%d.%d]" % version in names
        note = [line for line in recorded.stderr.splitlines() if "no debug symbols" in line]
        assert len(note) == 1 and "python%d.%d-dbg" % version in note[0], recorded.stderr


@pytest.mark.parametrize("version", CURRENT_VERSIONS, ids=["%d.%d" % v for v in CURRENT_VERSIONS])
def test_the_debug_file_is_lent_not_copied(version, tmp_path):
    """Through the recording's own build-id cache: a link, nothing in ~/.debug."""
    python = current_python(version, "root")
    if perf_problem():
        skip_or_fail(perf_problem())
    home_debug = os.path.expanduser("~/.debug")
    before = set(os.listdir(home_debug)) if os.path.isdir(home_debug) else set()
    record_and_fold(tmp_path, [python, "-c", "pass"])
    after = set(os.listdir(home_debug)) if os.path.isdir(home_debug) else set()
    assert after == before
    links = list((tmp_path / "perf.data.d" / "buildid").rglob("debug"))
    assert links and all(link.is_symlink() for link in links), links
    assert any(os.path.realpath(link).startswith(os.path.dirname(os.path.dirname(os.path.dirname(python))))
               for link in links)


@pytest.mark.parametrize("kind", ["root", "bare"])
def test_doctor_says_whether_the_interpreter_has_names(kind):
    from conftest import mixedstack

    done = mixedstack("doctor", "--", current_python(CURRENT_VERSIONS[-1], kind))
    line = next(line for line in done.stdout.splitlines() if "symbols:" in line)
    if kind == "bare":
        assert line.startswith("warn") and "python3.15-dbg" in line, line
    else:
        assert line.startswith("ok"), line
