"""Shared fixtures for the tests that run the real perf on real interpreters.

Interpreters are discovered (pyenv root, then PATH), never hard-coded. Tests that
need perf skip with a reason where perf cannot record, except under CI=true, where
that is a failure.
"""
from __future__ import annotations

import collections
import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
WORKLOADS = TESTS / "workloads"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail("required under CI=true: " + reason)
    pytest.skip(reason)


@functools.lru_cache(maxsize=None)
def perf_problem() -> Optional[str]:
    """None when `perf record` works here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    try:
        # never `-o /dev/null`: perf renames an existing output to NAME.old
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                ["perf", "record", "-q", "--no-bpf-event", "-o", os.path.join(tmp, "t.data"), "--", "true"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30,
            )
    except (OSError, subprocess.TimeoutExpired) as error:
        return "perf record does not run: %s" % error
    if done.returncode != 0:
        return "perf record is not permitted here: %s" % done.stderr.decode(errors="replace").strip()[:200]
    return None


@pytest.fixture
def perf_ok() -> None:
    problem = perf_problem()
    if problem:
        skip_or_fail(problem)


@pytest.fixture
def gdb_ok() -> None:
    """A gdb that can call into a process here (`make test` installs one: mixedstack[attach])."""
    from mixedstack.record.attach.inject import find_gdb
    from mixedstack.record.attach.inject import gdb_problem
    from mixedstack.record.attach.inject import ptrace_problem

    gdb = find_gdb()
    problem = "no gdb found" if gdb is None else gdb_problem(gdb) or ptrace_problem()
    if problem:
        skip_or_fail(problem)


@functools.lru_cache(maxsize=None)
def pyenv_interpreters() -> Dict[Tuple[int, int], str]:
    """{(3, 13): '/…/versions/3.13.0/bin/python3.13', …}: the newest patch release of each."""
    found: Dict[Tuple[int, int], str] = {}
    roots = []
    try:
        roots.append(subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, timeout=30).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    candidates = []
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3.*")))
    # then PATH: pyenv's own builds come first (a distribution's python3.X is stripped
    # of the symbols that name C functions such as take_gil)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidates += sorted(glob.glob(os.path.join(directory, "python3.*")))
    for path in candidates:
        match = re.search(r"python(3)\.(\d+)$", path)
        if match and os.access(path, os.X_OK) and "shims" not in path:
            found.setdefault((3, int(match.group(2))), os.path.realpath(path))
    return found


def interpreter(version: Tuple[int, int]) -> str:
    path = pyenv_interpreters().get(version)
    if path is None:
        skip_or_fail("no CPython %d.%d found through pyenv or PATH" % version)
    return path


CURRENT_PYTHON = Path(os.environ.get("MIXEDSTACK_CURRENT_PYTHON") or
                      Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixedstack" / "current-python")
CURRENT_VERSIONS = ((3, 14), (3, 15))


def current_python(version: Tuple[int, int], kind: str) -> str:
    """Debian sid's CPython as distributions ship it (`make current-python`): kind "root"
    has the -dbg package's symbols in its root, "bare" the same binary without them."""
    name = "%d.%d" % version
    path = CURRENT_PYTHON / name / kind / "usr" / "bin" / ("python" + name)
    if not os.access(str(path), os.X_OK):
        skip_or_fail("no Debian CPython %s at %s: get it with `make current-python`" % (name, path))
    return str(path)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, ended and not yet reaped, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(") ")[2][0] != "Z"
    except OSError:
        return False


