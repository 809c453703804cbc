"""While perf records: take each piece it closes into the recording, and count.

perf record writes `raw.data` in the recording's folder and, with --switch-output, renames
it `raw.data.TIMESTAMP` each time it starts the next piece. The Collector (a thread)
takes each closed piece into perf.data (perf/pieces.py) and removes it, so the disk holds
the recording so far plus at most two pieces. It also counts what the status line shows:
samples and lost samples (those of the piece perf is writing read as they arrive), the
disk the recording uses, and how long it has run.
"""
from __future__ import annotations

import contextlib
import glob
import os
import struct
import threading
import time
from typing import Callable, List, NamedTuple, Optional

from mixedstack.perf.data import PERF_MAGIC, PERF_RECORD_LOST, PERF_RECORD_LOST_SAMPLES, PERF_RECORD_SAMPLE
from mixedstack.perf.pieces import Assembly

POLL = 0.2  # seconds between looks for a closed piece


class Status(NamedTuple):
    samples: int
    lost: int
    disk: int  # bytes the recording uses on disk now (its pieces included)
    seconds: float


class Collector(threading.Thread):
    def __init__(self, raw: str, data: str, folder: str,
                 show: Optional[Callable[[Status], None]] = None):
        super().__init__(daemon=True)
        self.raw, self.data, self.folder = raw, data, folder
        self.assembly = Assembly(data)
        self.show = show
        self.failed: Optional[OSError] = None  # why a piece could not be taken (the disk full)
        self.on_failure: Callable[[], None] = lambda: None  # stop perf
        self.perf = None  # perf's process, once it runs
        self.free_when_perf_ended: Optional[int] = None  # bytes free on the disk then
        self._stop_event = threading.Event()
        self._began = time.monotonic()
        self._current = Counter(raw)

    def run(self) -> None:
        while not self._stop_event.wait(POLL):
            if self.perf is not None and self.free_when_perf_ended is None and self.perf.poll() is not None:
                self.free_when_perf_ended = free_space(self.folder)  # before a piece taken frees some
            self.take()
            if self.show is not None:
                self.show(self.status())
        if self.show is not None:
            self.show(None)  # done: the line goes

    def take(self, also_unclosed: bool = False) -> None:
        """Take every closed piece, oldest first; `also_unclosed`: perf has ended, and
        a piece it left under its working name (killed, or stopped by a full disk) too."""
        pieces = sorted(glob.glob(glob.escape(self.raw) + ".[0-9]*"))
        if also_unclosed and os.path.exists(self.raw):
            pieces.append(self.raw)
        for piece in pieces:
            if self.failed is None:
                try:
                    self.assembly.add(piece)
                except OSError as error:
                    self.failed = error
                    self.on_failure()
            with contextlib.suppress(OSError):
                os.remove(piece)  # taken, or lost to a full disk: either way, room for the rest

    def stop(self) -> None:
        """perf has ended: take what is left (the thread ends)."""
        self._stop_event.set()
        if self.is_alive():
            self.join()
        self.take(also_unclosed=True)

    def status(self) -> Status:
        tidier = self.assembly.tidier
        samples, lost = self._current.count()
        return Status(tidier.samples + samples, max(tidier.lost_records, tidier.lost_samples) + lost,
                      disk_used([self.data, self.folder]), time.monotonic() - self._began)


class Counter:
    """Samples and lost samples in the piece perf is writing, read as perf appends to it
    (record headers only; a new piece starts the count again)."""

    def __init__(self, path: str):
        self.path = path
        self.inode = None
        self.position = 0
        self.samples = self.lost = 0

    def count(self) -> tuple:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return 0, 0
        try:
            inode = os.fstat(fd).st_ino
            if inode != self.inode:
                self.inode, self.samples, self.lost = inode, 0, 0
                head = os.pread(fd, 48, 0)
                if len(head) < 48 or not head.startswith(PERF_MAGIC):
                    self.inode = None
                    return 0, 0
                self.position = struct.unpack_from("<Q", head, 40)[0]
            written = os.fstat(fd).st_size
            while self.position + 16 <= written:
                head = os.pread(fd, 24, self.position)
                record_type, _, size = struct.unpack_from("<IHH", head)
                if size < 8 or self.position + size > written:
                    break
                if record_type == PERF_RECORD_SAMPLE:
                    self.samples += 1
                elif record_type == PERF_RECORD_LOST:
                    self.lost += struct.unpack_from("<Q", head, 16)[0]
                elif record_type == PERF_RECORD_LOST_SAMPLES:
                    self.lost += struct.unpack_from("<Q", head, 8)[0]
                self.position += size
        finally:
            os.close(fd)
        return self.samples, self.lost


def free_space(folder: str) -> Optional[int]:
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    return found.f_bavail * found.f_frsize


def disk_used(paths: List[str]) -> int:
    """Bytes of disk the files at and under `paths` take (holes take none)."""
    total = 0
    for path in paths:
        for folder, _, files in os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [], [os.path.basename(path)])]:
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def status_line(status: Status) -> str:
    minutes, seconds = divmod(int(status.seconds), 60)
    return "mixedstack: recording %d:%02d, %s samples%s, %s on disk" % (
        minutes, seconds, format(status.samples, ","),
        " (%s lost)" % format(status.lost, ",") if status.lost else "", megabytes(status.disk))


def megabytes(size: int) -> str:
    return "%.1f MB" % (size / 1e6)
