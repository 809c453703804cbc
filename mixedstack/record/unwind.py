"""While perf records: unwind what the recording holds so far, so that record leaves its
samples kept (store.py) and no later command runs perf script over them again.

    pieces --Assembly--> perf.data --every few seconds: the new records--> side file
           --perf script (niced)--> samples --store.Writer--> perf.data.d/samples.bin

A batch is the records the recording gained since the last one. perf script reads it
from a side file: the recording's header, the maps, processes and threads of the batches
before (what a sample's addresses need: not their samples, context switches or lost
events, NOT_CONTEXT), and the batch's own records; it unwinds those samples only, whatever the recording's length. An exec that
comes later and makes earlier maps stale (rewrite.Tidier patches them in the
recording) patches the copies here too.

Python frames need their names where the batch is unwound:
- perf maps (-X perf): written line by line, read by perf script from /tmp as it goes;
- jitdumps (the agent, -X perf_jit): their maps come from `perf inject --jit`, run on
  copies of the dumps at each batch. The agent writes its dump as it goes; CPython
  writes its own through a stdio buffer that record's fork guard flushes as each function
  first runs (sys.monitoring), which its mark (tmpfiles.FLUSH_MARK) says. The samples of
  a process whose dump is buffered without that mark wait for the end (the batch stops
  before the first).

At the end, what is left is unwound from the finished recording (its jitted code's maps
perf inject made from the whole dumps), and the file is closed under perf.data's
identity: the samples are kept exactly as perf script gives them from perf.data.
"""
from __future__ import annotations

import bisect
import contextlib
import glob
import os
import re
import shutil
import struct
import threading
import time
from typing import Dict, List, Optional, Tuple

from mixedstack import store
from mixedstack.perf import command as perf
from mixedstack.perf import data as perfdata
from mixedstack.perf.data import DATA_SECTION
from mixedstack.perf.data import PERF_RECORD_SAMPLE, pid_and_time, records
from mixedstack.perf.data import strip_stacks
from mixedstack.perf.pieces import Assembly, feature_sections, side_file
from mixedstack.perf.syscalls import Decoder
from mixedstack.perf.recording import Recording
from mixedstack.perf.text import Text
from mixedstack.record import tmpfiles
from mixedstack.perf.tmpview import perf_view

BATCH_SECONDS = 2.0  # between batches at least; more when a batch took long
CPU_SHARE = 0.25  # of one core a batch's perf script may take, on average
SIDE_FILE = "unwind.data"
STRIPPED_FILE = "stripped.part"
JITDUMP = re.compile(rb"\./jit-(\d+)\.dump\0")
LIVE_DUMP = "/tmp/jit-%d.dump"
# records a later batch's samples do not need (what perf needs of earlier ones: the
# maps, the processes and threads): samples, and the many per-event ones of perf's own
# bookkeeping (context switches: two a switch with --off-cpu; lost and throttled events)
NOT_CONTEXT = frozenset([perfdata.PERF_RECORD_SAMPLE, perfdata.PERF_RECORD_LOST, perfdata.PERF_RECORD_THROTTLE,
                         perfdata.PERF_RECORD_UNTHROTTLE, perfdata.PERF_RECORD_LOST_SAMPLES, perfdata.PERF_RECORD_SWITCH,
                         perfdata.PERF_RECORD_SWITCH_CPU_WIDE, perfdata.PERF_RECORD_FINISHED_ROUND])
MARGIN_NS = 10_000_000  # a function's code load is written just before it first runs


def flushed_as_it_goes(pid: int, uid: int) -> bool:
    """Whether `pid` flushes its jitdump as each function first runs (the fork guard's
    mark, a file of the target's user, says so)."""
    return tmpfiles.owned(tmpfiles.FLUSH_MARK % pid, uid)


