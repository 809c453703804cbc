"""Brendan Gregg's folded format: `frame;frame;frame COUNT`, one line per stack.

Lines are sorted like stackcollapse-perf.pl's (byte order), so output is stable.
Written as latin-1: perf script's text is read that way, so every byte it printed
comes out as it was.
"""
from __future__ import annotations

from typing import IO

from mixedstack.model import Stacks

EXTENSION = ".folded"
ENCODING = "latin-1"


def render(stacks: Stacks, out: IO[str]) -> None:
    out.writelines(stacks.folded_lines())
