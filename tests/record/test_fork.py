"""Profiles a parent that forks (os.fork, a multiprocessing fork pool, threads
started afterwards) on the interpreters whose perf_jit buffers its jitdump: 3.13
(pyenv) and Debian's 3.14 and 3.15. Every process and thread keeps whole stacks.
"""
from __future__ import annotations

import collections
import struct

import pytest

from conftest import WORKLOADS, current_python, interpreter, is_complete, perf_problem, record_and_fold, skip_or_fail
from mixedstack.record import jitdump

INTERPRETERS = {"3.13": lambda: interpreter((3, 13)),
                "3.14": lambda: current_python((3, 14), "bare"),
                "3.15": lambda: current_python((3, 15), "root")}
PARTS = ("forked_child", "parent_between", "pool_worker", "late_thread", "parent_after")


@pytest.fixture(scope="module", params=sorted(INTERPRETERS))
def forks(request, tmp_path_factory):
    python = INTERPRETERS[request.param]()
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("forks")
    recorded, folded = record_and_fold(tmp, [python, str(WORKLOADS / "forks.py")], "--pid", "--tid")
    assert recorded.returncode == 0, recorded.stderr
    return folded


@pytest.mark.perf
def test_every_part_is_named_and_complete(forks):
    for part in PARTS:
        sub = forks.under(part)
        assert sub.total() >= 50_000_000, (part, sub.total())  # >= 50 ms of its ~100-400 ms
        assert sub.complete_share() >= 0.95, (part, sub.complete_share())


@pytest.mark.perf
def test_every_process_and_thread_keeps_complete_stacks(forks):
    totals, complete = collections.Counter(), collections.Counter()
    for frames, weight in forks.stacks.items():
        totals[frames[0]] += weight
        if is_complete(frames):
            complete[frames[0]] += weight
    # four processes (parent, os.fork child, two pool workers) and the parent's threads
    assert len({label.rsplit("-", 1)[1].split("/")[0] for label in totals}) >= 4, sorted(totals)
    for label, total in totals.items():
        if total >= 20_000_000:  # a thread with a handful of samples says little
            assert complete[label] / total >= 0.95, (label, complete[label] / total)


# -- jitdump.repair on dumps written the way a fork breaks them ---------------------

def dump(records, pid=7):
    return jitdump.HEADER.pack(jitdump.MAGIC, 1, jitdump.HEADER.size, 62, 0, pid, 1, 0) + b"".join(records)


def code_load(index, name=b"py::f:/app.py", code=b"\x90" * 24):
    body = struct.pack("<IIQQQQ", 7, 7, 0x1000 * index, 0x1000 * index, len(code), index) + name + b"\0" + code
    return struct.pack("<IIQ", jitdump.CODE_LOAD, 16 + len(body), 100 + index) + body


def test_a_repeat_of_unflushed_bytes_is_skipped(tmp_path):
    records = [code_load(i, b"py::f%d:/app.py" % i) for i in range(1, 41)]
    whole = dump(records)
    # the child flushed the parent's buffer (from `cut`), the parent flushed it again with more
    cut, more = len(dump(records[:10])) + 30, len(dump(records[:25])) + 11
    broken = whole[:more] + whole[cut:]
    path = tmp_path / "jit-7.dump"
    path.write_bytes(broken)
    repaired = jitdump.repair(str(path), 7)
    assert repaired.dropped > 0 and not repaired.header
    names = set()
    data = path.read_bytes()
    at = jitdump.HEADER.size
    while at < len(data):
        size = jitdump._record_ok(data, at)
        assert size is not None, at  # every kept record parses
        names.add(data[at + 56:data.index(b"\0", at + 56)])
        at += size
    assert names == {b"py::f%d:/app.py" % i for i in range(1, 41)}


def test_an_empty_dump_gets_a_header_and_a_cut_one_loses_its_last_record(tmp_path):
    empty = tmp_path / "jit-8.dump"
    empty.write_bytes(b"")
    assert jitdump.repair(str(empty), 8).header
    assert struct.unpack_from("<II", empty.read_bytes(), 0) == (jitdump.MAGIC, 1)
    assert struct.unpack_from("<I", empty.read_bytes(), 20)[0] == 8
    cut = tmp_path / "jit-9.dump"
    cut.write_bytes(dump([code_load(1), code_load(2)])[:-5])
    repaired = jitdump.repair(str(cut), 9)
    assert (repaired.records, repaired.dropped) == (1, len(code_load(2)) - 5)
    whole = tmp_path / "jit-10.dump"
    whole.write_bytes(dump([code_load(1), code_load(2)]))
    before = whole.read_bytes()
    assert jitdump.repair(str(whole), 10) == (2, 0, False) and whole.read_bytes() == before


def test_a_contained_process_dump_is_renumbered_after_its_host_pid(tmp_path):
    """A process in a container writes its pid there (1) into its dump; perf inject maps
    each code load to the pid its record names: after renumber, the host's."""
    path = tmp_path / "jit-4242.dump"
    path.write_bytes(dump([code_load(1), code_load(2)], pid=1))
    jitdump.renumber(str(path), 4242)
    data = path.read_bytes()
    assert struct.unpack_from("<I", data, 20)[0] == 4242
    at, pids = jitdump.HEADER.size, []
    while at < len(data):
        _, size, _ = jitdump.RECORD.unpack_from(data, at)
        pids.append(struct.unpack_from("<II", data, at + 16))
        at += size
    assert pids == [(4242, 4242), (4242, 4242)]
    assert jitdump.repair(str(path), 4242) == (2, 0, False)  # still whole