def mixedstack(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m mixedstack`), capturing its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "mixedstack", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, **kwargs,
    )


# Where a complete stack begins: the Python program, a thread's start, or (start-up,
# shutdown, a thread before it runs Python) the process's entry.
ENTRY_FRAMES = ("_start", "__libc_start_call_main", "__libc_start_main", "clone", "clone3",
                "start_thread", "_dl_start", "_dl_start_user")


def is_complete(frames: Tuple[str, ...]) -> bool:
    """Whether a folded stack (process name first) reaches a real root: `<module>`,
    a thread's bootstrap, or the process entry. Correct start-up and shutdown stacks
    are complete; a stack cut by the unwinder is not."""
    if len(frames) < 2:
        return False
    root = frames[1]
    if root == "[truncated]" or "[unknown]" in root:  # the merge's mark of a stack the unwinder cut
        return False
    if root == "[python frames before activation]":  # only ever on a stack that reached its entry
        return True
    return (root.startswith(("<module> (", "Thread._bootstrap (")) or root.split("_[")[0] in ENTRY_FRAMES
            # a stripped libc's unnamed thread start; and, with the process's entry above
            # it dropped by the merge, start-up's imports and shutdown's Python frames
            or root.startswith("[libc") or is_python_frame(root))


def is_python_frame(frame: str) -> bool:
    return frame.endswith(")") and " (" in frame


class Folded:
    """Folded output parsed for assertions: {frames tuple: count}."""

    def __init__(self, text: str):
        self.stacks: Dict[Tuple[str, ...], int] = collections.Counter()
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            self.stacks[tuple(stack.split(";"))] += int(count)

    def complete_share(self) -> float:
        return self.total(is_complete) / max(1, self.total())

    def total(self, where=lambda frames: True) -> int:
        return sum(count for frames, count in self.stacks.items() if where(frames))

    def under(self, function: str) -> "Folded":
        """Only the stacks that pass through Python function `function`."""
        sub = Folded("")
        for frames, count in self.stacks.items():
            if any(frame.startswith(function + " (") for frame in frames):
                sub.stacks[frames] += count
        return sub

    def processes(self) -> List[str]:
        return sorted({frames[0] for frames in self.stacks})

    def for_process(self, label: str) -> "Folded":
        sub = Folded("")
        for frames, count in self.stacks.items():
            if frames[0] == label:
                sub.stacks[frames] += count
        return sub


def assert_shares_match(folded: "Folded", timings: Dict[str, float], within: float = 0.03) -> None:
    """Each phase of tests/workloads/phases.py holds the share of `main` that the
    workload's own thread_time measured, within `within`."""
    main = folded.under("main").total()
    for function in ("py_hot", "c_heavy", "sys_heavy"):
        profiled = folded.under(function).total() / main
        measured = timings[function] / timings["main"]
        assert abs(profiled - measured) <= within, (function, profiled, measured)


def record_and_fold(tmp_path: Path, command: List[str], *fold_args: str,
                    record_args: Tuple[str, ...] = (), cwd: Optional[Path] = None,
                    env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.CompletedProcess, Folded]:
    data = tmp_path / "perf.data"
    recorded = mixedstack("record", "-o", str(data), *record_args, "--", *command, cwd=cwd, env=env)
    assert data.exists(), recorded.stderr
    folded = mixedstack("fold", str(data), *fold_args)
    assert folded.returncode == 0, folded.stderr
    return recorded, Folded(folded.stdout)


@pytest.fixture(scope="session")
def phases(tmp_path_factory):
    """phases.py recorded once on 3.13 (perf-jit): (perf.data, its fold)."""
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("slices")
    recorded, folded = record_and_fold(
        tmp, [interpreter((3, 13)), str(WORKLOADS / "phases.py"), str(tmp / "t.json"), "0.4"])
    assert recorded.returncode == 0, recorded.stderr
    return tmp / "perf.data", folded


def perf_script_text(data: Path, buildid: Path) -> bytes:
    """perf script's text of a recording, with its build-id cache."""
    from mixedstack.perf import command as perf

    return subprocess.run(perf.script_command(str(data), str(buildid)), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, check=True).stdout


def one_line_error(done: subprocess.CompletedProcess, status: int, *words: str) -> None:
    """The CLI failed as it should: one `mixedstack: error:` line with `words`, exit `status`."""
    assert done.returncode == status, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixedstack: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# A CPython 3.13 with frame pointers (`make fp-python`), for the frame-pointer mode tests
FP_PYTHON = os.environ.get("MIXEDSTACK_FP_PYTHON", str(
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mixedstack" / "fp-python" / "bin" / "python3.13"))
FT_PYTHON = os.environ.get("MIXEDSTACK_FT_PYTHON", str(
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mixedstack" / "ft-python" / "bin" / "python3.13t"))


def ft_python() -> str:
    """The free-threaded 3.13 `make ft-python` builds (skip, or fail under CI, without it)."""
    if not os.access(FT_PYTHON, os.X_OK):
        skip_or_fail("no free-threaded CPython at %s: build it with `make ft-python`" % FT_PYTHON)
    return FT_PYTHON


class Terminal:
    """A tmux server of our own, one window of 200x50 running `command`."""

    def __init__(self, folder: Path, command: str):
        if shutil.which("tmux") is None:
            skip_or_fail("no tmux: install it with `make terminal`")
        self.socket = str(folder / "tmux.sock")
        # the terminal's own size, not one a parent exported (curses reads COLUMNS and LINES first)
        self.tmux(["new-session", "-d", "-s", "top", "-x", "200", "-y", "50", "env -u COLUMNS -u LINES " + command])

    def tmux(self, arguments) -> str:
        return subprocess.run(["tmux", "-S", self.socket] + arguments, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=True).stdout

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "top"])

    def keys(self, keys: str) -> None:
        self.tmux(["send-keys", "-t", "top", keys])

    def wait_for(self, pattern: str, seconds: float, rows: int = 8) -> str:
        """The first screen whose table (its first `rows` rows) matches `pattern`."""
        deadline = time.monotonic() + seconds
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            table = "\n".join(screen.splitlines()[2:2 + rows])
            if re.search(pattern, table):
                return screen
            time.sleep(0.2)
        raise AssertionError("no %r in %.0f s; the screen:\n%s" % (pattern, seconds, screen))

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], stderr=subprocess.DEVNULL)
