"""perf/pieces.py and the piece-by-piece rewrite (perf/rewrite.py's Tidier) in parts
that need no perf: the trimming of grown executable memory."""
from __future__ import annotations

from mixedstack.perf.rewrite import _uncovered


def test_memory_grown_at_either_end_is_cut_to_what_is_new():
    arena = [(0x10000, 0x20000)]
    assert _uncovered(0x10000, 0x30000, arena) == (0x20000, 0x30000)  # a new arena above
    assert _uncovered(0x0, 0x20000, arena) == (0x0, 0x10000)  # ... or below
    assert _uncovered(0x30000, 0x40000, arena) == (0x30000, 0x40000)  # apart: as it is


def test_memory_announced_again_is_all_known():
    assert _uncovered(0x10000, 0x30000, [(0x10000, 0x20000), (0x20000, 0x30000)]) == (0x10000, 0x10000)


def test_memory_new_on_both_sides_is_left_as_announced():
    assert _uncovered(0x0, 0x40000, [(0x10000, 0x20000)]) is None
