"""System calls as `record --syscalls` records them: every call's entry and exit, and a
sample of them with their stacks.

    -e raw_syscalls:sys_enter/call-graph=no/    every call: its number, no stack
    -e raw_syscalls:sys_exit/call-graph=no/     every return: its value, no stack
    -e tracepoint/config=ID,freq=F,name=syscall-stack/
                                                the same entries, ~F a second per thread, with
                                                the recording's call graph
    -e tracepoint/config=ID,name=syscall-block/ --filter 'prev_state != 0'
                                                every time a thread blocks (sched_switch, not
                                                a preemption), with its stack (not with
                                                --off-cpu, which records every switch)

A stack copy per call (64 KB in DWARF mode) would cost more than the calls themselves
(bench/results.md). A call that blocked has its own stack (the switch inside it); any
other, the stack of its thread's nearest sampled entry of the same syscall
(analyze/syscalls.py). The sampled entries alone would miss rare calls: the kernel
moves a rate's period an eighth of the way a tick, so after 20,000 stat calls, 20 fsyncs
go unsampled. perf 6.1 takes no rate or name for a tracepoint event by its name, but
the tracepoint PMU takes them with the tracepoint's id.

`Decoder` turns perf.data's per-call records into `Calls` (one row a call: thread,
number, entry time, duration, return value), read straight from the records: perf
script would print two lines a call, ~10 times the work. Standard library only.
"""
from __future__ import annotations

import array
import errno
import os
import struct
import sys
from typing import Dict, Iterator, List, Optional, Tuple

from mixedstack.errors import MixedstackError
from mixedstack.perf import data as perfdata
from mixedstack.perf.data import ATTR_SIZE, ATTRS_SECTION, PERF_RECORD_SAMPLE, SAMPLE, records
from mixedstack.perf.syscall_table import X86_64

ENTER_EVENT = "raw_syscalls:sys_enter"
EXIT_EVENT = "raw_syscalls:sys_exit"
STACK_EVENT = "syscall-stack"  # the sampled entries, with stacks
BLOCK_EVENT = "syscall-block"  # a thread blocking (in a syscall, nearly always), with its stack
SWITCH_TRACEPOINT = "sched:sched_switch"
SYSCALL_STACKS = (STACK_EVENT, BLOCK_EVENT)  # the events whose samples are calls' stacks, not time
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
UNFINISHED = -1  # the duration of a call still under way when the recording stopped (exit_group)
# a tracepoint's raw data: its common fields (type u16, flags u8, preempt u8, pid i32), then
# `long id` and, on entry `unsigned long args[6]`, on exit `long ret`
RAW_ID, RAW_RET = 8, 16
MAX_ERRNO = 4095  # a return value in [-4095, -1] is -errno
FIELDS_BEFORE_RAW = ("IDENTIFIER", "IP", "TID", "TIME", "ADDR", "ID", "STREAM_ID", "CPU", "PERIOD")


def name(number: int) -> str:
    """A syscall's name from its number (x86-64's table), else `syscall_N`."""
    known = X86_64.get(number) if _X86_64 else None
    return known or "syscall_%d" % number


_X86_64 = os.uname().machine == "x86_64"


def error_name(ret: int) -> Optional[str]:
    """`ENOENT` for a return value of -2; None for one that is not an error."""
    if -MAX_ERRNO <= ret < 0:
        return errno.errorcode.get(-ret, "E%d" % -ret)
    return None


def tracepoint_id(event: str = ENTER_EVENT) -> int:
    """The id the kernel gave a tracepoint (tracefs' events/SYSTEM/NAME/id)."""
    system, _, tracepoint = event.partition(":")
    why = "tracefs is not mounted at %s" % " or ".join(TRACEFS)
    for root in TRACEFS:
        try:
            with open(os.path.join(root, "events", system, tracepoint, "id")) as f:
                return int(f.read())
        except PermissionError:
            why = "tracefs may be read by root only"
        except (OSError, ValueError):
            continue
    raise MixedstackError("--syscalls needs the id of the %s tracepoint, and %s: record as root (or mount "
                          "tracefs: `mount -t tracefs nodev /sys/kernel/tracing`), or without --syscalls" % (event, why))


