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
        return _run(cie, self.read(at, max(0, end - at)), state, state, begin, vaddr)

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

def _sleb(data: bytes, at: int) -> Tuple[int, int]:
    value, shift, byte = 0, 0, 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return (value - (1 << shift) if byte & 0x40 else value), at


def _uleb(data: bytes, at: int) -> Tuple[int, int]:
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, at


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
