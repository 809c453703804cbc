"""Jitdump files (perf's `jit-PID.dump`) made whole before `perf inject --jit` reads them.

    header: u32 magic "JiTD", u32 version, u32 header size, u32 machine, u32 reserved,
            u32 pid, u64 timestamp, u64 flags
    then records: u32 event, u32 size (of the whole record), u64 timestamp, payload

perf inject gives up on the whole recording, not just the file, when one dump has no
header, and stops reading a dump at its first record that does not parse. Both
happen to the dumps CPython's perf_jit writes through its 2 MiB stdio buffer:

- a forked child that ends in `os._exit` (every multiprocessing fork worker) never
  flushes its buffer: its dump is empty, or ends in half a record;
- a forked child closes the FILE it inherited as it restarts the trampoline, which
  writes the parent's unwritten bytes into the parent's dump; the parent writes
  them again later, so a record in the middle is cut by a repeat of the bytes
  before it (3.13 and 3.14; record's fork guard prevents it where it can load).

`repair(path)` keeps every record that parses: it gives an empty dump a header,
cuts a half-written last record, and over bytes that do not parse it moves on to
the next place where records parse again (a repeat then only repeats code loads
perf inject already knows). Standard library only.
"""
from __future__ import annotations

import os
import struct
import time
from typing import NamedTuple, Optional

MAGIC = 0x4A695444  # "JiTD" in the writer's byte order (little-endian here)
HEADER = struct.Struct("<IIIIIIQQ")
RECORD = struct.Struct("<IIQ")
CODE_LOAD, CODE_MOVE, DEBUG_INFO, CODE_CLOSE, UNWINDING_INFO = range(5)
CODE_LOAD_FIXED = 56  # record header, pid, tid, vma, code address, code size, code index
EM_X86_64 = 62
MAX_RECORD = 1 << 24  # bytes; no trampoline or debug-info record comes near it
RESYNC_RUN = 4  # records that must parse in a row where reading resumes


class Repaired(NamedTuple):
    records: int  # records kept
    dropped: int  # bytes that did not parse, skipped or cut
    header: bool  # a header was written (the dump had none)


def started(path: str) -> Optional[int]:
    """The timestamp of the dump's first record (the writer's clock: CLOCK_MONOTONIC
    for CPython and the agent), or None. Not the header's: CPython 3.13 puts the wall
    clock there."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER.size + RECORD.size)
    except OSError:
        return None
    if len(data) < HEADER.size or HEADER.unpack_from(data)[0] != MAGIC:
        return None
    at = HEADER.unpack_from(data)[2]
    if at + RECORD.size > len(data):
        return None  # a header size beyond the usual, or no record yet
    return RECORD.unpack_from(data, at)[2]


def renumber(path: str, pid: int) -> None:
    """Make every code load of the dump process `pid`'s. A process in a container writes
    its pid as its own pid namespace numbers it (1, often), and perf inject makes each
    code load a map of the pid the record names: here, that is `pid`."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if len(data) < HEADER.size or HEADER.unpack_from(data)[0] != MAGIC:
        return
    struct.pack_into("<I", data, 20, pid)
    at = max(HEADER.size, HEADER.unpack_from(data)[2])
    while at + RECORD.size <= len(data):
        event, size, _ = RECORD.unpack_from(data, at)
        if size < RECORD.size:
            break
        if event == CODE_LOAD and at + 24 <= len(data):
            struct.pack_into("<II", data, at + 16, pid, pid)
        at += size
    with open(path, "wb") as f:
        f.write(data)


def _record_ok(data: bytes, at: int) -> Optional[int]:
    """The size of a plausible record at `at`, or None."""
    if at + RECORD.size > len(data):
        return None
    event, size, _ = RECORD.unpack_from(data, at)
    if event > UNWINDING_INFO or size < RECORD.size or size > MAX_RECORD or at + size > len(data):
        return None
    if event == CODE_LOAD:
        if size < CODE_LOAD_FIXED + 1:
            return None
        code_size = struct.unpack_from("<Q", data, at + 40)[0]
        name_end = data.find(b"\0", at + CODE_LOAD_FIXED, at + size)
        if name_end < 0 or name_end + 1 + code_size != at + size:
            return None
    elif event == UNWINDING_INFO:
        if size < 40 or struct.unpack_from("<Q", data, at + 16)[0] > size:
            return None
    return size


def _runs_from(data: bytes, at: int) -> bool:
    """Whether RESYNC_RUN records (or all that remain) parse from `at`."""
    for _ in range(RESYNC_RUN):
        if at == len(data):
            return True
        size = _record_ok(data, at)
        if size is None:
            return False
        at += size
    return True


def repair(path: str, pid: int) -> Repaired:
    """Rewrite `path` in place with only the records that parse (see the module)."""
    with open(path, "rb") as f:
        data = f.read()
    header_size = HEADER.size
    wrote_header = False
    if len(data) < HEADER.size or struct.unpack_from("<I", data, 0)[0] != MAGIC:
        kept = HEADER.pack(MAGIC, 1, HEADER.size, EM_X86_64, 0, pid, int(time.time() * 1e6), 0)
        body, wrote_header = b"", True
        dropped = len(data)
    else:
        header_size = max(HEADER.size, struct.unpack_from("<I", data, 8)[0])
        kept, body, dropped = data[:header_size], data, 0
    parts = [kept]
    records = 0
    at = header_size if body else 0
    while at < len(body):
        size = _record_ok(body, at)
        if size is not None:
            parts.append(body[at:at + size])
            records += 1
            at += size
            continue
        start = at
        at += 1
        while at < len(body) and not _runs_from(body, at):
            at += 1
        dropped += at - start
    if dropped or wrote_header:
        temporary = path + ".repair"
        with open(temporary, "wb") as f:
            f.write(b"".join(parts))
        os.replace(temporary, path)
    return Repaired(records, dropped, wrote_header)
