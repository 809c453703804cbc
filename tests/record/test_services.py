"""Services as they run: they never end on their own, keep non-daemon threads, fork
workers that their master ends with SIGTERM. `timeout` and `-d` still end the
recording on time (record escalates by itself: SIGINT, SIGINT, SIGTERM, SIGKILL),
leave no process behind, and keep the Python names of every process, workers killed
by a signal included (a perf_jit target flushes its jitdump every second)."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import CURRENT_PYTHON, WORKLOADS, Folded, current_python, interpreter, is_complete, mixedstack
from conftest import alive, skip_or_fail

pytestmark = pytest.mark.perf

SERVICE = str(WORKLOADS / "service.py")
STOP_WITHIN = 10.0  # seconds from the stop to record's return (the bound)

# (label, python): the three ways record names Python frames
INTERPRETERS = [
    ("3.11-agent", lambda: interpreter((3, 11))),
    ("3.13-perf-jit", lambda: interpreter((3, 13))),
    ("3.15-debian", lambda: current_python((3, 15), "root")),
]


def wait_for_pids(pid_file: Path, record: subprocess.Popen) -> List[int]:
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        assert record.poll() is None, record.communicate()[1]
        assert time.monotonic() < deadline, "the service never started"
        time.sleep(0.05)
    return [int(line) for line in pid_file.read_text().split()]


def by_process(folded: Folded) -> Dict[int, Folded]:
    """fold --pid labels each thread COMM-PID (3.14+ names threads): one Folded per pid."""
    processes: Dict[int, Folded] = {}
    for frames, count in folded.stacks.items():
        pid = frames[0].rpartition("-")[2]
        if pid.isdigit():  # (perf knows no pid for some samples of the whole machine: "-?")
            processes.setdefault(int(pid), Folded("")).stacks[frames] += count
    return processes


def run_service(tmp_path: Path, python: str, kind: str, stop: str):
    """Record `service.py KIND` until `stop` ("timeout": `timeout 6`; "duration": -d 3).
    Returns (record's stderr, the service's pids, seconds from the stop to record's end)."""
    data, pid_file = tmp_path / "perf.data", tmp_path / "pids"
    record = [sys.executable, "-m", "mixedstack", "record", "-o", str(data)]
    if stop == "timeout":
        command = ["timeout", "6"] + record + ["--", python, SERVICE, kind, str(pid_file)]
    else:
        command = record + ["-d", "3", "--", python, SERVICE, kind, str(pid_file)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = wait_for_pids(pid_file, process)
        # -d counts from the moment the target may run, which is before it writes its pids
        stop_at = started + 6 if stop == "timeout" else time.monotonic() + 3
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return err, pids, time.monotonic() - stop_at, process.returncode


def fold_by_process(tmp_path: Path) -> Dict[int, Folded]:
    folded = mixedstack("fold", "--pid", str(tmp_path / "perf.data"))
    assert folded.returncode == 0, folded.stderr
    return by_process(Folded(folded.stdout))


@pytest.mark.parametrize("stop", ["timeout", "duration"])
@pytest.mark.parametrize("label, python", INTERPRETERS, ids=[label for label, _ in INTERPRETERS])
def test_a_service_with_non_daemon_threads_stops_on_time(perf_ok, tmp_path, label, python, stop):
    err, pids, after_stop, status = run_service(tmp_path, python(), "threads", stop)
    assert after_stop <= STOP_WITHIN, (after_stop, err)
    if stop == "timeout":
        assert status == 124, err  # timeout's own status once it had to signal
    assert not any(alive(pid) for pid in pids), "a process of the service was left running"
    service = fold_by_process(tmp_path)[pids[0]]
    handled = service.under("handle")
    # two threads ran `handle` for seconds; their Python names are there, and whole
    assert handled.total() >= 0.5 * service.total(), err
    # its callers named too (a sample whose unwinding broke, 1 in thousands, is not this test's matter)
    assert handled.under("serve_forever").total() >= 0.99 * handled.total()
    assert handled.total(is_complete) >= 0.95 * handled.total()


@pytest.mark.parametrize("label, python", INTERPRETERS, ids=[label for label, _ in INTERPRETERS])
def test_workers_ended_by_their_master_keep_their_python_names(perf_ok, tmp_path, label, python):
    """timeout -> record -> SIGINT to the master, which ends its workers with SIGTERM:
    the workers never exit normally, and still every one has its Python names."""
    err, pids, after_stop, status = run_service(tmp_path, python(), "prefork", "timeout")
    assert after_stop <= STOP_WITHIN, (after_stop, err)
    assert not any(alive(pid) for pid in pids), "a process of the service was left running"
    processes = fold_by_process(tmp_path)
    master, workers = pids[0], pids[1:]
    assert set(pids) <= set(processes), (pids, sorted(processes))
    for worker in workers:
        stacks = processes[worker]
        assert stacks.under("handle").total() >= 0.6 * stacks.total(), (worker, err)
        assert stacks.complete_share() >= 0.95, worker


def start_service(python: str, tmp_path: Path, env: Dict[str, str]) -> Tuple[subprocess.Popen, List[int]]:
    """service.py prefork, started as someone else would start it: not by mixedstack."""
    pid_file = tmp_path / "pids"
    service = subprocess.Popen([python, SERVICE, "prefork", str(pid_file)], env=dict(os.environ, **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return service, wait_for_pids(pid_file, service)


def end_service(service: subprocess.Popen, pids: List[int]) -> None:
    service.terminate()  # the master ends its workers
    try:
        service.wait(timeout=30)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
    for pid in pids:
        for path in ["/tmp/jit-%d.dump" % pid, "/tmp/perf-%d.map" % pid] + glob.glob("/tmp/jitted-%d-*.so" % pid):
            with contextlib.suppress(OSError):
                os.remove(path)


# how each interpreter's service is started, as the README says: the trampoline on from
# the start where CPython has it (3.13+); 3.12 without frame pointers gets the agent
# from --activate
STARTED = [
    ("3.12-activated", lambda: interpreter((3, 12)), {}),
    ("3.13-perf-jit", lambda: interpreter((3, 13)), {"PYTHON_PERF_JIT_SUPPORT": "1"}),
    ("3.14-debian", lambda: current_python((3, 14), "bare"), {"PYTHON_PERF_JIT_SUPPORT": "1"}),
    ("3.15-debian", lambda: current_python((3, 15), "root"), {"PYTHON_PERF_JIT_SUPPORT": "1"}),
]


@pytest.mark.parametrize("label, python, env", STARTED, ids=[label for label, _, _ in STARTED])
def test_record_pid_of_a_prefork_master_records_it_and_its_workers(perf_ok, gdb_ok, tmp_path, label, python, env):
    service, pids = start_service(python(), tmp_path, env)
    try:
        done = mixedstack("record", "--pid", str(pids[0]), "-d", "3", "--activate", "-o", str(tmp_path / "perf.data"),
                          stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        assert "3 processes (3 of them Python)" in done.stderr, done.stderr
        assert all(alive(pid) for pid in pids), "attaching must leave the service running"
    finally:
        end_service(service, pids)
    assert_prefork_recorded(tmp_path, pids, bool(env))


def test_no_children_records_the_one_process(perf_ok, tmp_path):
    service, pids = start_service(interpreter((3, 13)), tmp_path, {"PYTHON_PERF_JIT_SUPPORT": "1"})
    try:
        done = mixedstack("record", "--pid", str(pids[1]), "--no-children", "-d", "1", "--no-activate",
                          "-o", str(tmp_path / "perf.data"), stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
    finally:
        end_service(service, pids)
    assert set(fold_by_process(tmp_path)) == {pids[1]}


def assert_prefork_recorded(tmp_path: Path, pids: List[int], started_with_trampoline: bool) -> None:
    """Master and both workers present, each's stacks whole and named; on 3.14+ the
    workers' `handle` frames carry lines of their own (record's companion), and so does
    the master's `prefork` frame, a caller."""
    processes = fold_by_process(tmp_path)
    assert set(pids) <= set(processes), (pids, sorted(processes))
    assert processes[pids[0]].under("heartbeat").total() > 0
    for pid in pids:
        stacks = processes[pid]
        # the frames each worker inherited from its master (`<module>`, `prefork`) named too
        assert stacks.complete_share() >= 0.95, (pid, sorted(stacks.stacks.items(), key=lambda i: -i[1])[:5])
    for worker in pids[1:]:
        assert processes[worker].under("handle").total() >= 0.6 * processes[worker].total()
        if started_with_trampoline:  # the calls the master began before forking are named too
            # (activated later, they show as [python frames before activation])
            main_thread = processes[worker].under("worker")
            assert main_thread.total() > 0 and main_thread.under("prefork").total() >= 0.95 * main_thread.total()
    described = json.loads((tmp_path / "perf.data.d" / "meta.json").read_text())["interpreter"]  # "CPython 3.15.2 (..."
    if tuple(int(part) for part in described.split()[1].split(".")[:2]) >= (3, 14):
        assert_lines_in(tmp_path, pids[1:], "handle")
        assert_lines_in(tmp_path, pids[:1], "prefork")  # the master's, heartbeat's caller


def assert_lines_in(tmp_path: Path, pids: List[int], function: str) -> None:
    """Most of each process's samples in `function` carry a line, each one of its own."""
    import ast

    node = next(node for node in ast.walk(ast.parse(Path(SERVICE).read_text()))
                if isinstance(node, ast.FunctionDef) and node.name == function)
    folded = mixedstack("fold", "--lines", "--pid", str(tmp_path / "perf.data"))
    assert folded.returncode == 0, folded.stderr
    prefix = "%s (service.py:" % function
    for pid, stacks in by_process(Folded(folded.stdout)).items():
        if pid not in pids:
            continue
        lines = [(int(frame[len(prefix):-1]), count) for frames, count in stacks.stacks.items()
                 for frame in frames if frame.startswith(prefix)]
        assert lines and all(node.lineno <= line <= node.end_lineno for line, _ in lines), (pid, lines)
        total = stacks.total(lambda frames: any(f == function + " (service.py)" or f.startswith(prefix)
                                                for f in frames))
        assert sum(count for _, count in lines) >= 0.5 * total, (pid, folded.stderr)


@pytest.mark.parametrize("label, python, env", STARTED, ids=[label for label, _, _ in STARTED])
def test_a_prefork_service_in_a_container_is_recorded_from_the_host(perf_ok, gdb_ok, tmp_path, label, python, env):
    """Own mount and pid namespaces, pivot_root into Debian sid's root (a newer glibc than
    this host's), /tmp of its own; recorded by its host pid."""
    from container import Container, container_problem, container_root, prefix_bind

    interpreter_path = python()
    version = (3, 15)  # the root; an interpreter from pyenv is bound into it
    if interpreter_path.startswith(str(CURRENT_PYTHON)):  # Debian's: its own version's root
        version = tuple(int(part) for part in os.path.basename(interpreter_path)[len("python"):].split("."))
    problem = container_problem(version)
    if problem:
        skip_or_fail(problem)
    shared = tmp_path / "shared"
    shared.mkdir()
    binds = [(str(WORKLOADS), "/app"), (str(shared), "/shared")]
    if not interpreter_path.startswith(str(CURRENT_PYTHON)):
        binds.append(prefix_bind(interpreter_path))  # pyenv's, at the same path in there
    else:
        interpreter_path = "/usr/bin/" + os.path.basename(interpreter_path)  # the container's own
    with Container([interpreter_path, "/app/service.py", "prefork", "/shared/pids"], binds=binds, env=env,
                   root=container_root(version)) as box:
        deadline = time.monotonic() + 60
        while not (shared / "pids").exists():
            assert time.monotonic() < deadline, box.output()
            time.sleep(0.05)
        assert [int(pid) for pid in (shared / "pids").read_text().split()][0] == box.nspid  # its own pid numbers
        done = mixedstack("record", "--pid", str(box.host_pid), "-d", "3", "--activate",
                          "-o", str(tmp_path / "perf.data"), stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        assert "3 processes (3 of them Python)" in done.stderr, done.stderr
        workers = sorted(pid for pid, parent in json.loads((tmp_path / "perf.data.d" / "meta.json").read_text())
                         ["processes"].items() if parent == box.host_pid)
        pids = [box.host_pid] + [int(pid) for pid in workers]
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
    # folded once the container is gone: its python and libc came with the recording
    assert_prefork_recorded(tmp_path, pids, bool(env))


BUSY = "def {name}():\n    while True:\n        sum(i * i for i in range(1000))\n{name}()\n"


def test_record_all_sees_every_process_and_names_each_python_one(perf_ok, tmp_path):
    """-a while two Python programs (perf maps on: their names need no flush, so nothing
    of ours runs in any process of this machine) and one C program (a shell loop) run."""
    programs = [
        subprocess.Popen([current_python((3, 15), "root"), "-c", BUSY.format(name="busy_one")],
                         env=dict(os.environ, PYTHONPERFSUPPORT="1")),
        subprocess.Popen([interpreter((3, 13)), "-X", "perf", "-c", BUSY.format(name="busy_two")]),
        subprocess.Popen(["sh", "-c", "while :; do :; done"]),
    ]
    try:
        time.sleep(0.5)
        done = mixedstack("record", "-a", "-d", "3", "--no-activate", "-o", str(tmp_path / "perf.data"),
                          stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
    finally:
        for program in programs:
            program.kill()
            program.wait()
        for program in programs[:2]:
            with contextlib.suppress(OSError):
                os.remove("/tmp/perf-%d.map" % program.pid)
    processes = fold_by_process(tmp_path)
    one, two, shell = (processes.get(program.pid) for program in programs)
    assert one is not None and two is not None and shell is not None, sorted(processes)
    for stacks, name in ((one, "busy_one"), (two, "busy_two")):
        # named from their perf maps (under -a's DWARF unwinding a perf map's frame may end
        # a stack: its code has no unwind information; its name is there)
        named = stacks.total(lambda frames: any(frame.startswith(name) for frame in frames))
        assert named >= 0.5 * stacks.total(), (name, sorted(stacks.stacks.items(), key=lambda i: -i[1])[:3])
    assert shell.total() > 0
    # and one process's samples alone, by pid or by command name
    alone = mixedstack("fold", "--pid", "--process", str(programs[1].pid), str(tmp_path / "perf.data"))
    assert alone.returncode == 0, alone.stderr
    assert set(by_process(Folded(alone.stdout))) == {programs[1].pid}
    by_name = mixedstack("report", "--format", "json", "--process", "sh", str(tmp_path / "perf.data"))
    assert by_name.returncode == 0, by_name.stderr
    assert {thread["comm"] for thread in json.loads(by_name.stdout)["threads"]} == {"sh"}


def test_a_tree_of_200_processes_and_a_pid_that_ends_while_recording(perf_ok, tmp_path):
    """200 children are recorded as the tree they are; when they all end before -d runs
    out, the recording ends with them and keeps what it had."""
    tree = subprocess.Popen(["sh", "-c", "for i in $(seq 200); do sleep 2 & done; wait"])
    try:
        deadline = time.monotonic() + 30
        while len(open("/proc/%d/task/%d/children" % (tree.pid, tree.pid)).read().split()) < 200:
            assert time.monotonic() < deadline, "the tree never grew"
            time.sleep(0.05)
        started = time.monotonic()
        done = mixedstack("record", "--pid", str(tree.pid), "-d", "30", "--no-activate",
                          "-o", str(tmp_path / "perf.data"), stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
    finally:
        tree.kill()
        tree.wait()
    assert done.returncode == 0, done.stderr
    assert "201 processes (0 of them Python)" in done.stderr, done.stderr
    assert took < 25, "record waited for -d after every process had ended"
    folded = mixedstack("fold", str(tmp_path / "perf.data"))
    assert folded.returncode == 0, folded.stderr


def test_a_process_that_execs_while_recorded_is_followed(perf_ok, tmp_path):
    """A process that replaces itself (exec) mid-recording: the new program is recorded
    under the same pid, with its own Python names (its trampoline on from the start)."""
    second = tmp_path / "second.py"
    second.write_text(BUSY.format(name="after_exec"))
    first = "import os, sys, time\nend = time.time() + 1\nwhile time.time() < end: pass\n" \
            "os.execv(sys.executable, [sys.executable, %r])\n" % str(second)
    # Debian's 3.15 (frame pointers: its perf map's frames unwind with -g)
    program = subprocess.Popen([current_python((3, 15), "root"), "-c", first],
                               env=dict(os.environ, PYTHONPERFSUPPORT="1"))
    try:
        time.sleep(0.3)
        done = mixedstack("record", "--pid", str(program.pid), "-d", "3", "--no-activate",
                          "-o", str(tmp_path / "perf.data"), stdin=subprocess.DEVNULL)
    finally:
        program.kill()
        program.wait()
        with contextlib.suppress(OSError):
            os.remove("/tmp/perf-%d.map" % program.pid)
    assert done.returncode == 0, done.stderr
    stacks = fold_by_process(tmp_path)[program.pid]
    assert stacks.total(lambda frames: any(frame.startswith("after_exec") for frame in frames)) > 0, \
        sorted(stacks.stacks.items(), key=lambda i: -i[1])[:3]
