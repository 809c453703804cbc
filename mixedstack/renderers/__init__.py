"""Renderers: one module per output format, each a pure function of the stacks it
is given (folded.py: {stack: count}; the others: model.Stacks).

folded.py          Brendan Gregg's folded text
flamegraph_svg.py  interactive flame graph and differential flame graph (SVG)
speedscope.py      speedscope's JSON file format
pprof.py           pprof's gzipped profile.proto
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

# `func (file.py)` / `func (file.py:LINE)`: the merge's Python frame names
PYTHON_FRAME = re.compile(r"^(.+) \(([^()]+?)(?::(\d+))?\)$", re.DOTALL)


def readable(name: str) -> str:
    """Stacks are read as latin-1 so that every byte survives; show UTF-8 as such."""
    try:
        return name.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def python_parts(name: str) -> Optional[Tuple[str, str, int]]:
    """`main (pkg/app.py:12)` -> ("main", "pkg/app.py", 12); None if not that shape."""
    match = PYTHON_FRAME.match(name)
    if match is None:
        return None
    return match.group(1), match.group(2), int(match.group(3) or 0)