def record_events(frequency: int, off_cpu: bool = False) -> List[str]:
    """perf record's events for --syscalls (the other events' rates are set on each event:
    a global -F would make these sampled too)."""
    events = ["-e", ENTER_EVENT + "/call-graph=no/", "-e", EXIT_EVENT + "/call-graph=no/",
              "-e", "tracepoint/config=%d,freq=%d,name=%s/" % (tracepoint_id(), frequency, STACK_EVENT)]
    if not off_cpu:
        events += ["-e", "tracepoint/config=%d,name=%s/" % (tracepoint_id(SWITCH_TRACEPOINT), BLOCK_EVENT),
                   "--filter", "prev_state != 0"]
    return events


class Calls:
    """Every system call of a recording, one row each, in the order their entries were
    recorded (per thread, in time order)."""

    CODES = (("pid", "i"), ("tid", "i"), ("number", "i"), ("start", "q"), ("duration", "q"), ("ret", "q"))

    def __init__(self) -> None:
        for field, code in self.CODES:
            setattr(self, field, array.array(code))
        self.unmatched = 0  # exits whose entry came before the recording began

    def __len__(self) -> int:
        return len(self.tid)

    def records(self) -> int:
        """How many of perf.data's sample records they were: an entry each, an exit each
        that returned, and the exits of calls made before the recording began."""
        return len(self) + sum(1 for duration in self.duration if duration != UNFINISHED) + self.unmatched

    def to_bytes(self) -> bytes:
        parts = [struct.pack("<QQ", len(self), self.unmatched)]
        for field, _ in self.CODES:
            values = getattr(self, field)
            if sys.byteorder != "little":
                values = array.array(values.typecode, values)
                values.byteswap()
            parts.append(values.tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Calls":
        calls = cls()
        count, calls.unmatched = struct.unpack_from("<QQ", blob, 0)
        at = 16
        for field, code in cls.CODES:
            values = array.array(code)
            size = values.itemsize * count
            values.frombytes(blob[at:at + size])
            if len(values) != count:
                raise ValueError("the kept system calls are cut short")
            if sys.byteorder != "little":
                values.byteswap()
            setattr(calls, field, values)
            at += size
        return calls

    def rows(self) -> Iterator[Tuple[int, int, int, int, int, int]]:
        return zip(self.pid, self.tid, self.number, self.start, self.duration, self.ret)


class Decoder:
    """perf.data's per-call syscall records -> Calls, fed a run of records at a time (a
    recording's whole data section, or record's batches as they come)."""

    def __init__(self, head: bytes, event_desc: Optional[bytes]):
        self.calls = Calls()
        self.pending: Dict[int, Tuple[int, int, int]] = {}  # tid -> (row, number, start) of its call under way
        self.early: Dict[int, List[Tuple[int, int, int]]] = {}  # tid -> exits without their entry: (time, number, ret)
        self.layouts: Dict[int, Tuple[bool, int, int, int]] = {}  # sample id -> (entry?, tid at, time at, raw at)
        described = perfdata.events_described(event_desc) if event_desc else None
        if not described:
            return
        offset, size = struct.unpack_from("<QQ", head, ATTRS_SECTION)
        attr_size = struct.unpack_from("<Q", head, ATTR_SIZE)[0]
        types = [struct.unpack_from("<Q", head, at + 24)[0] for at in range(offset, offset + size, attr_size)]
        for (event, ids), sample_type in zip(described, types):
            if event not in (ENTER_EVENT, EXIT_EVENT) or sample_type & (SAMPLE["READ"] | SAMPLE["CALLCHAIN"]):
                continue
            if not sample_type & SAMPLE["IDENTIFIER"] or not sample_type & SAMPLE["TIME"] \
                    or not sample_type & SAMPLE["TID"] or not sample_type & SAMPLE["RAW"]:
                continue
            at = {}
            position = 8
            for field in FIELDS_BEFORE_RAW:
                if sample_type & SAMPLE[field]:
                    at[field] = position
                    position += 8
            layout = (event == ENTER_EVENT, at["TID"], at["TIME"], position + 4)  # RAW: u32 size, then data
            for sample_id in ids:
                self.layouts[sample_id] = layout

    @property
    def recorded(self) -> bool:
        """Whether the recording has the per-call events (record --syscalls)."""
        return bool(self.layouts)

    def feed(self, body: bytes, keep_others: bool = False) -> bytes:
        """Take the per-call records out of `body`; with keep_others, the other records
        (what perf script needs to read) are returned, else b""."""
        layouts, calls, pending = self.layouts, self.calls, self.pending
        if not layouts:
            return body if keep_others else b""
        others = bytearray() if keep_others else None
        unpack = struct.unpack_from
        start_of = 0  # where the run of other records being kept began
        for position, kind, _, size in records(body, 0, len(body)):
            layout = layouts.get(unpack("<Q", body, position + 8)[0]) if kind == PERF_RECORD_SAMPLE else None
            if layout is None:
                continue
            if others is not None:
                others += body[start_of:position]
            start_of = position + size
            entry, tid_at, time_at, raw_at = layout
            pid, tid = unpack("<II", body, position + tid_at)
            when = unpack("<Q", body, position + time_at)[0]
            if entry:
                number = unpack("<q", body, position + raw_at + RAW_ID)[0]
                row = len(calls.tid)
                calls.pid.append(pid)
                calls.tid.append(tid)
                calls.number.append(number)
                calls.start.append(when)
                calls.duration.append(UNFINISHED)
                calls.ret.append(0)
                early = self.early.get(tid)
                if early and early[0][1] == number and early[0][0] >= when:  # its exit came first
                    exited, _, ret = early.pop(0)
                    calls.duration[row], calls.ret[row] = exited - when, ret
                    continue
                pending[tid] = (row, number, when)
            else:
                number, ret = unpack("<qq", body, position + raw_at + RAW_ID)
                under_way = pending.get(tid)
                if under_way is None or under_way[1] != number or under_way[2] > when:
                    # before the recording began, or ahead of its entry: perf writes each
                    # CPU's buffer in turn, and a thread may enter on one, return on another
                    self.early.setdefault(tid, []).append((when, number, ret))
                    continue
                del pending[tid]
                calls.duration[under_way[0]] = when - under_way[2]
                calls.ret[under_way[0]] = ret
        calls.unmatched = sum(len(exits) for exits in self.early.values())
        if others is None:
            return b""
        if start_of == 0:
            return body
        others += body[start_of:]
        return bytes(others)


def read_calls(path: str) -> Optional[Calls]:
    """Every system call a recording holds (None: it was not recorded with --syscalls)."""
    try:
        with open(path, "rb") as f:
            fd = f.fileno()
            offset, size = struct.unpack_from("<QQ", os.pread(fd, 16, perfdata.DATA_SECTION))
            head = os.pread(fd, offset, 0)
            decoder = Decoder(head, perfdata._feature(path, perfdata.HEADER_EVENT_DESC))
            if not decoder.recorded:
                return None
            step = 64 << 20
            at, end = offset, offset + size
            carry = b""
            while at < end:
                chunk = carry + os.pread(fd, min(step, end - at), at)
                at += min(step, end - at)
                whole = _whole_records(chunk)
                decoder.feed(chunk[:whole])
                carry = chunk[whole:]
    except (OSError, struct.error) as error:
        raise MixedstackError("cannot read the system calls of %s: %s" % (path, error))
    return decoder.calls


def _whole_records(buf: bytes) -> int:
    """How many of buf's bytes are whole records."""
    end = 0
    for position, _, _, size in records(buf, 0, len(buf)):
        if position + size > len(buf):
            break
        end = position + size
    return end
