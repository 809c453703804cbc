"""Two profiles of one program, made comparable: what `diff` draws.

The same program recorded on CPython 3.11 and 3.13, or through a venv's `python`,
has other process roots (`python3.11`, `python3.13`, `python`): taken as they are, a
differential flame graph draws two unrelated trees. `same_program` names every
interpreter's root `python` (a -PID/TID suffix stays), so that only the real
differences show. Standard library only.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from mixedstack.model import Stack, Stacks

# python, python3, python3.13, python3.13t, python3.8d, with -PID or -PID/TID after
INTERPRETER_ROOT = re.compile(r"^python(?:\d+(?:\.\d+)?)?[dmut]*(?=$|-)", re.ASCII)


def root_of(label: str) -> str:
    return INTERPRETER_ROOT.sub("python", label)


def same_program(stacks: Stacks) -> Stacks:
    """`stacks` with every interpreter's process root named `python`."""
    renamed: Dict[Stack, Stack] = {}
    for stack in stacks.weights:
        root = stack[0] if stack and type(stack[0]) is str else None
        if root is not None and root_of(root) != root:
            renamed[stack] = (root_of(root),) + stack[1:]
    if not renamed:
        return stacks

    def merged(values: Optional[Dict[Stack, int]]) -> Optional[Dict[Stack, int]]:
        if values is None:
            return None
        out: Dict[Stack, int] = {}
        for stack, value in values.items():
            key = renamed.get(stack, stack)
            out[key] = out.get(key, 0) + value
        return out

    layers: Optional[Dict[Stack, Tuple[str, ...]]] = None
    if stacks.layers is not None:
        layers = {renamed.get(stack, stack): kinds for stack, kinds in stacks.layers.items()}
    return Stacks(merged(stacks.weights), stacks.unit, merged(stacks.counts), layers)
