"""`mixedstack top`'s figures: the hottest functions of a recording as it is made.

Samples come in batches as record unwinds them (record/unwind.py), labelled and of
every event as store.py keeps them; the on-CPU ones go through fold.Folder (the same
processors, names and layers as fold) and are counted per function:

    self   the sample's innermost frame of the layer shown (for "all": its leaf)
    total  every frame of that layer on the stack, once

both over the last WINDOW_NS of samples (what is hot now) and since the start.
Standard library only.
"""
from __future__ import annotations

import collections
import threading
from typing import Counter, Dict, Iterable, List, NamedTuple, Optional, Tuple

from mixedstack.analyze.fold import Folder
from mixedstack.analyze.processors import layers
from mixedstack.model import Sample, frame_text
from mixedstack.perf import command as perf

WINDOW_NS = 1_000_000_000  # "now": the last second of samples
BUCKET_NS = 250_000_000
# what a view shows: its name, and the layers whose frames it counts
VIEWS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "a": ("all", ()),
    "p": ("Python", (layers.PYTHON, layers.COMPILED)),
    "c": ("C in the interpreter", (layers.INTERPRETER,)),
    "l": ("library C", (layers.LIBRARY,)),
    "k": ("kernel", (layers.KERNEL,)),
}
Key = Tuple[str, str]  # (function, layer)
KEYS = {layer: key for key, (_, shown) in VIEWS.items() for layer in shown}  # a layer's view key


class Row(NamedTuple):
    function: str
    layer: str  # the key of the view it belongs to (p, c, l, k), "-" for none of them
    self_now: float  # share of the window's samples
    total_now: float
    self_s: float  # seconds since the start
    total_s: float


class Top:
    """Counts samples per function, per view; `rows(view)` for the table. Thread-safe:
    record's unwinder adds, the screen reads."""

    def __init__(self) -> None:
        self.folder = Folder(detail=True)
        self._lock = threading.Lock()
        self._keys: Dict[str, Dict[str, Tuple[Optional[Key], Tuple[Key, ...]]]] = {}  # stack -> view -> keys
        self.buckets: "collections.OrderedDict[int, Dict[str, Tuple[Counter[Key], Counter[Key]]]]" = \
            collections.OrderedDict()
        self.since: Dict[str, Tuple[Counter[Key], Counter[Key]]] = {
            view: (collections.Counter(), collections.Counter()) for view in VIEWS}
        self.samples = 0
        self.latest = 0  # the newest sample's time (ns)
        self.period_ns = 0  # the newest sample's weight (cpu-clock: ns)

    def add(self, samples: Iterable[Sample]) -> None:
        """A batch of samples (every event's: only the on-CPU ones count)."""
        with self._lock:
            for sample in samples:
                if sample.event is not None and not sample.event.startswith(perf.CPU_EVENT):
                    continue
                stack = self.folder.add(sample)
                keys = self._keys.get(stack)
                if keys is None:
                    keys = self._keys[stack] = self._work_out(stack)
                when = _ns(sample.time)
                self.latest = max(self.latest, when)
                self.period_ns = sample.period
                bucket = self.buckets.get(when // BUCKET_NS)
                if bucket is None:
                    bucket = self.buckets[when // BUCKET_NS] = {
                        view: (collections.Counter(), collections.Counter()) for view in VIEWS}
                for view, (own, inside) in keys.items():
                    for counts in (bucket[view], self.since[view]):
                        if own is not None:
                            counts[0][own] += 1
                        for key in inside:
                            counts[1][key] += 1
                self.samples += 1
            while self.buckets and next(iter(self.buckets)) < (self.latest - WINDOW_NS) // BUCKET_NS:
                self.buckets.popitem(last=False)

    def _work_out(self, stack: str) -> Dict[str, Tuple[Optional[Key], Tuple[Key, ...]]]:
        frames = self.folder.frames(stack)[1:]  # the process label first
        kinds = self.folder.layers[stack][1:]
        keys = [(frame_text(frame), kind) for frame, kind in zip(frames, kinds)]
        out = {}
        for view, (_, shown) in VIEWS.items():
            mine = [key for key in keys if not shown or key[1] in shown]
            out[view] = (mine[-1] if mine else None, tuple(dict.fromkeys(mine)))
        return out

    def rows(self, view: str = "a", top: int = 20) -> List[Row]:
        """The hottest functions now (by self, then total), with their figures since the start."""
        with self._lock:
            own_now: Counter[Key] = collections.Counter()
            total_now: Counter[Key] = collections.Counter()
            window = 0
            for bucket in self.buckets.values():
                own_now.update(bucket[view][0])
                total_now.update(bucket[view][1])
                window += sum(bucket["a"][0].values())
            own, total = self.since[view]
            seconds = self.period_ns / 1e9
            ranked = sorted(set(own_now) | set(total_now), key=lambda key: (-own_now[key], -total_now[key], key))
            return [Row(key[0], KEYS.get(key[1], "-"), own_now[key] / max(1, window),
                        total_now[key] / max(1, window), own[key] * seconds, total[key] * seconds)
                    for key in ranked[:top]]


def _ns(stamp: str) -> int:
    seconds, _, fraction = stamp.partition(".")
    return int(seconds or 0) * 1_000_000_000 + int((fraction + "000000000")[:9]) if stamp else 0
