"""Profiles real workloads: `mixedstack record` + `fold` with the real perf.

CPython 3.13 (perf_jit) is where Python frames appear on this machine's
interpreters (none has frame pointers); 3.8-3.12 are recorded in native mode.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_shares_match, WORKLOADS, Folded, interpreter, mixedstack, record_and_fold

pytestmark = pytest.mark.perf

# Frames the merge must never show (an independent list, not the merge's own).
PLUMBING = {
    "_PyEval_EvalFrameDefault", "_PyEval_EvalFrame", "_PyEval_Vector", "PyEval_EvalCode",
    "py_trampoline_evaluator", "PyObject_Vectorcall", "_PyObject_VectorcallTstate",
    "_PyFunction_Vectorcall", "_PyObject_Call", "PyObject_Call", "cfunction_vectorcall_O",
    "cfunction_vectorcall_FASTCALL", "cfunction_vectorcall_FASTCALL_KEYWORDS",
}


def is_python_frame(frame: str) -> bool:
    return frame.endswith(")") and " (" in frame


@pytest.fixture(scope="module")
def phases_313(tmp_path_factory):
    """One recording of the three-phase workload on CPython 3.13, folded with --kernel."""
    from conftest import perf_problem, skip_or_fail

    if perf_problem():
        skip_or_fail(perf_problem())
    python = interpreter((3, 13))
    tmp = tmp_path_factory.mktemp("phases")
    timings = tmp / "timings.json"
    recorded, folded = record_and_fold(
        tmp, [python, str(WORKLOADS / "phases.py"), str(timings), "1.0"], "--kernel")
    assert recorded.returncode == 0, recorded.stderr
    return recorded, folded, json.loads(timings.read_text()), tmp


def test_phases_are_rooted_at_module(phases_313):
    _, folded, _, _ = phases_313
    assert folded.complete_share() >= 0.99, "only %.2f%% complete" % (100.0 * folded.complete_share())
    for function in ("py_hot", "c_heavy", "sys_heavy"):  # the program's own time: under <module>
        part = folded.under(function)
        rooted = part.total(lambda f: f[1].startswith("<module> ("))
        assert rooted / part.total() >= 0.98, (function, rooted / part.total())


def test_each_function_share_matches_its_own_timing(phases_313):
    _, folded, timings, _ = phases_313
    assert_shares_match(folded, timings)


def test_c_frames_under_the_c_heavy_function(phases_313):
    _, folded, _, _ = phases_313
    c_heavy = folded.under("c_heavy")

    def runs_native_code(frames):
        return not is_python_frame(frames[-1])

    share = c_heavy.total(runs_native_code) / c_heavy.total()
    assert share >= 0.90, share
    # ... and the native work is real library code (OpenSSL's SHA-256, zlib's deflate)
    names = {frame for frames in c_heavy.stacks for frame in frames}
    assert any("deflate" in name for name in names), sorted(names)[:50]
    assert any("sha256" in name.lower() or "SHA256" in name for name in names), sorted(names)[:50]


def test_kernel_frames_under_the_syscall_function(phases_313):
    _, folded, _, _ = phases_313
    sys_heavy = folded.under("sys_heavy")
    share = sys_heavy.total(lambda f: any(x.endswith("_[k]") for x in f)) / sys_heavy.total()
    assert share >= 0.50, share
    names = {frame for frames in sys_heavy.stacks for frame in frames}
    assert "os_read" in names and "os_stat" in names, sorted(names)[:50]


def test_no_plumbing_and_short_stacks(phases_313):
    _, folded, _, _ = phases_313
    python_stacks = {f: c for f, c in folded.stacks.items() if any(map(is_python_frame, f))}
    seen = {frame.replace("_[k]", "") for frames in python_stacks for frame in frames}
    assert not seen & PLUMBING, seen & PLUMBING
    assert not any(frame.startswith("py::") for frame in seen)
    depth = sum(len(f) * c for f, c in folded.stacks.items()) / folded.total()
    assert depth <= 20, depth


def test_python_frames_are_named_function_and_file(phases_313):
    _, folded, _, _ = phases_313
    frames = {frame for stack in folded.stacks for frame in stack}
    for name in ("<module> (phases.py)", "main (phases.py)", "py_hot (phases.py)"):
        assert name in frames


def test_summary_line_and_recording_files(phases_313):
    recorded, _, _, tmp = phases_313
    last = recorded.stderr.strip().splitlines()[-1]
    assert "samples" in last and "mode perf-jit" in last and "perf.data" in last, last
    meta = json.loads((tmp / "perf.data.d" / "meta.json").read_text())
    assert meta["mode"] == "perf-jit" and meta["exit_status"] == 0
    assert meta["frequency"] == 499 and meta["samples"] > meta["frequency"]  # the default rate, 3 s of work
    kept = os.listdir(tmp / "perf.data.d" / "tmp")
    assert any(name.startswith("jit-") and name.endswith(".dump") for name in kept), kept


def tmp_files_of(data: Path) -> list:
    """The perf maps, jitdumps and jitted-*.so files in /tmp of the recording's own
    processes (other people's runs may write theirs at the same time)."""
    from mixedstack.perf.command import task_pids

    pids = {str(pid) for pid in task_pids(str(data))}
    return [name for name in os.listdir("/tmp") if name.startswith(("jit-", "perf-", "jitted-"))
            and name.split("-")[1].split(".")[0] in pids]


def test_nothing_left_in_tmp_or_the_global_buildid_cache(perf_ok, tmp_path):
    python = interpreter((3, 13))
    debug = Path.home() / ".debug"
    started = time.time()
    recorded, folded = record_and_fold(tmp_path, [python, "-c", "sum(i*i for i in range(3_000_000))"])
    assert recorded.returncode == 0, recorded.stderr
    meta = json.loads((tmp_path / "perf.data.d" / "meta.json").read_text())
    pid_files = tmp_files_of(tmp_path / "perf.data")
    assert pid_files == [], pid_files
    if debug.exists():
        newer = [str(p) for p in debug.rglob("*") if p.lstat().st_mtime >= started]
        assert newer == [], newer[:5]
    assert meta["samples"] > 0


def test_fold_works_after_the_recording_moves(perf_ok, phases_313, tmp_path):
    _, folded, _, tmp = phases_313
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(tmp / "perf.data", moved / "renamed.data")
    shutil.copytree(tmp / "perf.data.d", moved / "renamed.data.d")
    again = mixedstack("fold", "--kernel", str(moved / "renamed.data"))
    assert again.returncode == 0, again.stderr
    assert Folded(again.stdout).stacks == folded.stacks


def test_a_recording_moved_without_its_folder_says_what_is_missing(perf_ok, phases_313, tmp_path):
    _, folded, _, tmp = phases_313
    shutil.copy(tmp / "perf.data", tmp_path / "alone.data")
    again = mixedstack("fold", str(tmp_path / "alone.data"))
    assert again.returncode == 0, again.stderr
    assert "alone.data.d is not beside it" in again.stderr and "move or copy" in again.stderr, again.stderr
    assert "warning" not in mixedstack("fold", str(tmp / "perf.data")).stderr  # with its folder: silent


def test_perf_script_path_gives_the_same_output(perf_ok, phases_313):
    _, folded, _, tmp = phases_313
    script = ROOT / "perf_scripts" / "mixedstack-fold.py"
    done = subprocess.run(
        ["perf", "--buildid-dir", str(tmp / "perf.data.d" / "buildid"), "script",
         "-i", str(tmp / "perf.data"), "--no-inline", "--max-stack", "4096", "-s", str(script),
         "--", "--kernel"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=""),
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert Folded(done.stdout).stacks == folded.stacks


def test_text_input_on_stdin_equals_the_recording(perf_ok, phases_313):
    _, folded, _, tmp = phases_313
    text = subprocess.run(
        ["perf", "--buildid-dir", str(tmp / "perf.data.d" / "buildid"), "script", "-i",
         str(tmp / "perf.data"), "--no-inline", "--max-stack", "4096"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300,
    ).stdout
    piped = subprocess.run([sys.executable, "-m", "mixedstack", "fold", "--kernel", "-"],
                           input=text, stdout=subprocess.PIPE, timeout=300)
    assert piped.returncode == 0
    assert Folded(piped.stdout.decode("latin-1")).stacks == folded.stacks


@pytest.mark.parametrize("method", ["fork", "spawn", "subprocess"])
def test_children_have_python_frames(perf_ok, tmp_path, method):
    python = interpreter((3, 13))
    recorded, folded = record_and_fold(tmp_path, [python, str(WORKLOADS / "children.py"), method],
                                       "--pid", cwd=WORKLOADS)
    assert recorded.returncode == 0, recorded.stderr
    workers = folded.under("child_work")
    children = workers.processes()
    assert children, folded.processes()
    parent_label = min(folded.processes(), key=lambda label: int(label.rsplit("-", 1)[1]))
    assert parent_label not in children  # the work happened in other processes
    for child in children:
        # its work, unwound to the child's own <module>; its start-up imports and shutdown
        # are whole stacks too, but of other roots (their share grows on a loaded machine:
        # a CI run's 10.7% failed a 90% test of all its stacks at <module>)
        work = folded.for_process(child).under("child_work")
        rooted = work.total(lambda f: f[1].startswith("<module> ("))
        assert rooted / work.total() >= 0.95, (child, rooted / work.total())
        assert folded.for_process(child).complete_share() >= 0.95, child
    # 0.4 s of child work at least (two tasks of 0.6 s CPU each; cpu-clock weights are ns)
    assert workers.total() / 1e9 >= 0.4, workers.total() / 1e9


@pytest.mark.parametrize("minor", [8, 9, 10, 11, 12])
def test_older_interpreters_get_python_frames_from_the_agent(perf_ok, tmp_path, minor):
    python = interpreter((3, minor))
    timings = tmp_path / "t.json"
    recorded, folded = record_and_fold(
        tmp_path, [python, str(WORKLOADS / "phases.py"), str(timings), "1.0"], "--kernel")
    assert recorded.returncode == 0, recorded.stderr
    assert "mode agent" in recorded.stderr.splitlines()[-1]
    assert folded.complete_share() >= 0.98, folded.complete_share()  # start-up and shutdown count
    main = folded.under("main")
    rooted = main.total(lambda f: f[1].startswith("<module> (phases.py"))
    assert rooted / main.total() >= 0.98, rooted / main.total()
    names = {frame for frames in folded.stacks for frame in frames}
    assert "py_hot (phases.py)" in names  # named as CPython's own trampolines name it
    assert folded.under("c_heavy").total(lambda f: any("deflate" in x for x in f)) > 0
    assert folded.under("sys_heavy").total(lambda f: any(x.endswith("_[k]") for x in f)) > 0
    timings = json.loads(timings.read_text())
    main = main.total()
    for function in ("py_hot", "c_heavy", "sys_heavy"):
        assert abs(folded.under(function).total() / main - timings[function] / timings["main"]) <= 0.03
    left = tmp_files_of(tmp_path / "perf.data")
    assert left == [], left


def test_agent_never_records_native_frames_and_says_why(perf_ok, tmp_path):
    python = interpreter((3, 11))
    recorded, folded = record_and_fold(
        tmp_path, [python, str(WORKLOADS / "phases.py"), str(tmp_path / "t.json"), "0.3"], "--kernel",
        record_args=("--agent", "never"))
    assert recorded.returncode == 0, recorded.stderr
    assert "3.11" in recorded.stderr and "Python frames will be missing" in recorded.stderr
    assert "mode native" in recorded.stderr.splitlines()[-1]
    names = {frame for frames in folded.stacks for frame in frames}
    assert any(name.endswith("_[k]") for name in names) and any("deflate" in n for n in names)
    full = folded.total(lambda f: "_start" in f or "__libc_start_call_main" in f)
    assert full / folded.total() >= 0.9, full / folded.total()


@pytest.mark.parametrize("code, status", [("import sys; sys.exit(3)", 3),
                                          ("import os; os.kill(os.getpid(), 9)", 128 + 9)])
def test_exit_status_is_passed_through(perf_ok, tmp_path, code, status):
    python = interpreter((3, 13))
    done = mixedstack("record", "-o", str(tmp_path / "x.data"), "--", python, "-c", code)
    assert done.returncode == status, done.stderr
    assert "exit status %d" % status in done.stderr.splitlines()[-1]
    assert mixedstack("fold", str(tmp_path / "x.data")).returncode in (0, 1)


def test_ctrl_c_stops_the_target_and_keeps_a_recording(perf_ok, tmp_path):
    python = interpreter((3, 13))
    code = "import time\nwhile True:\n    sum(range(10000))\n"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixedstack", "record", "-o", str(tmp_path / "c.data"), "--", python, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    time.sleep(2.5)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    folded = mixedstack("fold", str(tmp_path / "c.data"))
    assert folded.returncode == 0, folded.stderr
    assert Folded(folded.stdout).total(lambda f: f[1:2] == ("<module> (<string>)",)) > 0


def test_an_earlier_recording_is_never_replaced_silently(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    data.write_bytes(b"PERFILE2 an earlier recording")
    refused = mixedstack("record", "-o", str(data), "--", "true", stdin=subprocess.DEVNULL)
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert data.read_bytes() == b"PERFILE2 an earlier recording"
    replaced = mixedstack("record", "--force", "-o", str(data), "--", "true")
    assert replaced.returncode == 0, replaced.stderr
    assert data.read_bytes() != b"PERFILE2 an earlier recording"



def test_threads_are_unwound_to_their_start(perf_ok, tmp_path):
    python = interpreter((3, 13))
    code = ("import threading\n"
            "def spin():\n    s = 0\n    for i in range(3_000_000):\n        s += i\n"
            "def worker():\n    spin()\n"
            "threads = [threading.Thread(target=worker) for _ in range(2)]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]\n")
    recorded, folded = record_and_fold(tmp_path, [python, "-c", code])
    assert recorded.returncode == 0, recorded.stderr
    spinning = folded.under("spin")
    rooted = spinning.total(lambda f: f[1:5] == (
        "Thread._bootstrap (threading.py)", "Thread._bootstrap_inner (threading.py)",
        "Thread.run (threading.py)", "worker (<string>)"))
    assert rooted / spinning.total() >= 0.95, rooted / spinning.total()


def test_attach_to_a_running_process_and_leave_it_running(perf_ok, tmp_path):
    python = interpreter((3, 11))  # no trampoline on in it: native frames
    code = "import time, zlib\nend = time.time() + 6\nwhile time.time() < end:\n    zlib.compress(bytes(1 << 20))\n"
    target = subprocess.Popen([python, "-c", code])
    try:
        time.sleep(0.5)
        done = mixedstack("record", "--pid", str(target.pid), "-d", "1", "-o", str(tmp_path / "a.data"))
        assert done.returncode == 0, done.stderr
        assert target.poll() is None  # still running
        assert "mode native" in done.stderr.splitlines()[-1]
        folded = Folded(mixedstack("fold", str(tmp_path / "a.data")).stdout)
        assert 0.5 <= folded.total() / 1e9 <= 1.5  # about 1 s (cpu-clock weights are ns)
        assert folded.total(lambda f: any("deflate" in x for x in f)) / folded.total() >= 0.5
    finally:
        target.kill()
        target.wait()


def test_record_wants_a_command_or_a_pid():
    done = mixedstack("record", "--pid", "1", "--", "true")
    assert done.returncode == 2 and "either a COMMAND" in done.stderr


def test_packages_imported_from_a_zip_keep_their_names(perf_ok, tmp_path):
    import zipfile

    archive = tmp_path / "app.zip"
    body = ("import time\ndef run():\n    end = time.perf_counter() + 0.4\n"
            "    while time.perf_counter() < end:\n        sum(i * i for i in range(300))\n")
    with zipfile.ZipFile(archive, "w") as zf:
        for package in ("hot_a", "hot_b"):
            zf.writestr(package + "/__init__.py", body)
    _, folded = record_and_fold(tmp_path, [interpreter((3, 13)), "-c", "import sys; sys.path.insert(0, %r)\n"
                                           "import hot_a, hot_b; hot_a.run(); hot_b.run()" % str(archive)])
    frames = {frame for stack in folded.stacks for frame in stack}
    assert {"run (hot_a/__init__.py)", "run (hot_b/__init__.py)"} <= frames, sorted(frames)[:30]


def test_stacks_deeper_than_the_copy_are_said_and_marked(perf_ok, tmp_path):
    script = ("import time\ndef down(n):\n    if n:\n        return down(n - 1)\n"
              "    end = time.perf_counter() + 0.5\n    while time.perf_counter() < end:\n"
              "        sum(i * i for i in range(300))\ndown(40)\n")
    recorded, folded = record_and_fold(tmp_path, [interpreter((3, 13)), "-c", script],
                                       record_args=("--stack-size", "8192"))
    warning = [line for line in recorded.stderr.splitlines() if "deeper than the 8,192 bytes copied" in line]
    assert len(warning) == 1 and "--stack-size 65528" in warning[0], recorded.stderr
    deep = folded.under("down")
    assert deep.total(lambda f: f[1] == "[truncated]") / deep.total() >= 0.9
    meta = json.loads((tmp_path / "perf.data.d" / "meta.json").read_text())
    report = mixedstack("report", str(tmp_path / "perf.data"))
    assert warning[0].split("warning: ", 1)[1] in report.stdout and meta["deeper_than_copied"] > 0
