"""Compiled Python by its Python name: Cython's and mypyc's C functions -> PyFrame.

Much of the time of real Python programs runs in Python compiled to C: Cython
(msgpack, lxml, aiohttp, pandas, PyYAML) and mypyc (black, mypy). Their C symbols
carry the Python name, mangled:

    Cython  __pyx_pw_7msgpack_9_cmsgpack_6Packer_7pack       the Python wrapper
            __pyx_pf_7msgpack_9_cmsgpack_6Packer_6pack       its implementation
            __pyx_f_7msgpack_9_cmsgpack_6Packer__pack_inner  a cdef function
            -> msgpack._cmsgpack.Packer.pack, msgpack._cmsgpack.Packer._pack_inner
            (scopes length-prefixed, then the function: an index and its name)
    mypyc   CPyPy_black___format_str                          the Python wrapper
            CPyDef_black___format_str                         the native function
            CPyDef_nodes___visit_Visitor_gen_____mypyc_generator_helper__
            -> black.format_str, nodes.Visitor.visit
            ("." written "___"; the module as the shortest suffix that is unique in
            its build; a generator's body is a class FUNC_CLASS_gen or FUNC_gen, a
            nested function's FUNC_obj, run by its __call__)

A wrapper (and mypyc's trait glue) and the implementation it calls right under it
are one frame. Each becomes
a PyFrame with compiled=True (its own layer), so reports count them as the Python
functions they are; the C they call stays under them. Standard library only.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from mixedstack.analyze.processors import Item
from mixedstack.analyze.processors.python import symbol_name
from mixedstack.model import Frame, PyFrame

CYTHON = re.compile(r"^__pyx_(pw|pf|f|gb)_(\d.*)$", re.ASCII)
MYPYC = re.compile(r"^(CPyPy|CPyDef)_(\w+)$", re.ASCII)
LENGTH = re.compile(r"\d+", re.ASCII)
INDEX = re.compile(r"^\d+", re.ASCII)
DUNDER = re.compile(r"^__\w+__$", re.ASCII)
# wrapper -> the implementation it calls: one frame (mypyc's trait glue,
# METHOD__TRAIT_glue, calls the method it stands for, as a wrapper does)
WRAPS = {"pw": "pf", "CPyPy": "CPyDef", "glue": "CPyDef"}
GLUE = re.compile(r"(?<!_)__[A-Z][A-Za-z0-9]*_glue$", re.ASCII)  # a trait is a class: CamelCase
PLT = "@plt"  # a call through the PLT stub of a function: that function
# A generator's body is the helper method of a class FUNC[_CLASS]_gen; a nested
# function, or a method turned into an object, is FUNC[_CLASS]_obj, run by __call__
BODY_METHODS = frozenset(["__mypyc_generator_helper__", "__call__"])
BODY_CLASS = re.compile(r"^(.+)_([A-Z][A-Za-z0-9]*)_(?:gen|obj)$", re.ASCII)  # the class: CamelCase
BODY_FUNCTION = re.compile(r"^(.+)_(?:gen|obj)$", re.ASCII)
TOP_LEVEL = "__top_level__"  # mypyc's name for a module's own code


def cython_name(mangled: str, kind: str = "pw") -> Optional[str]:
    """`7msgpack_9_cmsgpack_6Packer_7pack` -> `msgpack._cmsgpack.Packer.pack`.

    Scopes are length-prefixed, then comes the function: an index and its name
    (`7pack`), or for a cdef function (kind "f") the name alone. A length-prefixed
    chunk is a scope only where what follows can follow a scope: `_` and a digit (the
    next scope, or the index), a whole `__dunder__`, or, for cdef functions, any
    name; otherwise it is the start of the index and name (`1__init__`, `3get_version`).
    """
    parts: List[str] = []
    at = 0
    while True:
        digits = LENGTH.match(mangled, at)
        if digits is None:
            break
        end = digits.end() + int(digits.group())
        if end >= len(mangled) or mangled[end] != "_":
            break
        rest = mangled[end + 1:]
        if not (rest[:1].isdigit() or DUNDER.match(rest) or (kind == "f" and rest and not rest[0].isdigit())):
            break
        parts.append(mangled[digits.end():end])
        at = end + 1
    function = INDEX.sub("", mangled[at:])
    if not parts or not function:
        return None
    return ".".join(parts + [function])


def mypyc_name(mangled: str) -> Optional[str]:
    """`black___format_str` -> `black.format_str`; a generator's helper -> its function."""
    parts = mangled.replace("___3_", "\0").replace("___", ".").replace("\0", "___").split(".")
    if len(parts) < 2:
        return None
    if parts[-1] in BODY_METHODS and len(parts) >= 3:
        match = BODY_CLASS.match(parts[-2])
        if match:
            parts = parts[:-2] + [match.group(2), match.group(1)]
        else:
            match = BODY_FUNCTION.match(parts[-2])
            if match:
                parts = parts[:-2] + [match.group(1)]
    if parts[-1] == TOP_LEVEL:
        parts[-1] = "<module>"
    return ".".join(parts)


def demangle(symbol: str) -> Optional[Tuple[str, str]]:
    """(Python name, kind) of a compiled Python function's C symbol, or None."""
    if symbol.endswith(PLT):
        symbol = symbol[:-len(PLT)]
    match = CYTHON.match(symbol)
    if match:
        name = cython_name(match.group(2), match.group(1))
        return (name, match.group(1)) if name else None
    match = MYPYC.match(symbol)
    if match:
        mangled, kind = match.group(2), match.group(1)
        glue = GLUE.search(mangled)
        if glue:  # the glue's native body, or its Python wrapper: either stands for the method
            mangled, kind = mangled[:glue.start()], "glue" if kind == "CPyDef" else kind
        name = mypyc_name(mangled)
        return (name, kind) if name else None
    return None


class CompiledNames:
    """Processor: Cython and mypyc functions -> PyFrame(compiled=True), a wrapper and
    its implementation right under it as one frame."""

    def __init__(self) -> None:
        self._known: Dict[str, Optional[Tuple[str, str]]] = {}

    def __call__(self, root_first: List[Item]) -> List[Item]:
        items: List[Item] = []
        wrapper: Optional[Tuple[str, str]] = None  # (name, kind) of the frame just added
        for item in root_first:
            found = self._demangled(item) if type(item) is Frame else None
            if found is None:
                items.append(item)
                wrapper = None
                continue
            name, kind = found
            if wrapper is not None and wrapper[0] == name and WRAPS.get(wrapper[1]) == kind:
                wrapper = None  # the implementation of the wrapper above: the same frame
                continue
            items.append(PyFrame(name, compiled=True))
            wrapper = found
        return items

    def _demangled(self, frame: Frame) -> Optional[Tuple[str, str]]:
        # by the raw symbol text (offset included): report runs every sample through
        # here, without fold's per-stack cache
        known = self._known
        if frame.symbol not in known:
            known[frame.symbol] = demangle(symbol_name(frame))
        return known[frame.symbol]
