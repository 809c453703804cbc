"""record's one pass over a fresh recording, rewriting perf.data in place.

`tidy(path)` runs before `perf inject`:

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
  dump nor writes its jitted-*.so where another user can place files (record/tmpfiles.py).
- It counts what record reports (samples, lost samples, the pids seen), so that no
  second perf process is needed for that.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct
from typing import Dict, List, Optional, Tuple

from array import array
from typing import Callable

from mixedstack.perf.resume import IP_REGISTER, Code, Resumer
from mixedstack.perf.data import (
    USER_RECORDS, time_reader, PERF_RECORD_MMAP2, PROT_EXEC, AT_PAGESZ, DATA_SECTION, ENTRY_TRIES, FEATURE_BITS, FEATURES, JITDUMP_FOLDER, KERNEL_START, NO_SUCH_PID,
    PERF_CONTEXT_MAX, PERF_MAGIC, PERF_RECORD_EXIT, PERF_RECORD_FINISHED_ROUND, PERF_RECORD_SAMPLE, SP_REGISTER,
    STACK_REACH, Tidied,
    UserStack, _mmap_name_at, _Scan, _scan, records, register_at, sample_layouts, user_stack,
)

# -- Thread stacks: cut each sample's stack copy at the end of the stack --------
#
# perf copies --stack-size bytes above the stack pointer, whatever lies there. A
# thread's stack is an mmap like any other, so the copy runs on into the next
# mapping: measured here, when that was CPython's trampoline arena, DWARF
# unwinding of every thread sample stopped at its first Python frame (with an
# 8 KB copy, which stayed inside the stack, the same threads unwound fully).
# The copy is cut where the next mapping of the process starts above the stack
# pointer: a stack never overlaps another mapping, so no stack is lost.


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


def tidy(path: str) -> Tidied:
    """Rewrite a fresh recording in place (see the module's docstring); the file
    shrinks to the stack bytes the kernel copied. Not perf.data: nothing is done."""
    with open(path, "r+b") as f:
        if f.read(8) != PERF_MAGIC:
            return Tidied(0, 0, set(), 0, 0, 0)
        with mmap.mmap(f.fileno(), 0) as buf:
            offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
            tidier = Tidier()
            begin, write = tidier.piece(buf, whole=offset + size <= len(buf))
            tidier.placed(begin, buf)
            tidier.close()
            end = min(offset + size, len(buf))
            saved = end - write if tidier.compacted else 0
            if saved:
                _close_gap(buf, write, end)
            buf.flush()
        if saved:
            f.truncate(os.fstat(f.fileno()).st_size - saved)
    return tidier.tidied(saved)


class Tidier:
    """tidy() over a recording that perf wrote in pieces (`--switch-output`), one piece
    after the other, each rewritten in place; what a piece needs from the pieces before
    it (the processes' maps, forks and execs, where their stacks began) is kept here.

    An exec can come pieces after the maps it makes stale: `patch(position, data)`
    then rewrites those records where they went (positions given by `placed`)."""

    def __init__(self, patch: Optional[Callable[[int, bytes], None]] = None) -> None:
        self.patch = patch
        self.pieces = 0
        self.mmaps: List[Tuple[int, int, int, int, bool]] = []  # as _Scan.mmaps, positions where they went
        self.forks: List[Tuple[int, int, int, int]] = []  # as _Scan.forks, likewise
        self.last_exec: Dict[int, int] = {}
        self.code: List[Tuple[int, int, int, int, bytes]] = []
        self.entry: Dict[int, Optional[int]] = {}  # pid -> where argc is (None: not found yet)
        self.tries: Dict[int, int] = {}
        self.samples = self.lost_records = self.lost_samples = 0
        self.pids: set = set()
        self.times = array("Q")
        self.kernel: Optional[set] = set()
        self.forgotten = self.clipped = self.full = self.stepped = self.resumed = self.stuck = 0
        self.resumer = Resumer()
        self.jitdumps: List[bytes] = []  # the jitdumps' MMAP records, as rewritten
        self.build_ids: Dict[str, str] = {}  # every file mapped executable -> its build id
        self.anonymous_code: Dict[int, List[Tuple[int, int]]] = {}  # pid -> executable anonymous memory seen
        self._moved: Dict[int, int] = {}

    def piece(self, buf, whole: bool = True) -> Tuple[int, int]:
        """Rewrite one piece (a perf.data file, mapped writable) in place; where its records
        are then (compacted, they start where its data section starts; else the records
        perf wrote, but what it synthesized again at the piece's start).
        `whole`: the data section is all there (not cut short)."""
        offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
        end = complete_records_end(buf, offset, min(offset + size, len(buf)) if size else len(buf))
        start = offset if not self.pieces else _after_synthesized(buf, offset, end)
        self.pieces += 1
        scan = _scan(buf, start, end)
        scan.movable &= whole
        for pid, when in scan.last_exec.items():
            self.last_exec[pid] = max(self.last_exec.get(pid, 0), when)
        forgotten = _forget_memory_before_exec(buf, scan, self.last_exec) + self._forget_earlier(scan)
        _jitdumps_relative(buf, scan)
        self._trim_grown_code(buf, scan)
        watch = {position for position, *_ in scan.mmaps} | {position for position, *_ in scan.forks}
        self._moved = {}
        resumer = self.resumer
        before = (resumer.resumed, resumer.stuck)
        clipped, write, full, stepped = self._clip_and_compact(buf, offset, start, end, scan, watch)
        self._counts = (forgotten, clipped, full, stepped, resumer.resumed - before[0], resumer.stuck - before[1])
        self._scan = scan
        self._begin = offset if write is not None else start
        self.compacted = write is not None  # the last piece's records were moved
        return (offset, write) if write is not None else (start, end)

    def placed(self, base: int, buf) -> None:
        """The last piece's records (in `buf`, rewritten) now begin at position `base` of
        the recording: remember where its maps and forks went, for a later exec to patch."""
        scan, moved = self._scan, self._moved
        # what the recording holds: counted once the piece is in it (not for a piece the
        # disk had no room for)
        forgotten, clipped, full, stepped, resumed, stuck = self._counts
        self.resumed += resumed
        self.stuck += stuck
        self.forgotten += forgotten
        self.clipped += clipped
        self.full += full
        self.stepped += stepped
        self.samples += scan.samples
        self.lost_records += scan.lost_records
        self.lost_samples += scan.lost_samples
        self.pids |= scan.pids
        self.build_ids.update(scan.build_ids)
        self.times.extend(scan.times)
        if scan.addresses is None or self.kernel is None:
            self.kernel = None
        else:
            self.kernel.update(address for address in scan.addresses if KERNEL_START <= address < PERF_CONTEXT_MAX)
        for position, pid, begins, when, is_stack in scan.mmaps:
            at = moved.get(position)
            if at is None:
                continue  # not written (perf's copies at the start of a later piece)
            self.mmaps.append((base + at - self._begin, pid, begins, when, is_stack))
            record_type, _, size = struct.unpack_from("<IHH", buf, at)
            name_at = _mmap_name_at(at, record_type)
            if buf[name_at:name_at + 6] == b"./jit-":
                self.jitdumps.append(bytes(buf[at:at + size]))
        self.forks.extend((base + moved[position] - self._begin, pid, ppid, tid)
                          for position, pid, ppid, tid in scan.forks if position in moved)
        self.code.extend(scan.code)
        if scan.exits:  # a process that ended has no exec to come
            self.mmaps = [m for m in self.mmaps if m[1] not in scan.exits]
            self.forks = [f for f in self.forks if f[1] not in scan.exits]

    def _trim_grown_code(self, buf, scan: _Scan) -> None:
        """Anonymous executable memory (trampoline arenas, 64 KB each) mapped next to
        earlier such memory makes one mapping of both, and the kernel announces all of it
        again: perf then drops the jitted functions' maps in the part it knew (3.13 running
        pytest: 58% of samples lost their Python names). Each such record is cut to what
        is new (or, nothing new, given to no process)."""
        for position, pid, start, when, _ in sorted(scan.mmaps, key=lambda mmap: mmap[3]):
            record_type, _, size = struct.unpack_from("<IHH", buf, position)
            if record_type != PERF_RECORD_MMAP2:
                continue
            name_at = _mmap_name_at(position, record_type)
            if buf[name_at:name_at + 7] != b"//anon\0" or not struct.unpack_from("<I", buf, position + 64)[0] & PROT_EXEC:
                continue
            length = struct.unpack_from("<Q", buf, position + 24)[0]
            known = self.anonymous_code.setdefault(pid, [])
            new = _uncovered(start, start + length, known)
            known.append((start, start + length))
            if new is None:
                continue  # new memory on both sides of the old: left as announced
            if new[0] == new[1]:
                struct.pack_into("<II", buf, position + 8, NO_SUCH_PID, NO_SUCH_PID)
            else:
                struct.pack_into("<QQ", buf, position + 16, new[0], new[1] - new[0])

    def _forget_earlier(self, scan: _Scan) -> int:
        """Records of earlier pieces made stale by an exec in this one."""
        if self.patch is None or not scan.last_exec:
            return 0
        changed = 0
        for position, pid, _, when, _ in self.mmaps:
            if pid in scan.last_exec and when < scan.last_exec[pid]:
                self.patch(position + 8, struct.pack("<II", NO_SUCH_PID, NO_SUCH_PID))
                changed += 1
        for position, pid, ppid, tid in self.forks:
            if pid in scan.last_exec and pid == tid and pid != ppid:
                self.patch(position, struct.pack("<I", PERF_RECORD_EXIT))
                changed += 1
        stale = set(scan.last_exec)
        self.mmaps = [m for m in self.mmaps if not (m[1] in stale and m[3] < scan.last_exec[m[1]])]
        self.forks = [f for f in self.forks if not (f[1] in stale and f[1] == f[3] and f[1] != f[2])]
        return changed

    def _clip_and_compact(self, buf, offset: int, start: int, end: int, scan: _Scan,
                          watch: set) -> Tuple[int, Optional[int], int, int]:
        """Pass 2: cut each stack copy at the next mapping above its stack pointer, and
        (when the file allows) move every record down over the bytes no copy used.
        Returns (samples clipped, new end of the data section or None, copies still full,
        samples stepped over a return)."""
        layout_of = sample_layouts(buf)  # None: no event copies stacks (frame-pointer mode)
        starts: Dict[int, List[int]] = {}
        last_exec = self.last_exec
        for _, pid, begins, when, is_stack in self.mmaps + scan.mmaps:
            forgotten = pid in last_exec and when < last_exec[pid]
            # the main stack grows down past where its first mmap said it began
            if not is_stack and not forgotten:
                starts.setdefault(pid, []).append(begins)
        for pid in starts:
            starts[pid].sort()
        # a forked process (not exec'd) runs in its parent's mappings too
        parent = {pid: ppid for _, pid, ppid, tid in self.forks + scan.forks
                  if pid != ppid and not (pid in last_exec and pid == tid)}
        entry, tries = self.entry, self.tries
        clipped = full = 0
        code = Code(self.code + scan.code, parent, self.resumer.elves)
        returns, resumer = Returns(code), self.resumer
        resumer.code = code
        write = offset
        moved = self._moved
        for position, record_type, _, size in records(buf, start, end):
            stack = None
            if record_type == PERF_RECORD_SAMPLE and layout_of is not None:
                layout = layout_of(position)
                stack = user_stack(buf, position, *layout) if layout else None
            if stack is not None:
                stack = returns.step_over(buf, position, stack)
                found = resumer.find(buf, stack) \
                    if scan.movable and stack.size_at + 16 + stack.size <= position + size else None
                original = stack
                if found is not None:
                    # the copy as from the return address's slot (rewritten below, once cut)
                    stack = stack._replace(sp=stack.sp + found[0], dyn_size=stack.dyn_size - found[0],
                                           size_at=stack.size_at + found[0])
                dyn_size = stack.dyn_size
                limit = next_mapping_above(stack.sp, stack.pid, starts, parent)
                if limit is not None and stack.sp + dyn_size > limit:
                    dyn_size = limit - stack.sp
                    if found is None:
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
                if found is not None:  # the resumed record is never longer: 16 bytes more chain, >= 16 less copy
                    record, copy_at, dyn_size, cut = resumer.resume(buf, position, size, original, found, dyn_size)
                    buf[write:write + len(record)] = record
                    full += cut
                    resumer.offer(stack._replace(dyn_size=dyn_size), write + copy_at, dyn_size, not cut)
                    write += len(record)
                    continue
                full += dyn_size >= stack.size  # the stack went on above the copy
                resumer.offer(stack, (write if scan.movable else position) + stack.size_at + 8 - position, dyn_size,
                              dyn_size < stack.size)
                if scan.movable and dyn_size <= stack.size and stack.size_at + 16 + stack.size <= position + size:
                    write += _compact_sample(buf, position, size, write, stack, dyn_size)
                    continue
            if record_type == PERF_RECORD_FINISHED_ROUND and scan.movable:
                continue  # dropped: perf script then orders all the records by time (see ROUNDS)
            if position in watch:
                moved[position] = write if scan.movable else position
            if scan.movable and write != position:
                buf.move(write, position, size)
            write += size
        resumer.piece_done(buf)
        code.close()
        return clipped, write if scan.movable else None, full, returns.stepped


    def close(self) -> None:
        self.resumer.close()

    def tidied(self, saved: int = 0) -> Tidied:
        # LOST (ring buffer full) and LOST_SAMPLES (the event's own count) see the same losses
        lost = max(self.lost_records, self.lost_samples)
        return Tidied(self.samples, lost, self.pids, self.forgotten, self.clipped, saved, self.times, self.kernel,
                      self.full, self.stepped, self.resumed, self.stuck)

def _uncovered(start: int, end: int, known: List[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    """The part of [start, end) that no interval in `known` covers, when it is one
    interval ((x, x) when none); None when it is two or more."""
    low, high = start, end
    for old_start, old_end in sorted(known):
        if old_end <= low or old_start >= high:
            continue
        if old_start <= low:
            low = max(low, old_end)
        elif old_end >= high:
            high = min(high, old_start)
        else:
            return None
        if low >= high:
            return (start, start)
    return (low, high)


def _forget_memory_before_exec(buf, scan: _Scan, last_exec: Dict[int, int]) -> int:
    changed = 0
    for position, pid, _, when, _ in scan.mmaps:
        if pid in last_exec and when < last_exec[pid]:
            struct.pack_into("<II", buf, position + 8, NO_SUCH_PID, NO_SUCH_PID)
            changed += 1
    for position, pid, ppid, tid in scan.forks:
        if pid in last_exec and pid == tid and pid != ppid:
            struct.pack_into("<I", buf, position, PERF_RECORD_EXIT)
            changed += 1
    return changed


# perf record writes a FINISHED_ROUND record after each pass over its ring buffers:
# perf script then delivers, in time order, what is older than the pass before. That
# assumes no record is far ahead of its neighbours in the file; the jitted code's maps
# (pieces.py puts them first: their functions were compiled any time during the run) are.
# Without these records, perf script orders every record of the file by time before it
# delivers any (on 64-bit it maps the whole file: the queue holds pointers into it,
# ~50 bytes a record).


def complete_records_end(buf, offset: int, end: int) -> int:
    """Where the last whole record in buf[offset:end] ends (perf stopped mid-write: less than end)."""
    reached = offset
    for position, _, _, size in records(buf, offset, end):
        if position + size > end:
            break
        reached = position + size
    return reached


def _after_synthesized(buf, offset: int, end: int) -> int:
    """Where a later piece's own records begin. perf starts each piece with what it
    synthesizes from /proc (maps, comm, thread and CPU maps, all at time 0): copies of
    what the pieces before already have, and only of the process perf was given."""
    when = time_reader(buf)
    for position, record_type, _, size in records(buf, offset, end):
        if record_type == PERF_RECORD_SAMPLE or (record_type < USER_RECORDS and when(position, size) != 0):
            return position
    return end


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

    def __init__(self, code: Code):
        self.code = code
        self.stepped = 0

    def step_over(self, buf, position: int, stack: UserStack) -> UserStack:
        if not (stack.regs >> IP_REGISTER & 1) or stack.dyn_size < 16:
            return stack
        ip_at = register_at(stack.regs_at, stack.regs, IP_REGISTER)
        ip = struct.unpack_from("<Q", buf, ip_at)[0]
        where = self.code.mapping(stack.pid, ip)
        if where is None or not self.code.raw(where[3], where[2] + ip - where[0], 2).startswith(RET):
            return stack
        copy_at = stack.size_at + 8
        back = struct.unpack_from("<Q", buf, copy_at)[0]
        if self.code.mapping(stack.pid, back) is None:
            return stack  # not a return address into code: leave the sample as it is
        struct.pack_into("<Q", buf, ip_at, back)
        struct.pack_into("<Q", buf, register_at(stack.regs_at, stack.regs, SP_REGISTER), stack.sp + 8)
        buf.move(copy_at, copy_at + 8, stack.dyn_size - 8)
        struct.pack_into("<Q", buf, copy_at + stack.size, stack.dyn_size - 8)
        self.stepped += 1
        return stack._replace(sp=stack.sp + 8, dyn_size=stack.dyn_size - 8)


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


