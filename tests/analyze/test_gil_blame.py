"""Who held the GIL while others waited (analyze/processors/gil.py): unit checks on
samples made by hand, then real recordings of tests/workloads/gil_blame.py on 3.11
(agent), 3.13 and Debian's 3.15."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import WORKLOADS, Folded, current_python, interpreter, mixedstack
from mixedstack import markers
from mixedstack.analyze.processors import gil, offcpu
from mixedstack.model import Frame, Sample
from mixedstack.perf import command as perf

K = "[kernel.kallsyms]"
LIBPYTHON = "/usr/lib/libpython3.13.so.1.0"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
ZLIB_MODULE = "/usr/lib/python3.13/lib-dynload/zlib.cpython-313-x86_64-linux-gnu.so"
LIBZ = "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
JIT = "/tmp/jitted-100-1.so"


def frames(*spec: Tuple[str, str]) -> List[Frame]:
    """(symbol, dso) root first -> Frames leaf first, as perf prints them."""
    return [Frame("1", symbol, dso) for symbol, dso in reversed(spec)]


PYTHON_LOOP = frames(("py::spin:/app.py", JIT), ("_PyEval_EvalFrameDefault", LIBPYTHON), ("long_add", LIBPYTHON))
IN_MEMCPY = frames(("py::spin:/app.py", JIT), ("list_resize", LIBPYTHON), ("__memmove_avx_unaligned", LIBC))
DEFLATING = frames(("py::pack:/app.py", JIT), ("zlib_compress", ZLIB_MODULE), ("deflate", LIBZ), ("longest_match", LIBZ))
IN_ZLIB_MODULE = frames(("py::pack:/app.py", JIT), ("zlib_compress", ZLIB_MODULE))
READING = frames(("py::serve:/app.py", JIT), ("_Py_read", LIBPYTHON), ("read", LIBC),
                 ("entry_SYSCALL_64_after_hwframe", K), ("do_syscall_64", K), ("ksys_read", K))
TAKING_GIL = frames(("py::serve:/app.py", JIT), ("PyEval_RestoreThread", LIBPYTHON), ("take_gil", LIBPYTHON))


@pytest.mark.parametrize("stack,held", [
    (PYTHON_LOOP, True), (IN_MEMCPY, True), (IN_ZLIB_MODULE, True),
    (DEFLATING, False), (READING, False), (TAKING_GIL, False),
])
def test_a_thread_holds_the_gil_when_it_runs_python_or_the_interpreter(stack, held):
    assert gil.holds_gil(stack) is held


def wait(tid: str, at: float, ns: int) -> Sample:
    """A GIL wait as offcpu.weigh makes it: the marker leaf, the blocked time as period."""
    return Sample("python-1/" + tid, ns, perf.SWITCH_EVENT, [offcpu.marker("GIL")] + TAKING_GIL, "python", "1",
                  tid, "%.9f" % at)


def running(tid: str, at: float, stack: List[Frame], ns: int = 2_000_000) -> Sample:
    return Sample("python-1/" + tid, ns, perf.CPU_EVENT, stack, "python", "1", tid, "%.9f" % at)


def test_each_wait_is_shared_among_the_holders_sampled_in_it():
    samples = [
        wait("1", 10.000, 10_000_000),  # 10 ms: two samples of thread 2 in Python, one of 3 deflating
        running("2", 10.003, PYTHON_LOOP), running("3", 10.004, DEFLATING), running("2", 10.007, PYTHON_LOOP),
        running("1", 10.008, PYTHON_LOOP),  # the waiter itself: never its own holder
        wait("1", 10.050, 1_000_000),  # 1 ms, no sample inside: thread 3 in its module, 1.5 ms before
        running("3", 10.0485, IN_ZLIB_MODULE),
        wait("1", 20.000, 4_000_000),  # no holder sampled anywhere near
    ]
    blame = gil.Blame().add_all(samples)
    shares = [(waiter.tid, holder.tid if holder else None, ns) for waiter, holder, ns in blame.shares()]
    assert sorted(shares, key=str) == sorted([("1", "2", 5_000_000), ("1", "2", 5_000_000), ("1", "3", 1_000_000),
                                              ("1", None, 4_000_000)], key=str)
    holders = list(blame.holders())
    assert sum(sample.period for sample in holders) == 15_000_000  # every wait, blamed once
    unheld = [sample for sample in holders if sample.frames[0].symbol == markers.NO_GIL_HOLDER]
    assert [sample.period for sample in unheld] == [4_000_000]


# --- real perf, real interpreters -------------------------------------------------------------

INTERPRETERS = [
    ("3.11-agent", lambda: interpreter((3, 11))),
    ("3.13-perf-jit", lambda: interpreter((3, 13))),
    ("3.15-debian", lambda: current_python((3, 15), "root")),
]


@pytest.mark.perf
@pytest.mark.parametrize("label,python", INTERPRETERS, ids=[label for label, _ in INTERPRETERS])
def test_the_main_threads_gil_wait_is_blamed_on_the_pure_python_loop(perf_ok, tmp_path: Path, label, python):
    """The main thread sleeps 1 ms between small steps; pure_python_loop never leaves
    Python; compress_buffers spends its time in zlib's deflate, without the GIL."""
    data = tmp_path / "perf.data"
    done = mixedstack("record", "--off-cpu", "-o", str(data), "--", python(), str(WORKLOADS / "gil_blame.py"), "3")
    assert done.returncode == 0, done.stderr
    report = mixedstack("report", "--format", "json", str(data))
    assert report.returncode == 0, report.stderr
    figures = json.loads(report.stdout)
    main = next(row for row in figures["threads"] if row["name"] == "MainThread")
    rows = [row for row in figures["gil"]["holders"] if row["tid"] == main["tid"]]
    by_function = {row["function"].split(" (")[0]: row["share"] for row in rows}
    assert by_function.get("pure_python_loop", 0) >= 0.8, rows
    assert by_function.get("compress_buffers", 0) <= 0.1, rows
    assert figures["gil"]["holders"][0]["holder"] == "Thread (pure_python_loop)", figures["gil"]["holders"][:3]
    # the holders' stacks add up to the GIL waits that --what off shows
    holders = mixedstack("fold", "--what", "gil-holders", str(data))
    off = mixedstack("fold", "--what", "off", str(data))
    assert holders.returncode == 0 and off.returncode == 0, holders.stderr + off.stderr
    blamed = Folded(holders.stdout).total()
    waited = Folded(off.stdout).total(lambda frames: frames[-1] == markers.off_cpu("GIL"))
    assert blamed == pytest.approx(waited, rel=0.001), (blamed, waited)
    assert Folded(holders.stdout).total(lambda frames: any(f.startswith("pure_python_loop (") for f in frames)) \
        >= 0.5 * blamed
