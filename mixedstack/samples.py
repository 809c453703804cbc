"""`perf script` text -> samples.

The state machine mirrors FlameGraph's stackcollapse-perf.pl line for line (header
regex, Perl truthiness, event filter, blank line ends a sample), because `fold` must
give its exact output on stacks without Python. Standard library only.

Text is handled as latin-1 so that every byte round-trips unchanged and regexes see
bytes the way Perl does (ASCII character classes).
"""
from __future__ import annotations

import re
import sys
from typing import Callable, Iterable, Iterator, List, Optional

from .model import Frame, Sample

# "comm pid/tid [cpu] time: period event:" -- comm may contain spaces.
HEADER = re.compile(r"^(\S.+?)\s+(\d+)/*(\d+)*\s+", re.ASCII)
# ": period event:" at the end of the header; absent for tracepoints with a payload.
HEADER_EVENT = re.compile(r":\s*(\d+)*\s+(\S+):\s*$", re.ASCII)
# the timestamp in a header: " 12345.678901234: "
HEADER_TIME = re.compile(r"\s(\d+\.\d+):\s", re.ASCII)
# events whose samples keep their timestamp (off-CPU time is measured from it)
TIMED_EVENT = "sched:sched_switch"
# "\t pc symbol+0xoff (dso)"
FRAME = re.compile(r"^\s*(\w+)\s*(.+) \((.*)\)", re.ASCII)


def perl_true(value: Optional[str]) -> bool:
    """Perl's truth for a scalar string: undef, "" and "0" are false."""
    return value is not None and value != "" and value != "0"


class ProcessLabel:
    """How a sample's process is named: comm, comm-PID, or comm-PID/TID."""

    def __init__(self, include_pid: bool = False, include_tid: bool = False):
        self.include_pid = include_pid
        self.include_tid = include_tid

    def __call__(self, comm: str, pid: str, tid: str) -> str:
        if self.include_tid:
            label = "%s-%s/%s" % (comm, pid, tid)
        elif self.include_pid:
            label = "%s-%s" % (comm, pid)
        else:
            label = comm
        return label.replace(" ", "_")


class EventFilter:
    """Keep one event type: the one asked for, else the first one seen."""

    def __init__(self, wanted: Optional[str] = None, warn: Callable[[str], None] = None,
                 also: Iterable[str] = ()):
        self.wanted = wanted or ""
        self.also = frozenset(also)  # kept besides the wanted one (off-CPU switches)
        self.defaulted = False
        self.warned = False
        self.warn = warn or (lambda message: sys.stderr.write(message + "\n"))

    def accepts(self, event: str) -> bool:
        if event in self.also:
            return True
        if self.wanted == "":
            self.wanted = event
            self.defaulted = True
            return True
        if event == self.wanted:
            return True
        if self.defaulted and not self.warned:
            # stackcollapse-perf.pl prints the name of the event it found, not the kept one
            self.warn("Filtering for events of type: %s" % event)
            self.warned = True
        return False


def parse(
    lines: Iterable[str],
    label: Callable[[str, str, str], str] = ProcessLabel(),
    events: Optional[EventFilter] = None,
    on_unrecognized: Optional[Callable[[str], None]] = None,
) -> Iterator[Sample]:
    """Yield one Sample per blank-line-terminated block of `perf script` text."""
    events = events or EventFilter()
    stack: List[Frame] = []
    pname: Optional[str] = None
    comm = pid = tid = ""
    period = 1
    event: Optional[str] = None
    stamp = ""
    for line in lines:
        if line.startswith("#"):
            continue
        if line.endswith("\n"):
            line = line[:-1]
        if line == "":
            if perl_true(pname):
                yield Sample(pname, period, event, stack, comm, pid, tid, stamp)
            stack = []
            pname = None
            continue
        # frame lines start with blanks and cannot be headers: skip that regex for them
        header = None if line[0] in " \t" else HEADER.match(line)
        if header:
            h_comm, h_pid, h_tid = header.group(1), header.group(2), header.group(3)
            if not perl_true(h_tid):
                h_tid, h_pid = h_pid, "?"
            h_period = ""
            h_event = None
            tail = HEADER_EVENT.search(line)
            if tail:
                h_period = tail.group(1) or ""
                h_event = tail.group(2)
                if not events.accepts(h_event):
                    continue
            period = int(h_period) if perl_true(h_period) else 1
            comm, pid, tid, event = h_comm, h_pid, h_tid, h_event
            stamp = ""
            if h_event == TIMED_EVENT:
                timed = HEADER_TIME.search(line)
                stamp = timed.group(1) if timed else ""
            pname = label(comm, pid, tid)
            continue
        frame = FRAME.match(line)
        if frame:
            if not perl_true(pname):
                continue
            stack.append(Frame(*frame.groups()))
            continue
        if on_unrecognized is not None:
            on_unrecognized(line)
