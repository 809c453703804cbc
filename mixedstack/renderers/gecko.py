"""The Firefox Profiler's "gecko" JSON format (what Firefox and perf's gecko converter
write; profiler.firefox.com loads it: "Load a profile from file").

    meta        version 36 (the Firefox Profiler's GECKO_PROFILE_VERSION, 2026), times in
                ms, the categories below, a marker schema per kind of mark
    threads     one a thread of the recording, in the order they first ran: its on-CPU
                samples at their times (stackTable/frameTable/stringTable), and its
                marks as interval markers: off-CPU waits (GIL, lock, sleep, io...) and,
                with record --syscalls, every system call (name, errno, Python function)

Frames are named as the profiler reads them (its process-profile.js): a Python frame
`function (file:line)` (it shows the file and line), a native one `function (in dso)`.
Each frame's category says its layer: Python, C in the interpreter, C in libraries,
kernel. Blocked time is in the markers, not in the samples: a sample is a point on the
timeline, and a wait of 1 s would otherwise weigh as one sample.

Times are ms from the recording's first sample; meta.startTime is when that was (wall
clock, ms since the epoch) where known. Standard library only.
"""
from __future__ import annotations

import json
import os
import statistics
from typing import IO, Dict, List, Optional, Tuple

from mixedstack import __version__
from mixedstack.analyze.processors import layers
from mixedstack.errors import InputError
from mixedstack.markers import is_off_cpu
from mixedstack.model import PyFrame, Stack, StackFrame, Stacks, Track, frame_text
from mixedstack.renderers import readable

EXTENSION = ".gecko.json"
ENCODING = "utf-8"
VERSION = 36  # the Firefox Profiler reads 3 to 36 (src/app-logic/constants.ts)

# category index, name, colour (the profiler's CategoryColor names); 0 is its default
CATEGORIES = (("Other", "grey"), ("Python", "green"), ("Interpreter", "yellow"), ("Native", "orange"),
              ("Kernel", "red"), ("Off-CPU", "blue"), ("System call", "purple"))
OTHER, PYTHON, INTERPRETER, NATIVE, KERNEL, OFF_CPU, SYSCALL = range(len(CATEGORIES))
CATEGORY_OF_LAYER = {layers.PYTHON: PYTHON, layers.COMPILED: PYTHON, layers.INTERPRETER: INTERPRETER,
                     layers.LIBRARY: NATIVE, layers.KERNEL: KERNEL, layers.OFF_CPU: OFF_CPU, layers.GIL: OFF_CPU}
# one marker schema a kind of mark (model.MARK_KINDS)
SCHEMAS = [
    {"name": "OffCPU", "display": ["marker-chart", "marker-table", "timeline-overview"],
     "chartLabel": "{marker.data.reason}", "tooltipLabel": "off-CPU: {marker.data.reason}",
     "tableLabel": "{marker.data.reason} in {marker.data.function}",
     "data": [{"key": "reason", "label": "Why", "format": "string", "searchable": True},
              {"key": "function", "label": "Python function", "format": "string", "searchable": True}]},
    {"name": "Syscall", "display": ["marker-chart", "marker-table"],
     "chartLabel": "{marker.data.call}", "tooltipLabel": "{marker.data.call} {marker.data.error}",
     "tableLabel": "{marker.data.call} {marker.data.error} in {marker.data.function}",
     "data": [{"key": "call", "label": "System call", "format": "string", "searchable": True},
              {"key": "error", "label": "Error", "format": "string", "searchable": True},
              {"key": "function", "label": "Python function", "format": "string", "searchable": True}]},
]
MARKER = {"off-cpu": ("OffCPU", OFF_CPU, "reason"), "syscall": ("Syscall", SYSCALL, "call")}
NO_TIMES = ("%s holds no sample times (folded text?): the gecko format is a timeline; give it a recording "
            "or `perf script` text")


