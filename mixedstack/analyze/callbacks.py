"""perf's Python scripting callbacks (`perf script -s`) -> samples -> folded stacks.

Used by perf_scripts/mixedstack-fold.py inside perf's embedded Python, so standard
library only. perf's Python API does not say which recording it reads, so what
`fold` takes from the recording's meta.json is not known here: in a recording made
with the agent (3.8-3.12), start-up code that ran before its trampolines stays as
the eval loop's frames instead of `[python frames before activation]`. Builds the same Sample objects as the text parser (perf/parse.py) and
runs them through the same Folder, and writes the same folded text.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List

from mixedstack.analyze.fold import Folder
from mixedstack.analyze.fold import FoldOptions
from mixedstack.model import Frame, Sample
from mixedstack.perf.command import SWITCH_EVENT
from mixedstack.perf.parse import EventFilter
from mixedstack.perf.parse import ProcessLabel


def parse_arguments(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mixedstack-fold.py", description=__doc__)
    for flag in ("--pid", "--tid", "--kernel", "--jit", "--all", "--addrs", "--keep-interpreter"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--event-filter", default=None)
    parser.add_argument("-o", "--output", default="-")
    return parser.parse_args(argv)


def frame_of(entry: Dict[str, Any]) -> Frame:
    symbol = entry.get("sym")
    name = symbol.get("name") if symbol else None
    return Frame("%x" % entry.get("ip", 0), name or "[unknown]", entry.get("dso") or "[unknown]")


class FoldCallbacks:
    def __init__(self, argv: List[str]):
        args = parse_arguments(argv)
        self.output = args.output
        self.label = ProcessLabel(include_pid=args.pid, include_tid=args.tid)
        self.events = EventFilter(args.event_filter)
        self.folder = Folder(
            FoldOptions(
                kernel=args.kernel,
                jit=args.jit,
                all=args.all,
                addrs=args.addrs,
                keep_interpreter=args.keep_interpreter,
            )
        )

    def process_event(self, param_dict: Dict[str, Any]) -> None:
        event = param_dict.get("ev_name", "")
        # on-CPU samples only: the off-CPU weighing needs switch times (fold --what off)
        if event == SWITCH_EVENT and self.events.wanted != SWITCH_EVENT or not self.events.accepts(event):
            return
        sample = param_dict.get("sample", {})
        comm = param_dict.get("comm", "")
        pid, tid = str(sample.get("pid", "?")), str(sample.get("tid", ""))
        frames = [frame_of(entry) for entry in param_dict.get("callchain", [])]
        period = sample.get("period") or 1
        self.folder.add(Sample(self.label(comm, pid, tid), period, event, frames, comm, pid, tid))

    def trace_end(self) -> None:
        lines = self.folder.result().folded_lines()  # the folded renderer's text
        if self.output == "-":
            sys.stdout.writelines(lines)
            sys.stdout.flush()
        else:
            with open(self.output, "w", encoding="utf-8", errors="surrogateescape") as out:
                out.writelines(lines)
