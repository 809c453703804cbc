"""System calls counted as `strace -c` and `perf trace -s` count them, from a recording
made with `record --syscalls`: per syscall, its calls, errors (by errno), and latency
(total, mean, p50, p99, max), and the Python functions that made them.

Every call is in the recording (perf/syscalls.Calls: thread, number, entry time,
duration, return value); a sample of them also carries its stack (the `syscall-stack`
event: a few hundred a second per thread). Each call is given the Python function of
the stack sampled nearest to it in time, in its thread, at the same syscall; failing
that, at any syscall of its thread. A function that makes the same syscall as another
in the same thread is told apart only where the samples fall: the figures per function
are an estimate where the figures per syscall are exact.

Standard library only.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

from mixedstack import store
from mixedstack.markers import is_off_cpu
from mixedstack.model import Mark, Track, frame_text, innermost_python
from mixedstack.perf import syscalls
from mixedstack.perf.syscalls import UNFINISHED, Calls
from mixedstack.perf.recording import Recording

NO_STACK = "(no stack sampled in its thread)"
MARKS_LIMIT = 200_000
MATCH_NS = 1_000_000  # a sampled entry and its call's entry record are the same tracepoint hit
SAME_WITHIN_NS = 20_000_000  # a thread's entries are sampled every few ms while it makes calls


def calls_of(recording: Recording) -> Optional[Calls]:
    """The recording's system calls: as record kept them, else read from perf.data once
    (and kept). None: it was not recorded with --syscalls."""
    kept = store.kept_text(recording.folder, recording.data, store.SYSCALLS_FILE)
    if kept is not None:
        try:
            return Calls.from_bytes(kept)
        except ValueError:
            pass
    calls = syscalls.read_calls(recording.data)
    if calls is not None:
        with contextlib.suppress(OSError):
            store.keep_text(recording.folder, recording.data, store.SYSCALLS_FILE, calls.to_bytes())
    return calls


ENTRY, BLOCKED, RUNNING = "entry", "blocked", "running"


class Sampled:
    """Stacks by thread, (time, the Python function they were in): of the sampled entries,
    of the threads blocking (inside a call, whose own stack that is), and the on-CPU samples."""

    def __init__(self) -> None:
        self.stacks: Dict[str, Dict[int, List[Tuple[int, str]]]] = {
            kind: collections.defaultdict(list) for kind in (ENTRY, BLOCKED, RUNNING)}

    def add(self, kind: str, tid: str, time: int, caller: str) -> None:
        if tid.isdigit() and time:
            self.stacks[kind][int(tid)].append((time, caller))

    def of(self, kind: str, tid: int) -> List[Tuple[int, str]]:
        return sorted(self.stacks[kind].get(tid, ()))


def percentile(ordered: Sequence[int], share: float) -> int:
    """The nearest-rank percentile of sorted values (p99 of 100 values: the 99th)."""
    if not ordered:
        return 0
    rank = max(1, -(-len(ordered) * share // 1))  # ceil
    return ordered[int(rank) - 1]


def callers(calls: Calls, sampled: Sampled) -> List[str]:
    """Each call's Python function (calls' order): a call that blocked, its own stack's
    then; else that of its thread's nearest sampled entry of the same syscall, if one is
    near (SAME_WITHIN_NS); else that of the nearest stack its thread has (entry, switch or
    on-CPU sample): a rare call among others' phases takes its neighbours' function."""
    rows_by_tid: Dict[int, List[int]] = collections.defaultdict(list)
    for row, tid in enumerate(calls.tid):
        rows_by_tid[tid].append(row)
    found = [NO_STACK] * len(calls)
    start, number, duration = calls.start, calls.number, calls.duration
    for tid, rows in rows_by_tid.items():
        rows.sort(key=start.__getitem__)
        blocked = sampled.of(BLOCKED, tid)
        block_times = [when for when, _ in blocked]
        for row in rows if blocked else ():
            at = bisect.bisect_left(block_times, start[row])
            if at < len(blocked) and duration[row] != UNFINISHED and block_times[at] <= start[row] + duration[row]:
                found[row] = blocked[at][1]
        entries = sampled.of(ENTRY, tid)
        everything = sorted(entries + blocked + sampled.of(RUNNING, tid))
        if not everything:
            continue
        starts = [start[row] for row in rows]
        # each sampled entry is one call's own: which syscall it was made at
        same: Dict[int, Tuple[List[int], List[str]]] = {}
        for when, caller in entries:
            i = nearest(starts, when)
            if abs(starts[i] - when) <= MATCH_NS:
                times, names = same.setdefault(number[rows[i]], ([], []))
                times.append(when)
                names.append(caller)
        any_times = [when for when, _ in everything]
        for row in rows:
            if found[row] is not NO_STACK:
                continue
            times, names = same.get(number[row], ((), ()))
            i = nearest(times, start[row]) if times else -1
            if i >= 0 and abs(times[i] - start[row]) <= SAME_WITHIN_NS:
                found[row] = names[i]
            else:
                found[row] = everything[nearest(any_times, start[row])][1]
    return found


def nearest(times: List[int], when: int) -> int:
    """The index of the sorted `times` nearest to `when` (the earlier on a tie)."""
    at = bisect.bisect_left(times, when)
    if at == 0:
        return 0
    if at == len(times):
        return at - 1
    return at - 1 if when - times[at - 1] <= times[at] - when else at


def figures(calls: Calls, sampled: Sampled, top: int = 10, pids: Optional[set] = None,
            functions: int = 3) -> dict:
    """Per syscall: calls, errors by errno, latency; the Python functions that made them."""
    names = callers(calls, sampled)
    per: Dict[int, dict] = {}
    for row, (pid, _, number, _, duration, ret) in enumerate(calls.rows()):
        if pids is not None and pid not in pids:
            continue
        entry = per.get(number)
        if entry is None:
            entry = per[number] = {"durations": [], "errors": collections.Counter(), "unfinished": 0,
                                   "functions": collections.defaultdict(lambda: [0, 0])}
        caller = entry["functions"][names[row]]
        caller[0] += 1
        if duration == UNFINISHED:
            entry["unfinished"] += 1
            continue
        entry["durations"].append(duration)
        caller[1] += duration
        error = syscalls.error_name(ret)
        if error:
            entry["errors"][error] += 1
    rows = []
    for number, entry in per.items():
        durations = sorted(entry["durations"])
        total = sum(durations)
        count = len(durations) + entry["unfinished"]
        rows.append({
            "syscall": syscalls.name(number), "number": number, "calls": count,
            "errors": sum(entry["errors"].values()),
            "errors_by_errno": dict(entry["errors"].most_common()),
            "unfinished": entry["unfinished"],  # under way when the recording stopped (exit_group)
            "total_s": round(total / 1e9, 9),
            "mean_us": round(total / len(durations) / 1e3, 3) if durations else None,
            "p50_us": round(percentile(durations, 0.50) / 1e3, 3) if durations else None,
            "p99_us": round(percentile(durations, 0.99) / 1e3, 3) if durations else None,
            "max_us": round(durations[-1] / 1e3, 3) if durations else None,
            "functions": [{"function": name, "calls": n, "total_s": round(ns / 1e9, 9)}
                          for name, (n, ns) in sorted(entry["functions"].items(),
                                                      key=lambda item: (-item[1][1], -item[1][0], item[0]))
                          ][:functions],
        })
    rows.sort(key=lambda row: (-row["total_s"], -row["calls"], row["syscall"]))
    return {
        "calls": sum(row["calls"] for row in rows),
        "errors": sum(row["errors"] for row in rows),
        "syscalls_total": len(rows),
        "exits_without_entry": calls.unmatched,  # calls that began before the recording did
        # stacks the calls' Python functions came from: sampled entries, and switches out of calls
        "sampled_stacks": {kind: sum(len(stacks) for stacks in sampled.stacks[kind].values())
                           for kind in (ENTRY, BLOCKED)},
        "rows": rows[:top],
    }


def marks(calls: Calls, sampled: Sampled, limit: int = MARKS_LIMIT) -> Dict[Tuple[int, int], List[Mark]]:
    """Every call as a mark on its thread's timeline (the `limit` longest where there
    are more: a timeline viewer slows to a crawl past a few hundred thousand)."""
    names = callers(calls, sampled)
    rows = range(len(calls))
    if len(calls) > limit:
        rows = sorted(sorted(rows, key=lambda row: -calls.duration[row])[:limit])
    found: Dict[Tuple[int, int], List[Mark]] = collections.defaultdict(list)
    for row in rows:
        duration = calls.duration[row]
        found[(calls.pid[row], calls.tid[row])].append(Mark(
            calls.start[row], max(duration, 0), "syscall", syscalls.name(calls.number[row]),
            "" if names[row] == NO_STACK else names[row], syscalls.error_name(calls.ret[row]) or ""))
    return found


def sampled_from(tracks: List[Track], entries: List[Tuple[str, str, int, str]]) -> Sampled:
    """The stacks calls take their functions from, out of a timeline's tracks (on-CPU
    samples, switches) and the syscall-stack samples `entries` (event, tid, ns, function)."""
    sampled = Sampled()
    for track in tracks:
        tid = str(track.tid)
        for span in track.spans:
            function = innermost_python(span.stack)
            if is_off_cpu(frame_text(span.stack[-1])):
                sampled.add(BLOCKED, tid, span.start, function)
            else:
                sampled.add(RUNNING, tid, span.start + span.length, function)
    for event, tid, when, function in entries:
        sampled.add(BLOCKED if event == syscalls.BLOCK_EVENT else ENTRY, tid, when, function)
    return sampled
