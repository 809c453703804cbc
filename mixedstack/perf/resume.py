"""Stacks through code without unwind information: a sample interrupted there is
resumed at its return address, in record's rewrite (rewrite.py).

numpy's OpenBLAS and PyTorch's MKL spend their time in hand-written assembly with
neither `.eh_frame` entries nor frame pointers. perf's DWARF unwinder stops at the
first such frame, so a sample there was the one-frame stack `python;dgemm_kernel_HASWELL`,
detached from the Python function that called it (measured: 59% of a matmul loop's
samples on 3.13, with OPENBLAS_CORETYPE=Haswell; docs/numeric.md).

Such a sample's user stack copy still holds the way back. The first word above the
stack pointer that is a return address (the instruction after a call, in code with
unwind information, in a slot a call leaves 16-byte aligned minus 8) is where the
interrupted function returns to. The sample is rewritten to the state that return
leads to (IP = that address, SP = the slot above it, the copy shifted down to start
there), and its interrupted function is kept as the leaf: its address goes into
the sample's own call chain as a user entry after the kernel's, where perf reads it
before the frames it unwinds. perf's own unwinder then walks on from the caller, so
plain `perf script` shows the whole stack too.

Never a made-up frame: a candidate is believed only if the call before it could have
called the interrupted code (a direct call must go to that code's own library, into
its code without unwind information at or below the interrupted address, or through a
PLT stub), and if the frames above it unwind by their own tables (unwindinfo.py: CFA
rules, as perf's unwinder follows them), each to a return address after a call (a
direct one to the function just walked), up to the stack's end, or to the end of the
copy after three frames. Frames left on the stack by calls that have returned (the
stack under a kernel's buffers is full of them: CPython's PEG parser at start-up
leaves hundreds, an earlier call of the same caller leaves its callees) fail that walk
where they meet the live frames. What cannot be resumed stays as perf unwinds it,
counted in record's summary.

A copy that ran out before the stack did (OpenBLAS's Haswell kernels keep ~28 KB of
buffers on the stack; perf copies 64 KB at most) is stitched with the top of an
earlier copy of the same thread that reached the stack's top, if that one was taken
in the same frames (see `_stitch`).
"""
from __future__ import annotations

import bisect
import os
import itertools
import struct
from array import array
from typing import Dict, Iterator, List, Optional, Tuple

from mixedstack.perf.data import SP_REGISTER, UserStack, register_at
from mixedstack.perf.unwindinfo import DIRECT, RSP, ElfCode, Rule, call_before, frame_size

IP_REGISTER = 8  # PERF_REG_X86_IP
PERF_CONTEXT_USER = (1 << 64) - 512
# How far above the stack pointer a return address is looked for: all of the copy.
# OpenBLAS's kernels put their buffers on the stack (Haswell's dgemm: ~28 KB, its
# stack pointer then aligned down to a page), below their return address.
SCAN_BYTES = 1 << 16
GRANULE = 20  # code addresses are first sieved by their 1 MB granule
BP_REGISTER = 6  # PERF_REG_X86_BP
# A candidate return address is believed when the frames above it unwind to the stack's
# end, or for MIN_LEVELS frames at least to the end of the copy. A deep recursion that
# has returned (CPython's PEG parser, at start-up) leaves a dead chain of frames below
# the live ones that holds for hundreds of levels, until it meets the live frames: the
# walk goes on until then.
MIN_LEVELS = 3
DOUBT_LEVELS = 8  # a candidate that walked this far before failing: none above it is believed
HINTS = 4  # slots remembered a thread
PROLOGUE_BYTES = 256  # of a function without unwind information, read for its frame's size
DONORS, DONOR_APART = 4, 256  # copies kept a thread for stitching, and how far apart they begin
TRAMPOLINE = Rule(RSP, 16, -16, False)  # a return address in a CPython (or agent) trampoline


