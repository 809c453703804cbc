"""A recording's samples, unwound once and kept beside it: `perf script` runs once.

    perf.data --perf script--> text --parse--> samples --Writer--> perf.data.d/samples.bin
    perf.data.d/samples.bin --read()--> the same samples, in the same order

perf script unwinds every DWARF sample again each time it runs (~45 us a sample here,
the slowest step of fold); parsing its text is the next. What they give is kept here,
compactly, and every later fold, report, flamegraph or diff reads that instead.

The file is a run of blocks, so that it can grow as a recording does. Each block:

    magic "MSXB", version, then 7 counts (u32): frames, their bytes, threads, their
                    bytes, stacks, frame ids, samples
    new frames      `pc NUL symbol NUL dso` of frames not seen in earlier blocks, NUL-joined
    new threads     `comm NUL pid NUL tid NUL event` likewise ("" event: a header without one)
    new stacks      their lengths (u32), then their frames' ids (u32), leaf first
    samples         time (i64, in the text's last digit; -1: none), period (i64),
                    thread id (u32), stack id (u32): four arrays of the block's samples

Tables are shared by all blocks (ids go on counting), so a stack seen in the first
minute costs nothing in the tenth: ~24 bytes a sample and the stacks' few distinct
shapes. samples.bin.json says which perf.data the file is of (identity(): its size and
a digest of its ends) and how its times read; a file of another version, or of a perf.data that changed, is not
read (nor trusted): fold goes back to perf script and writes it again.

Standard library only.
"""
from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from mixedstack.model import Frame, Sample
from mixedstack.perf.parse import ProcessLabel, parse, perl_true
from mixedstack.perf.text import Text

VERSION = 1
MAGIC = b"MSXB"
HEAD = struct.Struct("<4sI7I")
NONE = -1  # a sample without a time
TIME = re.compile(r"^(\d+)\.(\d+)$", re.ASCII)
SAMPLES_FILE = "samples.bin"  # its index: samples.bin.json
SWITCHES_FILE = "switches.txt"  # the context switches' perf script text (offcpu.Switches)
SYSCALLS_FILE = "syscalls.bin"  # every system call of a recording made with --syscalls (perf/syscalls.Calls)
KEPT_PREFIXES = (SAMPLES_FILE, SWITCHES_FILE, SYSCALLS_FILE)
BLOCK_SAMPLES = 50_000  # samples a block holds: what one write adds to memory


class AllEvents:
    """An event filter that takes every event: what is kept is every sample."""

    @staticmethod
    def accepts(event: str) -> bool:
        return True


# the label samples are parsed with to be kept: never false to Perl, so none is dropped;
# read() labels them as asked
KEEP_LABEL = ProcessLabel(include_tid=True)


class Unstorable(Exception):
    """A sample this format cannot give back exactly (an odd time text): no file is kept."""


