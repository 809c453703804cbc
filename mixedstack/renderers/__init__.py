"""Renderers: one module per output format, one contract.

Each module has `render(stacks, out, **options)`, a pure function of the model.Stacks
it is given, writing to `out`, and says what it writes: `EXTENSION` (the usual file
name ending) and `ENCODING` (text in that encoding; None: bytes).

folded.py          Brendan Gregg's folded text
flamegraph_svg.py  interactive flame graph and differential flame graph (SVG)
speedscope.py      speedscope's JSON file format (each thread's timeline, from a recording)
gecko.py           the Firefox Profiler's gecko JSON (threads as tracks, waits and syscalls as markers)
pprof.py           pprof's gzipped profile.proto
report_text.py     `mixedstack report`'s figures as text (its input is those figures)

`render(stacks, "flamegraph", "out.svg")` picks the module and writes the file
whole or not at all (write_output).
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import IO, Any, Callable, Optional

from mixedstack.errors import Interrupted, MixedstackError
from mixedstack.model import Stacks

FORMATS = {"folded": "folded", "flamegraph": "flamegraph_svg", "speedscope": "speedscope", "pprof": "pprof",
           "gecko": "gecko"}


def renderer(format: str) -> ModuleType:
    """The module that renders `format` (one of FORMATS)."""
    if format not in FORMATS:
        raise MixedstackError("no output format %r: choose one of %s" % (format, ", ".join(FORMATS)))
    return importlib.import_module("mixedstack.renderers." + FORMATS[format])


def render(stacks: Stacks, format: str = "folded", output: str = "-", **options: Any) -> None:
    """Write `stacks` in `format` to the file `output` ("-": standard output)."""
    module = renderer(format)
    write_output(output, lambda out: module.render(stacks, out, **options), module.ENCODING)


def write_output(output: str, render: Callable[[IO], None], encoding: Optional[str]) -> None:
    """render(stream) into FILE (through FILE.partial, renamed when complete) or
    standard output ("-"); encoding None writes bytes."""
    mode = "wb" if encoding is None else "w"
    text = {} if encoding is None else {"encoding": encoding, "newline": "\n"}
    partial = output + ".partial"
    try:
        if output == "-":
            stream = open(sys.stdout.fileno(), mode, closefd=False, **text)
            try:
                render(stream)
                stream.flush()
            except BrokenPipeError:  # `mixedstack fold | head` is fine
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        if os.path.exists(output) and not os.path.isfile(output):  # /dev/null, a FIFO: never renamed over
            with open(output, mode, **text) as stream:
                render(stream)
            return
        with open(partial, mode, **text) as stream:
            render(stream)
        os.replace(partial, output)  # never leave a half-written file under the real name
    except OSError as error:
        _remove_partial(output, partial)
        raise MixedstackError("cannot write %s: %s; choose another -o" % (output, error.strerror or error))
    except KeyboardInterrupt:
        _remove_partial(output, partial)
        raise Interrupted()


def _remove_partial(output: str, partial: str) -> None:
    if output != "-" and os.path.exists(partial):
        os.remove(partial)


def readable(name: str) -> str:
    """Stacks are read as latin-1 so that every byte survives; show UTF-8 as such."""
    try:
        return name.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name
