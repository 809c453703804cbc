"""Profiles a running process: `record --pid PID --activate` turns CPython's trampoline on
in it through gdb (mixedstack/record/attach/), and says plainly when it cannot.

Each target is a real pyenv CPython started without any perf support in its
environment, looping in tests/workloads/attach_target.py.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CURRENT_VERSIONS, WORKLOADS, Folded, current_python, interpreter, mixedstack, skip_or_fail

pytestmark = pytest.mark.perf

MARK = "[python frames before activation]"


@contextlib.contextmanager
def running(python: str, seconds: float = 30, env=None):
    """A target looping in `leaf`; killed and its /tmp trampoline files removed after."""
    target = subprocess.Popen([python, str(WORKLOADS / "attach_target.py"), str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, **(env or {})))
    try:
        assert target.stdout.readline().startswith("ready"), target.stderr.read()
        yield target
    finally:
        target.kill()
        target.wait()
        for path in ["/tmp/jit-%d.dump" % target.pid, "/tmp/perf-%d.map" % target.pid] + glob.glob(
                "/tmp/jitted-%d-*.so" % target.pid):
            with contextlib.suppress(OSError):
                os.remove(path)


def attach(target, tmp_path: Path, *args: str, **kwargs):
    data = tmp_path / "attach.data"
    done = mixedstack("record", "--pid", str(target.pid), "-d", "3", "-o", str(data), *args,
                      stdin=subprocess.DEVNULL, **kwargs)
    assert done.returncode == 0, done.stderr
    assert target.poll() is None, "the target must go on running"
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    meta = json.loads((tmp_path / "attach.data.d" / "meta.json").read_text())
    return done, Folded(folded.stdout), meta


def python_for(version):
    if version == "fp":  # `make fp-python` (CI builds it)
        from conftest import FP_PYTHON

        if not os.access(FP_PYTHON, os.X_OK):
            skip_or_fail("no frame-pointer CPython at %s: build it with `make fp-python`" % FP_PYTHON)
        return FP_PYTHON
    return interpreter(version)


@pytest.mark.parametrize("version, mode, asked", [((3, 13), "perf-jit", ()), ((3, 12), "agent", ()),
                                                  ((3, 8), "agent", ()), ("fp", "perf-map", ("--call-graph", "fp"))],
                         ids=["3.13-perf-jit", "3.12-agent", "3.8-agent", "3.13-fp-perf-map"])
def test_activate_gives_python_frames_and_marks_older_calls(perf_ok, gdb_ok, tmp_path, version, mode, asked):
    with running(python_for(version)) as target:
        done, folded, meta = attach(target, tmp_path, "--activate", *asked)
    assert "turned" in done.stderr and "mode %s" % mode in done.stderr.splitlines()[-1], done.stderr
    assert meta["activated"] is True and meta["mode"] == mode
    seconds = folded.total() / 1e9  # cpu-clock weights are ns
    assert 0.9 <= seconds <= 3.5, seconds  # ~3 s, on a shared 2-core machine
    # nearly every sample is in `leaf`, named: its jitdump entries were flushed in time
    in_leaf = folded.under("leaf").total()
    assert in_leaf / folded.total() >= 0.9, in_leaf / folded.total()
    # `serve` and `<module>` predate the trampoline: marked, never shown as if absent
    python_stacks = [f for f in folded.stacks if any(x.startswith("leaf (") for x in f)]
    assert all(f[1] == MARK and f[2].startswith("leaf (attach_target.py") for f in python_stacks), \
        [f for f in python_stacks if f[1] != MARK][:3]
    assert not any(x.startswith(("serve (", "<module> (")) for f in folded.stacks for x in f)


@pytest.mark.parametrize("version, kind", [(v, k) for v in CURRENT_VERSIONS for k in ("root", "bare")],
                         ids=["%d.%d-%s" % (v + (k,)) for v in CURRENT_VERSIONS for k in ("root", "bare")])
def test_activate_on_314_plus_goes_through_remote_exec_without_gdb(perf_ok, tmp_path, version, kind):
    # no gdb at all on the way: sys.remote_exec (PEP 768) runs the activation
    with running(current_python(version, kind)) as target:
        done, folded, meta = attach(target, tmp_path, "--activate", env=dict(os.environ, MIXEDSTACK_GDB="/nonexistent"))
    assert "turned its perf_jit trampoline" in done.stderr and meta["mode"] == "perf-jit", done.stderr
    in_leaf = folded.under("leaf")
    assert in_leaf.total() / folded.total() >= 0.9, in_leaf.total() / folded.total()
    # older calls are marked, with symbols (a named eval loop) and without (unnamed frames)
    assert in_leaf.total(lambda f: f[1] == MARK) / in_leaf.total() >= 0.99


def test_remote_debugging_turned_off_is_said(perf_ok, tmp_path):
    version = CURRENT_VERSIONS[-1]
    with running(current_python(version, "bare"), env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"}) as target:
        done, folded, meta = attach(target, tmp_path, "--activate")
    assert "remote debugging turned off" in done.stderr and meta["mode"] == "native", done.stderr
    assert "Traceback" not in done.stderr


def test_a_process_started_with_perf_jit_is_flushed_and_unmarked(perf_ok, gdb_ok, tmp_path):
    with running(interpreter((3, 13)), env={"PYTHON_PERF_JIT_SUPPORT": "1"}) as target:
        done, folded, meta = attach(target, tmp_path, "--activate")
    assert "already has its trampoline on" in done.stderr, done.stderr
    assert meta["mode"] == "perf-jit" and meta["activated"] is False
    # its jitdump sits in a 2 MiB stdio buffer: without the flush no frame had a name
    rooted = folded.total(lambda f: f[1:3] == ("<module> (attach_target.py)", "serve (attach_target.py)"))
    assert rooted / folded.total() >= 0.9, rooted / folded.total()
    assert not any(MARK in f for f in folded.stacks)


def test_without_activate_it_says_how_and_leaves_the_process_alone(perf_ok, tmp_path):
    with running(interpreter((3, 13))) as target:
        done, folded, meta = attach(target, tmp_path)
        assert not os.path.exists("/tmp/jit-%d.dump" % target.pid)
    assert "has no perf trampoline on: Python frames will be missing; --activate turns it on" in done.stderr
    assert meta["mode"] == "native" and meta["activated"] is False
    assert folded.total() > 0 and not any(MARK in f for f in folded.stacks)


def test_no_activate_says_so(perf_ok, tmp_path):
    with running(interpreter((3, 12))) as target:
        done, _, meta = attach(target, tmp_path, "--no-activate")
    assert "Python frames will be missing; --no-activate was given" in done.stderr
    assert meta["mode"] == "native"


def test_without_gdb_it_says_so_and_records_native_frames(perf_ok, tmp_path):
    bin_dir = tmp_path / "bin"  # PATH with perf and sleep, and no gdb
    bin_dir.mkdir()
    for tool in ("perf", "sleep"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    with running(interpreter((3, 13))) as target:
        done, folded, meta = attach(target, tmp_path, "--activate",
                                    env=dict(os.environ, PATH=str(bin_dir), MIXEDSTACK_GDB="gdb"))
        assert not os.path.exists("/tmp/jit-%d.dump" % target.pid)
    assert ("cannot turn the trampoline on in process %d: gdb is not installed" % target.pid) in done.stderr
    assert "pip install 'mixedstack[attach]'" in done.stderr and "apt install gdb" in done.stderr
    assert meta["mode"] == "native"
    assert folded.total(lambda f: any("x_add" in x or "PyEval" in x for x in f)) > 0


def test_a_gdb_that_cannot_call_on_this_cpu_is_never_used(perf_ok, tmp_path):
    from mixedstack.record.attach.inject import gdb_problem

    old = shutil.which("gdb", path="/usr/bin")  # Debian 12's gdb 13
    if old is None or gdb_problem(old) is None:
        pytest.skip("needs a gdb older than 14 on a CPU with AMX registers (as Debian 12 on this machine)")
    code = "import time\nprint('ready', flush=True)\ntime.sleep(4)\nprint('slept')\n"
    target = subprocess.Popen([interpreter((3, 13)), "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert target.stdout.readline() == "ready\n"
        done = mixedstack("record", "--pid", str(target.pid), "-d", "1", "--activate",
                          "-o", str(tmp_path / "x.data"), env=dict(os.environ, MIXEDSTACK_GDB=old))
        assert done.returncode == 0, done.stderr
        assert "which cannot call functions in a process on a CPU with AMX registers" in done.stderr
        out, err = target.communicate(timeout=30)
        # it was not touched: its sleep ended normally (gdb 13's failed call breaks it: errno 514)
        assert out == "slept\n" and target.returncode == 0, err
    finally:
        target.kill()
        target.wait()


def test_activate_goes_with_pid():
    done = mixedstack("record", "--activate", "--", "true")
    assert done.returncode == 2 and "--activate/--no-activate go with --pid" in done.stderr


def test_a_stripped_313_gets_the_agent_instead(perf_ok, gdb_ok, tmp_path):
    # CPython's perf_jit functions are internal: found through libpython's symbol table,
    # which `strip` removes (its exported symbols stay). The agent needs exported ones only.
    python = interpreter((3, 13))
    from mixedstack.record.target import find_interpreter

    libpython = find_interpreter([python]).libpython
    if libpython is None or shutil.which("strip") is None:
        skip_or_fail("needs a CPython 3.13 with a shared libpython, and binutils' strip")
    lib = tmp_path / "lib"
    lib.mkdir()
    subprocess.run(["strip", "--strip-all", "-o", str(lib / os.path.basename(libpython)), libpython], check=True)
    with running(python, env={"LD_LIBRARY_PATH": str(lib)}) as target:
        # an agent built for this libpython copy goes to the test's own cache
        done, folded, meta = attach(target, tmp_path, "--activate",
                                    env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert "turned the mixedstack agent" in done.stderr and meta["mode"] == "agent", done.stderr
    assert folded.under("leaf").total() / folded.total() >= 0.9
