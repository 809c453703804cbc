"""ELF notes read by hand: a build id from an ELF image or from bare notes (the
kernel's), and this process's vDSO image. Standard library only.
"""
from __future__ import annotations

import os
import struct
from typing import List, Optional, Tuple

NT_GNU_BUILD_ID = 3
PT_NOTE = 4
SHT_NOTE = 7


def read_file(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def build_id(elf_or_notes: Optional[bytes], notes_only: bool = False) -> Optional[str]:
    """The GNU build id (hex) in ELF notes: a whole ELF image's PT_NOTE segments,
    or bare notes (/sys/kernel/notes)."""
    if not elf_or_notes:
        return None
    data = elf_or_notes
    spans: List[Tuple[int, int]] = [(0, len(data))]
    if not notes_only:
        if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF only
            return None
        phoff, = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        spans = []
        for index in range(phnum):
            at = phoff + index * phentsize
            if at + 40 <= len(data) and struct.unpack_from("<I", data, at)[0] == PT_NOTE:
                offset, = struct.unpack_from("<Q", data, at + 8)
                size, = struct.unpack_from("<Q", data, at + 32)
                spans.append((offset, min(offset + size, len(data))))
        # and its note sections (perf inject's jitted-*.so have no note segment)
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        for index in range(shnum if shoff else 0):
            at = shoff + index * shentsize
            if at + 40 <= len(data) and struct.unpack_from("<I", data, at + 4)[0] == SHT_NOTE:
                offset, size = struct.unpack_from("<QQ", data, at + 24)
                spans.append((offset, min(offset + size, len(data))))
    for at, end in spans:
        while at + 12 <= end:
            name_size, desc_size, kind = struct.unpack_from("<III", data, at)
            name_at = at + 12
            desc_at = name_at + (name_size + 3) // 4 * 4
            if kind == NT_GNU_BUILD_ID and data[name_at:name_at + name_size] == b"GNU\0":
                return data[desc_at:desc_at + desc_size].hex()
            at = desc_at + (desc_size + 3) // 4 * 4
    return None


def own_vdso() -> Optional[bytes]:
    """This process's vDSO image: the kernel maps the same one into every process."""
    try:
        with open("/proc/self/maps") as maps:
            line = next((line for line in maps if line.rstrip().endswith("[vdso]")), None)
        if line is None:
            return None
        start, end = (int(part, 16) for part in line.split(None, 1)[0].split("-"))
        fd = os.open("/proc/self/mem", os.O_RDONLY)
        try:
            return os.pread(fd, end - start, start)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
