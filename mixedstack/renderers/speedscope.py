"""speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json).

One sampled profile per thread: the root frame of each stack (the process label,
`comm-PID/TID` when folded per thread) names its profile and is not a frame. The
stacks are aggregated, so speedscope's "time order" view shows each distinct
stack once; "left heavy" and "sandwich" are exact. Python frames carry their file
and line as speedscope's `file` and `line`.
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


def render(stacks: Stacks, out: IO[str], name: str = "mixedstack") -> None:
    frames: List[Dict[str, object]] = []
    index: Dict[Tuple[StackFrame, str], int] = {}
    known = stacks.layers or {}
    threads: Dict[str, Tuple[List[List[int]], List[int]]] = {}
    texts = stacks.texts()
    for stack in sorted(stacks.weights, key=texts.__getitem__):
        weight = stacks.weights[stack]
        if weight <= 0:  # speedscope refuses weights that are not positive
            continue
        kinds = layers.of_stack(stack, known.get(stack, ()))
        ids = []
        for frame, kind in zip(stack[1:], kinds[1:]):
            key = (frame, kind)  # a C `main` is not Python's
            if key not in index:
                index[key] = len(frames)
                frames.append(describe(frame, kind))
            ids.append(index[key])
        samples, weights = threads.setdefault(frame_text(stack[0]), ([], []))
        samples.append(ids)
        weights.append(weight)
    unit = "nanoseconds" if stacks.unit == "nanoseconds" else "none"
    profiles = [
        {"type": "sampled", "name": readable(thread), "unit": unit, "startValue": 0,
         "endValue": sum(weights), "samples": samples, "weights": weights}
        for thread, (samples, weights) in sorted(threads.items(), key=lambda item: -sum(item[1][1]))
    ]
    document = {
        "$schema": SCHEMA,
        "name": readable(name),
        "exporter": "mixedstack %s" % __version__,
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": profiles,
    }
    json.dump(document, out, ensure_ascii=False, separators=(",", ":"))
    out.write("\n")


def describe(frame: StackFrame, kind: str) -> Dict[str, object]:
    if type(frame) is not PyFrame or not frame.file:
        return {"name": readable(frame_text(frame))}
    described: Dict[str, object] = {"name": readable(frame.function), "file": readable(frame.file)}
    if frame.line:
        described["line"] = frame.line
    return described
