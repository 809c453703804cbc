"""Helpers shared by the fold tests: run the Python API the way `mixedstack fold` does."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, List, Optional, Union

from mixedstack.analyze.fold import Folder
from mixedstack.analyze.fold import FoldOptions
from mixedstack.renderers.folded import render
from mixedstack.perf.parse import EventFilter
from mixedstack.perf.parse import ProcessLabel
from mixedstack.perf.parse import parse

# stackcollapse-perf.pl's options that the corpus exercises ("" = no option).
OPTIONS = ("pid", "tid", "kernel", "jit", "all", "addrs")


def read_text(path: Union[str, Path]) -> str:
    """A file's text as perf script text is read: every byte kept, no newline translation."""
    with open(path, encoding="latin-1", newline="\n") as stream:
        return stream.read()


def split_lines(text: str) -> List[str]:
    """Folded text -> lines, split at "\\n" only (str.splitlines would split at \\r, \\x85...)."""
    assert text == "" or text.endswith("\n"), "folded output ends with a newline"
    return text.split("\n")[:-1]


def fold(
    source: Union[Path, Iterable[str]],
    option: str = "",
    event: Optional[str] = None,
    keep_interpreter: bool = False,
    warnings: Optional[List[str]] = None,
) -> List[str]:
    """Fold `perf script` text (a path or lines) with one stackcollapse option; output lines."""
    assert option in OPTIONS + ("",), option
    if isinstance(source, Path):
        source = io.StringIO(read_text(source), newline="\n")
    samples = parse(
        source,
        ProcessLabel(include_pid=option == "pid", include_tid=option == "tid"),
        EventFilter(event, warn=(warnings if warnings is not None else []).append),
    )
    folder = Folder(FoldOptions(kernel=option == "kernel", jit=option == "jit",
                                all=option == "all", addrs=option == "addrs",
                                keep_interpreter=keep_interpreter)).add_all(samples)
    out = io.StringIO(newline="\n")
    render(folder.result(), out)
    return split_lines(out.getvalue())


def fold_text(text: str, option: str = "", **kwargs) -> List[str]:
    """Fold `perf script` text given as a string (e.g. a test's literal)."""
    return fold(io.StringIO(text, newline="\n"), option, **kwargs)
