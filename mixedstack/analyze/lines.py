"""Line numbers into Python frames, from record's companion sampler (record/lines.py).

The companion took snapshots of the target's threads (time, thread, frames with their
lines) beside perf. Each perf sample's Python frames are matched to the snapshots of
the same thread nearest to it in time (WINDOW_NS at most away, nearest first): the
first whose functions agree with the sample's, frame for frame from the innermost out
(same qualified name, same file) and reaches all of its frames gives each its line;
failing that, the nearest that agrees with all but the sample's innermost frame (a
call perf sees being made or returning) gives the callers theirs; failing that, the
nearest that agrees as far as it reaches (a snapshot cut short) gives those frames
theirs. Where none agrees (the stack changed between the two, a frame perf cut short)
the sample keeps its frames without lines: a line is never taken from a snapshot of
other functions.

What a line can still get wrong: the snapshot and the sample are up to half the
companion's period apart, in the same function; a line that runs for less than that
between others can be given its neighbour's (bench/results.md measures how often).
"""
from __future__ import annotations

import bisect
import json
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from mixedstack.model import PyFrame
from mixedstack.perf.recording import LINES_FILE, TIDS

WINDOW_NS = 20_000_000  # snapshots further from a sample than this are not its


class Placed(NamedTuple):
    """How the samples with Python frames fared: lines given, none agreeing, none near."""

    placed: int
    disagreed: int
    no_snapshot: int

    def text(self) -> str:
        total = sum(self) or 1
        return "lines on %.1f%% of the samples with Python frames (%.1f%% matched no snapshot of the same " \
               "functions, %.1f%% had none near)" % (100.0 * self.placed / total, 100.0 * self.disagreed / total,
                                                      100.0 * self.no_snapshot / total)


class Snapshots:
    """The companion's snapshots, by thread: times in order, and each one's frames
    (root first, as (function, file, line))."""

    def __init__(self) -> None:
        self.times: Dict[int, List[int]] = {}
        self.frames: Dict[int, List[Tuple[Tuple[str, str, int], ...]]] = {}
        self.counts = [0, 0, 0]  # placed, disagreed, no snapshot near
        self._cache: Dict[Tuple[str, str], bool] = {}

    @classmethod
    def read(cls, folder: str) -> Optional["Snapshots"]:
        """The snapshots kept with a recording (None: it has none)."""
        path = os.path.join(folder, LINES_FILE)
        if not os.path.isfile(path):
            return None
        found = cls()
        rows: Dict[int, List[Tuple[int, tuple]]] = {}
        ours: Dict[str, int] = {}  # a target in a container: its thread ids -> perf's
        with open(path, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a companion stopped mid-write
                if len(row) == 2 and row[0] == TIDS and isinstance(row[1], dict):
                    ours = row[1]
                    continue
                if len(row) != 3 or not isinstance(row[0], int):
                    continue  # its last line ("end", ...), or an error
                rows.setdefault(row[1], []).append(
                    (row[0], tuple((function, path, line) for function, path, line in reversed(row[2]))))
        if not rows:
            return None
        if ours:
            rows = {ours.get(str(tid), tid): taken for tid, taken in rows.items()}
        for tid, taken in rows.items():
            taken.sort(key=lambda item: item[0])
            found.times[tid] = [when for when, _ in taken]
            found.frames[tid] = [frames for _, frames in taken]
        return found

    def placed(self) -> Placed:
        return Placed(*self.counts)

    def place(self, tid: int, when: int, python: Sequence[PyFrame]) -> Optional[List[int]]:
        """The lines of a sample's Python frames (root first), from the nearest snapshot of
        its thread that agrees; None where none does."""
        times = self.times.get(tid)
        if not times:
            self.counts[2] += 1
            return None
        frames = self.frames[tid]
        nearest = sorted(range(bisect.bisect_left(times, when - WINDOW_NS), bisect.bisect_right(times, when + WINDOW_NS)),
                         key=lambda at: abs(times[at] - when))
        # failing a snapshot that reaches every frame of the sample: the nearest that agrees
        # but for the sample's innermost frame, then the nearest that reaches fewer frames
        calling = partial = None
        for at in nearest:
            snapshot = frames[at]
            lines = self._agree(snapshot, python)
            if lines is not None and len(snapshot) >= len(python):
                self.counts[0] += 1
                return lines
            partial = partial or lines
            if calling is None and len(python) > 1 and len(snapshot) >= len(python) - 1:
                calling = self._agree(snapshot, python[:-1])
        if calling is not None:
            # A call being made or returning: perf sees the callee's trampoline before
            # the interpreter links its frame and after it unlinks it (for a short
            # function, most of its samples). The callers' lines are the snapshot's;
            # the callee gets none.
            self.counts[0] += 1
            return calling + [0]
        if partial is not None:
            # a snapshot cut short (read while a call was made; 3.14's own reader under
            # a trampoline; a free-threaded 3.14's): the frames it reaches
            self.counts[0] += 1
            return partial
        self.counts[1 if nearest else 2] += 1
        return None

    def _agree(self, snapshot: Tuple[Tuple[str, str, int], ...], python: Sequence[PyFrame]) -> Optional[List[int]]:
        """The lines of `python`'s frames (0 for those the snapshot does not reach) if the
        snapshot's innermost frames are the sample's, else None. Either may stop short of
        the other's outermost frames: perf's copy of a deep stack, or 3.14's reader, which
        stops at the first frame entered from C (with a perf trampoline: each call's)."""
        both = min(len(snapshot), len(python))
        if both == 0:
            return None
        for (function, path, _), frame in zip(snapshot[len(snapshot) - both:], python[len(python) - both:]):
            if function != frame.function or not self._same_file(path, frame.file):
                return None
        return [0] * (len(python) - both) + [line for _, _, line in snapshot[len(snapshot) - both:]]

    def _same_file(self, path: str, short: str) -> bool:
        """A snapshot's full path and a frame's shortened one (`pkg/mod.py`) are the same file."""
        key = (path, short)
        known = self._cache.get(key)
        if known is None:
            known = self._cache[key] = path == short or path.endswith("/" + short)
        return known
