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


def test_jitted_maps_beyond_the_room_left_for_them_move_the_data_up(perf_ok, tmp_path, monkeypatch):
    """With no room before the data, the jitted code's maps still come first."""
    import subprocess
    import sys

    from conftest import Folded, interpreter, mixedstack
    from mixedstack.perf import pieces
    from mixedstack.record import session

    monkeypatch.setattr(pieces, "ROOM", 0)
    script = tmp_path / "spin.py"
    script.write_text("import time\ndef spin():\n    end = time.time() + 1\n    while time.time() < end:\n"
                      "        sum(i * i for i in range(300))\nspin()\n")
    data = tmp_path / "perf.data"
    result = session.record(session.RecordOptions([interpreter((3, 13)), str(script)], str(data)),
                            say=lambda message: print(message, file=sys.stderr))
    assert result.status == 0 and result.samples > 100
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    assert stacks.under("spin").total() > 0.5 * stacks.total()
    assert stacks.under("spin").complete_share() > 0.95
    stats = subprocess.run(["perf", "report", "-i", str(data), "--stats"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True).stdout
    assert "SAMPLE events: %d" % result.samples in " ".join(stats.split())
