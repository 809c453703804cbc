"""What makes record cheap and fold fast, checked against perf itself:

- record's one pass over perf.data (perf/rewrite.py) shrinks the file to the stack
  bytes the kernel copied, and perf script prints exactly what it printed before;
- a recording read by several perf script processes over time slices gives the
  samples one perf script gives, in the same order;
- perf record -N leaves the vDSO out of the build-id cache: record puts it there,
  so stacks through the vDSO still unwind.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import WORKLOADS, Folded, interpreter, mixedstack, record_and_fold
from mixedstack.perf import command as perf
from mixedstack.perf import data as perfdata
from mixedstack.perf import rewrite
from mixedstack.analyze.parse import parse
from mixedstack.analyze.sources import open_input
from mixedstack.analyze.sources import time_spans

SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    sum(i * i for i in range(500))\n"


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    from conftest import perf_problem, skip_or_fail

    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("slices")
    recorded, folded = record_and_fold(
        tmp, [interpreter((3, 13)), str(WORKLOADS / "phases.py"), str(tmp / "t.json"), "0.4"])
    assert recorded.returncode == 0, recorded.stderr
    return tmp / "perf.data", folded


def samples_of(data: Path, slices):
    with open_input(str(data), slices=slices) as source:
        text = source.text
        assert text.streams == (slices or text.streams)
        return [tuple(s[:3]) + (list(map(tuple, s.frames)),) + tuple(s[4:]) for s in parse(text)]


def test_time_slices_give_the_samples_one_perf_script_gives(phases):
    data, folded = phases
    whole = samples_of(data, 1)
    assert len(whole) > 500
    for slices in (2, 3, 5):
        assert samples_of(data, slices) == whole, slices
    # the slices come from record's summary of the sample times; without it, from the file
    meta_path = Path(str(data) + ".d") / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert len(meta["sample_times"]) == 65 and meta["bytes"] == data.stat().st_size
    meta_path.write_text(json.dumps(dict(meta, sample_times=[])))
    try:
        assert samples_of(data, 3) == whole
    finally:
        meta_path.write_text(json.dumps(meta))
    again = mixedstack("fold", str(data))
    assert again.returncode == 0, again.stderr
    assert Folded(again.stdout).stacks == folded.stacks


def span_bounds(span):
    start, _, end = span.partition(",")
    ns = lambda text: int(text.replace(".", ""))  # noqa: E731  ("SECONDS.NNNNNNNNN")
    return (ns(start) if start else None), (ns(end) if end else None)


@pytest.mark.parametrize("slices", [2, 3, 7])
def test_time_spans_hold_each_sample_once(slices):
    rng = random.Random(slices)
    # some samples at the same time: they cannot be split apart
    times = sorted(10**12 + 5 * 10**8 if rng.random() < 0.05 else rng.randrange(10**12, 10**12 + 10**9)
                   for _ in range(5000))
    same = times.count(10**12 + 5 * 10**8)
    spans = time_spans(times, slices)
    assert 1 < len(spans) <= slices
    bounds = [span_bounds(span) for span in spans]
    assert bounds[0][0] is None and bounds[-1][1] is None
    for t in set(times):
        assert sum((a is None or a <= t) and (b is None or t <= b) for a, b in bounds) == 1, t
    counts = [sum(1 for t in times if (a is None or a <= t) and (b is None or t <= b)) for a, b in bounds]
    assert max(counts) <= len(times) / slices + same + 1, counts
    assert time_spans(times, 1) == [None] and time_spans([], 4) == [None]


def perf_script_text(data: Path, buildid: Path) -> bytes:
    return subprocess.run(perf.script_command(str(data), str(buildid)), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, check=True).stdout


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


def test_event_names_are_read_from_the_file_as_perf_evlist_names_them(phases):
    data, _ = phases
    listed = subprocess.run(["perf", "evlist", "-i", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True).stdout.split()
    assert perfdata.event_names(str(data)) == listed
    assert perfdata.event_names(__file__) is None


def test_the_recording_keeps_the_kernel_symbols_its_samples_name(phases):
    data, folded = phases
    kallsyms = list(Path(str(data) + ".d", "buildid", "[kernel.kallsyms]").glob("*/kallsyms"))
    assert len(kallsyms) == 1
    kept = kallsyms[0].read_bytes().count(b"\n")
    assert 3 < kept < Path("/proc/kallsyms").read_bytes().count(b"\n") / 20
    # perf script names every kernel frame as it does with all of /proc/kallsyms
    buildid = str(data) + ".d/buildid"
    with_kept = subprocess.run(perf.script_command(str(data), buildid, kallsyms=str(kallsyms[0])),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    assert with_kept.count(b"[kernel.kallsyms]") > 300  # hundreds of kernel frames to name
    assert with_kept == perf_script_text(data, Path(buildid))
    assert folded.total(lambda frames: any(frame.endswith("_[k]") for frame in frames)) == 0  # no --kernel
    again = mixedstack("fold", "--kernel", str(data))
    assert Folded(again.stdout).total(lambda frames: any("entry_SYSCALL" in f for f in frames)) > 0


@pytest.mark.parametrize("version", [(3, 13), (3, 11)])
def test_stacks_through_the_vdso_unwind(perf_ok, tmp_path, version):
    code = "import time\nend = time.time() + 1.5\nwhile time.time() < end:\n    pass\n"
    recorded, folded = record_and_fold(tmp_path, [interpreter(version), "-c", code], "--kernel")
    assert recorded.returncode == 0, recorded.stderr
    through = folded.total(lambda frames: any(f.startswith("__vdso_clock_gettime") for f in frames))
    rooted = folded.total(lambda frames: any(f.startswith("__vdso_clock_gettime") for f in frames)
                          and any(f.startswith("<module>") for f in frames))
    assert through > 0.05 * folded.total(), (through, folded.total())
    # without the vDSO in the build-id cache, 3% of these were (perf -N alone)
    assert rooted >= 0.95 * through, (rooted, through)


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