def _little(values: array.array) -> bytes:
    """An array's bytes, little-endian whatever this machine's order."""
    if sys.byteorder != "little":
        values = array.array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class Writer:
    """Samples in, blocks out (to `path`), then `finish` names the perf.data they are of.
    The file is written under a temporary name and renamed into place at the end, so a
    reader never sees half of one."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, SAMPLES_FILE)
        self.frames: Dict[Frame, int] = {}
        self.threads: Dict[Tuple[str, str, str, str], int] = {}
        self.stacks: Dict[object, int] = {}  # a Frames' key (or the frames' tuple) -> stack id
        self.shapes: Dict[Tuple[int, ...], int] = {}
        self.decimals: Optional[int] = None
        self.count = 0
        self.broken = False  # abandoned: nothing is kept
        self._reset()
        # a name of its own: two folds of one recording at once each write theirs
        fd, self.partial = tempfile.mkstemp(prefix=SAMPLES_FILE + ".", suffix=".part", dir=folder)
        self.out = os.fdopen(fd, "wb")

    def _reset(self) -> None:
        self.new_frames: List[bytes] = []
        self.new_threads: List[bytes] = []
        self.new_lengths = array.array("I")
        self.new_ids = array.array("I")
        self.times, self.periods = array.array("q"), array.array("q")
        self.who, self.which = array.array("I"), array.array("I")

    def add(self, sample: Sample) -> None:
        frames = sample.frames
        key = getattr(frames, "key", None)
        stack = self.stacks.get(key) if key is not None else None
        if stack is None:
            stack = self._stack(frames)
            if key is not None:
                self.stacks[key] = stack
        thread_key = (sample.comm, sample.pid, sample.tid, sample.event or "")
        thread = self.threads.get(thread_key)
        if thread is None:
            thread = self.threads[thread_key] = len(self.threads)
            self.new_threads.append("\0".join(thread_key).encode("latin-1"))
        self.times.append(self._time(sample.time))
        self.periods.append(sample.period)
        self.who.append(thread)
        self.which.append(stack)
        self.count += 1
        if len(self.times) >= BLOCK_SAMPLES:
            self._flush()

    def parsed(self, text: Text, on_unrecognized: Optional[Callable[[str], None]] = None) -> Iterator[Sample]:
        """perf script's text parsed: every sample (of every event, labelled KEEP_LABEL),
        kept as it passes. A sample that cannot be kept abandons the file (`broken`);
        the samples go on."""
        for sample in parse(text, KEEP_LABEL, AllEvents, on_unrecognized=on_unrecognized):
            if not self.broken:
                try:
                    self.add(sample)
                except (Unstorable, OSError):
                    self.abandon()
            yield sample

    def _stack(self, frames: List[Frame]) -> int:
        ids = []
        for frame in frames:
            known = self.frames.get(frame)
            if known is None:
                known = self.frames[frame] = len(self.frames)
                self.new_frames.append("\0".join(frame).encode("latin-1"))
            ids.append(known)
        shape = tuple(ids)
        stack = self.shapes.get(shape)
        if stack is None:
            stack = self.shapes[shape] = len(self.shapes)
            self.new_lengths.append(len(ids))
            self.new_ids.extend(ids)
        return stack

    def _time(self, text: str) -> int:
        if not text:
            return NONE
        match = TIME.match(text)
        decimals = len(match.group(2)) if match else None
        if self.decimals is None:
            self.decimals = decimals
        if decimals is None or decimals != self.decimals:
            raise Unstorable("a time of another form: %r" % text)
        return int(match.group(1) + match.group(2))

    def _flush(self) -> None:
        frames, threads = b"\0".join(self.new_frames), b"\0".join(self.new_threads)
        self.out.write(HEAD.pack(MAGIC, VERSION, len(self.new_frames), len(frames), len(self.new_threads),
                                 len(threads), len(self.new_lengths), len(self.new_ids), len(self.times)))
        for part in (frames, threads, self.new_lengths, self.new_ids, self.times, self.periods, self.who, self.which):
            self.out.write(part if type(part) is bytes else _little(part))
        self._reset()

    def finish(self, data: str) -> None:
        """The samples are all of `data`'s: the file takes its place beside it."""
        if self.broken:
            return
        self._flush()
        self.out.close()
        os.replace(self.partial, self.path)
        _write_index(self.folder, SAMPLES_FILE, {"version": VERSION, "of": identity(data), "samples": self.count,
                                                 "decimals": self.decimals or 0})

    def abandon(self) -> None:
        self.broken = True
        self.out.close()
        with contextlib.suppress(OSError):
            os.remove(self.partial)


IDENTITY_BYTES = 1 << 16


def identity(data: str) -> List[object]:
    """What tells a perf.data apart from another: its size and a digest of its first and
    last 64 KB (its header, its first records, its last ones and its feature sections:
    record, perf inject and a new recording under the same name all change them). Not
    its mtime or inode: a recording copied elsewhere keeps what was kept of it."""
    with open(data, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.sha1(f.read(IDENTITY_BYTES))
        if size > IDENTITY_BYTES:
            f.seek(max(IDENTITY_BYTES, size - IDENTITY_BYTES))
            digest.update(f.read(IDENTITY_BYTES))
    return [size, digest.hexdigest()]


def kept(folder: str, data: str) -> Optional[dict]:
    """The index of `data`'s kept samples in `folder`, or None when there are none
    (or none that are still `data`'s, or of this version)."""
    return _index(folder, data, SAMPLES_FILE)


def keep_text(folder: str, data: str, name: str, text: bytes) -> None:
    """Keep another pass's text of `data` (the context switches' perf script) as `name`."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    _write_whole(os.path.join(folder, name), text)
    _write_index(folder, name, {"version": VERSION, "of": identity(data)})


def kept_text(folder: str, data: str, name: str) -> Optional[bytes]:
    """That text, if it is still `data`'s."""
    if _index(folder, data, name) is None:
        return None
    try:
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def _write_index(folder: str, name: str, index: dict) -> None:
    _write_whole(os.path.join(folder, name + ".json"), json.dumps(index).encode())


def _write_whole(path: str, content: bytes) -> None:
    """`path` written under a name of its own first, then renamed: readers see all or none."""
    fd, partial = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".part", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise


def _index(folder: str, data: str, name: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, name + ".json")) as f:
            index = json.load(f)
        if index.get("version") != VERSION or index.get("of") != identity(data) \
                or not os.path.isfile(os.path.join(folder, name)):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return index