def render(stacks: Stacks, out: IO[str], name: str = "mixedstack", started: Optional[float] = None) -> None:
    """`started`: when the recording's first sample was taken (seconds since the epoch)."""
    tracks = [track for track in stacks.timeline or () if track.spans or track.marks]
    if not tracks:
        raise InputError(NO_TIMES % name)
    begin = min([track.spans[0].start for track in tracks if track.spans] +
                [track.marks[0].start for track in tracks if track.marks])
    end = max([span.start + span.length for track in tracks for span in track.spans[-1:]] +
              [mark.start + mark.length for track in tracks for mark in track.marks])
    lengths = [span.length for track in tracks for span in track.spans]
    document = {
        "meta": {
            "version": VERSION, "startTime": started * 1000.0 if started else 0.0, "shutdownTime": None,
            "interval": round(statistics.median(lengths) / 1e6, 6) if lengths else 1.0,
            "processType": 0, "product": "mixedstack %s: %s" % (__version__, readable(os.path.basename(name))),
            "stackwalk": 1, "debug": 0, "gcpoison": 0, "asyncstack": 0, "presymbolicated": True,
            "profilingStartTime": 0, "profilingEndTime": ms(end - begin) or 1.0,
            "categories": [{"name": title, "color": colour, "subcategories": ["Other"]} for title, colour in CATEGORIES],
            "markerSchema": SCHEMAS,
        },
        "libs": [], "pages": [], "pausedRanges": [], "processes": [],
        "threads": [thread(track, begin, stacks) for track in tracks],
    }
    json.dump(document, out, ensure_ascii=False, separators=(",", ":"))
    out.write("\n")


def ms(ns: int) -> float:
    return round(ns / 1e6, 6)


def thread(track: Track, begin: int, stacks: Stacks) -> dict:
    strings = Strings()
    frames: List[list] = []
    frame_ids: Dict[Tuple[StackFrame, str], int] = {}
    stack_rows: List[list] = []
    stack_ids: Dict[Tuple[Optional[int], int], int] = {}
    leaf_of: Dict[Stack, Optional[int]] = {}
    known = stacks.layers or {}
    samples = []
    for span in track.spans:
        stack = span.stack
        if is_off_cpu(frame_text(stack[-1])):
            continue  # a wait: a marker, not a sample
        leaf = leaf_of.get(stack, -1)
        if leaf == -1:
            leaf = None
            for frame, kind in zip(stack[1:], layers.of_stack(stack, known.get(stack, ()))[1:]):
                key = (frame, kind)
                index = frame_ids.get(key)
                if index is None:
                    index = frame_ids[key] = len(frames)
                    line = frame.line if type(frame) is PyFrame and frame.line else None
                    frames.append([strings.of(location(frame)), False, 0, None, line, None,
                                   CATEGORY_OF_LAYER.get(kind, OTHER), 0])
                row = stack_ids.get((leaf, index))
                if row is None:
                    row = stack_ids[(leaf, index)] = len(stack_rows)
                    stack_rows.append([leaf, index])
                leaf = row
            leaf_of[stack] = leaf
        samples.append([leaf, ms(span.start + span.length - begin), 0])
    markers = []
    for mark in track.marks:
        schema, category, field = MARKER[mark.kind]
        data = {"type": schema, field: mark.name, "function": mark.function}
        if mark.kind == "syscall":
            data["error"] = mark.error
        start = ms(mark.start - begin)
        # an interval: the profiler takes an end of 0 for none (its _sortMarkers)
        markers.append([strings.of("%s %s" % (schema, mark.name)), start,
                        max(ms(mark.start + mark.length - begin), round(start + 1e-6, 6)), 1, category, data])
    first = track.spans[0].start if track.spans else track.marks[0].start
    return {
        "name": readable(track.name), "processType": "default", "processName": readable(track.comm),
        "pid": track.pid, "tid": track.tid, "registerTime": ms(first - begin), "unregisterTime": None,
        "samples": {"schema": {"stack": 0, "time": 1, "eventDelay": 2}, "data": samples},
        "stackTable": {"schema": {"prefix": 0, "frame": 1}, "data": stack_rows},
        "frameTable": {"schema": {"location": 0, "relevantForJS": 1, "innerWindowID": 2, "implementation": 3,
                                  "line": 4, "column": 5, "category": 6, "subcategory": 7}, "data": frames},
        "markers": {"schema": {"name": 0, "startTime": 1, "endTime": 2, "phase": 3, "category": 4, "data": 5},
                    "data": markers},
        "stringTable": strings.table,
    }


def location(frame: StackFrame) -> str:
    """How the profiler reads a frame's name (its process-profile.js): a Python frame
    `function (file:line)` (its JavaScript form: the file and line shown) or, without a
    line, `function (in file)` (the file as its library); a native one by its name."""
    if type(frame) is PyFrame and frame.file:
        return readable("%s (%s:%d)" % (frame.function, frame.file, frame.line) if frame.line else
                        "%s (in %s)" % (frame.function, frame.file))
    return readable(frame.function if type(frame) is PyFrame else frame_text(frame))


class Strings:
    def __init__(self) -> None:
        self.table: List[str] = []
        self.index: Dict[str, int] = {}

    def of(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.table)
            self.table.append(text)
        return found
