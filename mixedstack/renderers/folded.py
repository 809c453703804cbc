"""Brendan Gregg's folded format: `frame;frame;frame COUNT`, one line per stack.

Lines are sorted like stackcollapse-perf.pl's (byte order), so output is stable.
"""
from __future__ import annotations

from typing import IO, Mapping


def render(stacks: Mapping[str, int], out: IO[str]) -> None:
    for stack in sorted(stacks):
        out.write("%s %d\n" % (stack, stacks[stack]))
