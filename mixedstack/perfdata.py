"""A fix-up of perf.data records that perf 6.1 mis-reads: maps from before an exec.

perf keeps the maps a task had before exec() after the exec, so the new program's
samples are unwound against the old address space: measured here, 97% of a
`subprocess`-started Python child's samples stopped after their first frame. That
hits every process mixedstack records: the target is attached while held before
exec (launch.py), and its children are forked then exec'd.

A process starts with a fresh address space at exec, so everything perf was told
about its memory before its last exec is made invisible: a FORK record of such a
process becomes an EXIT record of the same size (perf ignores the exit of a task it
does not know yet), and its earlier MMAP records are moved to a pid that does not
exist. perf then builds the process from its own mmaps, as it does for a program
it starts itself. Forks without exec (multiprocessing's fork workers) are left
alone: they do run in their parent's trampolines and maps.

Layout (tools/perf/Documentation/perf.data-file-format.txt): a header whose data
section is a run of records, each `u32 type, u16 misc, u16 size` then a body.
"""
from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple

PERF_RECORD_MMAP = 1
PERF_RECORD_COMM = 3
PERF_RECORD_EXIT = 4
PERF_RECORD_FORK = 7
PERF_RECORD_MMAP2 = 10
MISC_COMM_EXEC = 1 << 13
NO_SUCH_PID = 0x7FFFFFF0  # above any pid_max Linux allows (4194304)
ATTR_SIZE, ATTRS_SECTION, DATA_SECTION = 16, 24, 40  # offsets in the file header
SAMPLE_TIME = 1 << 2
# sample_id_all trailer fields after TIME, each a u64: ID, CPU (u32+pad), STREAM_ID, IDENTIFIER
AFTER_TIME = (1 << 6, 1 << 7, 1 << 9, 1 << 16)


def records(buf, start: int, end: int) -> Iterator[Tuple[int, int, int, int]]:
    """(position, type, misc, size) of each record in buf[start:end]."""
    position = start
    while position + 8 <= end:
        record_type, misc, size = struct.unpack_from("<IHH", buf, position)
        if size < 8:
            return  # corrupt or truncated: stop rather than loop
        yield position, record_type, misc, size
        position += size


