"""What an executable file says about its code, read by hand for record's rewrite:
which addresses its unwind tables cover (`.eh_frame_hdr`'s sorted table, then the
FDE's range), which are PLT stubs, and the bytes of its code. Standard library only;
each file is opened and its table read once, lookups are a bisect and one FDE read.

Addresses here are the file's own (ELF virtual addresses); `ElfCode.vaddr` turns a
file offset (what a mapping gives) into one.
"""
from __future__ import annotations

import bisect
import os
import struct
from array import array
from typing import Dict, List, NamedTuple, Optional, Tuple

PT_LOAD, PT_GNU_EH_FRAME = 1, 0x6474E550
# pointer encodings (DW_EH_PE_*): the value's format, then what it is relative to
UDATA4, SDATA4, UDATA8, SDATA8, ABSPTR = 0x03, 0x0B, 0x04, 0x0C, 0x00
PCREL, DATAREL = 0x10, 0x30
OMIT = 0xFF
FORMATS = {ABSPTR: "<Q", UDATA4: "<I", SDATA4: "<i", UDATA8: "<Q", SDATA8: "<q", 0x02: "<H", 0x0A: "<h"}
PLT_SECTIONS = (b".plt", b".plt.sec", b".plt.got")
SHT_SYMTAB, SHT_DYNSYM, STT_FUNC = 2, 11, 2
UNWIND_SECTIONS = (b".eh_frame", b".debug_frame")


