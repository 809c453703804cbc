"""Lock waits on free-threaded CPython (3.13t, `make ft-python`): named by what they wait
for (offcpu.FREE_THREADED_WAITS), in `fold --what off` and in report's lock-wait table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import WORKLOADS, Folded, ft_python, mixedstack
from mixedstack import markers
from mixedstack.analyze.processors import offcpu
from mixedstack.model import Frame

pytestmark = pytest.mark.perf

LIBPYTHON = "/opt/ft/lib/libpython3.13t.so.1.0"
K = "[kernel.kallsyms]"


def stack(*names: str) -> list:
    return [Frame("1", name, K if name.startswith(("__x64", "do_syscall")) else LIBPYTHON)
            for name in reversed(names)]


@pytest.mark.parametrize("frames,state,reason", [
    (stack("lock_PyThread_acquire_lock", "_PyMutex_LockTimed", "_PyParkingLot_Park", "_PySemaphore_Wait",
           "do_syscall_64", "__x64_sys_futex"), "S", "mutex"),
    # a PyMutex spins in sched_yield first: the thread is runnable, still waiting on the lock
    (stack("lock_PyThread_acquire_lock", "_PyMutex_LockTimed", "do_syscall_64", "__x64_sys_sched_yield"), "R",
     "mutex"),
    (stack("PyDict_SetItem", "_PyCriticalSection_BeginSlow", "_PyMutex_LockTimed", "_PyParkingLot_Park"), "S",
     "critical section"),
    (stack("gc_collect_main", "_PyEval_StopTheWorld", "_PyParkingLot_Park"), "S", "stop-the-world"),
    (stack("_PyEval_EvalFrameDefault", "long_add"), "R", "preempted"),
])
def test_free_threaded_waits_are_named_by_what_they_wait_for(frames, state, reason):
    assert offcpu.blocked_reason(frames, state) == reason


def test_lock_waits_of_contending_threads_are_named_and_tabled(perf_ok, tmp_path: Path):
    """Three threads on one threading.Lock, two on one dict, one sharing nothing (3.13t)."""
    data = tmp_path / "perf.data"
    done = mixedstack("record", "--off-cpu", "-o", str(data), "--", ft_python(), str(WORKLOADS / "locks.py"), "3")
    assert done.returncode == 0, done.stderr
    off = mixedstack("fold", "--what", "off", str(data))
    assert off.returncode == 0, off.stderr
    folded = Folded(off.stdout)

    def blocked(function: str, reasons=None) -> int:
        """Blocked time under `function` (not runnable: preempted is not a wait), of `reasons`."""
        return folded.under(function).total(lambda frames: markers.off_cpu_reason(frames[-1]) != "preempted"
                                            and (reasons is None or markers.off_cpu_reason(frames[-1]) in reasons))

    assert blocked("locked_work", {"mutex"}) >= 0.9 * blocked("locked_work") > 0
    assert blocked("dict_writer", {"critical section", "mutex"}) >= 0.9 * blocked("dict_writer") > 0
    assert blocked("dict_writer", {"critical section"}) > 0
    assert blocked("free_runner", {"mutex", "critical section"}) == 0
    report = mixedstack("report", "--format", "json", str(data))
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)["locks"]
    kinds = {(row["function"].split(" (")[0], row["kind"]) for row in rows}
    assert ("locked_work", "mutex") in kinds and ("dict_writer", "critical section") in kinds, rows
    # who held it: the thread that released the lock woke its waiter, another of the same
    # workers. Most waits are spins in sched_yield, which nothing wakes (woken_share): a
    # row may have no woken wait at all (a dict writer's, in one CI run), but over 3 s of
    # three threads on one lock some wait parks and is woken.
    woken = [row for row in rows if (row["function"].split(" (")[0], row["kind"]) in
             {("locked_work", "mutex"), ("dict_writer", "critical section")} and row["woken_share"] > 0]
    assert woken, rows
    for row in woken:
        worker = row["function"].split(" (")[0]
        assert row["released_by"] == "Thread (%s)" % worker and row["released_by_tid"] != row["tid"], row
        assert 0 < row["released_share"] <= 1 and row["woken_share"] <= 1, row
    tabled = sum(row["blocked_s"] for row in rows if row["function"].startswith("locked_work ("))
    assert tabled == pytest.approx(blocked("locked_work", {"mutex"}) / 1e9, rel=0.01), rows
    svg = tmp_path / "off.svg"
    drawn = mixedstack("flamegraph", "--what", "off", "-o", str(svg), str(data))
    assert drawn.returncode == 0 and markers.off_cpu("critical section") in svg.read_text(), drawn.stderr
