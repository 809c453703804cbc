"""One perf.data, assembled while perf records it in pieces.

`perf record --switch-output=SIZE` closes its file every SIZE bytes and starts the next:
each piece is a whole perf.data, its DWARF samples carrying --stack-size bytes of stack
whether the stack used them or not (~10x what tidy keeps). Assembly takes each closed
piece, tidies it (rewrite.Tidier: the state a piece needs from the pieces before it is
kept there) and appends its records to the recording. The disk used while recording is
then the recording so far plus the pieces not yet taken, however long the run.

The recording's layout:

    header, events          the first piece's, as perf wrote them
    (room)                  a hole (no disk blocks) for records that must come first:
                            the jitted code's maps, known only when the target has ended
                            (what they leave of it stays a hole)
    data                    every piece's records, in time order
    feature sections        the last piece's, but the build ids of all of them and
                            the first and last sample's times

After each piece the header names the data written so far, with no feature sections:
the recording folds at any moment, whatever stops record. finish() adds the rest.
"""
from __future__ import annotations

import mmap
import os
import struct
from typing import Callable, Dict, Optional

from mixedstack.perf.data import (
    DATA_SECTION, FEATURE_BITS, FEATURES, HEADER_BUILD_ID, PERF_MAGIC, records,
)
from mixedstack.perf.rewrite import Tidier

# bytes of hole before the data: the jitted code's maps, ~180 bytes a code object (16 MB:
# ~90,000 functions run; more, and finish() moves the data up). What is left of it stays
# a hole: no disk, though a copy without --sparse writes it out. It is not given back
# (FALLOC_FL_COLLAPSE_RANGE): ext4 first writes out every dirty page after it, which
# kept record waiting 28 s at the end of a 20-minute recording (1.6 GB)
ROOM = 16 << 20
CLOSE_ROOM_BELOW = 256 << 20  # data up to this size is moved down over the hole (~0.3 s at most)
BLOCK = 4096
HEADER_SAMPLE_TIME = 21  # feature: first and last sample time
COPY = 8 << 20  # bytes copied at a time