class ElfCode:
    """One executable file: its unwind table and PLT, read once (`open`: None if it is
    not a readable 64-bit ELF file)."""

    def __init__(self, fd: int, loads: List[Tuple[int, int, int]], size: int) -> None:
        self.fd = fd
        self.loads = loads  # (file offset, vaddr, bytes in the file) of each PT_LOAD
        self.size = size
        self.starts = array("q")  # the table's initial locations (vaddr), sorted
        self.fdes = array("q")  # where each one's FDE is (vaddr)
        # None: the file says nothing (no .eh_frame_hdr, but .eh_frame or .debug_frame
        # sections: the unwinder may know more than this table; treated as covered)
        self.table: Optional[bool] = False
        self.plts: List[Tuple[int, int]] = []
        self._symbol_tables: List[Tuple[int, int]] = []
        self._starts: Optional[array] = None
        self._cies: Dict[int, Optional[Cie]] = {}

    @classmethod
    def open(cls, name: bytes) -> Optional["ElfCode"]:
        try:
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            return None
        try:
            code = cls._read(fd)
        except (OSError, struct.error, ValueError):
            code = None
        if code is None:
            os.close(fd)
        return code

    @classmethod
    def _read(cls, fd: int) -> Optional["ElfCode"]:
        header = os.pread(fd, 64, 0)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return None  # 64-bit little-endian only (x86-64)
        phoff, shoff = struct.unpack_from("<QQ", header, 0x20)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", header, 0x36)
        headers = os.pread(fd, phentsize * phnum, phoff)
        loads, hdr = [], None
        for index in range(phnum):
            kind, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", headers, index * phentsize)
            if kind == PT_LOAD:
                loads.append((offset, vaddr, filesz))
            elif kind == PT_GNU_EH_FRAME:
                hdr = (offset, vaddr, filesz)
        code = cls(fd, loads, os.fstat(fd).st_size)
        sections = code._sections(shoff, shentsize, shnum, shstrndx)
        code.plts = sorted((vaddr, vaddr + size) for name, vaddr, size in sections if name in PLT_SECTIONS)
        code._symbol_tables = [(offset, size) for _, offset, size in code._tables(shoff, shentsize, shnum)]
        if hdr is not None and code._table(*hdr):
            code.table = True
        elif any(name in UNWIND_SECTIONS for name, _, _ in sections):
            code.table = None
        return code

    def _sections(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> List[Tuple[bytes, int, int]]:
        if not shoff or not shnum or shstrndx >= shnum or shoff + shentsize * shnum > self.size:
            return []
        table = os.pread(self.fd, shentsize * shnum, shoff)
        names_at, names_size = struct.unpack_from("<QQ", table, shstrndx * shentsize + 24)
        names = os.pread(self.fd, min(names_size, 1 << 20), names_at)
        found = []
        for index in range(shnum):
            name, _, _, vaddr, _, size = struct.unpack_from("<IIQQQQ", table, index * shentsize)
            end = names.find(b"\0", name)
            found.append((names[name:end if end >= 0 else None], vaddr, size))
        return found

    def _tables(self, shoff: int, shentsize: int, shnum: int) -> List[Tuple[int, int, int]]:
        """(type, file offset, size) of the symbol tables (.symtab, else .dynsym)."""
        if not shoff or not shnum or shoff + shentsize * shnum > self.size:
            return []
        table = os.pread(self.fd, shentsize * shnum, shoff)
        found = {}
        for index in range(shnum):
            kind, = struct.unpack_from("<I", table, index * shentsize + 4)
            if kind in (SHT_SYMTAB, SHT_DYNSYM):
                offset, size = struct.unpack_from("<QQ", table, index * shentsize + 24)
                found[kind] = (kind, offset, size)
        return [found[kind] for kind in (SHT_SYMTAB, SHT_DYNSYM) if kind in found][:1]

    def function_start(self, vaddr: int) -> Optional[int]:
        """Where the function holding `vaddr` begins, by the file's symbols (None: none)."""
        if self._starts is None:
            starts = set()
            for offset, size in self._symbol_tables:
                data = os.pread(self.fd, min(size, 1 << 28), offset)
                for _, info, _, _, value, _ in struct.iter_unpack("<IBBHQQ", data[:len(data) // 24 * 24]):
                    if info & 0xF == STT_FUNC and value:
                        starts.add(value)
            self._starts = array("q", sorted(starts))
        index = bisect.bisect_right(self._starts, vaddr) - 1
        return self._starts[index] if index >= 0 else None

    def _table(self, offset: int, vaddr: int, size: int) -> bool:
        """.eh_frame_hdr's binary search table, as GNU ld writes it (datarel sdata4)."""
        head = os.pread(self.fd, 16, offset)
        if len(head) < 12 or head[0] != 1 or head[3] != (DATAREL | SDATA4) or head[2] == OMIT:
            return False
        at = 4 + struct.calcsize(FORMATS.get(head[1] & 0x0F, "<i"))
        count = struct.unpack_from(FORMATS[head[2] & 0x0F], head, at)[0] if head[2] & 0x0F in FORMATS else 0
        at += struct.calcsize(FORMATS.get(head[2] & 0x0F, "<I"))
        pairs = array("i")
        pairs.frombytes(os.pread(self.fd, 8 * count, offset + at))
        if len(pairs) != 2 * count:
            return False
        self.starts = array("q", (vaddr + start for start in pairs[0::2]))
        self.fdes = array("q", (vaddr + fde for fde in pairs[1::2]))
        return True

    def offset_of(self, vaddr: int) -> Optional[int]:
        for offset, start, size in self.loads:
            if start <= vaddr < start + size:
                return offset + vaddr - start
        return None

    def vaddr(self, offset: int) -> Optional[int]:
        for start, vaddr, size in self.loads:
            if start <= offset < start + size:
                return vaddr + offset - start
        return None

    def read(self, vaddr: int, size: int) -> bytes:
        offset = self.offset_of(vaddr)
        return os.pread(self.fd, size, offset) if offset is not None else b""

    def covered(self, vaddr: int) -> bool:
        """Whether an unwinder finds unwind information for `vaddr` (when the file's
        table says nothing, it may: True)."""
        return True if self.table is None else self._fde(vaddr) is not None

    def in_plt(self, vaddr: int) -> bool:
        return any(start <= vaddr < end for start, end in self.plts)

    def _fde(self, vaddr: int) -> Optional[Tuple[int, int, int, "Cie"]]:
        """(start, instructions' vaddr, their end, CIE) of the FDE covering vaddr."""
        index = bisect.bisect_right(self.starts, vaddr) - 1
        if index < 0:
            return None
        fde = self.fdes[index]
        data = self.read(fde, 40)
        if len(data) < 16:
            return None
        length, cie_pointer = struct.unpack_from("<Ii", data, 0)
        if length in (0, 0xFFFFFFFF) or cie_pointer == 0:
            return None  # a 64-bit DWARF FDE, or a CIE: not what the table points at
        cie = self._cie(fde + 4 - cie_pointer)
        if cie is None or cie.encoding & 0x0F not in FORMATS or cie.encoding & 0x70 not in (0, PCREL):
            return None
        form = FORMATS[cie.encoding & 0x0F]
        begin = struct.unpack_from(form, data, 8)[0] + (fde + 8 if cie.encoding & 0x70 == PCREL else 0)
        at = 8 + 2 * struct.calcsize(form)
        if not begin <= vaddr < begin + struct.unpack_from(form, data, 8 + struct.calcsize(form))[0]:
            return None
        if cie.z:
            skip, at = _uleb(data, at)
            at += skip
        return begin, fde + at, fde + 4 + length, cie

    def _cie(self, cie: int) -> Optional["Cie"]:
        """A CIE's alignment factors, initial instructions and FDE pointer encoding ('R')."""
        if cie in self._cies:
            return self._cies[cie]
        found = None
        data = self.read(cie, 4)
        length = struct.unpack_from("<I", data)[0] if len(data) == 4 else 0
        data = self.read(cie, 4 + length) if 0 < length < 4096 else b""
        if len(data) >= 10 and data[8] in (1, 3):
            end = data.find(b"\0", 9)
            augmentation = data[9:end]
            code_align, at = _uleb(data, end + 1)
            data_align, at = _sleb(data, at)
            at = at + 1 if data[8] == 1 else _uleb(data, at)[1]  # return address register
            encoding, z = ABSPTR, augmentation.startswith(b"z")
            if z:
                size, at = _uleb(data, at)
                instructions, field = at + size, at
                for letter in augmentation[1:]:
                    if letter == ord("R"):
                        encoding = data[field]
                        field += 1
                    elif letter == ord("L"):
                        field += 1
                    elif letter == ord("P"):
                        personality = data[field]
                        field += 1 + struct.calcsize(FORMATS.get(personality & 0x0F, "<Q"))
                    elif letter not in b"SB":
                        encoding = None
                        break
                at = instructions
            if encoding is not None and not augmentation.replace(b"z", b"").strip(b"RLPSB"):
                found = Cie(encoding, z, code_align, data_align, data[at:])
        self._cies[cie] = found
        return found

    def rule(self, vaddr: int) -> Optional["Rule"]:
        """How to find the caller's frame at `vaddr` (its FDE's row there), if the file
        says and the rule is one of the usual ones (CFA = rsp or rbp + offset)."""
        fde = self._fde(vaddr)
        if fde is None:
            return None
        begin, at, end, cie = fde
        state = _run(cie, cie.instructions, Rule(RSP, 8, None, False), None, begin, vaddr)
        if state is None:
            return None
        found = _run(cie, self.read(at, max(0, end - at)), state, state, begin, vaddr)
        return found._replace(start=begin) if found is not None else None

    def close(self) -> None:
        os.close(self.fd)


class Cie(NamedTuple):
    encoding: int  # of the FDEs' addresses
    z: bool  # FDEs carry augmentation data (skipped)
    code_align: int
    data_align: int
    instructions: bytes


RSP, RBP, RIP = 7, 6, 16  # DWARF register numbers on x86-64


class Rule(NamedTuple):
    """One row of an unwind table, as far as a walk up the stack needs it."""

    register: int  # the CFA is this register (RSP or RBP) ...
    offset: int  # ... plus this
    rbp_at: Optional[int]  # the caller's rbp is saved at CFA + this (None: rbp is unchanged)
    outermost: bool  # the return address is undefined: the stack ends here (_start, clone3)
    start: int = 0  # where the function (its FDE) begins


def _run(cie: Cie, program: bytes, state: Rule, initial: Optional[Rule], location: int,
         target: int) -> Optional[Rule]:
    """Run call frame instructions from `location` while it is <= target (None: a rule
    this reader does not follow, such as a CFA given by an expression)."""
    stack: List[Rule] = []
    at = 0
    while at < len(program):
        op = program[at]
        at += 1
        high, low = op & 0xC0, op & 0x3F
        advance = None
        if high == 0x40:
            advance = low
        elif high == 0x80:
            offset, at = _uleb(program, at)
            if low == RBP:
                state = state._replace(rbp_at=offset * cie.data_align)
        elif high == 0xC0:
            if low == RBP:
                state = state._replace(rbp_at=initial.rbp_at if initial else None)
        elif op in (0x02, 0x03, 0x04):
            size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            advance = int.from_bytes(program[at:at + size], "little")
            at += size
        elif op == 0x00:
            pass
        elif op in (0x05, 0x11):  # offset_extended(_sf)
            register, at = _uleb(program, at)
            offset, at = (_uleb if op == 0x05 else _sleb)(program, at)
            if register == RBP:
                state = state._replace(rbp_at=offset * cie.data_align)
        elif op in (0x06, 0x08):  # restore_extended, same_value
            register, at = _uleb(program, at)
            if register == RBP:
                state = state._replace(rbp_at=initial.rbp_at if initial and op == 0x06 else None)
        elif op == 0x07:  # undefined
            register, at = _uleb(program, at)
            if register == RIP:
                state = state._replace(outermost=True)
        elif op == 0x09:  # register: one register saved in another
            _, at = _uleb(program, at)
            _, at = _uleb(program, at)
        elif op == 0x0A:
            stack.append(state)
        elif op == 0x0B:
            if not stack:
                return None
            state = stack.pop()
        elif op in (0x0C, 0x12):  # def_cfa(_sf)
            register, at = _uleb(program, at)
            offset, at = _uleb(program, at) if op == 0x0C else _sleb(program, at)
            state = state._replace(register=register, offset=offset * (1 if op == 0x0C else cie.data_align))
        elif op == 0x0D:
            register, at = _uleb(program, at)
            state = state._replace(register=register)
        elif op in (0x0E, 0x13):
            offset, at = _uleb(program, at) if op == 0x0E else _sleb(program, at)
            state = state._replace(offset=offset * (1 if op == 0x0E else cie.data_align))
        elif op == 0x0F:  # def_cfa_expression (PLT stubs, signal frames)
            return None
        elif op in (0x10, 0x16):  # expression, val_expression: a register this walk does not need?
            register, at = _uleb(program, at)
            size, at = _uleb(program, at)
            at += size
            if register in (RBP, RIP):
                return None
        elif op in (0x14, 0x15):  # val_offset(_sf)
            register, at = _uleb(program, at)
            _, at = (_uleb if op == 0x14 else _sleb)(program, at)
            if register in (RBP, RIP):
                return None
        elif op == 0x2E:  # GNU_args_size
            _, at = _uleb(program, at)
        elif op == 0x2F:  # GNU_negative_offset_extended
            register, at = _uleb(program, at)
            offset, at = _uleb(program, at)
            if register == RBP:
                state = state._replace(rbp_at=-offset * cie.data_align)
        else:
            return None  # (set_loc and vendor opcodes: not in what GCC, clang and gas write here)
        if advance is not None:
            location += advance * cie.code_align
            if location > target:
                break
    return state if state.register in (RSP, RBP) else None


def _leb(data: bytes, at: int) -> Tuple[int, int, int]:
    """A LEB128 number's bits, the bits read and where it ends."""
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, shift, at


def _uleb(data: bytes, at: int) -> Tuple[int, int]:
    value, _, at = _leb(data, at)
    return value, at


def _sleb(data: bytes, at: int) -> Tuple[int, int]:
    value, shift, at = _leb(data, at)
    return (value - (1 << shift) if shift and value >> (shift - 1) & 1 else value), at


# -- Call sites -----------------------------------------------------------------
#
# A return address is the instruction after a call. x86-64 calls are `e8 rel32`
# (direct) or `ff /2` (indirect: through a register or memory, 2 to 7 bytes with a
# REX prefix). The bytes before a candidate address are read as each of those forms.

DIRECT, INDIRECT = "direct", "indirect"


def call_before(code: bytes, address: int) -> Optional[Tuple[str, Optional[int]]]:
    """(DIRECT, target) or (INDIRECT, None) if the bytes `code` (those just before
    `address`, at least 8 of them) end with a call instruction; else None."""
    if len(code) < 8:
        return None
    if code[-5] == 0xE8:
        return DIRECT, address + struct.unpack_from("<i", code, len(code) - 4)[0]
    for length in range(2, 8):
        at = len(code) - length
        start = at + (0x40 <= code[at] <= 0x4F)  # a REX prefix
        if code[start] != 0xFF or start + 1 >= len(code):
            continue
        modrm = code[start + 1]
        if (modrm >> 3) & 7 != 2:
            continue
        mod, rm = modrm >> 6, modrm & 7
        size = 2 + (rm == 4 and mod != 3)  # ff, modrm, then a SIB byte
        if mod == 0 and rm == 5:
            size += 4  # rip-relative
        elif mod == 0 and rm == 4 and code[start + 2] & 7 == 5:
            size += 4  # SIB without base: disp32
        else:
            size += {0: 0, 1: 1, 2: 4, 3: 0}[mod]
        if start + size == len(code):
            return INDIRECT, None
    return None


# -- A prologue's stack --------------------------------------------------------
#
# What a function without unwind information has put on the stack by the time it is
# interrupted: its prologue's pushes and `sub $N, %rsp` (an `and $-ALIGN, %rsp` only
# lowers the stack further). Its return address is at least that far above the stack
# pointer, so no word below can be it: there, a kernel keeps its buffers over the
# frames earlier calls left. Read up to the first instruction this does not know, a
# branch, or the interrupted one; the sum is a lower bound.

PUSHES = set(range(0x50, 0x58))


# x86-64's register numbers (ModRM, REX) -> perf's (PERF_REG_X86_*) for the registers a
# prologue may keep the stack pointer in
PERF_REGISTER = {0: 0, 1: 2, 2: 3, 3: 1, 5: 6, 6: 4, 7: 5, **{n: n + 8 for n in range(8, 16)}}


def frame_size(code: bytes, before: int) -> Tuple[int, Optional[Tuple[int, int]]]:
    """Bytes a function's straight-line prologue (`code`, from its first byte) has put
    on the stack before offset `before`; and, where it kept the stack pointer in a
    register (`mov %rsp, %rbx`, as OpenBLAS's kernels and frame-pointer code do, before
    aligning the stack down), that register (perf's number) and the bytes then on the
    stack: the return address is there plus that."""
    at = size = 0
    anchor = None
    while at < min(before, len(code)):
        rex = code[at] if 0x40 <= code[at] <= 0x4F else None
        op_at = at + (rex is not None)
        if op_at >= len(code):
            break
        op = code[op_at]
        if code[at:at + 4] == b"\xf3\x0f\x1e\xfa":  # endbr64
            at += 4
        elif code[at:at + 3] == b"\xc5\xf8\x77":  # vzeroupper
            at += 3
        elif op in PUSHES and rex in (None, 0x41):
            size += 8
            at = op_at + 1
        elif rex is not None and rex & 8 and op in (0x83, 0x81) and op_at + 1 < len(code) \
                and code[op_at + 1] in (0xEC, 0xE4):  # sub/and $imm, %rsp
            wide = op == 0x81
            immediate = int.from_bytes(code[op_at + 2:op_at + (6 if wide else 3)], "little", signed=True)
            if code[op_at + 1] == 0xEC:
                if immediate < 0:
                    break
                size += immediate
            at = op_at + (6 if wide else 3)
        elif rex is not None and rex & 8 and op in (0x89, 0x8B) and op_at + 1 < len(code):
            modrm = code[op_at + 1]
            mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
            if mod == 3:  # a register to a register: not into rsp
                if (op == 0x89 and rm == 4 and not rex & 1) or (op == 0x8B and reg == 4 and not rex & 4):
                    break
                source, target = (reg + 8 * bool(rex & 4), rm + 8 * bool(rex & 1)) if op == 0x89 else \
                    (rm + 8 * bool(rex & 1), reg + 8 * bool(rex & 4))
                if source == 4 and target in PERF_REGISTER:
                    anchor = (PERF_REGISTER[target], size)
                elif anchor is not None and PERF_REGISTER.get(target) == anchor[0]:
                    anchor = None
                at = op_at + 2
            elif rm == 4 and op_at + 2 < len(code) and code[op_at + 2] & 7 == 4 \
                    and not (op == 0x8B and reg == 4 and not rex & 4):
                at = op_at + 3 + {0: 0, 1: 1, 2: 4}[mod]  # a register saved at (or read from) disp(%rsp)
                if op == 0x8B and anchor is not None and anchor[0] == PERF_REGISTER.get(reg + 8 * bool(rex & 4)):
                    anchor = None
            else:
                break
        else:
            break
    return (size, anchor) if at <= before else (0, None)