def time_reader(buf) -> Callable[[int, int], int]:
    """When a record happened, from its sample_id trailer.

    Records are written per ring buffer, so file order is not time order (a child's
    exec can be written before its parent's fork). Without timestamps, fall back
    to file order."""
    offset, _ = struct.unpack_from("<QQ", buf, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", buf, ATTR_SIZE)[0]
    sample_type = struct.unpack_from("<Q", buf, offset + 24)[0] if attr_size >= 32 else 0
    if not sample_type & SAMPLE_TIME:
        return lambda position, size: position
    back = 8 + 8 * sum(1 for bit in AFTER_TIME if sample_type & bit)
    return lambda position, size: struct.unpack_from("<Q", buf, position + size - back)[0]


@contextlib.contextmanager
def rewritable(path: str) -> Iterator[Optional[Tuple[mmap.mmap, int, int]]]:
    """perf.data mapped for rewriting in place, with its data section's bounds
    (None for a file that is not perf.data)."""
    with open(path, "r+b") as f:
        if f.read(8) != b"PERFILE2":
            yield None
            return
        with mmap.mmap(f.fileno(), 0) as buf:
            offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
            yield buf, offset, min(offset + size, len(buf))
            buf.flush()


def forget_memory_before_exec(path: str) -> int:
    """Rewrite in place; returns how many records were changed."""
    with rewritable(path) as mapped:
        if mapped is None:
            return 0
        buf, offset, end = mapped
        when = time_reader(buf)
        last_exec = {}  # pid -> when it last exec'd
        for position, record_type, misc, size in records(buf, offset, end):
            if record_type == PERF_RECORD_COMM and misc & MISC_COMM_EXEC:
                pid = struct.unpack_from("<I", buf, position + 8)[0]
                last_exec[pid] = max(last_exec.get(pid, 0), when(position, size))
        changed = 0
        for position, record_type, _, size in records(buf, offset, end):
            if record_type in (PERF_RECORD_MMAP, PERF_RECORD_MMAP2):
                pid = struct.unpack_from("<I", buf, position + 8)[0]
                if pid in last_exec and when(position, size) < last_exec[pid]:
                    struct.pack_into("<II", buf, position + 8, NO_SUCH_PID, NO_SUCH_PID)
                    changed += 1
            elif record_type == PERF_RECORD_FORK:
                pid, ppid, tid, _ = struct.unpack_from("<IIII", buf, position + 8)
                if pid in last_exec and pid == tid and pid != ppid:
                    struct.pack_into("<I", buf, position, PERF_RECORD_EXIT)
                    changed += 1
    return changed


# -- Thread stacks: cut each sample's stack copy at the end of the stack --------
#
# perf copies --stack-size bytes above the stack pointer, whatever lies there. A
# thread's stack is an mmap like any other, so the copy runs on into the next
# mapping: measured here, when that was CPython's trampoline arena, DWARF
# unwinding of every thread sample stopped at its first Python frame (with an
# 8 KB copy, which stayed inside the stack, the same threads unwound fully).
# The copy is cut where the next mapping of the process starts above the stack
# pointer: a stack never overlaps another mapping, so no stack is lost.

PERF_RECORD_SAMPLE = 9
SAMPLE = {name: 1 << bit for bit, name in enumerate(
    "IP TID TIME ADDR READ CALLCHAIN ID CPU PERIOD STREAM_ID RAW BRANCH_STACK "
    "REGS_USER STACK_USER WEIGHT DATA_SRC IDENTIFIER".split())}
SP_REGISTER = 7  # PERF_REG_X86_SP


Layout = Tuple[int, int]  # (sample_type, sample_regs_user) of one event


def sample_layouts(buf) -> Optional[Callable[[int], Optional[Layout]]]:
    """A function from a sample record's position to its event's layout, or None
    when no event copies user stacks. With several events (on-CPU samples and
    context switches), each sample names its event by its leading IDENTIFIER."""
    offset, size = struct.unpack_from("<QQ", buf, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", buf, ATTR_SIZE)[0]
    by_id: Dict[int, Optional[Layout]] = {}
    layouts = []
    for position in range(offset, offset + size, attr_size):
        sample_type = struct.unpack_from("<Q", buf, position + 24)[0]
        regs = struct.unpack_from("<Q", buf, position + 80)[0]
        usable = (not sample_type & (SAMPLE["READ"] | SAMPLE["BRANCH_STACK"])
                  and sample_type & SAMPLE["STACK_USER"] and regs >> SP_REGISTER & 1)
        layout = (sample_type, regs) if usable else None
        layouts.append(layout)
        ids_at, ids_size = struct.unpack_from("<QQ", buf, position + attr_size - 16)
        for at in range(ids_at, ids_at + ids_size, 8):
            by_id[struct.unpack_from("<Q", buf, at)[0]] = layout
    if not any(layouts):
        return None
    if len(set(layouts)) == 1:  # one event, or several alike (perf's dummy tracking event)
        return lambda position: layouts[0]
    if not all(layout and layout[0] & SAMPLE["IDENTIFIER"] for layout in layouts if layout):
        return None
    return lambda position: by_id.get(struct.unpack_from("<Q", buf, position + 8)[0])


def user_stack(buf, position: int, sample_type: int, regs: int) -> Optional[Tuple[int, int, int, int]]:
    """(pid, stack pointer, offset of dyn_size, dyn_size) of one sample record."""
    at = position + 8
    pid = None
    for name, size in (("IDENTIFIER", 8), ("IP", 8), ("TID", 8), ("TIME", 8), ("ADDR", 8),
                       ("ID", 8), ("STREAM_ID", 8), ("CPU", 8), ("PERIOD", 8)):
        if sample_type & SAMPLE[name]:
            if name == "TID":
                pid = struct.unpack_from("<I", buf, at)[0]
            at += size
    if sample_type & SAMPLE["CALLCHAIN"]:
        at += 8 + 8 * struct.unpack_from("<Q", buf, at)[0]
    if sample_type & SAMPLE["RAW"]:  # u32 size, then that many bytes (to a u64 boundary)
        at += 4 + struct.unpack_from("<I", buf, at)[0]
    abi = struct.unpack_from("<Q", buf, at)[0]
    at += 8
    if not abi:
        return None
    sp = struct.unpack_from("<Q", buf, at + 8 * bin(regs & ((1 << SP_REGISTER) - 1)).count("1"))[0]
    at += 8 * bin(regs).count("1")
    size = struct.unpack_from("<Q", buf, at)[0]
    if not size or pid is None:
        return None
    dyn_at = at + 8 + size
    return pid, sp, dyn_at, struct.unpack_from("<Q", buf, dyn_at)[0]


def clip_stacks_at_next_mapping(path: str) -> int:
    """Rewrite in place; returns how many samples had their stack copy cut."""
    with rewritable(path) as mapped:
        if mapped is None:
            return 0
        buf, offset, end = mapped
        layout_of = sample_layouts(buf)
        if layout_of is None:
            return 0
        starts: Dict[int, List[int]] = {}
        parent: Dict[int, int] = {}
        for position, record_type, _, _ in records(buf, offset, end):
            if record_type in (PERF_RECORD_MMAP, PERF_RECORD_MMAP2):
                pid, _, start = struct.unpack_from("<IIQ", buf, position + 8)
                name_at = position + (40 if record_type == PERF_RECORD_MMAP else 72)
                # the main stack grows down past where its first mmap said it began
                if buf[name_at:name_at + 6] != b"[stack":
                    starts.setdefault(pid, []).append(start)
            elif record_type == PERF_RECORD_FORK:
                pid, ppid = struct.unpack_from("<II", buf, position + 8)
                if pid != ppid:
                    parent[pid] = ppid  # a forked process runs in its parent's mappings too
        for pid in starts:
            starts[pid].sort()
        clipped = 0
        for position, record_type, _, _ in records(buf, offset, end):
            if record_type != PERF_RECORD_SAMPLE:
                continue
            layout = layout_of(position)
            stack = user_stack(buf, position, *layout) if layout else None
            if stack is None:
                continue
            pid, sp, dyn_at, dyn_size = stack
            limit = next_mapping_above(sp, pid, starts, parent)
            if limit is not None and sp + dyn_size > limit:
                struct.pack_into("<Q", buf, dyn_at, limit - sp)
                clipped += 1
    return clipped


def next_mapping_above(sp: int, pid: int, starts: Dict[int, List[int]], parent: Dict[int, int]) -> Optional[int]:
    best = None
    seen = set()
    while pid is not None and pid not in seen:
        seen.add(pid)
        candidates = starts.get(pid, [])
        index = bisect.bisect_right(candidates, sp)
        if index < len(candidates) and (best is None or candidates[index] < best):
            best = candidates[index]
        pid = parent.get(pid)
    return best


def has_call_graphs(path: str) -> Optional[bool]:
    """Whether any event of a recording carries call chains or user stacks
    (None when the file cannot be read as perf.data)."""
    try:
        with open(path, "rb") as f:
            header = f.read(40)
            if len(header) < 40 or not header.startswith(b"PERFILE2"):
                return None
            attr_size, offset, size = struct.unpack_from("<QQQ", header, ATTR_SIZE)
            if attr_size < 32 or size % attr_size:
                return None
            f.seek(offset)
            attrs = f.read(size)
    except OSError:
        return None
    if len(attrs) < size:
        return None  # truncated: let perf say what it can
    wanted = SAMPLE["CALLCHAIN"] | SAMPLE["STACK_USER"]
    return any(struct.unpack_from("<Q", attrs, at + 24)[0] & wanted
               for at in range(0, len(attrs) - 31, attr_size))


def truncation(path: str) -> Optional[str]:
    """"N of M bytes" when the file is shorter than its header says, else None."""
    try:
        with open(path, "rb") as f:
            header = f.read(56)
            actual = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(header) < 56:
        return "%d of at least 56 bytes" % actual
    offset, size = struct.unpack_from("<QQ", header, DATA_SECTION)
    return "%d of %d bytes" % (actual, offset + size) if actual < offset + size else None
