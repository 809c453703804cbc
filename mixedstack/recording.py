"""The files of one recording: `perf.data` and the folder kept beside it.

    perf.data              what perf recorded (after `perf inject --jit` when needed)
    perf.data.d/buildid/   perf's build-id cache for this recording: the jitted-*.so
                           files that `perf inject --jit` made, and the vDSO
    perf.data.d/tmp/       the perf maps and jitdumps the run wrote to /tmp
    perf.data.d/meta.json  how it was recorded (mode, interpreter, command, status)

Keeping the build-id cache here (perf --buildid-dir) instead of ~/.debug means fold
works after /tmp is cleaned or on another machine, and ~/.debug does not grow.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
from typing import Iterator, List, Optional

MAP_FILE = re.compile(r"^perf-(\d+)\.map$")
DUMP_FILE = re.compile(r"^jit-(\d+)\.dump$")
JITTED_FILE = re.compile(r"^jitted-(\d+)-\d+\.so$")
TMP = "/tmp"


class Recording:
    def __init__(self, data: str):
        self.data = data
        self.folder = data + ".d"
        # perf ignores a relative --buildid-dir: always give it an absolute one
        self.buildid_dir = os.path.abspath(os.path.join(self.folder, "buildid"))
        self.tmp_dir = os.path.join(self.folder, "tmp")
        self.meta_path = os.path.join(self.folder, "meta.json")
        self.raw = os.path.join(self.folder, "raw.data")

    def exists(self) -> bool:
        return os.path.exists(self.data) or os.path.exists(self.folder)

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

    def adopt_tmp_files(self, pids: set, since: float, move: bool = True) -> List[str]:
        """Move the perf maps and jitdumps of `pids` written since `since` out of /tmp.

        CPython never deletes them, and perf inject leaves its jitted-*.so beside
        the dump (they are already copied into our build-id cache): all of it goes.
        """
        moved = []
        os.makedirs(self.tmp_dir, exist_ok=True)
        for name in os.listdir(TMP):
            match = MAP_FILE.match(name) or DUMP_FILE.match(name) or JITTED_FILE.match(name)
            if not match or int(match.group(1)) not in pids:
                continue
            path = os.path.join(TMP, name)
            try:
                if os.path.getmtime(path) < since:
                    continue  # an older process that happened to have the same pid
                if JITTED_FILE.match(name):
                    os.remove(path)
                elif move:
                    shutil.move(path, os.path.join(self.tmp_dir, name))
                else:
                    shutil.copyfile(path, os.path.join(self.tmp_dir, name))
                    moved.append(name)
            except OSError:
                pass
        return moved

    def prune_buildid_cache(self) -> None:
        """Keep only what this run created (jitted code) and the vDSO.

        perf also copies every DSO with samples (libpython, libc, kernel symbols:
        ~50 MB); those exist on the machine, and perf falls back to them.
        """
        if not os.path.isdir(self.buildid_dir):
            return
        for entry in os.listdir(self.buildid_dir):
            if entry in ("tmp", "[vdso]", ".build-id"):
                continue
            path = os.path.join(self.buildid_dir, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        links = os.path.join(self.buildid_dir, ".build-id")
        for link in glob.glob(os.path.join(links, "*", "*")):
            if os.path.islink(link) and not os.path.exists(link):
                os.remove(link)

    @contextlib.contextmanager
    def perf_maps_in_tmp(self) -> Iterator[None]:
        """perf reads perf maps only from /tmp/perf-PID.map: lend ours while folding.

        Only names that are free in /tmp are lent, and they are removed afterwards.
        """
        lent = []
        try:
            for path in glob.glob(os.path.join(self.tmp_dir, "perf-*.map")):
                target = os.path.join(TMP, os.path.basename(path))
                if not os.path.exists(target):
                    shutil.copyfile(path, target)
                    lent.append(target)
            yield
        finally:
            for target in lent:
                with contextlib.suppress(OSError):
                    os.remove(target)