class Code:
    """The executable mappings of the recorded processes, and their files, opened once."""

    def __init__(self, code: List[Tuple[int, int, int, int, bytes]], parent: Dict[int, int],
                 elves: Optional[Dict[bytes, Optional[ElfCode]]] = None):
        self.maps: Dict[int, List[Tuple[int, int, int, bytes]]] = {}
        for pid, start, end, pgoff, name in code:
            self.maps.setdefault(pid, []).append((start, end, pgoff, name))
        for maps in self.maps.values():
            maps.sort()
        self.parent = parent
        self.files: Dict[bytes, Optional[int]] = {}
        # ELF files read, kept by the caller from piece to piece (their tables: 0.3 s for
        # libtorch_cpu.so); closed by it
        self.elves: Dict[bytes, Optional[ElfCode]] = {} if elves is None else elves
        self._granules: Dict[int, frozenset] = {}

    def granules(self, pid: int) -> frozenset:
        """The 1 MB granules of a process's file-backed code: a quick sieve of addresses."""
        known = self._granules.get(pid)
        if known is None:
            found, seen, at = set(), set(), pid
            while at is not None and at not in seen:
                seen.add(at)
                for start, end, _, name in self.maps.get(at, []):
                    if name.startswith(b"/"):
                        found.update(range(start >> GRANULE, ((end - 1) >> GRANULE) + 1))
                at = self.parent.get(at)
            known = self._granules[pid] = frozenset(found)
        return known

    def mapping(self, pid: int, address: int) -> Optional[Tuple[int, int, int, bytes]]:
        """(start, end, file offset, file) of the executable mapping holding `address`
        (a forked process runs in its parent's mappings too)."""
        seen = set()
        while pid is not None and pid not in seen:
            seen.add(pid)
            maps = self.maps.get(pid, [])
            index = bisect.bisect_right(maps, (address, 1 << 64)) - 1
            if index >= 0 and maps[index][0] <= address < maps[index][1]:
                return maps[index]
            pid = self.parent.get(pid)
        return None

    def raw(self, name: bytes, offset: int, size: int) -> bytes:
        """Bytes of a mapped file at a file offset (none for anonymous memory)."""
        if name not in self.files:
            try:
                self.files[name] = os.open(name, os.O_RDONLY) if name.startswith(b"/") else None
            except OSError:
                self.files[name] = None
        fd = self.files[name]
        try:
            return os.pread(fd, size, offset) if fd is not None else b""
        except OSError:
            return b""

    def elf(self, name: bytes) -> Optional[ElfCode]:
        if name not in self.elves:
            self.elves[name] = ElfCode.open(name) if name.startswith(b"/") else None
        return self.elves[name]

    def close(self) -> None:
        for fd in self.files.values():
            if fd is not None:
                os.close(fd)
        self.files = {}


