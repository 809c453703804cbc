"""record's one pass over perf.data (perf/rewrite.py) shrinks the file to the stack
bytes the kernel copied, and perf script prints exactly what it printed before."""
from __future__ import annotations

import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path


from conftest import perf_script_text
from conftest import interpreter
from mixedstack.perf import command as perf
from mixedstack.perf import data as perfdata
from mixedstack.perf import rewrite


SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    sum(i * i for i in range(500))\n"


def test_tidy_shrinks_a_recording_and_perf_script_prints_the_same(perf_ok, tmp_path):
    python = interpreter((3, 13))
    target = subprocess.Popen([python, "-X", "perf_jit", "-c", SPIN.format(seconds=30)])
    try:
        time.sleep(0.5)  # attached after start-up: no exec during the recording
        data, buildid = tmp_path / "raw.data", tmp_path / "buildid"
        subprocess.run(["perf", "--buildid-dir", str(buildid), "record", "-q", "--no-bpf-event", "-N",
                        "--call-graph", "dwarf,32768", "-o", str(data), "-p", str(target.pid),
                        "--", "sleep", "0.6"], check=True, stderr=subprocess.DEVNULL)
    finally:
        target.send_signal(signal.SIGINT)
        target.wait()
        for name in ("/tmp/jit-%d.dump" % target.pid,):
            Path(name).unlink(missing_ok=True)
    tidied_path = tmp_path / "tidied.data"
    shutil.copy(data, tidied_path)
    tidied = rewrite.tidy(str(tidied_path))
    before, after = data.stat().st_size, tidied_path.stat().st_size
    assert tidied.saved == before - after and after * 2 < before, (before, after)
    assert tidied.clipped > 0.9 * tidied.samples  # at argc: the main thread's copies ran to the stack's top
    text = perf_script_text(data, buildid)
    assert text.count(b"cpu-clock") > 100
    # the same samples, but those taken on a `ret`: they now start where it returns
    # (the original's caller line prints the return address - 1), and unwind further
    before_blocks, after_blocks = text.split(b"\n\n"), perf_script_text(tidied_path, buildid).split(b"\n\n")
    assert len(before_blocks) == len(after_blocks)
    changed = [(b, a) for b, a in zip(before_blocks, after_blocks) if b != a]
    assert len(changed) == tidied.stepped
    def user_frames(block):
        lines = block.split(b"\n")
        return lines[0], [int(line.split()[0], 16) for line in lines[1:]
                          if line.strip() and int(line.split()[0], 16) < perfdata.KERNEL_START]
    for old, new in changed:
        (old_header, old_user), (new_header, new_user) = user_frames(old), user_frames(new)
        assert old_header == new_header
        assert new_user[0] == old_user[1] + 1
        assert len(new_user) >= len(old_user) - 1
    stats = subprocess.run(["perf", "report", "-i", str(data), "--stats"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True).stdout
    assert int(re.search(r"^\s*SAMPLE events:\s*(\d+)", stats, re.M).group(1)) == tidied.samples
    assert tidied.samples == text.count(b"cpu-clock") == len(tidied.times)
    assert target.pid in tidied.pids
    assert perf.sample_stats(str(tidied_path)) == {"samples": tidied.samples, "lost": tidied.lost}


def test_tidy_leaves_other_files_alone(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not a recording\n" * 100)
    assert rewrite.tidy(str(other)).samples == 0
    assert other.read_bytes() == b"not a recording\n" * 100


def start_of_a_process_stack(argv, environ, sp=0x7ffc0000f000 - 4096):
    """A copy of a main thread's stack from `sp` to the top: frames, then argc,
    argv[], envp[], the auxiliary vector, padding and the strings (System V ABI)."""
    frames = [0x401000, 0x7ffc0000e100, 3] * 20
    strings = b"".join(text + b"\0" for text in argv + environ)
    head_words = len(frames) + 1 + len(argv) + 1 + len(environ) + 1 + 8
    strings_at = sp + 8 * head_words + 64  # after 64 bytes of padding
    pointers, at = [], strings_at
    for text in argv + environ:
        pointers.append(at)
        at += len(text) + 1
    words = frames + [len(argv)] + pointers[:len(argv)] + [0] + pointers[len(argv):] + [0]
    words += [33, 0x7fff1000, 6, 4096, 25, strings_at - 32, 0, 0]  # AT_SYSINFO_EHDR, AT_PAGESZ, AT_RANDOM, AT_NULL
    data = struct.pack("<%dQ" % len(words), *words) + bytes(64) + strings
    data += bytes(-len(data) % 4096)
    return data, sp, sp + 8 * len(frames)


def test_where_a_process_stack_began_is_found_only_in_the_full_layout():
    data, sp, argc = start_of_a_process_stack([b"python3", b"app.py"], [b"HOME=/root", b"LANG=C"])
    assert rewrite.entry_stack_pointer(data, 0, len(data), sp) == argc
    no_environ, sp, argc = start_of_a_process_stack([b"true"], [])
    assert rewrite.entry_stack_pointer(no_environ, 0, len(no_environ), sp) == argc
    before_strings = data[:data.index(b"python3\0")]  # the kernel could not copy the strings' page
    assert rewrite.entry_stack_pointer(before_strings, 0, len(before_strings), sp) == argc
    cut = data[:(argc - sp) + 40]  # the copy stopped before the auxiliary vector
    assert rewrite.entry_stack_pointer(cut, 0, len(cut), sp) is None
    wrong_count = bytearray(data)
    struct.pack_into("<Q", wrong_count, argc - sp, 3)  # argc says 3, argv holds 2
    assert rewrite.entry_stack_pointer(bytes(wrong_count), 0, len(data), sp) is None
    no_pagesz = data.replace(struct.pack("<QQ", 6, 4096), struct.pack("<QQ", 7, 4096))
    assert rewrite.entry_stack_pointer(no_pagesz, 0, len(data), sp) is None
