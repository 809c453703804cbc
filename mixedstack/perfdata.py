"""A fix-up of perf.data records that perf 6.1 mis-reads: forks followed by exec.

perf keeps the maps a child inherited at fork() after the child calls exec(), so
the child's samples are unwound against its parent's old address space: measured
here, 97% of a `subprocess`-started Python child's samples stopped after their first
frame. A process that exec()s starts with a fresh address space anyway, so its
FORK record is turned into an EXIT record of the same size (perf ignores an exit of
a task it does not know yet): perf then builds the child from its own mmaps, as it
does for the process it started itself. Forks without exec (multiprocessing's fork
workers) keep their FORK: they do run in the parent's trampolines and maps.

Layout (tools/perf/Documentation/perf.data-file-format.txt): a header whose data
section is a run of records, each `u32 type, u16 misc, u16 size` then a body.
"""
from __future__ import annotations

import mmap
import struct
from typing import Iterator, Tuple

PERF_RECORD_COMM = 3
PERF_RECORD_EXIT = 4
PERF_RECORD_FORK = 7
MISC_COMM_EXEC = 1 << 13
DATA_SECTION = 40  # offset of the data section's {offset, size} in the file header


def records(buf, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(position, type, misc) of each record in buf[start:end]."""
    position = start
    while position + 8 <= end:
        record_type, misc, size = struct.unpack_from("<IHH", buf, position)
        if size < 8:
            return  # corrupt or truncated: stop rather than loop
        yield position, record_type, misc
        position += size


def forget_forks_before_exec(path: str) -> int:
    """Rewrite in place; returns how many FORK records were turned into EXITs."""
    with open(path, "r+b") as f:
        if f.read(8) != b"PERFILE2":
            return 0
        with mmap.mmap(f.fileno(), 0) as buf:
            offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
            end = min(offset + size, len(buf))
            exec_pids = set()
            for position, record_type, misc in records(buf, offset, end):
                if record_type == PERF_RECORD_COMM and misc & MISC_COMM_EXEC:
                    exec_pids.add(struct.unpack_from("<I", buf, position + 8)[0])
            patched = 0
            for position, record_type, _ in records(buf, offset, end):
                if record_type != PERF_RECORD_FORK:
                    continue
                pid, ppid, tid, _ = struct.unpack_from("<IIII", buf, position + 8)
                if pid in exec_pids and pid == tid and pid != ppid:
                    struct.pack_into("<I", buf, position, PERF_RECORD_EXIT)
                    patched += 1
            buf.flush()
    return patched
