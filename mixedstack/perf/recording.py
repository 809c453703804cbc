"""The files of one recording: `perf.data` and the folder kept beside it.

    perf.data              what perf recorded (after `perf inject --jit` when needed)
    perf.data.d/buildid/   perf's build-id cache for this recording: the jitted-*.so
                           files that `perf inject --jit` made, the vDSO and the
                           kernel's symbols
    perf.data.d/tmp/       the perf maps and jitdumps the run wrote to /tmp
    perf.data.d/agent/     with record --user: the agent the target loaded
    perf.data.d/meta.json  how it was recorded (mode, interpreter, command, status)
    perf.data.d/samples.*  its samples unwound, kept by the first fold (store.py); also
                           for a recording of plain `perf record`, whose folder that makes
    perf.data.d/lines.jsonl (3.14+) the companion sampler's snapshots, frames with their
                           lines (record/lines.py writes it, analyze/lines.py reads it)

Both are their owner's only (0700, files 0600): in DWARF mode perf.data holds
copies of the target's stack memory, as a core dump would.

Keeping the build-id cache here (perf --buildid-dir) instead of ~/.debug means fold
works after /tmp is cleaned or on another machine, and ~/.debug does not grow. What
record puts in the folder is record/keep.py's.
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
from typing import Optional

from mixedstack.perf.data import made_by_record


KERNEL_SYMBOLS = "[kernel.kallsyms]"  # perf's build-id cache folders for them...
VDSO = "[vdso]"  # ... and for the vDSO
LINES_FILE = "lines.jsonl"  # the companion's snapshots, one JSON array a line
TIDS = "tids"  # its last line, for a target in a container: [TIDS, {its thread id: ours}]


class Recording:
    def __init__(self, data: str):
        self.data = data
        self.folder = data + ".d"
        # perf ignores a relative --buildid-dir: always give it an absolute one
        self.buildid_dir = os.path.abspath(os.path.join(self.folder, "buildid"))
        self.tmp_dir = os.path.join(self.folder, "tmp")
        self.meta_path = os.path.join(self.folder, "meta.json")
        self.raw = os.path.join(self.folder, "raw.data")
        self.agent_dir = os.path.join(self.folder, "agent")  # record --user: the agent the target loaded

    def exists(self) -> bool:
        return os.path.exists(self.data) or os.path.exists(self.folder)

    def unfinished(self) -> bool:
        """A folder that an interrupted record left without its perf.data: nothing in it
        folds, so the next record may replace it without asking. A record still running
        holds the folder's lock (lock()): its folder is not unfinished."""
        if not os.path.isdir(self.folder) or os.path.lexists(self.data) or os.path.exists(self.meta_path):
            return False
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def lock(self) -> int:
        """Hold the folder while recording (see unfinished); the descriptor, to close."""
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def unusable_output(self) -> Optional[str]:
        """Why perf.data and perf.data.d/ cannot be written here, or None."""
        if os.path.isdir(self.data):
            return "%s is a folder: give a file name for the recording, e.g. -o %s" % (
                self.data, os.path.join(self.data, "perf.data"))
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            return "%s exists and is not a folder: record under another name with -o" % self.folder
        parent = os.path.dirname(os.path.abspath(self.data))
        if not os.path.isdir(parent):
            return "cannot record to %s: %s %s; choose another -o" % (
                self.data, parent, "is not a folder" if os.path.exists(parent) else "does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            return "cannot record to %s: folder %s is not writable; choose another -o" % (self.data, parent)
        return None

    def remove(self) -> None:
        if os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        if os.path.exists(self.data):
            os.remove(self.data)

    def finished(self) -> bool:
        """perf.data is whole and nothing writes it any more: record's, once it wrote its
        meta.json (of this perf.data), or one of plain `perf record` (no folder beside it;
        not one of record's moved away from its folder, which it needs)."""
        if not os.path.exists(self.meta_path):
            return not os.path.exists(self.folder) and not made_by_record(self.data)
        return self.meta().get("bytes") == os.path.getsize(self.data)

    def buildid_dir_if_any(self) -> Optional[str]:
        return self.buildid_dir if os.path.isdir(self.buildid_dir) else None

    def meta(self) -> dict:
        try:
            with open(self.meta_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def write_meta(self, meta: dict) -> None:
        with open(self.meta_path, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")

    def kallsyms(self) -> Optional[str]:
        """The kernel's symbols as perf record saved them, if it did (once)."""
        found = glob.glob(os.path.join(glob.escape(self.buildid_dir), KERNEL_SYMBOLS, "*", "kallsyms"))
        return found[0] if len(found) == 1 else None
