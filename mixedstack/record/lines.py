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
from typing import List, Optional

LINES_FILE = "lines.jsonl"  # in the recording's folder
COMPANION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "companion.py")
FIRST_VERSION = (3, 14)


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
    """The companion process for one target: started with the target, stopped with the
    recording."""

    def __init__(self, python: str, folder: str, rate: int):
        self.python, self.rate = python, rate
        self.output = os.path.join(folder, LINES_FILE)
        self.process: Optional[subprocess.Popen] = None

    def start(self, pid: int) -> None:
        # -I -S: nothing of the target's environment or site-packages runs in it
        self.process = subprocess.Popen([self.python, "-I", "-S", COMPANION, str(pid), self.output, str(self.rate)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)

    def stop(self) -> dict:
        """Stop it; what it did: {snapshots, failed, cpu_s} or {error}."""
        if self.process is None:
            return {"error": "not started"}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.outcome()

    def outcome(self) -> dict:
        try:
            with open(self.output, "rb") as f:
                f.seek(max(0, os.path.getsize(self.output) - 512))
                last = f.read().splitlines()[-1:]
            ended = json.loads(last[0]) if last else None
        except (OSError, ValueError):
            ended = None
        if ended and ended[0] == "end":
            return {"snapshots": ended[1], "failed": ended[2], "cpu_s": ended[3]}
        if ended and ended[0] == "error":
            return {"error": ended[1]}
        return {"error": "the companion sampler wrote nothing (exit status %s)" % self.process.returncode}
