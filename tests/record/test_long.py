"""Long recordings: perf writes pieces that record takes into perf.data as it goes
(perf/pieces.py, record/collect.py), so the disk holds little more than the recording;
what stops a recording early (-d, a full disk, perf killed, the target crashing) keeps
what was recorded; a terminal shows a live status line."""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Folded, interpreter, is_complete, mixedstack

MB = 1 << 20

# A parent that spins in one function, then another, and meanwhile starts a Python
# child (fork + exec) every 0.4 s: processes and execs that span perf's pieces.
PARENT = """import subprocess, sys, time
def child_spawner(seconds):
    children = []
    end = time.time() + seconds
    while time.time() < end:
        children.append(subprocess.Popen([sys.executable, "-c", CHILD]))
        spin_until(time.time() + 0.4)
    for child in children:
        child.wait()
def spin_until(end):
    while time.time() < end:
        sum(i * i for i in range(300))
def early_phase(seconds):
    spin_until(time.time() + seconds)
def late_phase(seconds):
    child_spawner(seconds)
CHILD = '''import time
def child_work():
    end = time.time() + 0.3
    while time.time() < end:
        sum(i * i for i in range(300))
child_work()
'''
early_phase(float(sys.argv[1]))
late_phase(float(sys.argv[1]))
"""

SPIN = """import os, sys, time
def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        sum(i * i for i in range(300))
spin(float(sys.argv[1]))
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write("done")
"""


def disk_used(*paths: Path) -> int:
    """Bytes of disk in use at and under `paths`, as du counts them (blocks: a hole is free)."""
    existing = [str(path) for path in paths if path.exists()]
    if not existing:
        return 0
    done = subprocess.run(["du", "-s", "-c", "-B1", *existing], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    return int(done.stdout.strip().splitlines()[-1].split()[0]) if done.stdout.strip() else 0


class DiskWatch(threading.Thread):
    """The most disk a recording used, sampled every 0.2 s while record runs."""

    def __init__(self, data: Path):
        super().__init__(daemon=True)
        self.data, self.peak, self.done = data, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, disk_used(self.data, Path(str(self.data) + ".d")))


def script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "workload.py"
    path.write_text(text)
    return str(path)


