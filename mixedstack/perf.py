"""Running Linux `perf`: the only module that builds perf command lines.

perf.data -> `perf script` text is the first step of fold's data flow; `perf record`
and `perf inject` are record's. Errors become UsageError-style one-liners.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from typing import IO, Iterator, List, Optional, Sequence

PERF_MAGIC = b"PERFILE2"  # first bytes of every perf.data file (file and pipe mode)

# What `perf script` prints for fold: the fields stackcollapse-perf.pl reads.
SCRIPT_FIELDS = "comm,pid,tid,time,period,event,ip,sym,dso"
# perf cuts call chains at 127 frames by default; a Python level costs 3-5 frames.
MAX_STACK = "4096"

# perf 6.1 on newer kernels warns about record types it does not know: harmless.
NOISE = re.compile(
    r"unknown record type|not valid for .* events\. Ignoring|^\s*$|"
    r"Warning:\s*$|Processed \d+ events and lost|Check IO/CPU overload|"
    r"kernel address maps .* restricted|kptr_restrict|perf_event_paranoid"
)


class PerfError(Exception):
    """A one-line message for the user: what failed, why, what to do."""


def perf_binary() -> str:
    path = shutil.which("perf")
    if path is None:
        raise PerfError(
            "perf not found: mixedstack runs Linux perf; install it "
            "(Debian/Ubuntu: apt install linux-perf) and check `perf --version`"
        )
    return path


def perf_command(subcommand: str, buildid_dir: Optional[str] = None) -> List[str]:
    """`perf [--buildid-dir DIR] SUBCOMMAND`: the build-id cache kept with the recording."""
    command = [perf_binary()]
    if buildid_dir:
        command += ["--buildid-dir", buildid_dir]
    return command + [subcommand]


def is_perf_data(head: bytes) -> bool:
    return head.startswith(PERF_MAGIC)


class StderrCollector:
    """Drains a child's stderr in a thread, keeping the lines that are not noise."""

    def __init__(self, stream: IO[bytes]):
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if not NOISE.search(line):
                self.lines.append(line)

    def join(self) -> List[str]:
        self._thread.join()
        return self.lines


def script_lines(
    data: str,
    buildid_dir: Optional[str] = None,
    inline: bool = False,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """Stream `perf script` text for a recording, line by line (latin-1 text)."""
    command = perf_command("script", buildid_dir) + [
        "-i", data, "-F", SCRIPT_FIELDS, "--max-stack", MAX_STACK,
    ]
    command.append("--inline" if inline else "--no-inline")
    command += list(extra)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = StderrCollector(process.stderr)
    try:
        for raw in process.stdout:
            yield raw.decode("latin-1")
    finally:
        process.stdout.close()
        status = process.wait()
        messages = errors.join()
    if status < 0:
        raise PerfError("perf script crashed (signal %d) on %s: the file is corrupt or cut short; "
                        "record it again" % (-status, data))
    if status != 0:
        reason = messages[-1] if messages else "exit status %d" % status
        raise PerfError("perf script failed on %s: %s" % (data, reason))


def task_pids(data: str) -> set:
    """PIDs of every process the recording saw (COMM and FORK events)."""
    output = subprocess.run(
        [perf_binary(), "script", "-i", data, "--show-task-events", "-F", "pid,event"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
    ).stdout.decode("latin-1")
    pids = set()
    for line in output.splitlines():
        head = line.split(None, 1)  # "PID PERF_RECORD_COMM exec: ..."
        if len(head) == 2 and head[0].isdigit() and "PERF_RECORD_" in head[1]:
            pids.add(int(head[0]))
    return pids


def sample_stats(data: str) -> dict:
    """Sample and lost-sample counts from `perf report --stats`."""
    output = subprocess.run(
        [perf_binary(), "report", "-i", data, "--stats"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
    ).stdout.decode("latin-1")
    stats = {"samples": 0, "lost": 0}
    total = re.search(r"^\s*SAMPLE events:\s*(\d+)", output, re.M)
    lost = re.search(r"^\s*LOST_SAMPLES events:\s*(\d+)|^\s*LOST events:\s*(\d+)", output, re.M)
    if total:
        stats["samples"] = int(total.group(1))
    if lost:
        stats["lost"] = int(lost.group(1) or lost.group(2))
    return stats


def event_names(data: str) -> List[str]:
    """The events a recording holds, as `perf evlist` names them."""
    output = subprocess.run(
        [perf_binary(), "evlist", "-i", data],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
    ).stdout.decode("latin-1")
    return [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("#")]