def clear(folder: str) -> None:
    """Forget the kept samples (their perf.data is being written again)."""
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith(KEPT_PREFIXES):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))


class Frames(list):
    """One kept stack's frames, shared by its samples; `key` tells Folder which stack
    they are without hashing them (as parse.Frames does)."""

    __slots__ = ("key",)


def read(folder: str, index: dict, label: Callable[[str, str, str], str],
         accepts: Callable[[str], bool]) -> Iterator[Sample]:
    """The kept samples in their order, each as parse gave it: labelled by `label`
    (samples whose label Perl would call false dropped, as parse drops them), of the
    events `accepts` takes (asked in the samples' order, as parse asks)."""
    blocks = _blocks(folder, label)
    decimals = index.get("decimals", 0)
    scale = 10 ** decimals
    stamp = "%%d.%%0%dd" % decimals
    for threads, stacks, times, periods, who, which in blocks:
        for time, period, thread, stack in zip(times, periods, who, which):
            comm, pid, tid, event, name = threads[thread]
            if event is not None and not accepts(event):
                continue
            if name is None:
                continue
            text = "" if time == NONE else (stamp % divmod(time, scale) if decimals else "%d" % time)
            yield Sample(name, period, event, stacks[stack], comm, pid, tid, text)


def _blocks(folder: str, label: Callable[[str, str, str], str]) -> list:
    """Every block read (ValueError for a damaged file, before any sample is given)."""
    frames: List[Frame] = []
    threads: List[Tuple[str, str, str, Optional[str], Optional[str]]] = []  # comm, pid, tid, event, label
    stacks: List[Frames] = []
    blocks = []
    with open(os.path.join(folder, SAMPLES_FILE), "rb") as f:
        blob = f.read()
    at = 0
    while at < len(blob):
        if at + HEAD.size > len(blob):
            raise ValueError("a damaged file of kept samples")
        magic, version, n_frames, frame_bytes, n_threads, thread_bytes, n_stacks, n_ids, n_samples = \
            HEAD.unpack_from(blob, at)
        if magic != MAGIC or version != VERSION:
            raise ValueError("not a block of kept samples")
        at += HEAD.size
        frames.extend(Frame(*fields) for fields in _strings(blob, at, n_frames, frame_bytes, 3))
        at += frame_bytes
        threads.extend((fields[0], fields[1], fields[2], fields[3] or None, _label(label, *fields[:3]))
                       for fields in _strings(blob, at, n_threads, thread_bytes, 4))
        at += thread_bytes
        lengths, at = _take(blob, at, "I", n_stacks)
        ids, at = _take(blob, at, "I", n_ids)
        position = 0
        for length in lengths:
            stack = Frames([frames[i] for i in ids[position:position + length]])
            stack.key = ("kept", len(stacks))
            stacks.append(stack)
            position += length
        columns = []
        for code in "qqII":
            column, at = _take(blob, at, code, n_samples)
            columns.append(column)
        if max(columns[2], default=-1) >= len(threads) or max(columns[3], default=-1) >= len(stacks):
            raise ValueError("a damaged file of kept samples")
        blocks.append((threads, stacks, *columns))
    return blocks


def _label(label: Callable[[str, str, str], str], comm: str, pid: str, tid: str) -> Optional[str]:
    name = label(comm, pid, tid)
    return name if perl_true(name) else None  # parse drops the sample


def _strings(blob: bytes, at: int, count: int, size: int, fields: int) -> List[List[str]]:
    """`count` entries of `fields` strings, all NUL-separated, in `size` bytes at `at`."""
    if not count:
        return []
    parts = blob[at:at + size].decode("latin-1").split("\0")
    if len(parts) != count * fields:
        raise ValueError("a damaged table of kept samples")
    return [parts[i:i + fields] for i in range(0, len(parts), fields)]


def _take(blob: bytes, at: int, code: str, count: int) -> Tuple[array.array, int]:
    values = array.array(code)
    end = at + count * values.itemsize
    if end > len(blob):
        raise ValueError("a damaged file of kept samples")
    values.frombytes(blob[at:end])
    if sys.byteorder != "little":
        values.byteswap()
    return values, end