class Unwinder(threading.Thread):
    """Unwinds the recording `assembly` writes, batch by batch, into `writer`."""

    def __init__(self, assembly: Assembly, recording: Recording, writer: store.Writer,
                 jitdumps_buffered: bool, inject, uid: int, prepare=lambda: None, stripped: bool = False,
                 listener=None, every: float = BATCH_SECONDS, share: float = CPU_SHARE, nice: bool = True):
        super().__init__(daemon=True)
        self.assembly, self.recording, self.writer = assembly, recording, writer
        self.jitdumps_buffered = jitdumps_buffered  # CPython's own dumps: flushed now and then
        self.inject = inject  # (head, features, jitdumps) -> (maps, build ids, complaint), or None
        self.prepare = prepare  # before each batch (record lends new files' debug symbols)
        self.uid = uid  # the target's user: its files in /tmp are taken only if theirs (tmpfiles.py)
        self.listener = listener  # told of each batch's samples (a live view: cli/top.py)
        self.every, self.share = every, share  # seconds between batches at least; CPU share at most
        self.nice = nice  # perf script on idle cores only (a live view's does not wait for them)
        self.done = 0  # bytes of the pieces' records unwound (from where they begin)
        self.context = bytearray()  # the records of the batches unwound that later ones need
        # each record in the context: (position in the pieces, in the context, in the
        # stripped file or -1, size)
        self.placed: List[Tuple[int, int, int, int]] = []
        self.failed: Optional[str] = None  # why batches stopped (the end unwinds the rest)
        # every record unwound, its stack copy left out (strip_stacks): for the switches'
        # text at the end (--off-cpu) and for a recording that drops its copies
        self.stripped = os.path.join(recording.folder, STRIPPED_FILE) if stripped else None
        self.batches = 0
        self.cpu = 0.0  # CPU seconds of the batches' perf script and perf inject
        # record --syscalls: every call's entry and exit records are taken out of the
        # batches (perf script would print two lines a call) into a table of calls
        self.syscalls: Optional[Decoder] = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        assembly.on_patch = self.patched

    # -- while recording

    def run(self) -> None:
        if self.nice:  # this thread's own work (copies, parsing) too: nice is a thread's on Linux
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        wait = self.every
        while not self._stop_event.wait(wait):
            began = time.monotonic()
            with self._lock:
                if self.failed is not None:
                    return
                try:
                    self._batch_while_recording()
                except Exception as error:  # never record's end: the first fold unwinds instead
                    self.failed = "%s: %s" % (type(error).__name__, error)
                    return
            wait = max(self.every, (time.monotonic() - began) / self.share)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()

    def patched(self, position: int, data: bytes) -> None:
        """The recording's bytes at `position` (from where the pieces begin) were rewritten:
        so is the copy of that record here, if it is one (after the batch under way)."""
        with self._lock:
            self._patch(position, data)

    def _patch(self, position: int, data: bytes) -> None:
        index = bisect.bisect_right(self.placed, (position, float("inf"), 0, 0)) - 1
        if index >= 0:
            at, copied, stripped, size = self.placed[index]
            if at <= position and position + len(data) <= at + size:
                self.context[copied + position - at:copied + position - at + len(data)] = data
                if stripped >= 0:
                    with open(self.stripped, "r+b") as f:
                        os.pwrite(f.fileno(), data, stripped + position - at)

    def _batch_while_recording(self) -> None:
        assembly = self.assembly
        if assembly.head is None or not assembly.features:
            return
        begin = assembly.start  # where the pieces begin (until finish moves them)
        end = assembly.end - begin
        if end <= self.done:
            return
        self.prepare()
        with open(assembly.path, "rb") as f:
            body = os.pread(f.fileno(), end - self.done, begin + self.done)
        maps, dumps = b"", self._jitdumps()
        limits = self._copy_dumps(dumps) if dumps and self.inject is not None else {}
        cut = self._ready(assembly.head, body, limits)
        if not cut:
            return
        if dumps:
            if self.inject is None:
                return
            maps, _, complaint = self.inject(assembly.head, assembly.features, dumps, scratch=True)
            if complaint:
                return  # the end unwinds these
        self._unwind(assembly.head, assembly.features, maps, body[:cut], None)

    def _jitdumps(self) -> List[bytes]:
        return list(self.assembly.tidier.jitdumps)

    def _copy_dumps(self, dumps: List[bytes]) -> Dict[int, int]:
        """Copies of the live jitdumps where perf inject reads them; for each process
        whose dump is buffered, the time up to which its copy is whole."""
        limits = {}
        folder = self.recording.tmp_dir
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for record in dumps:
            found = JITDUMP.search(record)
            if not found:
                continue
            pid = int(found.group(1))
            if self.jitdumps_buffered:
                # the copy holds every function run before now (-1: maybe not even those)
                limits[pid] = time.monotonic_ns() - MARGIN_NS if flushed_as_it_goes(pid, self.uid) else -1
            copy = os.path.join(folder, "jit-%d.dump" % pid)
            with contextlib.suppress(OSError, tmpfiles.Refused):
                if os.path.lexists(copy):
                    os.remove(copy)
                tmpfiles.copy_owned(LIVE_DUMP % pid, copy, self.uid)
        repair = getattr(self.recording, "repair_jitdumps", None)
        if repair is not None:
            repair()
        return limits

    def _ready(self, head: bytes, body: bytes, limits: Dict[int, int]) -> int:
        """How many of the batch's bytes can be unwound now: up to the first sample of a
        process whose jitdump was not flushed after it (all of them: no dump is buffered)."""
        if not limits:
            return len(body)
        read = pid_and_time(head)
        if read is None:
            return 0  # the end unwinds them
        for position, kind, _, size in records(body, 0, len(body)):
            if kind == PERF_RECORD_SAMPLE:
                pid, when = read(body, position)
                if pid in limits and when > limits[pid]:
                    return position
        return len(body)

    def _unwind(self, head: bytes, features: dict, maps: bytes, body: bytes, view) -> None:
        """perf script over the side file of `body`; its samples into the writer, then the
        batch's other records into the context."""
        if self.syscalls is None:
            self.syscalls = Decoder(head, features.get(perfdata.HEADER_EVENT_DESC))
        whole = body  # (the context's records keep their places in it)
        body = self.syscalls.feed(body, keep_others=True)  # the same body when there are none
        side = os.path.join(self.recording.folder, SIDE_FILE)
        with open(side, "wb") as f:
            f.write(side_file(head, maps + bytes(self.context) + body, features))
        try:
            before = os.times()
            # the jitted code's files perf inject just wrote are where its maps name them
            # (./jitted-PID-N.so, from the recording's tmp folder); at the end, in the
            # build-id cache, which the recording's build-id table leads perf to
            chunks = perf.script_chunks(os.path.abspath(side), buildid_dir=self.recording.buildid_dir_if_any(),
                                        view=view, kallsyms=self.recording.kallsyms(), nice=self.nice,
                                        cwd=self.recording.tmp_dir if maps and view is None else None)
            samples = list(self.writer.parsed(Text(lambda ready: chunks)))
            after = os.times()
            self.cpu += after.children_user + after.children_system - before.children_user - before.children_system
        finally:
            with contextlib.suppress(OSError):
                os.remove(side)
        if self.writer.broken:
            raise store.Unstorable("a sample the store cannot keep")
        if self.listener is not None:
            self.listener(samples)
        others = [(position, size) for position, kind, _, size in records(whole, 0, len(whole))
                  if kind not in NOT_CONTEXT]
        copies = [-1] * len(others)  # where each is in the stripped file
        if self.stripped:
            small = strip_stacks(head, body)
            with open(self.stripped, "ab") as f:
                base = f.tell()
                f.write(small)
            copies = [base + position for position, kind, _, _ in records(small, 0, len(small))
                      if kind not in NOT_CONTEXT]
        for (position, size), copy in zip(others, copies):
            self.placed.append((self.done + position, len(self.context), copy, size))
            self.context += whole[position:position + size]
        self.done += len(whole)
        self.batches += 1

    # -- at the end

    def forget_copies(self) -> None:
        """The dumps copied for inject go before record adopts the real ones; so does
        inject's scratch cache."""
        scratch = getattr(self.recording, "scratch_buildid_dir", None)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        for path in glob.glob(os.path.join(glob.escape(self.recording.tmp_dir), "jit-*.dump")):
            with contextlib.suppress(OSError):
                os.remove(path)

    def finish(self, lead: int, switches: bool = False, drop: bool = False) -> bool:
        """Unwind what is left from the finished recording, whose data section begins with
        `lead` bytes of perf inject's maps; keep the file as perf.data's, and with
        `switches` the context switches' text too. `drop`: perf.data becomes its records
        without their stack copies. False: nothing could be kept (the first fold keeps
        the samples instead; perf.data stays as it is)."""
        self.stop()
        if self.failed is not None:
            self.writer.abandon()
            self._forget_stripped()
            return False
        data = self.recording.data
        try:
            with open(data, "rb") as f:
                fd = f.fileno()
                offset, size = struct.unpack_from("<QQ", os.pread(fd, 16, DATA_SECTION))
                head = os.pread(fd, offset, 0)
                maps = os.pread(fd, lead, offset)
                rest = offset + lead + self.done
                body = os.pread(fd, offset + size - rest, rest)
                tail = os.pread(fd, os.fstat(fd).st_size - (offset + size), offset + size)
            features = feature_sections(head, tail, offset + size, base=offset + size)
            if features is None:
                raise ValueError("perf.data's feature sections are cut short")
            if body:
                with perf_view(self.recording.tmp_dir) as view:
                    self._unwind(head, features, maps, body, view)
            small = None
            if self.stripped and (drop or switches):
                with open(self.stripped, "rb") as f:
                    small = side_file(head, maps + f.read(), features)
            if drop and small is not None:
                _replace(data, small)
            self.writer.finish(data)
            if self.syscalls is not None and self.syscalls.recorded:
                store.keep_text(self.recording.folder, data, store.SYSCALLS_FILE, self.syscalls.calls.to_bytes())
            if switches and small is not None:
                self._keep_switches(data, small if not drop else None)
            return True
        except Exception as error:  # never record's end: the first fold unwinds instead
            self.failed = "%s: %s" % (type(error).__name__, error)
            self.writer.abandon()
            return False
        finally:
            self._forget_stripped()

    def _keep_switches(self, data: str, small: Optional[bytes]) -> None:
        """The switches' text (offcpu.Switches), read from the records without their stack
        copies: the same text, from a file a tenth of the size."""
        side = data if small is None else os.path.join(self.recording.folder, SIDE_FILE)
        if small is not None:
            with open(side, "wb") as f:
                f.write(small)
        try:
            store.keep_text(self.recording.folder, data, store.SWITCHES_FILE, perf.switch_events_text(side))
        finally:
            if small is not None:
                with contextlib.suppress(OSError):
                    os.remove(side)

    def _forget_stripped(self) -> None:
        if self.stripped:
            with contextlib.suppress(OSError):
                os.remove(self.stripped)


def _replace(path: str, content: bytes) -> None:
    """`path` becomes `content`, at once (a reader sees the old file or the new one)."""
    new = path + ".new"
    with open(new, "wb", opener=lambda name, flags: os.open(name, flags, 0o600)) as f:
        f.write(content)
    os.replace(new, path)
