"""record --syscalls: every system call counted as strace -c counts it, its errors by errno,
its latency, and the Python functions that made it.

workloads/syscalls.py makes known numbers of os.stat, os.read and failing os.open calls,
each kind from its own function, then some write+fsync pairs. The same program runs under
`strace -f -c` for the reference counts (both count from the program's exec: the
interpreter's own start-up calls are in both).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Tuple

import pytest

from conftest import WORKLOADS, current_python, interpreter, mixedstack, perf_problem, skip_or_fail

pytestmark = pytest.mark.perf

# what each function of the workload calls, as the kernel names it
FUNCTIONS = {"newfstatat": ("stat_files", "stat"), "read": ("read_zeros", "read"),
             "openat": ("open_missing", "failed_open"), "fsync": ("write_and_sync", "fsync")}


def real_disk(tmp_path: Path) -> Path:
    """A folder whose fsync waits for a disk (on tmpfs it returns at once)."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], stdout=subprocess.PIPE, text=True).stdout.strip()
    if kind not in ("tmpfs", "ramfs"):
        return tmp_path
    folder = Path.home() / ".cache" / "mixedstack" / "syscalls-test"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def strace_counts(command, tmp_path: Path) -> Dict[str, Tuple[int, int]]:
    """strace -f -c's table: syscall -> (calls, errors)."""
    if shutil.which("strace") is None:
        skip_or_fail("strace is not installed (Debian: apt install strace)")
    table = tmp_path / "strace.txt"
    done = subprocess.run(["strace", "-f", "-c", "-o", str(table)] + command, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = {}
    for line in table.read_text().splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and re.match(r"^[\d.]+$", fields[0]) and fields[-1] != "total":
            counts[fields[-1]] = (int(fields[3]), int(fields[4]) if len(fields) == 6 else 0)
    return counts


@pytest.mark.parametrize("python", ["3.11", "3.13", "debian-3.15"])
def test_counts_errors_latency_and_functions_match_strace(tmp_path, python):
    if perf_problem():
        skip_or_fail(perf_problem())
    binary = current_python((3, 15), "bare") if python == "debian-3.15" else \
        interpreter(tuple(int(part) for part in python.split(".")))
    folder = real_disk(tmp_path)
    command = [binary, str(WORKLOADS / "syscalls.py"), str(folder)]
    done = mixedstack("record", "--syscalls", "-o", str(tmp_path / "perf.data"), "--", *command)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout.strip().splitlines()[-1])
    calls = int(re.search(r"([\d,]+) system calls", done.stderr).group(1).replace(",", ""))
    assert calls > sum(made.values())

    report = mixedstack("report", "--format", "json", "--top", "100", str(tmp_path / "perf.data"))
    assert report.returncode == 0, report.stderr
    figures = json.loads(report.stdout)["syscall_calls"]
    assert figures["calls"] == calls
    rows = {row["syscall"]: row for row in figures["rows"]}
    reference = strace_counts(command, tmp_path)
    for name, (function, kind) in FUNCTIONS.items():
        row = rows[name]
        ours, theirs = row["calls"], reference[name][0]
        assert abs(ours - theirs) <= 0.01 * theirs, (name, ours, theirs)
        assert ours >= made[kind]
        # the function that made them is named, with (nearly) all of its calls
        top = row["functions"][0]
        assert top["function"] == "%s (syscalls.py)" % function, (name, row["functions"])
        assert abs(top["calls"] - made[kind]) <= 0.05 * made[kind], (name, top, made[kind])
        assert row["p50_us"] <= row["p99_us"] <= row["max_us"]
    failed = rows["openat"]
    assert failed["errors_by_errno"].get("ENOENT", 0) >= made["failed_open"]
    assert abs(failed["errors"] - reference["openat"][1]) <= 0.01 * reference["openat"][1]
    assert rows["read"]["errors"] == 0 and rows["fsync"]["errors"] == 0
    # a disk's fsync takes longer than a stat of a cached folder
    assert rows["fsync"]["p99_us"] > rows["newfstatat"]["p99_us"]

    text = mixedstack("report", str(tmp_path / "perf.data"))
    assert text.returncode == 0, text.stderr
    assert "System calls, every call (record --syscalls)" in text.stdout
    assert re.search(r"openat +[\d,]+ +[\d,]+ \(ENOENT [\d,]+\)", text.stdout), text.stdout
    # fold still shows the on-CPU samples alone (not the syscalls' sampled stacks)
    folded = mixedstack("fold", str(tmp_path / "perf.data"))
    assert folded.returncode == 0 and "Filtering for events" not in folded.stderr, folded.stderr
    assert "stat_files (syscalls.py)" in folded.stdout


def test_calls_are_read_from_perf_data_when_nothing_was_kept(tmp_path):
    """A recording whose folder lost the kept calls: report reads them from perf.data
    again (the same figures) and keeps them."""
    if perf_problem():
        skip_or_fail(perf_problem())
    data = tmp_path / "perf.data"
    done = mixedstack("record", "--syscalls", "-o", str(data), "--", interpreter((3, 13)),
                      str(WORKLOADS / "syscalls.py"), str(tmp_path), "0.1")
    assert done.returncode == 0, done.stderr
    first = json.loads(mixedstack("report", "--format", "json", str(data)).stdout)["syscall_calls"]
    kept = tmp_path / "perf.data.d" / "syscalls.bin"
    kept.unlink()
    again = mixedstack("report", "--format", "json", str(data))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["syscall_calls"] == first
    assert kept.exists()


def test_a_recording_without_syscalls_says_so(tmp_path):
    if perf_problem():
        skip_or_fail(perf_problem())
    data = tmp_path / "perf.data"
    done = mixedstack("record", "-o", str(data), "--", interpreter((3, 13)), "-c", "pass")
    assert done.returncode == 0, done.stderr
    report = mixedstack("report", "--format", "json", str(data))
    assert json.loads(report.stdout)["syscall_calls"] is None
    assert "every call" not in mixedstack("report", str(data)).stdout