class Resumer:
    """Finds, for a sample stopped in code without unwind information, where it returns."""

    def __init__(self, code: Optional[Code] = None) -> None:
        self.code = code  # the mappings of the piece being rewritten
        self.covered: Dict[Tuple[bytes, int], bool] = {}
        self.rules: Dict[Tuple[bytes, int], Optional[Rule]] = {}
        self.frames: Dict[Tuple[bytes, int], Tuple[int, Optional[Tuple[int, int]]]] = {}
        self.calls: Dict[Tuple[bytes, int], Optional[Tuple[str, Optional[int]]]] = {}
        self.resumed = self.stuck = self.stitched = 0
        self.slots: List[Tuple[int, int]] = []  # (address, return address) of the last walk's frames
        # each thread's latest samples whose copy reached its stack's top: (sp, bytes, where,
        # length), bytes None while it is in the piece being rewritten (at `where`)
        self.donors: Dict[Tuple[int, int], List[Tuple[int, Optional[bytes], int, int]]] = {}
        self.hints: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}  # thread -> (slot, return address) last found
        self.threads: set = set()  # the threads with resumed samples: their donors outlive a piece
        self.buf = None
        self.elves: Dict[bytes, Optional[ElfCode]] = {}  # every piece's Code reads them

    def place(self, pid: int, address: int) -> Optional[Tuple[ElfCode, int, bytes]]:
        """The ELF file, its own address (vaddr) and name, for a process's code address."""
        where = self.code.mapping(pid, address)
        if where is None:
            return None
        elf = self.code.elf(where[3])
        if elf is None:
            return None
        vaddr = elf.vaddr(where[2] + address - where[0])
        return None if vaddr is None else (elf, vaddr, where[3])

    def has_unwind_info(self, elf: ElfCode, name: bytes, vaddr: int) -> bool:
        key = (name, vaddr)
        known = self.covered.get(key)
        if known is None:
            known = self.covered[key] = elf.covered(vaddr)
        return known

    def find(self, buf, stack: UserStack) -> Optional[Tuple[int, int, int]]:
        """(bytes to skip, return address, interrupted address) for a sample interrupted
        in code without unwind information whose return address is found; None for
        any other sample."""
        if not (stack.regs >> IP_REGISTER & 1) or stack.dyn_size < 16 or not stack.chain_at:
            return None
        ip = struct.unpack_from("<Q", buf, register_at(stack.regs_at, stack.regs, IP_REGISTER))[0]
        leaf = self.place(stack.pid, ip)
        if leaf is None or self.has_unwind_info(leaf[0], leaf[2], leaf[1]):
            return None  # perf unwinds it (or it is no file's code: JIT code, left as it is)
        length = min(stack.dyn_size, SCAN_BYTES) // 8
        words = array("Q", bytes(buf[stack.size_at + 8:stack.size_at + 8 + 8 * length]))
        rbp = struct.unpack_from("<Q", buf, register_at(stack.regs_at, stack.regs, BP_REGISTER))[0] \
            if stack.regs >> BP_REGISTER & 1 else None
        thread = (stack.pid, stack.tid)
        # a thread's samples in a kernel return to the same few slots (a caller's call
        # sites of it): a slot found last that holds the same return address again is
        # tried first (the same call of the same caller; the walk still checks it)
        hints = self.hints.setdefault(thread, [])
        size, anchor = self._frame(leaf)
        lowest = size // 8  # no return address lies in the leaf's own frame
        tried = [at for at, value in (((slot - stack.sp) // 8, value) for slot, value in reversed(hints))
                 if lowest <= at < length and words[at] == value]
        if anchor is not None and stack.regs >> anchor[0] & 1:  # where the prologue says it is
            kept = struct.unpack_from("<Q", buf, register_at(stack.regs_at, stack.regs, anchor[0]))[0]
            at, off = divmod(kept + anchor[1] - stack.sp, 8)
            if not off and lowest <= at < length:
                tried.insert(0, at)
        doubt = False
        for index in itertools.chain(tried, self._candidates(stack, words, lowest, length)):
            if not self._called(stack.pid, words[index], leaf):
                continue
            if not self._walks(stack, words, index, rbp):
                # a chain that held for many frames before this walk lost it is more likely
                # the live one (past a rule not followed here) than a frame further up
                doubt = doubt or len(self.slots) >= DOUBT_LEVELS
                continue
            if doubt or stack.dyn_size - 8 * index + 8 > stack.size:
                break  # (nor is a copy that left no 16 bytes unused for the leaf's chain entry resumed)
            self.resumed += 1
            hint = (stack.sp + 8 * index, words[index])
            if hint in hints:
                hints.remove(hint)
            hints.append(hint)
            del hints[:-HINTS]
            return 8 * index + 8, words[index], ip
        self.stuck += 1
        return None

    def _candidates(self, stack: UserStack, words: array, lowest: int, length: int) -> Iterator[int]:
        """The slots from `lowest` up whose word may be a return address: 8 below a
        16-byte boundary (where a call leaves it), in a granule of file code."""
        first = lowest + ((stack.sp + 8 * lowest) % 16 == 0)
        granules = self.code.granules(stack.pid)
        return (index for index in range(first, length, 2) if words[index] >> GRANULE in granules)

    def _frame(self, leaf: Tuple[ElfCode, int, bytes]) -> Tuple[int, Optional[Tuple[int, int]]]:
        """What the interrupted function's prologue put on the stack before the
        interrupted address, and where it kept the stack pointer (unwindinfo.frame_size;
        nothing where its start is not known)."""
        key = (leaf[2], leaf[1])
        known = self.frames.get(key)
        if known is None:
            elf, vaddr = leaf[0], leaf[1]
            start = elf.function_start(vaddr)
            known = frame_size(elf.read(start, PROLOGUE_BYTES), vaddr - start) \
                if start is not None and vaddr - start < 1 << 20 else (0, None)
            self.frames[key] = known
        return known

    def _call(self, place: Tuple[ElfCode, int, bytes]) -> Optional[Tuple[str, Optional[int]]]:
        """The call just before a code address (cached), relative to that address."""
        key = (place[2], place[1])
        if key not in self.calls:
            self.calls[key] = call_before(place[0].read(place[1] - 8, 8), place[1])
        return self.calls[key]

    def _rule(self, place: Tuple[ElfCode, int, bytes]) -> Optional[Rule]:
        """The unwind rule at the call before a return address (cached)."""
        key = (place[2], place[1])
        if key not in self.rules:
            self.rules[key] = place[0].rule(place[1] - 1)
        return self.rules[key]

    def _called(self, pid: int, value: int, leaf: Tuple[ElfCode, int, bytes]) -> bool:
        """Whether `value` is a return address from a call that could have called the
        interrupted code: after a call, in code with unwind information; a direct call
        goes to that code's library (into its code without unwind information, at or
        below the interrupted address) or through a PLT stub."""
        caller = self.place(pid, value)
        if caller is None or not self.has_unwind_info(caller[0], caller[2], caller[1] - 1):
            return False
        call = self._call(caller)
        if call is None:
            return False
        kind, relative = call
        if kind != DIRECT:
            return True
        called = self.place(pid, value + relative - caller[1])
        if called is None:
            return False
        elf, vaddr, name = called
        if elf.in_plt(vaddr):
            return True  # (a call through a PLT stub, to any library)
        return name == leaf[2] and vaddr <= leaf[1] and not self.has_unwind_info(elf, name, vaddr)

    def _walks(self, stack: UserStack, words, index: int, rbp: Optional[int]) -> bool:
        """Whether the frames above a candidate return address (at words[index]) unwind,
        each to a return address after a call (a direct one to the function walked), to
        the stack's end (an undefined return address: _start, clone3) or, after
        MIN_LEVELS frames, to the end of the copy. Code with unwind tables is walked by
        them; anonymous code (JIT) as CPython's and the agent's trampolines are built
        (`push %rbp; mov %rsp,%rbp; call`: the CFA 16 bytes above the stack pointer, the
        caller's rbp below the return address); other JIT code fails that walk."""
        sp, pc = stack.sp + 8 * index + 8, words[index]
        slots = self.slots = [(sp - 8, pc)]
        for level in range(stack.dyn_size // 16):  # (a frame takes 16 bytes at least)
            where = self.code.mapping(stack.pid, pc)
            if where is None:
                return False
            if where[3].startswith(b"/") and not where[3].startswith(b"//"):  # (not //anon)
                place = self.place(stack.pid, pc)
                rule = self._rule(place) if place is not None else None
            else:
                rule = TRAMPOLINE
            if rule is None:
                return False  # a rule not followed here (an expression): not checked, not believed
            if rule.outermost:
                return True
            base = sp if rule.register == RSP else rbp
            if base is None:
                return False
            cfa = base + rule.offset
            if cfa <= sp or cfa % 16:
                return False  # the stack grows down; a call leaves it 16-byte aligned
            at = (cfa - stack.sp) // 8 - 1  # the return address's slot
            if at >= len(words):
                return level >= MIN_LEVELS
            if rule.rbp_at is not None:
                saved = (cfa + rule.rbp_at - stack.sp) // 8
                rbp = words[saved] if 0 <= saved < len(words) else None
            pc, sp = words[at], cfa
            slots.append((cfa - 8, pc))
            if not pc:
                return False  # (a zeroed slot: a stack ends with an undefined return address)
            caller = self.place(stack.pid, pc)
            if caller is not None and self._call(caller) is None:
                return False
        return False

    def resume(self, buf, position: int, size: int, stack: UserStack, found: Tuple[int, int, int],
               dyn_size: int) -> Tuple[bytes, int, int, bool]:
        """The sample record rewritten (see the module's docstring), with its copy from the
        return address's slot on (`dyn_size` bytes of it kept, and a stitched top where
        the copy ran out); where the copy is in it, its length, and whether the stack
        still goes on above it."""
        skip, back, leaf = found
        self.buf = buf
        self.threads.add((stack.pid, stack.tid))
        top = b""
        ran_out = dyn_size >= stack.size - skip  # the copy ran out before the stack did
        if ran_out:
            top = self._stitch(stack, stack.sp + skip, dyn_size, stack.size - 16)
        record = bytearray(buf[position:position + size])
        regs_at, size_at = stack.regs_at - position, stack.size_at - position
        struct.pack_into("<Q", record, register_at(regs_at, stack.regs, IP_REGISTER), back)
        struct.pack_into("<Q", record, register_at(regs_at, stack.regs, SP_REGISTER), stack.sp + skip)
        chain_at = stack.chain_at - position
        entries = struct.unpack_from("<Q", record, chain_at)[0]
        chain_end = chain_at + 8 + 8 * entries
        struct.pack_into("<Q", record, chain_at, entries + 2)
        copy_at = size_at + 8
        tail_at = copy_at + stack.size + 8
        copy = bytes(record[copy_at + skip:copy_at + skip + dyn_size]) + top
        dyn_size = len(copy)
        keep = (dyn_size + 7) & ~7
        copy += b"\0" * (keep - dyn_size)
        head = record[:chain_end] + struct.pack("<QQ", PERF_CONTEXT_USER, leaf) + record[chain_end:size_at]
        new = b"".join((head, struct.pack("<Q", keep), copy, struct.pack("<Q", dyn_size) if keep else b"",
                        record[tail_at:]))
        return new[:6] + struct.pack("<H", len(new)) + new[8:], len(head) + 8, dyn_size, ran_out and not top

    def _stitch(self, stack: UserStack, sp: int, length: int, room: int) -> bytes:
        """The stack above a resumed copy that ran out (OpenBLAS's Haswell kernels keep
        ~28 KB of buffers on the stack, perf copies at most 64 KB), from one of the
        thread's latest samples whose copy reached the top, if that sample was in the
        same frames: every return address of the walk that both copies hold, but the
        interrupted call's own, is the same, at the same place (the frames above a live
        frame are the ones it was called from). At most `room` bytes from `sp` in all."""
        end = sp + length
        # (the walk's first return address is the interrupted call's own: it differs
        # in a sample taken in another call of the same caller, whose frames above are these)
        walked = self.slots[1:]
        for start, data, where, size in reversed(self.donors.get((stack.pid, stack.tid), ())):
            if data is None:
                data = self.buf
            top = start + size
            if not start <= end < top:
                continue
            shared = [(at, value) for at, value in walked if start <= at <= top - 8]
            if len(shared) >= 2 and all(struct.unpack_from("<Q", data, where + at - start)[0] == value
                                        for at, value in shared):
                self.stitched += 1
                return bytes(data[where + end - start:where + min(top, sp + room) - start])
        return b""

    def offer(self, stack: UserStack, where: int, length: int, complete: bool) -> None:
        """A sample's copy (at `where` in the piece, as rewritten), for stitching later
        ones: the latest DONORS of each thread that begin at different places."""
        if complete:
            donors = self.donors.setdefault((stack.pid, stack.tid), [])
            for index, donor in enumerate(donors):
                if abs(donor[0] - stack.sp) < DONOR_APART:
                    del donors[index]
                    break
            else:
                if len(donors) >= DONORS:
                    del donors[0]
            donors.append((stack.sp, None, where, length))

    def piece_done(self, buf) -> None:
        """The piece is rewritten: the donors of threads that need them are kept as bytes."""
        kept = {}
        for thread in self.threads:
            kept[thread] = [(start, bytes(buf[where:where + size]), 0, size) if data is None else donor
                            for donor in self.donors.get(thread, ()) for start, data, where, size in (donor,)]
        self.donors, self.buf = kept, None

    def close(self) -> None:
        for elf in self.elves.values():
            if elf is not None:
                elf.close()
        self.elves = {}
