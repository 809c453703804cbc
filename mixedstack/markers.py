"""Synthetic frames: the names mixedstack itself puts in stacks, defined once.

    [python frames before activation]  Python calls that started before the trampoline was on
    [truncated]                        the root of a stack the unwinder gave up on
    [off-cpu: REASON]                  the leaf of time spent blocked (GIL, sleep, lock, io, ...)
    [GIL held by no sampled thread]    (--what gil-holders) GIL waits no holder was seen running in

Standard library only.
"""
from __future__ import annotations

from typing import Optional

# A trampoline turned on in a running process only serves the calls made after that.
BEFORE_ACTIVATION = "[python frames before activation]"
# The frames above it are unknown, so the stack must not read as if it began here.
TRUNCATED = "[truncated]"
# The part of the GIL waits in which no other thread was sampled running Python.
NO_GIL_HOLDER = "[GIL held by no sampled thread]"
_OFF_CPU_PREFIX = "[off-cpu: "
OFF_CPU = _OFF_CPU_PREFIX + "%s]"


def off_cpu(reason: str) -> str:
    """The leaf frame of time blocked for `reason` (GIL, sleep, lock, io, ...)."""
    return OFF_CPU % reason


def is_off_cpu(name: str) -> bool:
    return name.startswith(_OFF_CPU_PREFIX)


def off_cpu_reason(name: str) -> Optional[str]:
    """`[off-cpu: GIL]` -> "GIL"; None for any other frame."""
    return name[len(_OFF_CPU_PREFIX):-1] if is_off_cpu(name) and name.endswith("]") else None
