"""perf.data read and rewritten directly: what record fixes up, what fold asks first.

Layout (tools/perf/Documentation/perf.data-file-format.txt): a header whose data
section is a run of records, each `u32 type, u16 misc, u16 size` then a body; the
feature sections follow the data section.

`tidy(path)` is record's one pass over a fresh recording (before `perf inject`):

- Memory from before an exec is forgotten. perf 6.1 keeps the maps a task had
  before exec() after the exec, so the new program's samples are unwound against
  the old address space: measured here, 97% of a `subprocess`-started Python
  child's samples stopped after their first frame. That hits every process
  mixedstack records: the target is attached while held before exec (launch.py),
  and its children are forked then exec'd. A FORK record of such a process becomes
  an EXIT record of the same size (perf ignores the exit of a task it does not know
  yet), and its earlier MMAP records are moved to a pid that does not exist; perf
  then builds the process from its own mmaps. Forks without exec (multiprocessing's
  fork workers) are left alone: they do run in their parent's trampolines and maps.
- Each sample's user stack copy is cut where the stack ends (see below) and the
  file is compacted to the bytes copied: perf records --stack-size bytes a sample
  whatever the kernel could copy, ~6x what a Python stack uses here.
- Jitdumps are named relative to perf inject's folder: a mapped `/tmp/jit-PID.dump`
  becomes `./jit-PID.dump` (same record size, NUL-padded), and record runs perf
  inject in the recording's own folder of dumps, so that inject neither reads a
  dump nor writes its jitted-*.so where another user can place files (tmpfiles.py).
- It counts what record reports (samples, lost samples, the pids seen), so that no
  second perf process is needed for that.

`sample_times`, `event_names` and `has_call_graphs` read what fold needs to know
before it starts `perf script`.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct
from array import array
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

PERF_RECORD_MMAP = 1
PERF_RECORD_LOST = 2
PERF_RECORD_COMM = 3
PERF_RECORD_EXIT = 4
PERF_RECORD_FORK = 7
PERF_RECORD_MMAP2 = 10
JITDUMP_FOLDER = b"/tmp/"  # where CPython and the agent write jit-PID.dump
PERF_RECORD_LOST_SAMPLES = 13
PERF_RECORD_AUXTRACE = 71  # its payload follows the record: never moved
MISC_COMM_EXEC = MISC_MMAP_DATA = 1 << 13  # (the same bit means one or the other by record type)
PROT_EXEC = 4
NO_SUCH_PID = 0x7FFFFFF0  # above any pid_max Linux allows (4194304)
ATTR_SIZE, ATTRS_SECTION, DATA_SECTION = 16, 24, 40  # offsets in the file header
FEATURES, FEATURE_BITS = 72, 256  # the header's bitmap of feature sections after the data
HEADER_BUILD_ID, HEADER_EVENT_DESC, HEADER_AUXTRACE = 2, 12, 18  # feature bits
MISC_BUILD_ID_SIZE = 1 << 15  # a build-id record that says its id's length
MISC_CPUMODE, MISC_KERNEL = 7, 1
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
AT_PAGESZ = 6  # an auxiliary vector entry every process gets
KERNEL_START = 0xFFFF800000000000  # x86-64: kernel addresses are above this
PERF_CONTEXT_MAX = (1 << 64) - 4095  # call chain markers (PERF_CONTEXT_KERNEL...) are above this
ENTRY_TRIES = 8  # main-thread copies looked at, per process, for where its stack began
STACK_REACH = 1 << 23  # how far above a pointer array its strings can be (the stack's usual limit)


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


class UserStack(NamedTuple):
    pid: int
    sp: int  # the stack pointer when the sample was taken
    size_at: int  # where the copy's u64 size is; the copy follows, then its u64 dyn_size
    size: int  # bytes reserved for the copy (--stack-size)
    dyn_size: int  # bytes the kernel could copy
    regs_at: int = 0  # where the user registers' values begin
    regs: int = 0  # which registers (sample_regs_user)


def user_stack(buf, position: int, sample_type: int, regs: int) -> Optional[UserStack]:
    """The user stack copy of one sample record, if it has one."""
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
    regs_at = at
    sp = struct.unpack_from("<Q", buf, register_at(regs_at, regs, SP_REGISTER))[0]
    at += 8 * bin(regs).count("1")
    size = struct.unpack_from("<Q", buf, at)[0]
    if not size or pid is None:
        return None
    return UserStack(pid, sp, at, size, struct.unpack_from("<Q", buf, at + 8 + size)[0], regs_at, regs)


def register_at(regs_at: int, regs: int, register: int) -> int:
    """Where one register's value is among a sample's user registers."""
    return regs_at + 8 * bin(regs & ((1 << register) - 1)).count("1")


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


class Tidied(NamedTuple):
    """What tidy() did and saw."""

    samples: int
    lost: int  # samples the kernel could not write (perf's LOST / LOST_SAMPLES records)
    pids: set  # every process with a COMM, FORK or EXIT record
    forgotten: int  # MMAP and FORK records of memory from before an exec
    clipped: int  # stack copies cut at the next mapping
    saved: int  # bytes the compaction removed
    times: Optional[array] = None  # each sample's time (ns, file order), if samples carry it
    kernel_addresses: Optional[set] = None  # every kernel address samples name (None: unknown)
    full: int = 0  # samples whose stack was deeper than the bytes copied (their stacks are cut)
    stepped: int = 0  # samples taken on a `ret`, moved to where it returns (Returns)


def tidy(path: str) -> Tidied:
    """Rewrite a fresh recording in place (see the module's docstring); the file
    shrinks to the stack bytes the kernel copied. Not perf.data: nothing is done."""
    with open(path, "r+b") as f:
        if f.read(8) != b"PERFILE2":
            return Tidied(0, 0, set(), 0, 0, 0)
        with mmap.mmap(f.fileno(), 0) as buf:
            offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
            end = min(offset + size, len(buf))
            scan = _scan(buf, offset, end)
            scan.movable &= offset + size <= len(buf)  # a cut file has no feature sections to move
            forgotten = _forget_memory_before_exec(buf, scan)
            _jitdumps_relative(buf, scan)
            clipped, write, full, stepped = _clip_and_compact(buf, offset, end, scan)
            saved = end - write if write is not None else 0
            if saved:
                _close_gap(buf, write, end)
            buf.flush()
        if saved:
            f.truncate(os.fstat(f.fileno()).st_size - saved)
    # LOST (ring buffer full) and LOST_SAMPLES (the event's own count) see the same losses
    lost = max(scan.lost_records, scan.lost_samples)
    kernel = None
    if scan.addresses is not None:  # the kernel's half of the address space, without perf's context markers
        kernel = {address for address in scan.addresses if KERNEL_START <= address < PERF_CONTEXT_MAX}
    return Tidied(scan.samples, lost, scan.pids, forgotten, clipped, saved, scan.times, kernel, full, stepped)


def survey(path: str) -> Optional[Tidied]:
    """tidy()'s counts for any recording, read only (None: not perf.data)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"PERFILE2":
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
                scan = _scan(buf, offset, min(offset + size, len(buf)))
    except (OSError, ValueError, struct.error):
        return None
    return Tidied(scan.samples, max(scan.lost_records, scan.lost_samples), scan.pids, 0, 0, 0)


class _Scan:
    """Pass 1: what the rewrite needs to know before it starts."""

    def __init__(self) -> None:
        self.samples = self.lost_records = self.lost_samples = 0
        self.pids: set = set()
        self.last_exec: Dict[int, int] = {}  # pid -> when it last exec'd
        self.mmaps: List[Tuple[int, int, int, int, bool]] = []  # position, pid, start, when, is [stack]
        self.code: List[Tuple[int, int, int, int, bytes]] = []  # pid, start, end, file offset, file: executable maps
        self.forks: List[Tuple[int, int, int, int]] = []  # position, pid, ppid, tid
        self.movable = True  # every record walked to the end, none with a payload outside it
        self.times = array("Q")  # each sample's time (ns), when samples carry it
        self.addresses: Optional[set] = set()  # sample IPs and call chain entries (None: not all read)


def _scan(buf, offset: int, end: int) -> _Scan:
    scan = _Scan()
    when = time_reader(buf)
    attrs_at, attrs_size = struct.unpack_from("<QQ", buf, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", buf, ATTR_SIZE)[0]
    sample_types = [struct.unpack_from("<Q", buf, at + 24)[0]
                    for at in range(attrs_at, attrs_at + attrs_size, attr_size)] if attr_size else []
    time_at = _time_offset(sample_types)
    chain_at = _chain_offset(sample_types)
    if chain_at is None:
        scan.addresses = None
    addresses = scan.addresses
    reached = offset
    for position, record_type, misc, size in records(buf, offset, end):
        reached = position + size
        if record_type == PERF_RECORD_SAMPLE:
            scan.samples += 1
            if time_at is not None and time_at + 8 <= size:
                scan.times.append(struct.unpack_from("<Q", buf, position + time_at)[0])
            if addresses is not None:
                entries = struct.unpack_from("<Q", buf, position + chain_at)[0] if chain_at + 8 <= size else -1
                if 0 <= entries and chain_at + 8 + 8 * entries <= size:
                    addresses.update(struct.unpack_from("<%dQ" % entries, buf, position + chain_at + 8))
                else:
                    scan.addresses = addresses = None
        elif record_type in (PERF_RECORD_MMAP, PERF_RECORD_MMAP2):
            pid, _, start = struct.unpack_from("<IIQ", buf, position + 8)
            name_at = _mmap_name_at(position, record_type)
            scan.mmaps.append((position, pid, start, when(position, size), buf[name_at:name_at + 6] == b"[stack"))
            length, pgoff = struct.unpack_from("<QQ", buf, position + 24)
            executable = (struct.unpack_from("<I", buf, position + 64)[0] & PROT_EXEC if record_type == PERF_RECORD_MMAP2
                          else not misc & MISC_MMAP_DATA)
            if executable:
                name_end = buf.find(b"\0", name_at, position + size)
                scan.code.append((pid, start, start + length, pgoff, bytes(buf[name_at:name_end if name_end >= 0 else name_at])))
        elif record_type == PERF_RECORD_COMM:
            pid = struct.unpack_from("<I", buf, position + 8)[0]
            scan.pids.add(pid)
            if misc & MISC_COMM_EXEC:
                scan.last_exec[pid] = max(scan.last_exec.get(pid, 0), when(position, size))
        elif record_type == PERF_RECORD_FORK:
            pid, ppid, tid = struct.unpack_from("<III", buf, position + 8)
            scan.pids.add(pid)
            scan.forks.append((position, pid, ppid, tid))
        elif record_type == PERF_RECORD_EXIT:
            scan.pids.add(struct.unpack_from("<I", buf, position + 8)[0])
        elif record_type == PERF_RECORD_LOST:
            scan.lost_records += struct.unpack_from("<Q", buf, position + 16)[0]
        elif record_type == PERF_RECORD_LOST_SAMPLES:
            scan.lost_samples += struct.unpack_from("<Q", buf, position + 8)[0]
        elif record_type == PERF_RECORD_AUXTRACE:
            scan.movable = False
    features = int.from_bytes(buf[FEATURES:FEATURES + FEATURE_BITS // 8], "little")
    if reached != end or features >> HEADER_AUXTRACE & 1:
        scan.movable = False
        scan.addresses = None
    return scan


def _forget_memory_before_exec(buf, scan: _Scan) -> int:
    changed = 0
    for position, pid, _, when, _ in scan.mmaps:
        if pid in scan.last_exec and when < scan.last_exec[pid]:
            struct.pack_into("<II", buf, position + 8, NO_SUCH_PID, NO_SUCH_PID)
            changed += 1
    for position, pid, ppid, tid in scan.forks:
        if pid in scan.last_exec and pid == tid and pid != ppid:
            struct.pack_into("<I", buf, position, PERF_RECORD_EXIT)
            changed += 1
    return changed


def _mmap_name_at(position: int, record_type: int) -> int:
    """Where an MMAP or MMAP2 record's file name begins."""
    return position + (40 if record_type == PERF_RECORD_MMAP else 72)


def _jitdumps_relative(buf, scan: "_Scan") -> None:
    for position, _, _, _, _ in scan.mmaps:
        record_type, _, size = struct.unpack_from("<IHH", buf, position)
        name_at = _mmap_name_at(position, record_type)
        end = buf.find(b"\0", name_at, position + size)
        if end < 0:
            continue
        name = bytes(buf[name_at:end])
        if name.startswith(JITDUMP_FOLDER) and name.endswith(b".dump") and name.startswith(b"jit-", len(JITDUMP_FOLDER)):
            relative = b"./" + name[len(JITDUMP_FOLDER):]
            buf[name_at:end] = relative + b"\0" * (end - name_at - len(relative))


def _clip_and_compact(buf, offset: int, end: int, scan: _Scan) -> Tuple[int, Optional[int], int, int]:
    """Pass 2: cut each stack copy at the next mapping above its stack pointer, and
    (when the file allows) move every record down over the bytes no copy used.
    Returns (samples clipped, new end of the data section or None, copies still full,
    samples stepped over a return)."""
    layout_of = sample_layouts(buf)
    if layout_of is None:
        return 0, None, 0, 0
    starts: Dict[int, List[int]] = {}
    for _, pid, start, when, is_stack in scan.mmaps:
        forgotten = pid in scan.last_exec and when < scan.last_exec[pid]
        # the main stack grows down past where its first mmap said it began
        if not is_stack and not forgotten:
            starts.setdefault(pid, []).append(start)
    for pid in starts:
        starts[pid].sort()
    # a forked process (not exec'd) runs in its parent's mappings too
    parent = {pid: ppid for _, pid, ppid, tid in scan.forks
              if pid != ppid and not (pid in scan.last_exec and pid == tid)}
    entry: Dict[int, Optional[int]] = {}  # pid -> where argc is (None: not found yet)
    tries: Dict[int, int] = {}
    clipped = full = 0
    returns = Returns(scan.code, parent)
    write = offset
    for position, record_type, _, size in records(buf, offset, end):
        stack = None
        if record_type == PERF_RECORD_SAMPLE:
            layout = layout_of(position)
            stack = user_stack(buf, position, *layout) if layout else None
        if stack is not None:
            stack = returns.step_over(buf, position, stack)
            dyn_size = stack.dyn_size
            limit = next_mapping_above(stack.sp, stack.pid, starts, parent)
            if limit is not None and stack.sp + dyn_size > limit:
                dyn_size = limit - stack.sp
                struct.pack_into("<Q", buf, stack.size_at + 8 + stack.size, dyn_size)
                clipped += 1
            argc = entry.get(stack.pid)
            # a copy that ran to the stack's top ends at a page boundary
            if argc is None and (stack.sp + dyn_size) % 4096 == 0 and tries.get(stack.pid, 0) < ENTRY_TRIES:
                tries[stack.pid] = tries.get(stack.pid, 0) + 1
                argc = entry[stack.pid] = entry_stack_pointer(buf, stack.size_at + 8, dyn_size, stack.sp)
            if argc is not None and stack.sp < argc < stack.sp + dyn_size - 8:
                dyn_size = argc + 8 - stack.sp  # frames are below argc: above it, argv, environ, auxv
                clipped += 1
            full += dyn_size >= stack.size  # the stack went on above what was copied
            if scan.movable and dyn_size <= stack.size and stack.size_at + 16 + stack.size <= position + size:
                write += _compact_sample(buf, position, size, write, stack, dyn_size)
                continue
        if scan.movable and write != position:
            buf.move(write, position, size)
        write += size
    returns.close()
    return clipped, write if scan.movable else None, full, returns.stepped


IP_REGISTER = 8  # PERF_REG_X86_IP
RET = (b"\xc3", b"\xf3\xc3")  # ret, repz ret


class Returns:
    """A sample taken on a function's `ret` has a stack no DWARF unwinder gets past.

    GCC's unwind tables say, for the `ret` after `leave` or `pop %rbp`, that the
    caller's %rbp is saved 16 bytes below the CFA: 8 bytes below the stack pointer,
    which perf does not copy (its copy starts at the stack pointer). The caller's
    frame then has no CFA and the stack ends there, one frame under the leaf:
    measured on Debian's 3.15 (frame pointers everywhere), 0.5-1.3% of all samples,
    every one on a `ret`. Such a sample is made the state `ret` leads to: the return
    address popped into the instruction pointer. The stack is then whole; the sample
    counts in the caller, at the instruction after its call (the leaf's last
    instruction is its return)."""

    def __init__(self, code: List[Tuple[int, int, int, int, bytes]], parent: Dict[int, int]):
        self.code: Dict[int, List[Tuple[int, int, int, bytes]]] = {}
        for pid, start, end, pgoff, name in code:
            self.code.setdefault(pid, []).append((start, end, pgoff, name))
        for maps in self.code.values():
            maps.sort()
        self.parent = parent
        self.files: Dict[bytes, Optional[int]] = {}
        self.stepped = 0

    def mapping(self, pid: int, address: int) -> Optional[Tuple[int, int, int, bytes]]:
        seen = set()
        while pid is not None and pid not in seen:
            seen.add(pid)
            maps = self.code.get(pid, [])
            index = bisect.bisect_right(maps, (address, 1 << 64)) - 1
            if index >= 0 and maps[index][0] <= address < maps[index][1]:
                return maps[index]
            pid = self.parent.get(pid)
        return None

    def code_at(self, name: bytes, offset: int) -> bytes:
        if name not in self.files:
            try:
                self.files[name] = os.open(name, os.O_RDONLY) if name.startswith(b"/") else None
            except OSError:
                self.files[name] = None
        fd = self.files[name]
        try:
            return os.pread(fd, 2, offset) if fd is not None else b""
        except OSError:
            return b""

    def step_over(self, buf, position: int, stack: UserStack) -> UserStack:
        if not (stack.regs >> IP_REGISTER & 1) or stack.dyn_size < 16:
            return stack
        ip_at = register_at(stack.regs_at, stack.regs, IP_REGISTER)
        ip = struct.unpack_from("<Q", buf, ip_at)[0]
        where = self.mapping(stack.pid, ip)
        if where is None or not self.code_at(where[3], where[2] + ip - where[0]).startswith(RET):
            return stack
        copy_at = stack.size_at + 8
        back = struct.unpack_from("<Q", buf, copy_at)[0]
        if self.mapping(stack.pid, back) is None:
            return stack  # not a return address into code: leave the sample as it is
        struct.pack_into("<Q", buf, ip_at, back)
        struct.pack_into("<Q", buf, register_at(stack.regs_at, stack.regs, SP_REGISTER), stack.sp + 8)
        buf.move(copy_at, copy_at + 8, stack.dyn_size - 8)
        struct.pack_into("<Q", buf, copy_at + stack.size, stack.dyn_size - 8)
        self.stepped += 1
        return stack._replace(sp=stack.sp + 8, dyn_size=stack.dyn_size - 8)

    def close(self) -> None:
        for fd in self.files.values():
            if fd is not None:
                os.close(fd)


def entry_stack_pointer(buf, at: int, length: int, sp: int) -> Optional[int]:
    """Where argc is, in a copy (at `at`, of `length` bytes from address `sp`) of a
    main thread's stack that runs to the top of what the kernel could copy: the
    stack pointer when the process started. Above it (System V ABI) lie argv[] and
    envp[] (pointers, in increasing order, to strings further up; each list ended
    by NULL), the auxiliary vector (type/value pairs to AT_NULL), then the strings
    and up to 8 KB of random padding: up to ~10 KB a sample that no unwinder reads.
    None unless that layout is all there."""
    words = struct.unpack_from("<%dQ" % (length // 8), buf, at)
    for pagesz in (i for i, word in enumerate(words[:-1]) if word == AT_PAGESZ):
        if words[pagesz + 1] not in (4096, 16384, 65536):
            continue
        auxv = pagesz
        while auxv >= 2 and 0 < words[auxv - 2] < 64:  # back over (type, value) pairs
            auxv -= 2
        end = next((i for i in range(auxv, len(words) - 1, 2) if words[i] == 0), None)
        if end is None or end < pagesz or auxv < 2 or words[auxv - 1] != 0:
            continue
        # back over envp[] then argv[]: strings above them, each below the next
        argv_end = _strings_down(words, auxv - 2, sp)
        if argv_end < 0 or words[argv_end] != 0:
            continue
        argc = _strings_down(words, argv_end - 1, sp, below=words[argv_end + 1] if argv_end + 1 < auxv - 1 else None)
        if argc >= 0 and words[argc] == argv_end - 1 - argc:
            return sp + 8 * argc
    return None


def _strings_down(words, index: int, sp: int, below: Optional[int] = None) -> int:
    """From `index` down, over pointers to strings above the stack pointer, each
    lower than the one after it; returns the index of the first other word."""
    while index >= 0 and sp + 8 * index < words[index] < sp + STACK_REACH and (below is None or words[index] < below):
        below = words[index]
        index -= 1
    return index


def _compact_sample(buf, position: int, size: int, write: int, stack: UserStack, dyn_size: int) -> int:
    """Move one sample record to `write` with its stack copy cut to `dyn_size`
    bytes (rounded up to u64, as the kernel writes it); returns its new size. perf
    reads the copy's size from the record itself, so a shorter copy is a valid one."""
    keep = (dyn_size + 7) & ~7
    head = stack.size_at - position  # everything before the copy's size field
    tail_at = stack.size_at + 8 + stack.size + 8  # what follows dyn_size (weight, data_src...)
    tail = position + size - tail_at
    # every destination below is at or before its source: memmove order is safe
    buf.move(write, position, head)
    struct.pack_into("<Q", buf, write + head, keep)
    at = write + head + 8
    if keep:  # a copy of 0 bytes has no dyn_size, as the kernel writes it
        buf.move(at, stack.size_at + 8, keep)
        struct.pack_into("<Q", buf, at + keep, dyn_size)
        at += keep + 8
    buf.move(at, tail_at, tail)
    new_size = at + tail - write
    struct.pack_into("<H", buf, write + 6, new_size)
    return new_size


def _close_gap(buf, write: int, end: int) -> None:
    """Move the feature sections (after the data) down to the new end of the data."""
    offset = struct.unpack_from("<Q", buf, DATA_SECTION)[0]
    struct.pack_into("<Q", buf, DATA_SECTION + 8, write - offset)
    saved = end - write
    buf.move(write, end, len(buf) - end)
    features = int.from_bytes(buf[FEATURES:FEATURES + FEATURE_BITS // 8], "little")
    for index in range(bin(features).count("1")):
        at = write + 16 * index
        struct.pack_into("<Q", buf, at, struct.unpack_from("<Q", buf, at)[0] - saved)


def _read_attrs(f) -> Optional[Tuple[bytes, List[bytes]]]:
    """(file header, each event's perf_event_attr with its ids section) of an open
    perf.data, or None when it is not readable as one."""
    header = f.read(104)
    if len(header) < 104 or not header.startswith(b"PERFILE2"):
        return None
    attr_size, offset, size = struct.unpack_from("<QQQ", header, ATTR_SIZE)
    if attr_size < 32 or size % attr_size:
        return None
    f.seek(offset)
    attrs = f.read(size)
    if len(attrs) < size:
        return None  # truncated: let perf say what it can
    return header, [attrs[at:at + attr_size] for at in range(0, size, attr_size)]


def has_call_graphs(path: str) -> Optional[bool]:
    """Whether any event of a recording carries call chains or user stacks
    (None when the file cannot be read as perf.data)."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
    except OSError:
        return None
    if read is None:
        return None
    wanted = SAMPLE["CALLCHAIN"] | SAMPLE["STACK_USER"]
    return any(struct.unpack_from("<Q", attr, 24)[0] & wanted for attr in read[1])


def _feature(path: str, bit: int) -> Optional[bytes]:
    """The content of one feature section of a recording (None when absent or unreadable)."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
            if read is None:
                return None
            header = read[0]
            features = int.from_bytes(header[FEATURES:FEATURES + FEATURE_BITS // 8], "little")
            if not features >> bit & 1:
                return None
            offset, size = struct.unpack_from("<QQ", header, DATA_SECTION)
            f.seek(offset + size + 16 * bin(features & ((1 << bit) - 1)).count("1"))
            at, length = struct.unpack("<QQ", f.read(16))
            f.seek(at)
            return f.read(length)
    except (OSError, struct.error):
        return None


def build_ids(path: str) -> List[Tuple[str, str]]:
    """(build id in hex, file) of each user-space file the recording names (perf record
    --buildid-all lists every one mapped), from the BUILD_ID feature section."""
    section = _feature(path, HEADER_BUILD_ID) or b""
    found = []
    at = 0
    while at + 8 <= len(section):
        _, misc, size = struct.unpack_from("<IHH", section, at)
        if size < 36 or at + size > len(section):
            break
        length = section[at + 32] if misc & MISC_BUILD_ID_SIZE else 20
        name = section[at + 36:at + size].split(b"\0", 1)[0].decode("utf-8", "replace")
        if misc & MISC_CPUMODE != MISC_KERNEL and name.startswith("/") and 0 < length <= 20:
            found.append((section[at + 12:at + 12 + length].hex(), name))
        at += size
    return found


def event_names(path: str) -> Optional[List[str]]:
    """The recording's event names as perf evlist prints them (from the EVENT_DESC
    feature section), or None when the file does not say."""
    desc = _feature(path, HEADER_EVENT_DESC)
    if desc is None:
        return None
    names = []
    try:
        count, attr_size = struct.unpack_from("<II", desc, 0)
        at = 8
        for _ in range(count):
            ids = struct.unpack_from("<I", desc, at + attr_size)[0]
            length = struct.unpack_from("<I", desc, at + attr_size + 4)[0]
            name_at = at + attr_size + 8
            names.append(desc[name_at:name_at + length].split(b"\0", 1)[0].decode("latin-1"))
            at = name_at + length + 8 * ids
    except struct.error:
        return None
    return names


def time_quantiles(times: Optional[Iterable[int]], steps: int = 64) -> List[int]:
    """steps+1 sample times of evenly spaced rank (first, ..., median, ..., last)."""
    ranked = sorted(times or ())
    if not ranked:
        return []
    return [ranked[round((len(ranked) - 1) * step / steps)] for step in range(steps + 1)]


def _chain_offset(sample_types: Iterable[int]) -> Optional[int]:
    """Where a sample record holds its call chain (u64 count, then addresses; the
    sample's own IP is its first entry), if every event has one at the same place."""
    before = (SAMPLE["IDENTIFIER"] | SAMPLE["IP"] | SAMPLE["TID"] | SAMPLE["TIME"] | SAMPLE["ADDR"]
              | SAMPLE["ID"] | SAMPLE["STREAM_ID"] | SAMPLE["CPU"] | SAMPLE["PERIOD"])
    leading = {sample_type & (before | SAMPLE["READ"] | SAMPLE["CALLCHAIN"]) for sample_type in sample_types}
    if len(leading) != 1:
        return None
    sample_type = leading.pop()
    if not sample_type & SAMPLE["CALLCHAIN"] or sample_type & SAMPLE["READ"]:
        return None
    return 8 + 8 * bin(sample_type & before).count("1")


def _time_offset(sample_types: Iterable[int]) -> Optional[int]:
    """Where a sample record holds its time, if every event puts it at the same place."""
    leading = {sample_type & (SAMPLE["IDENTIFIER"] | SAMPLE["IP"] | SAMPLE["TID"] | SAMPLE["TIME"])
               for sample_type in sample_types}
    if len(leading) != 1:
        return None
    sample_type = leading.pop()
    if not sample_type & SAMPLE["TIME"]:
        return None
    return 8 + 8 * bin(sample_type & ~SAMPLE["TIME"]).count("1")  # IDENTIFIER, IP, TID come first


def sample_times(path: str) -> Optional[List[int]]:
    """Every sample's timestamp (ns, in file order), read with small buffered
    reads; None when the recording's samples carry no time or differ in layout."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
            if read is None:
                return None
            header, attrs = read
            time_at = _time_offset(struct.unpack_from("<Q", attr, 24)[0] for attr in attrs)
            if time_at is None:
                return None
            offset, size = struct.unpack_from("<QQ", header, DATA_SECTION)
            return _times(f, offset, offset + size, time_at)
    except OSError:
        return None


def _times(f, start: int, end: int, time_at: int) -> List[int]:
    times = []
    window, window_at = b"", start
    position = start
    chunk = 1 << 20
    while position + 8 <= end:
        if position + time_at + 8 > window_at + len(window):  # a record's head is past the window
            f.seek(position)
            window, window_at = f.read(min(chunk, end - position)), position
            if len(window) < 8:
                break
        at = position - window_at
        record_type, _, size = struct.unpack_from("<IHH", window, at)
        if size < 8:
            break
        if record_type == PERF_RECORD_SAMPLE and at + time_at + 8 <= len(window):
            times.append(struct.unpack_from("<Q", window, at + time_at)[0])
        position += size
    return times


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
