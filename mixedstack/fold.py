"""Samples -> stacks: run the processors over each sample and count the results.

Memory grows with the number of distinct stacks, not with samples: samples are
consumed one at a time, and the per-stack cache is bounded. Standard library only.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from .model import Frame, Sample
from .processors.names import NativeNames
from .processors.python import PythonMerge

CACHE_LIMIT = 200_000  # distinct raw stacks remembered; identical stacks are the norm


class FoldOptions:
    """What `fold` was asked for; the CLI and the perf script share it."""

    def __init__(
        self,
        kernel: bool = False,
        jit: bool = False,
        all: bool = False,
        addrs: bool = False,
        keep_interpreter: bool = False,
    ):
        self.kernel = kernel or all
        self.jit = jit or all
        self.addrs = addrs
        self.keep_interpreter = keep_interpreter


class Folder:
    """Accumulates samples into {folded stack: total period}."""

    def __init__(self, options: Optional[FoldOptions] = None):
        options = options or FoldOptions()
        self.native = NativeNames(kernel=options.kernel, jit=options.jit, addrs=options.addrs)
        self.merge = None if options.keep_interpreter else PythonMerge()
        self.stacks: Dict[str, int] = {}
        self.samples = 0
        self.python_samples = 0
        self.stackless_samples = 0  # samples that carried no call chain at all
        self._cache: Dict[Tuple[str, Tuple[Frame, ...]], Tuple[str, bool]] = {}

    def add(self, sample: Sample) -> None:
        key = (sample.label, tuple(sample.frames))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[key] = self._fold(sample)
        stack, has_python = cached
        self.stacks[stack] = self.stacks.get(stack, 0) + sample.period
        self.samples += 1
        self.python_samples += has_python
        self.stackless_samples += not sample.frames

    def add_all(self, samples: Iterable[Sample]) -> "Folder":
        for sample in samples:
            self.add(sample)
        return self

    def _fold(self, sample: Sample) -> Tuple[str, bool]:
        parts: List[str] = [sample.label]
        items = self.merge(sample.frames) if self.merge else None
        if items is None:
            for frame in reversed(sample.frames):
                parts.extend(self.native(frame, sample.label))
        else:
            for item in items:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    parts.extend(self.native(item, sample.label))
        return ";".join(parts), items is not None