class Assembly:
    """The recording at `path`, written piece by piece (add), then finished (finish)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1  # the file is made with the first piece: nothing recorded, no file
        self.tidier = Tidier(patch=self._patch)
        self.head: Optional[bytes] = None  # the first piece's header and events
        self.start = self.end = 0  # the data written so far
        self.build_ids: Dict[bytes, None] = {}  # every piece's build-id records, in order
        self.features: Dict[int, bytes] = {}  # the last piece's feature sections
        self.bits = 0  # the feature sections written (finish)
        # told of each patch to records already written, at its position from where the
        # pieces' records begin (record/unwind.py keeps copies of some)
        self.on_patch: Optional[Callable[[int, bytes], None]] = None

    def add(self, piece: str) -> None:
        """Tidy one closed piece and append its records; the piece itself is left as it is
        (the caller removes it). OSError (the disk full) leaves the recording as it was."""
        with open(piece, "r+b") as f:
            if f.read(8) != PERF_MAGIC or os.fstat(f.fileno()).st_size <= 104:
                return  # perf stopped before writing it
            with mmap.mmap(f.fileno(), 0) as buf:
                offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
                begin, end = self.tidier.piece(buf)
                if self.head is None:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                    self.head = bytes(buf[:offset])
                    self.start = self.end = _round_up(offset + ROOM)
                    self._write(self.head, 0)
                self._write(buf, self.end, begin, end)
                self.tidier.placed(self.end, buf)
                self.end += end - begin
                if size:  # perf finished the piece (a piece it was killed in has none)
                    self._keep_features(buf, offset + size)
        self._write_header()

    def finish(self, first: bytes = b"") -> None:
        """Put `first` (records) before all the data, and write the feature sections."""
        if self.head is None:
            return
        if first:
            if len(first) > self.start - len(self.head):
                self._make_room(len(first) - (self.start - len(self.head)))
            self.start -= len(first)
            self._write(first, self.start)
        if self.end - self.start <= CLOSE_ROOM_BELOW:
            self._close_room()
        self._write_features()
        self._write_header(features=True)

    def add_build_ids(self, section: bytes) -> None:
        """List more files in the build-id section (perf inject's jitted code)."""
        for position, _, _, size in records(section, 0, len(section)):
            self.build_ids[section[position:position + size]] = None

    def close(self) -> None:
        self.tidier.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- the pieces' feature sections

    def _keep_features(self, buf, at: int) -> None:
        sections = feature_sections(buf, buf, at)
        if sections is None:
            return  # a piece cut short has none
        self.features = sections
        self.add_build_ids(sections.get(HEADER_BUILD_ID, b""))

    def _write_features(self) -> None:
        sections = dict(self.features)
        if self.build_ids:
            sections[HEADER_BUILD_ID] = b"".join(self.build_ids)
        if self.tidier.times:
            sections[HEADER_SAMPLE_TIME] = struct.pack("<QQ", min(self.tidier.times), max(self.tidier.times))
        header = bytearray(self.head[:104])
        written = _feature_sections(header, self.end, sections)
        self._write(written, self.end)
        os.ftruncate(self.fd, self.end + len(written))
        self.bits = int.from_bytes(header[FEATURES:FEATURES + FEATURE_BITS // 8], "little")

    # -- writing

    def _write_header(self, features: bool = False) -> None:
        header = bytearray(self.head[:104])
        struct.pack_into("<QQ", header, DATA_SECTION, self.start, self.end - self.start)
        header[FEATURES:FEATURES + FEATURE_BITS // 8] = (self.bits if features else 0).to_bytes(FEATURE_BITS // 8, "little")
        self._write(bytes(header), 0)

    def _write(self, data, at: int, begin: int = 0, end: Optional[int] = None) -> None:
        """data[begin:end] written at `at`, a copy at a time (a view of a mapped piece
        would keep the piece mapped while an error passes)."""
        end = len(data) if end is None else end
        while begin < end:
            written = os.pwrite(self.fd, data[begin:min(end, begin + COPY)], at)
            begin += written
            at += written

    def _patch(self, position: int, data: bytes) -> None:
        os.pwrite(self.fd, data, position)
        if self.on_patch is not None:
            self.on_patch(position - self.start, data)

    def _close_room(self) -> None:
        """Move the data down to the events: a short recording then has no hole (which
        `ls` would count in its size)."""
        at, to = self.start, len(self.head)
        while at < self.end:  # each copy lands below where it was read: no overlap lost
            size = min(COPY, self.end - at)
            self._write(os.pread(self.fd, size, at), to)
            at, to = at + size, to + size
        self.end -= self.start - len(self.head)
        self.start = len(self.head)

    def _make_room(self, more: int) -> None:
        """Move the data up by `more` bytes (rounded to blocks): room ran out."""
        more = _round_up(more)
        at = self.end
        while at > self.start:
            size = min(COPY, at - self.start)
            at -= size
            self._write(os.pread(self.fd, size, at), at + more)
        self.start += more
        self.end += more

def _round_up(value: int) -> int:
    return (value + BLOCK - 1) // BLOCK * BLOCK


def feature_sections(header, tail, at: int, base: int = 0) -> Optional[Dict[int, bytes]]:
    """The feature sections (by bit) that `header` names, their table at file position
    `at`; `tail` holds the file's bytes from position `base` on. None: cut short."""
    bits = int.from_bytes(header[FEATURES:FEATURES + FEATURE_BITS // 8], "little")
    sections = {}
    for index, bit in enumerate(bit for bit in range(FEATURE_BITS) if bits >> bit & 1):
        if at + 16 * (index + 1) > base + len(tail):
            return None
        offset, size = struct.unpack_from("<QQ", tail, at - base + 16 * index)
        if offset < base or offset + size > base + len(tail):
            return None
        sections[bit] = bytes(tail[offset - base:offset - base + size])
    return sections


def side_file(head: bytes, body: bytes, features: Dict[int, bytes]) -> bytes:
    """A perf.data with the recording's header, events and feature sections (perf needs
    some to read the events: a tracepoint's format) and only `body` for records."""
    header = bytearray(head)
    struct.pack_into("<QQ", header, DATA_SECTION, len(header), len(body))
    return bytes(header) + body + _feature_sections(header, len(header) + len(body), features)


def _feature_sections(header: bytearray, at: int, sections: Dict) -> bytes:
    """The table and contents of `sections` (by feature bit) written at `at`; their bits
    set in `header`."""
    sections = {int(bit): content for bit, content in sections.items()}
    table, content = b"", b""
    start = at + 16 * len(sections)
    for bit in sorted(sections):
        table += struct.pack("<QQ", start + len(content), len(sections[bit]))
        content += sections[bit]
    header[FEATURES:FEATURES + FEATURE_BITS // 8] = sum(1 << bit for bit in sections).to_bytes(FEATURE_BITS // 8, "little")
    return table + content


def side_records(path: str, record_type: int) -> Optional[bytes]:
    """The records of `record_type` in a side file perf has rewritten."""
    with open(path, "rb") as f:
        buf = f.read()
    if not buf.startswith(PERF_MAGIC):
        return None
    offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
    return b"".join(buf[at:at + length] for at, kind, _, length in records(buf, offset, offset + size)
                    if kind == record_type)