def perf_counts(data: Path) -> dict:
    """perf's own count of each record type in a recording (perf report --stats)."""
    stats = subprocess.run(["perf", "report", "-i", str(data), "--stats"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True).stdout
    return {match.group(1): int(match.group(2)) for match in re.finditer(r"^\s*(\w+) events:\s*(\d+)", stats, re.M)}


def meta_of(data: Path) -> dict:
    return json.loads(Path(str(data) + ".d", "meta.json").read_text())


@pytest.mark.perf
def test_a_recording_in_many_pieces_uses_little_more_disk_than_its_size_and_folds_whole(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    watch = DiskWatch(data)
    watch.start()
    done = mixedstack("record", "-F", "999", "-o", str(data), "--",
                      interpreter((3, 13)), script(tmp_path, PARENT), "4")
    watch.done.set()
    watch.join()
    assert done.returncode == 0, done.stderr
    meta = meta_of(data)
    final = disk_used(data, Path(str(data) + ".d"))
    # perf copied 64 KB a sample: the run went through many of perf's 8 MB pieces
    assert meta["samples"] * 65528 > 6 * 8 * MB, meta["samples"]
    assert watch.peak <= final + 64 * MB, (watch.peak, final)
    assert not list(Path(str(data) + ".d").glob("raw.data*"))  # every piece taken
    folded = mixedstack("fold", "--tid", str(data))
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    assert perf_counts(data)["SAMPLE"] == meta["samples"]
    # named, whole stacks from the first piece to the last, in the parent and in the
    # children it started in later pieces
    for function in ("early_phase", "late_phase", "child_work"):
        part = stacks.under(function)
        assert part.total() > 0.05 * stacks.total(), (function, part.total(), stacks.total())
        assert part.total(is_complete) >= 0.97 * part.total(), function
    children = {label.split("/")[1] for label in stacks.processes() if stacks.for_process(label).under("child_work").total()}
    assert len(children) >= 5, children  # each its own process (comm/pid/tid)


@pytest.mark.perf
def test_the_recording_folds_while_record_is_still_recording(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    record = subprocess.Popen([sys.executable, "-m", "mixedstack", "record", "-F", "999", "-o", str(data), "--",
                               interpreter((3, 13)), script(tmp_path, SPIN), "6"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not data.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        assert record.poll() is None, "the target ended before the check"
        during = perf_counts(data).get("SAMPLE", 0)
        assert during > 0  # the pieces taken so far, readable as they are
        folded = mixedstack("fold", str(data))
        assert folded.returncode == 0, folded.stderr
        # (its Python frames are unnamed until the end: the jitted code's maps come last)
        assert Folded(folded.stdout).total() > 0
    finally:
        _, err = record.communicate(timeout=120)
    assert record.returncode == 0, err
    assert perf_counts(data)["SAMPLE"] == meta_of(data)["samples"] > during


@pytest.mark.perf
def test_duration_stops_a_launched_target_as_ctrl_c_would(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    started = time.monotonic()
    done = mixedstack("record", "-d", "1.5", "-o", str(data), "--",
                      interpreter((3, 13)), script(tmp_path, SPIN), "60")
    assert time.monotonic() - started < 30
    assert done.returncode == 130, done.stderr  # the target's KeyboardInterrupt
    assert "recording stopped after 1.5 s (-d); the target was stopped" in done.stderr
    times = meta_of(data)["sample_times"]
    assert (times[-1] - times[0]) / 1e9 <= 2.0
    assert mixedstack("fold", str(data)).returncode == 0


@pytest.mark.perf
def test_keep_target_records_for_the_duration_and_lets_the_target_finish(perf_ok, tmp_path):
    data, finished = tmp_path / "perf.data", tmp_path / "finished"
    done = mixedstack("record", "-d", "1", "--keep-target", "-o", str(data), "--",
                      interpreter((3, 13)), script(tmp_path, SPIN), "3", str(finished))
    assert done.returncode == 0, done.stderr
    assert finished.read_text() == "done"  # ran on to its end
    assert "the target ran on to its end" in done.stderr
    meta = meta_of(data)
    assert (meta["sample_times"][-1] - meta["sample_times"][0]) / 1e9 <= 1.5
    stacks = Folded(mixedstack("fold", str(data)).stdout)
    assert stacks.under("spin").total() > 0.5 * stacks.total()


def test_keep_target_goes_with_a_duration(tmp_path):
    done = mixedstack("record", "--keep-target", "-o", str(tmp_path / "x.data"), "--", sys.executable, "-c", "0")
    assert done.returncode == 2 and "--keep-target goes with --duration" in done.stderr
    assert not (tmp_path / "x.data").exists()


@pytest.mark.perf
def test_a_crashing_target_leaves_a_recording_that_folds(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    crash = SPIN.replace('spin(float(sys.argv[1]))', 'spin(float(sys.argv[1])); os.abort()')
    done = mixedstack("record", "-o", str(data), "--", interpreter((3, 13)), script(tmp_path, crash), "1.5")
    assert done.returncode == 128 + signal.SIGABRT, done.stderr
    assert "Traceback" not in done.stderr
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    assert perf_counts(data)["SAMPLE"] == meta_of(data)["samples"] >= 0.5 * 1.5 * 499  # all there


def children_named(pid: int, comm: str):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if name == comm and int(rest[1]) == pid:
                yield int(entry)


@pytest.mark.perf
def test_perf_killed_mid_recording_keeps_what_it_had(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    record = subprocess.Popen([sys.executable, "-m", "mixedstack", "record", "-o", str(data), "--",
                               interpreter((3, 13)), script(tmp_path, SPIN), "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    perfs = list(children_named(record.pid, "perf"))
    assert perfs, "no perf under record"
    for pid in perfs:
        os.kill(pid, signal.SIGKILL)
    _, err = record.communicate(timeout=120)
    assert record.returncode == 0, err  # the target ran to its end
    assert "perf record ended" in err and "keeps what it had" in err, err
    assert "Traceback" not in err
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    assert perf_counts(data)["SAMPLE"] > 0.5 * 499  # about 2 s of samples: the pieces perf closed and the one it was writing
    assert stacks.under("spin").total() > 0.5 * stacks.total()


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB file system of its own (tmpfs; root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.perf
def test_a_full_disk_stops_the_recording_cleanly_and_what_it_kept_folds(perf_ok, small_disk, tmp_path):
    data = small_disk / "perf.data"
    done = mixedstack("record", "-F", "999", "-o", str(data), "--",
                      interpreter((3, 13)), script(tmp_path, SPIN), "12")
    assert done.returncode == 0, done.stderr  # the target's own status: it ran to its end
    assert "Traceback" not in done.stderr
    said = [line for line in done.stderr.splitlines() if "disk filled up" in line]
    assert len(said) == 1 and "keeps what it had" in said[0], done.stderr
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    assert perf_counts(data)["SAMPLE"] == meta_of(data)["samples"] > 100  # what it kept, all readable
    assert stacks.under("spin").total() > 0.5 * stacks.total()


def run_on_a_terminal(command):
    """Run `command` with a terminal as its stdin, stdout and stderr; what it wrote."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs
        os.execv(command[0], command)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


@pytest.mark.perf
def test_a_terminal_shows_a_live_status_line_and_a_pipe_does_not(perf_ok, tmp_path):
    command = [sys.executable, "-m", "mixedstack", "record", "-o", str(tmp_path / "a.data"), "--",
               interpreter((3, 13)), script(tmp_path, SPIN), "1.5"]
    status, out = run_on_a_terminal(command)
    assert status == 0, out
    lines = [part for part in out.split("\r") if part.startswith("\x1b[Kmixedstack: recording ")]
    assert len(lines) >= 3, out  # rewritten in place, several times a second
    last = lines[-1]
    assert " samples" in last and "MB on disk" in last, last
    samples = int(last.split(", ")[1].split()[0].replace(",", ""))
    assert samples > 0
    piped = mixedstack("record", "-o", str(tmp_path / "b.data"), "--",
                       interpreter((3, 13)), script(tmp_path, SPIN), "1")
    assert piped.returncode == 0 and "\x1b[K" not in piped.stderr and "recording 0:" not in piped.stderr
