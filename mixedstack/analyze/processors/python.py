"""The Python merge: one readable frame per Python call, real C work kept.

CPython's perf support (and our agent) runs each Python call through a small
trampoline named `py::QUALNAME:FILE` (agent: `py::QUALNAME:FILE:LINE`). Under a
DWARF or frame-pointer unwind a Python call then looks like (root first):

    py_trampoline_evaluator      plumbing: the hook that entered the trampoline
    py::main:/app.py             the Python frame
    _PyEval_EvalFrameDefault     the interpreter running `main`'s bytecode
    PyObject_Vectorcall ...      plumbing: dispatching the next call
    py_trampoline_evaluator
    py::handler:/app.py          ...

This module turns that into `main (app.py);handler (app.py);...`: each `py::` frame
becomes a Python frame, call plumbing between and under Python frames is dropped,
interpreter start-up frames above the outermost Python frame are dropped, and
every other native frame (builtins, extension modules, libc, kernel) is kept.
Stacks without any Python frame are returned unchanged.

A trampoline turned on in a running process (`record --pid --activate`) only
serves calls made after that: the calls already running go on in the plain
interpreter, as `_PyEval_EvalFrameDefault` frames without a `py::` frame. A stack
unwound to its thread's entry (`_start`, `start_thread`) that has such frames
root-ward of its outermost Python frame gets `[python frames before activation]`
there, rather than seeming to start at that Python frame.

A stack the unwinder gave up on (too deep for the stack copy, a frame it could not
step over) does not reach an entry point: it gets `[truncated]` as its root, so
that it never reads as a real root (`python;_console_main (_pytest/...)`).

This is the one module that holds the merge logic; it is standard library only so
that perf's embedded Python can run it (perf_scripts/mixedstack-fold.py).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence

from mixedstack.markers import BEFORE_ACTIVATION, TRUNCATED
from mixedstack.analyze.processors.names import OFFSET
from mixedstack.analyze.processors import Item
from mixedstack.model import Frame, PyFrame

PYTHON_PREFIX = "py::"

# Call plumbing: C functions whose only job is to get from one Python frame (or
# a C caller) to the next evaluation. Named exactly, across CPython 3.8-3.13, so
# that C functions doing real work (and C functions calling back into Python,
# such as builtin_sorted or sqlite3's callbacks) are never dropped.
PLUMBING = re.compile(
    r"^(?:"
    r"_?PyEval_EvalFrame(?:Default|Ex)?"
    r"|_?PyEval_EvalCode(?:Ex|WithName)?|_PyEval_Vector"
    r"|py_trampoline_evaluator|_Py_trampoline\w*|mixedstack_trampoline\w*|mixedstack_eval\w*"
    r"|_?PyObject_Vectorcall(?:Tstate|Dict|DictTstate|Method|Prepend)?"
    r"|_?PyObject_FastCall(?:Dict|DictTstate|Tstate)?"
    r"|_?PyObject_Call(?:_Prepend|NoArgs|NoArgsTstate|OneArg|Object|FunctionObjArgs)?"
    r"|_?PyObject_Call(?:Method|Function)\w*|_PyObject_CallFunctionVa|_?PyObject_VectorcallMethod\w*"
    r"|_PyObject_MakeTpCall|_?PyVectorcall_Call|object_vacall"
    r"|_PyFunction_Vectorcall|_PyFunction_FastCall(?:Dict|Keywords)?|function_code_fastcall"
    r"|method_vectorcall\w*|cfunction_vectorcall\w*|cfunction_call(?:_varargs)?"
    r"|_PyCFunction_FastCall\w*|_PyMethodDef_RawFastCall\w*|_PyMethodDescr_FastCall\w*"
    r"|call_function|do_call_core|vectorcall_method|vectorcall_unbound"
    # 3.14+: the eval loop's call paths on stack references, the tail-calling
    # interpreter's opcode handlers, and the frame set-up between two Python calls
    r"|_Py_BuiltinCall\w*_StackRef|_PyCallMethodDescriptor\w*_StackRef|_Py_CallBuiltinClass_StackRef"
    r"|_Py_VectorCall\w*_StackRef\w*|_PyEvalFramePushAndInit\w*|_TAIL_CALL_\w+"
    r")$",
    re.ASCII,
)
# What GCC (`.cold`, `.lto_priv.0`, `.part.0`, `.isra.0`, `.constprop.0`) and clang
# (`.llvm.123`) append to the parts of a function they split, clone or localise:
# the part is still that function.
COMPILER_SUFFIX = re.compile(r"(?:\.(?:cold|lto_priv|part|isra|constprop|llvm|localalias)(?:\.\d+)?)+$",
                             re.ASCII)

# Where perf finds trampolines (CPython's, or our agent's): jitdump code after
# `perf inject --jit`, or a perf map.
TRAMPOLINE_FILE = r"(?:jitted-\d+-\d+\.so|perf-\d+\.map)"
TRAMPOLINE_DSO = re.compile(r"(?:^|/)%s$" % TRAMPOLINE_FILE, re.ASCII)
# The python executable or libpython (python3.15, libpython3.13.so.1.0); CPython's own
# extension modules (lib-dynload/_hashlib.cpython-313-...so) are extensions, not it.
INTERPRETER = r"(?:lib)?python[\d.]*[dmut]*(?:\.so[\d.]*)?"
INTERPRETER_DSO = re.compile(r"(?:^|/)%s$" % INTERPRETER, re.ASCII)
LIBC = r"libc[.-][^/]*"
STARTUP_DSO = re.compile(
    r"(?:^|/)(?:%s|%s|ld-linux[^/]*|libpthread[^/]*)$" % (INTERPRETER, LIBC)
    + r"|^inlined$|^\[unknown\]$",
    re.ASCII,
)
UNKNOWN = "[unknown]"

# Where a complete user stack starts: the program's entry (DWARF: _start; frame
# pointers stop at glibc's __libc_start_call_main) or a thread's.
ENTRY_POINTS = re.compile(r"^(?:_start|__libc_start_main\S*|__libc_start_call_main|start_thread|clone3?)$",
                          re.ASCII)
# A stripped libc (Debian sid's) names neither start_thread nor clone3: an unnamed libc
# frame at the root is still where a thread began (a stack the unwinder cut ends in
# the interpreter or a trampoline, not in libc's thread start).
LIBC_DSO = re.compile(r"(?:^|/)%s$" % LIBC, re.ASCII)
# The bytecode loop of a Python call that has no trampoline (3.11+ also run the
# Python calls it makes in it). Root-ward of a trampoline it can only be a call that
# started before the trampoline was on; its callers (PyEval_EvalCode,
# _PyEval_EvalFrame, PyEval_EvalFrameEx) precede every trampoline and are no sign.
UNNAMED_EVAL = "_PyEval_EvalFrameDefault"
# The root of a stack the unwinder gave up on (it never reached an entry point): the
# frames above it are unknown, so the stack must not read as if it began here.
THREAD_START = "Thread._bootstrap"  # threading's first Python frame of a thread
# The interpreter's initialisation: the Python code it runs (frozen importlib, the
# codecs' imports) precedes any trampoline, CPython's own (-X perf, -X perf_jit: turned
# on in init_interp_main, after _PyUnicode_InitEncodings) and the agent's alike. Told
# from the stack itself, so that a recording, its perf script text and perf's own
# script engine fold it alike.
INITIALISATION = frozenset(("pymain_init", "Py_InitializeFromConfig", "Py_InitializeEx", "Py_Initialize",
                            "_Py_InitializeMain", "Py_InitializeMain"))


def symbol_name(frame: Frame) -> str:
    """The function: without perf's +0xOFFSET and the compiler's part suffixes."""
    return COMPILER_SUFFIX.sub("", OFFSET.sub("", frame.symbol))


def is_python(frame: Frame) -> bool:
    """A trampoline frame: `py::` in code that perf learnt from a jitdump or perf map
    (a C++ `py::Object::call` in a real library is not one)."""
    return frame.symbol.startswith(PYTHON_PREFIX) and TRAMPOLINE_DSO.search(frame.dso) is not None


def is_startup(frame: Frame) -> bool:
    """Code that starts the interpreter or a thread: the python binary, libpython,
    libc, the dynamic loader (and their inlined frames)."""
    return STARTUP_DSO.search(frame.dso) is not None


def is_entry(frame: Frame) -> bool:
    """Where a whole stack begins: the process's or a thread's entry."""
    return (ENTRY_POINTS.match(symbol_name(frame)) is not None
            or (frame.symbol.startswith(UNKNOWN) and LIBC_DSO.search(frame.dso) is not None))


def is_plumbing(frame: Frame) -> bool:
    return PLUMBING.match(symbol_name(frame)) is not None


def is_unnamed_interpreter(frame: Frame) -> bool:
    """Code of a stripped interpreter that perf has no name for (`[python3.15]`)."""
    return frame.symbol.startswith(UNKNOWN) and INTERPRETER_DSO.search(frame.dso) is not None


def without_suffix(frame: Frame) -> Frame:
    """`zlib_crc32.lto_priv.0+0x1f` is zlib_crc32: name the kept frame as the function."""
    plain = symbol_name(frame)
    return frame if plain == OFFSET.sub("", frame.symbol) else frame._replace(symbol=plain)


class PythonNames:
    """`py::QUALNAME:FILE[:LINE]` -> PyFrame(QUALNAME, short/file.py), cached.

    One name for one function in every mode: CPython's trampolines (3.12+) carry no
    line, the agent's (3.8-3.12) carry the first one; it is dropped, so that a
    program recorded on 3.11 and on 3.13 names its functions alike (diff)."""

    def __init__(self) -> None:
        self._names: Dict[str, PyFrame] = {}
        self._files: Dict[str, str] = {}

    def __call__(self, frame: Frame) -> PyFrame:
        symbol = OFFSET.sub("", frame.symbol)
        name = self._names.get(symbol)
        if name is None:
            name = self._names[symbol] = self._parse(symbol[len(PYTHON_PREFIX):])
        return name

    def _parse(self, text: str) -> PyFrame:
        # A qualname never holds ":", a file name might: split at the first one.
        qualname, _, location = text.partition(":")
        head, sep, tail = location.rpartition(":")
        if sep and tail.isdigit() and head:
            location = head
        where = self.short_file(location) if location else ""
        # ";" separates frames in folded output
        return PyFrame(qualname.replace(";", ":"), where.replace(";", ":"))

    def short_file(self, path: str) -> str:
        """Shorten a path as py-spy does: keep the package directories only."""
        short = self._files.get(path)
        if short is None:
            short = self._files[path] = shorten_path(path)
        return short


ARCHIVE = re.compile(r"\.(?:zip|whl|egg|pyz)/", re.ASCII)  # code imported from an archive


def shorten_path(path: str) -> str:
    """`/site-packages/pkg/sub/mod.py` -> `pkg/sub/mod.py`; `/src/app.py` -> `app.py`.

    Walks up from the file while the directory is a package (has __init__.py), like
    py-spy; in a zip or wheel, the path inside it. Names that are not paths
    (`<frozen ...>`, `<string>`) stay as they are.
    """
    if not path.startswith("/"):
        return path
    inside = ARCHIVE.search(path)
    if inside:  # zipimport: `/x/app.whl/pkg/mod.py`, every folder in there is the package's
        return path[inside.end():]
    top = os.path.dirname(path)
    while top not in ("/", "") and os.path.exists(os.path.join(top, "__init__.py")):
        top = os.path.dirname(top)
    return os.path.relpath(path, top) if top else path


class PythonMerge:
    """Processor: a stack's items (root first) -> items root first.

    A stack without Python frames comes back as it is, so that it keeps FlameGraph's
    exact behaviour.
    """

    def __init__(self, names: Optional[PythonNames] = None, activated: bool = False, trampolined: bool = False):
        self.names = names or PythonNames()
        # the recording's trampolines were turned on after Python code had run (the
        # agent's sitecustomize, after start-up imports): that code is the plain eval
        # loop, marked as such
        self.trampolined = trampolined
        # the trampoline was turned on in the running process: on a stripped interpreter
        # the calls that predate it are unnamed frames, told apart as below
        self.activated = activated

    def __call__(self, root_first: List[Item]) -> List[Item]:
        first = next((i for i, f in enumerate(root_first) if type(f) is Frame and is_python(f)), None)
        if first is None:
            if self.trampolined or any(symbol_name(f) in INITIALISATION for f in root_first if type(f) is Frame):
                return self._before_trampolines(root_first)
            return root_first
        # Above the outermost Python frame, interpreter and thread start-up
        # (_start ... run_mod, start_thread ... thread_run) is dropped; a program
        # of its own there (an app embedding Python, a native thread calling back
        # through ctypes) is kept from its outermost frame on.
        own = next((i for i, f in enumerate(root_first[:first]) if not is_startup(f)), first)
        items: List[Item] = []
        start = own
        complete = is_entry(root_first[0])
        if not complete:
            items.append(TRUNCATED)
        older = [i for i in range(first) if symbol_name(root_first[i]) == UNNAMED_EVAL]
        if not older and complete and self.activated and self.names(root_first[first]).function != THREAD_START:
            # No eval loop named (a stripped interpreter): every complete stack but a
            # thread started since has older calls, in the unnamed frames root-ward.
            older = [i for i in range(first) if is_unnamed_interpreter(root_first[i])]
        if older and complete:
            # Python calls that predate the trampoline: one mark for all of them, then
            # whatever C code the newest of them called on the way to the first named frame.
            items.extend(self._merge(root_first[own:older[0]]))
            items.append(BEFORE_ACTIVATION)
            start = older[-1] + 1
        items.extend(self._merge(root_first[start:]))
        return items

    def _before_trampolines(self, root_first: List[Item]) -> List[Item]:
        """A stack of Python code without a trampoline: the eval loop's frames, from the
        outermost to the innermost, become one BEFORE_ACTIVATION mark; the start-up
        above them goes and the C they called stays."""
        older = [i for i, f in enumerate(root_first) if type(f) is Frame and symbol_name(f) == UNNAMED_EVAL]
        if not older:
            return root_first
        own = next((i for i, f in enumerate(root_first[:older[0]]) if not is_startup(f)), older[0])
        items: List[Item] = [] if is_entry(root_first[0]) else [TRUNCATED]
        items.extend(self._merge(root_first[own:older[0]]))
        items.append(BEFORE_ACTIVATION)
        items.extend(self._merge(root_first[older[-1] + 1:]))
        return items

    def _merge(self, root_first: Sequence[Frame]) -> List[Item]:
        items: List[Item] = []
        innermost = max((i for i, f in enumerate(root_first) if is_python(f)), default=-1)
        unnamed_shown = False
        for at, frame in enumerate(root_first):
            if is_python(frame):
                items.append(self.names(frame))
            elif is_unnamed_interpreter(frame):
                # A stripped interpreter's own code between two Python frames is its
                # plumbing; under the innermost one, its work shows once (the eval loop,
                # a static builtin, the call path to it cannot be told apart unnamed).
                if at > innermost and not unnamed_shown:
                    items.append(frame)
                    unnamed_shown = True
            elif not is_plumbing(frame):
                items.append(without_suffix(frame))
        return items
