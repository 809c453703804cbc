"""Processors: each turns one stack into another, and fold applies them as a list.

    Processor = (items, root first) -> items, root first
    an item: a native Frame still to be named, a model.PyFrame, or a marker (str)

python.py   PythonMerge: py:: trampolines -> PyFrame, interpreter plumbing dropped,
            [truncated] / [python frames before activation] where they belong
compiled.py CompiledNames: Cython's and mypyc's C functions -> PyFrame(compiled=True)
names.py    native names exactly as FlameGraph's stackcollapse-perf.pl writes them
layers.py   which layer a frame belongs to (from its DSO, or its name)
offcpu.py   off-CPU samples weighed by the time blocked, and why (GIL, sleep, io...)

The list (`stack_processors`) is what a stack goes through before fold.Folder names
and classifies what is left (names.py, layers.py). offcpu.weigh works one level up,
on the stream of samples (it needs each switch's time). Standard library only.
"""
from __future__ import annotations

from typing import Callable, List, Union

from mixedstack.model import Frame, PyFrame

Item = Union[Frame, PyFrame, str]
Processor = Callable[[List[Item]], List[Item]]


def apply(processors: List[Processor], items: List[Item]) -> List[Item]:
    """Run a stack's items (root first) through the processors, in order."""
    for process in processors:
        items = process(items)
    return items


def stack_processors(keep_interpreter: bool = False, activated: bool = False,
                     trampolined: bool = False) -> List[Processor]:
    """The processors fold applies, in order (none with --keep-interpreter)."""
    from mixedstack.analyze.processors.compiled import CompiledNames
    from mixedstack.analyze.processors.python import PythonMerge

    if keep_interpreter:
        return []
    return [PythonMerge(activated=activated, trampolined=trampolined), CompiledNames()]
