"""perf/unwindinfo.py: the unwind tables, call sites and prologues that record's
resumption reads (perf/resume.py), checked against readelf and gcc's own output."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import WORKLOADS
from mixedstack.perf.unwindinfo import DIRECT, INDIRECT, RBP, RSP, ElfCode, call_before, frame_size

LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")


@pytest.fixture(scope="module")
def nocfi(tmp_path_factory) -> Path:
    library = tmp_path_factory.mktemp("nocfi") / "libnocfi.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(WORKLOADS / "nocfi" / "spin.S"),
                    str(WORKLOADS / "nocfi" / "caller.c")], check=True)
    return library


def symbols(path: Path) -> dict:
    out = subprocess.run(["nm", str(path)], stdout=subprocess.PIPE, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


def test_code_without_cfi_is_told_from_code_with_it(nocfi):
    code, names = ElfCode.open(bytes(nocfi)), symbols(nocfi)
    assert code is not None and code.table is True
    assert not code.covered(names["spin_no_cfi"] + 8)
    for function in ("work", "litter_step", "spin_directly"):
        assert code.covered(names[function]), function
    assert code.function_start(names["spin_no_cfi"] + 20) == names["spin_no_cfi"]
    code.close()


def test_the_prologue_of_the_function_without_cfi_gives_its_frame(nocfi):
    """spin.S: push %rbp; push %rbx; mov %rsp,%rbp; sub $20480,%rsp; and $-4096,%rsp."""
    code, names = ElfCode.open(bytes(nocfi)), symbols(nocfi)
    start = names["spin_no_cfi"]
    body = code.read(start, 64)
    assert frame_size(body, 30) == (16 + 20480, (6, 16))  # rbp (perf's 6) holds entry - 16
    assert frame_size(body, 1) == (8, None)  # interrupted after the first push only
    code.close()


@pytest.mark.parametrize("prologue,before,expected", [
    # OpenBLAS's Haswell dgemm: sub, saves at (%rsp), vzeroupper, a load, mov %rsp,%rbx, sub, and
    ("4883ec60 48891c24 48896c2408 4c89642410 c5f877 4c8b542468 4889e3 4881ec80700000 4881e400f0ffff",
     64, (0x60 + 0x7080, (1, 0x60))),
    ("f30f1efa 55 4889e5 4157 4156 53 4883ec28", 32, (8 + 8 + 8 + 8 + 0x28, (6, 8))),  # endbr64, frame pointer
    ("4883ec18 0f0b", 16, (0x18, None)),  # ud2: not known, the sum so far
    ("e800000000 4883ec18", 16, (0, None)),  # a call first: nothing is known
    ("4889e3 4889c3", 16, (0, None)),  # rsp kept in rbx, then rbx overwritten
])
def test_frame_size_reads_the_usual_prologues(prologue, before, expected):
    assert frame_size(bytes.fromhex(prologue.replace(" ", "")), before) == expected


@pytest.mark.parametrize("code,kind", [
    ("90909090 e8 10000000", DIRECT),  # call rel32
    ("909090909090 ffd0", INDIRECT),  # call *%rax
    ("9090909090 41ffd3", INDIRECT),  # call *%r11
    ("90909090 ff5008", INDIRECT),  # call *0x8(%rax)
    ("90 ff15 44332211", INDIRECT),  # call *disp(%rip)
    ("90 ff9424 10000000", INDIRECT),  # call *0x10(%rsp)
    ("90909090 4883c408", None),  # add $8,%rsp: no call
    ("9090909090 ffe0", None),  # jmp *%rax: a jump, not a call
])
def test_call_before_a_return_address(code, kind):
    data = bytes.fromhex(code.replace(" ", "")).rjust(8, b"\x90")
    found = call_before(data, 0x1000)
    assert (found[0] if found else None) == kind
    if kind == DIRECT:
        assert found[1] == 0x1010


@pytest.mark.skipif(not LIBC.exists() or shutil.which("readelf") is None, reason="needs glibc's libc.so.6 and readelf")
def test_unwind_rules_agree_with_readelf():
    """Rows of libc's unwind tables (CFA = rsp/rbp + offset, where rbp is saved),
    as readelf -wF interprets them, at random addresses inside each row."""
    code = ElfCode.open(bytes(LIBC))
    # (readelf exits 1 over warnings about sections it does not read)
    text = subprocess.run(["readelf", "-wF", str(LIBC)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True).stdout
    generator = random.Random(7)
    checked = 0
    for block in text.split("\n\n"):
        span = re.search(r"FDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)", block)
        lines = block.splitlines()
        header = next((i for i, line in enumerate(lines) if line.strip().startswith("LOC")), None)
        if span is None or header is None:
            continue
        columns = lines[header].split()
        # every row bounds the one before it; rows with other columns are not checked
        rows = [dict(zip(columns, line.split())) for line in lines[header + 1:] if re.match(r"[0-9a-f]{8,} ", line)]
        for index, row in enumerate(rows):
            begin = int(row["LOC"], 16)
            end = int(rows[index + 1]["LOC"], 16) if index + 1 < len(rows) else int(span.group(2), 16)
            cfa = re.match(r"(rsp|rbp)\+(\d+)$", row["CFA"])
            if end <= begin or cfa is None or len(row) != len(columns) or row.get("rbp", "u")[:1] not in ("u", "c"):
                continue
            rule = code.rule(generator.randrange(begin, end))
            assert rule is not None, (hex(begin), row)
            assert (rule.register, rule.offset) == ((RSP if cfa.group(1) == "rsp" else RBP), int(cfa.group(2))), row
            assert rule.rbp_at == (int(row["rbp"][1:]) if row.get("rbp", "u").startswith("c") else None), row
            checked += 1
    code.close()
    assert checked > 5000
