"""speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json).

From a recording (stacks with a timeline): one "evented" profile per thread, each sample
a frame opened at its start and closed at its end (on-CPU: the period before the sample;
off-CPU: the time blocked, its leaf the reason), so that speedscope's "time order" view is
the thread's timeline: idle where the thread was not sampled. Every profile spans the
whole recording (speedscope gives each profile its own axis from its startValue: the
same one lines the threads up).

From folded text (no times): one "sampled" profile per process label, the stacks
aggregated ("time order" shows each distinct stack once; "left heavy" and "sandwich"
are exact). The root frame of each stack (the label) names its profile and is not a
frame. Python frames carry their file and line as speedscope's `file` and `line`.
"""
from __future__ import annotations

import json
from typing import IO, Dict, List, Tuple

from mixedstack import __version__
from mixedstack.analyze.processors import layers
from mixedstack.model import PyFrame, StackFrame, Stacks, frame_text
from mixedstack.renderers import readable

EXTENSION = ".speedscope.json"
ENCODING = "utf-8"
SCHEMA = "https://www.speedscope.app/file-format-schema.json"


# a gap between two samples of a thread shorter than this share of the later one's
# length is the timer's jitter, not time the thread was not sampled
JITTER = 0.25


class FrameTable:
    """speedscope's shared frames: one per (frame, layer) (a C `main` is not Python's)."""

    def __init__(self, stacks: Stacks):
        self.frames: List[Dict[str, object]] = []
        self.index: Dict[Tuple[StackFrame, str], int] = {}
        self.known = stacks.layers or {}
        self.ids: Dict[object, List[int]] = {}

    def of(self, stack) -> List[int]:
        """A stack's frame ids, root first, without its label."""
        ids = self.ids.get(stack)
        if ids is None:
            ids = self.ids[stack] = []
            kinds = layers.of_stack(stack, self.known.get(stack, ()))
            for frame, kind in zip(stack[1:], kinds[1:]):
                key = (frame, kind)
                if key not in self.index:
                    self.index[key] = len(self.frames)
                    self.frames.append(describe(frame, kind))
                ids.append(self.index[key])
        return ids


def render(stacks: Stacks, out: IO[str], name: str = "mixedstack") -> None:
    table = FrameTable(stacks)
    profiles = evented(stacks, table) if stacks.timeline else sampled(stacks, table)
    document = {
        "$schema": SCHEMA,
        "name": readable(name),
        "exporter": "mixedstack %s" % __version__,
        "activeProfileIndex": 0,
        "shared": {"frames": table.frames},
        "profiles": profiles,
    }
    json.dump(document, out, ensure_ascii=False, separators=(",", ":"))
    out.write("\n")


def sampled(stacks: Stacks, table: FrameTable) -> List[dict]:
    """One profile per label, its distinct stacks aggregated."""
    threads: Dict[str, Tuple[List[List[int]], List[int]]] = {}
    texts = stacks.texts()
    for stack in sorted(stacks.weights, key=texts.__getitem__):
        weight = stacks.weights[stack]
        if weight <= 0:  # speedscope refuses weights that are not positive
            continue
        samples, weights = threads.setdefault(frame_text(stack[0]), ([], []))
        samples.append(table.of(stack))
        weights.append(weight)
    unit = "nanoseconds" if stacks.unit == "nanoseconds" else "none"
    return [{"type": "sampled", "name": readable(thread), "unit": unit, "startValue": 0,
             "endValue": sum(weights), "samples": samples, "weights": weights}
            for thread, (samples, weights) in sorted(threads.items(), key=lambda item: -sum(item[1][1]))]


def evented(stacks: Stacks, table: FrameTable) -> List[dict]:
    """One profile per thread, its samples as frames opened and closed at their times,
    on the recording's one time axis (ns from its first sample)."""
    tracks = [track for track in stacks.timeline if track.spans]
    begin = min(track.spans[0].start for track in tracks)
    end = max(span.start + span.length for track in tracks for span in track.spans)
    profiles = []
    for track in tracks:
        events: List[Dict[str, object]] = []
        opened: List[int] = []  # the frames open now, root first
        now = 0  # where the last sample ended
        for span in track.spans:
            start, stop = max(span.start - begin, now), span.start - begin + span.length
            if stop <= start:
                continue  # a sample whose period the one before covered already
            if start - now > JITTER * span.length:  # not sampled between them: idle there
                close(events, opened, 0, now)
            else:
                start = now if opened else start
            ids = table.of(span.stack)
            same = 0
            while same < len(opened) and same < len(ids) and opened[same] == ids[same]:
                same += 1
            close(events, opened, same, start)
            for frame in ids[same:]:
                events.append({"type": "O", "frame": frame, "at": start})
                opened.append(frame)
            now = stop
        close(events, opened, 0, now)
        profiles.append({"type": "evented", "name": readable(track.name), "unit": "nanoseconds",
                         "startValue": 0, "endValue": end - begin, "events": events})
    return profiles


def close(events: List[Dict[str, object]], opened: List[int], keep: int, at: int) -> None:
    """Close the open frames above the first `keep`, innermost first."""
    while len(opened) > keep:
        events.append({"type": "C", "frame": opened.pop(), "at": at})


def describe(frame: StackFrame, kind: str) -> Dict[str, object]:
    if type(frame) is not PyFrame or not frame.file:
        return {"name": readable(frame_text(frame))}
    described: Dict[str, object] = {"name": readable(frame.function), "file": readable(frame.file)}
    if frame.line:
        described["line"] = frame.line
    return described
