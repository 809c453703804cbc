"""Which layer of the program a frame belongs to: Python, C inside the interpreter,
C in extensions and libraries, the kernel, or an off-CPU wait.

From a recording, a native frame's layer comes from its DSO (`of_native`), which is
exact. Folded text has names only, so `of_name` guesses from the name (documented
in the README): `_[k]` -> kernel; a Python frame (PyFrame, parsed from `func
(file.py)`) -> Python; CPython API names
(`Py*`, `_Py*`, `take_gil`, ...) -> interpreter; anything else -> library C. The
interpreter's static functions (`list_sort`, `long_add`) therefore count as
library C in folded input. The merge's `[python frames before activation]`
stands for Python frames. Standard library only: Folder uses it.
"""
from __future__ import annotations

import re
from typing import Dict, Sequence, Tuple

from mixedstack.model import Frame, PyFrame, StackFrame
from mixedstack.markers import BEFORE_ACTIVATION, NO_GIL_HOLDER, is_off_cpu
from mixedstack.analyze.processors.python import INTERPRETER_DSO, TRAMPOLINE_DSO

PROCESS = "process"  # the root frame: the process (or thread) label
PYTHON = "python"
COMPILED = "compiled"  # Python compiled to C (Cython, mypyc), by its Python name
INTERPRETER = "interpreter"
LIBRARY = "library"
KERNEL = "kernel"
OFF_CPU = "off-cpu"
GIL = "gil"
BYTECODE = "bytecode"  # report's leaf layer: the eval loop or a trampoline (Python's own time)
UNRESOLVED = "unresolved"  # report's leaf layer: a frame perf could not name, nor its DSO

# Legend order and wording.
NAMES: Dict[str, str] = {
    PYTHON: "Python",
    COMPILED: "compiled Python",
    INTERPRETER: "C in the interpreter",
    LIBRARY: "C in extensions and libraries",
    KERNEL: "kernel",
    OFF_CPU: "off-CPU",
    GIL: "GIL wait",
    PROCESS: "process",
    BYTECODE: "Python (bytecode loop)",
    UNRESOLVED: "unresolved",
}

# Bracketed DSOs that are user space, not the kernel or a kernel module.
USER_BRACKETS = {"[vdso]", "[vsyscall]", "[unknown]", "[heap]", "[stack]", "[anon]", "[uprobes]"}

CPYTHON_API = re.compile(r"^(?:_?Py[A-Z_]|take_gil|drop_gil|builtin_)", re.ASCII)
ANNOTATION = re.compile(r"_\[[kji]\]$", re.ASCII)


def of_marker(name: str) -> str:
    """`[off-cpu: GIL]` -> gil, other `[off-cpu...` markers -> off-cpu, else ""."""
    if is_off_cpu(name):
        return GIL if "GIL" in name else OFF_CPU
    return GIL if name == NO_GIL_HOLDER else ""


def is_kernel(dso: str) -> bool:
    """The kernel or a kernel module (`[kernel.kallsyms]`, `[xfs]`, vmlinux)."""
    return dso.startswith("[kernel.") or dso.endswith("vmlinux") or (
        dso.startswith("[") and dso.endswith("]") and dso not in USER_BRACKETS)


def of_native(frame: Frame, symbol: str) -> str:
    """A native frame's layer from its DSO (symbol: its name without offset)."""
    dso = frame.dso
    if is_kernel(dso):
        return KERNEL
    if TRAMPOLINE_DSO.search(dso):  # only left by --keep-interpreter
        return PYTHON if symbol.startswith("py::") else INTERPRETER
    if INTERPRETER_DSO.search(dso):
        return INTERPRETER
    return LIBRARY


def of_frame(frame: StackFrame) -> str:
    """A stack frame's layer when no DSO says it: a PyFrame is Python (or compiled
    Python), else of_name."""
    if type(frame) is PyFrame:
        return COMPILED if frame.compiled else PYTHON
    return of_name(frame)


def of_name(name: str) -> str:
    """A native frame's layer guessed from its folded name alone (see the module doc)."""
    marker = of_marker(name)
    if marker:
        return marker
    if name.endswith("_[k]"):
        return KERNEL
    bare = ANNOTATION.sub("", name)
    if bare.startswith("py::") or bare == BEFORE_ACTIVATION:
        return PYTHON
    if CPYTHON_API.match(bare):
        return INTERPRETER
    return LIBRARY


def of_stack(frames: Sequence[StackFrame], known: Tuple[str, ...] = ()) -> Tuple[str, ...]:
    """Layers of a stack's frames (root first): `known` (from DSOs, one per frame)
    where it fits, else from the frames themselves; the first frame is the process."""
    if len(known) == len(frames):
        return known
    return tuple(PROCESS if i == 0 else of_frame(frame) for i, frame in enumerate(frames))
