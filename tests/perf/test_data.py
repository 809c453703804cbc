"""perfdata.sample_layouts: which event layout each sample record has, for stack clipping."""
from __future__ import annotations

import struct
import subprocess

from mixedstack.perf import data as perfdata
from mixedstack.perf.data import SAMPLE
from mixedstack.perf.data import sample_layouts

ATTR_SIZE = 144  # perf_event_attr (128 bytes) + its ids section
DWARF = SAMPLE["IP"] | SAMPLE["TID"] | SAMPLE["TIME"] | SAMPLE["CALLCHAIN"] | SAMPLE["PERIOD"] | \
    SAMPLE["REGS_USER"] | SAMPLE["STACK_USER"]
REGS = 0xFF0FFF  # what perf asks for in DWARF mode (SP included)


def perf_data(*events):
    """A perf.data header and attrs section: events are (sample_type, regs, [ids])."""
    attrs_at = 104
    ids_at = attrs_at + ATTR_SIZE * len(events)
    buf = bytearray(ids_at + 8 * sum(len(ids) for _, _, ids in events) + 64)
    buf[0:8] = b"PERFILE2"
    struct.pack_into("<QQQ", buf, 16, ATTR_SIZE, attrs_at, ATTR_SIZE * len(events))
    for i, (sample_type, regs, ids) in enumerate(events):
        at = attrs_at + ATTR_SIZE * i
        struct.pack_into("<Q", buf, at + 24, sample_type)
        struct.pack_into("<Q", buf, at + 80, regs)
        struct.pack_into("<QQ", buf, at + 128, ids_at, 8 * len(ids))
        for id_ in ids:
            struct.pack_into("<Q", buf, ids_at, id_)
            ids_at += 8
    return buf


def sample_at(buf, identifier):
    """Write a sample record's first field (its IDENTIFIER) at the end of buf; its position."""
    position = len(buf) - 16
    struct.pack_into("<Q", buf, position + 8, identifier)
    return position


def test_one_event():
    layout_of = sample_layouts(perf_data((DWARF, REGS, [1])))
    assert layout_of(0) == (DWARF, REGS)


def test_alike_events_without_identifier():
    # perf record -D/--control adds a dummy tracking event with the same layout and no IDENTIFIER
    layout_of = sample_layouts(perf_data((DWARF, REGS, [1]), (DWARF, REGS, [2])))
    assert layout_of is not None and layout_of(0) == (DWARF, REGS)


def test_different_events_are_told_apart_by_identifier():
    switch = DWARF | SAMPLE["IDENTIFIER"] | SAMPLE["CPU"] | SAMPLE["RAW"]
    buf = perf_data((DWARF | SAMPLE["IDENTIFIER"], REGS, [7, 8]), (switch, REGS, [9]))
    layout_of = sample_layouts(buf)
    assert layout_of(sample_at(buf, 9)) == (switch, REGS)
    assert layout_of(sample_at(buf, 8)) == (DWARF | SAMPLE["IDENTIFIER"], REGS)


def test_no_usable_layout():
    assert sample_layouts(perf_data((DWARF & ~SAMPLE["STACK_USER"], REGS, [1]))) is None
    # different layouts without IDENTIFIER: a sample's event cannot be known
    assert sample_layouts(perf_data((DWARF, REGS, [1]), (DWARF | SAMPLE["CPU"], REGS, [2]))) is None


def test_event_names_are_read_from_the_file_as_perf_evlist_names_them(phases):
    data, _ = phases
    listed = subprocess.run(["perf", "evlist", "-i", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True).stdout.split()
    assert perfdata.event_names(str(data)) == listed
    assert perfdata.event_names(__file__) is None
