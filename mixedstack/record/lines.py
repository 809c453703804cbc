"""Line numbers for CPython 3.14+: a companion sampler beside perf (companion.py, run by
the target's own interpreter) writes which line each Python frame is on, with its time
and thread, into the recording's folder; fold puts the lines into the frames
(analyze/lines.py).

A perf trampoline is one piece of code a function, so perf's samples name functions
only (CPython closed the request for lines through it: python/cpython#134023). 3.14's
`_remote_debugging` reads a live process's frames, lines included, from another process.
It cannot work on 3.8-3.13 (no such module), without ptrace rights over the target, or
where the target turned remote debugging off (-X disable-remote-debug,
PYTHON_DISABLE_REMOTE_DEBUG); record then says why in one line and records as before.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Dict, List, Optional

from mixedstack.perf.recording import LINES_FILE, TIDS
from mixedstack.record.attach.process import Place, namespace, own_id, place_of

COMPANION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "companion.py")
FIRST_VERSION = (3, 14)
# An attached tree's Python processes one companion follows: each costs it a snapshot a
# period (tens of microseconds); a tree of 200 workers would keep it busy all the time
MAX_PROCESSES = 16


def why_not(wanted: Optional[bool], interp, command: List[str], env: dict) -> Optional[str]:
    """Why the companion cannot run for this target (None: it can)."""
    if wanted is False:
        return "off (--no-lines)"
    if interp is None or interp.version is None:
        return "lines need CPython 3.14+ (its _remote_debugging module): the target is not a CPython record knows"
    if tuple(interp.version[:2]) < FIRST_VERSION:
        return "lines need CPython 3.14+ (its _remote_debugging module); the target is %d.%d" % tuple(interp.version[:2])
    words = " ".join(command)
    if "disable-remote-debug" in words or env.get("PYTHON_DISABLE_REMOTE_DEBUG"):
        return "the target turned remote debugging off (-X disable-remote-debug or PYTHON_DISABLE_REMOTE_DEBUG)"
    return None


class Companion:
    """The companion process for a target (a launched command, or the Python processes
    of an attached tree): started with it, stopped with the recording."""

    def __init__(self, python: str, folder: str, rate: int):
        self.python, self.rate = python, rate
        self.output = os.path.join(folder, LINES_FILE)
        self.process: Optional[subprocess.Popen] = None
        self.failed = "not started"
        self.places: List[Place] = []
        self.tids: Dict[int, int] = {}  # a container's thread ids -> ours

    def start(self, *pids: int) -> None:
        """Follow `pids` (at most MAX_PROCESSES of them, all in the first one's
        namespaces: one companion, in there, reads them all)."""
        first = place_of(pids[0])
        self.places = [place for place in map(place_of, pids) if same_namespaces(place.pid, first.pid)][:MAX_PROCESSES]
        # -I -S: nothing of the target's environment or site-packages runs in it
        if first.contained:
            # A target in a container: its interpreter (its paths, its libc) runs in
            # there, the script as text, the snapshots out through stdout
            with open(COMPANION) as f:
                command = first.enter() + [self.python, "-I", "-S", "-c", f.read()]
        else:
            command = [self.python, "-I", "-S", COMPANION]
        command += [",".join(str(place.nspid) for place in self.places), str(self.rate)]
        try:
            with open(self.output, "wb") as out:
                self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out,
                                                stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            self.failed = "cannot run %s: %s" % (command[0], error.strerror or error)
        self._note_tids()

    def _note_tids(self) -> None:
        """A container's thread ids as ours, while its threads are there to ask (at the
        start and the end: a thread that lived only in between keeps no lines)."""
        for place in self.places:
            if place.contained:
                self.tids.update(container_tids(place.pid))

    def stop(self) -> dict:
        """Stop it; what it did: {snapshots, failed, cpu_s} or {error}."""
        if self.process is None:
            return {"error": self.failed}
        self._note_tids()
        self.process.stdin.close()  # its stop, which nsenter's child (in a container) gets too
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its whole group: in a container, nsenter's child is it
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.tids:
            with open(self.output, "a") as out:
                out.write(json.dumps([TIDS, {str(theirs): ours for theirs, ours in self.tids.items()}]) + "\n")
        return self.outcome()

    def outcome(self) -> dict:
        try:
            with open(self.output, "rb") as f:
                start = max(0, os.path.getsize(self.output) - (1 << 16))
                f.seek(start)
                rows = f.read().splitlines()[1 if start else 0:]  # (the first one cut short)
            last = [row for row in rows if not row.startswith(b'["%s"' % TIDS.encode())][-1:]
            ended = json.loads(last[0]) if last else None
        except (OSError, ValueError):
            ended = None
        if ended and ended[0] == "end":
            return {"snapshots": ended[1], "failed": ended[2], "cpu_s": ended[3]}
        if ended and ended[0] == "error":
            return {"error": ended[1]}
        return {"error": "the companion sampler wrote nothing (exit status %s)" % self.process.returncode}


def same_namespaces(pid: int, other: int) -> bool:
    """Whether two processes share their mount and pid namespaces (one companion, run in
    there, reads both)."""
    try:
        return all(namespace(pid, kind) == namespace(other, kind) for kind in ("mnt", "pid"))
    except OSError:
        return False


def container_tids(pid: int) -> Dict[int, int]:
    """{its thread id in its pid namespace: ours} for each thread of `pid` now."""
    found = {}
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return found
    for tid in tasks:
        try:
            theirs = own_id("/proc/%d/task/%s/status" % (pid, tid))
        except (OSError, ValueError):
            continue
        if theirs is not None:
            found[theirs] = int(tid)
    return found
