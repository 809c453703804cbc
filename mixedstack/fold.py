"""Samples -> stacks: run the processors over each sample and count the results.

Memory grows with the number of distinct stacks, not with samples: samples are
consumed one at a time, and the per-stack cache is bounded. Standard library only.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from . import layers
from .model import Frame, Sample, Stacks
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
    """Accumulates samples into {folded stack: total period}.

    With detail=True it also counts samples per stack and notes each frame's layer
    from its DSO (for pictures); the folded text itself does not change.
    """

    def __init__(self, options: Optional[FoldOptions] = None, detail: bool = False):
        options = options or FoldOptions()
        self.native = NativeNames(kernel=options.kernel, jit=options.jit, addrs=options.addrs)
        self.merge = None if options.keep_interpreter else PythonMerge()
        self.stacks: Dict[str, int] = {}
        self.samples = 0
        self.python_samples = 0
        self.stackless_samples = 0  # samples that carried no call chain at all
        self._cache: Dict[Tuple[str, Tuple[Frame, ...]], Tuple[str, bool]] = {}
        self.counts: Optional[Dict[str, int]] = {} if detail else None
        self.layers: Optional[Dict[str, Tuple[str, ...]]] = {} if detail else None

    def add(self, sample: Sample) -> None:
        key = (sample.label, tuple(sample.frames))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[key] = self._fold(sample)
        stack, has_python = cached
        self.stacks[stack] = self.stacks.get(stack, 0) + sample.period
        if self.counts is not None:
            self.counts[stack] = self.counts.get(stack, 0) + 1
        self.samples += 1
        self.python_samples += has_python
        self.stackless_samples += not sample.frames

    def add_all(self, samples: Iterable[Sample]) -> "Folder":
        for sample in samples:
            self.add(sample)
        return self

    def stacks_with_detail(self, unit: str) -> Stacks:
        return Stacks(self.stacks, unit, self.counts, self.layers)

    def _fold(self, sample: Sample) -> Tuple[str, bool]:
        parts: List[str] = [sample.label]
        kinds: Optional[List[str]] = None if self.layers is None else [layers.PROCESS]
        items = self.merge(sample.frames) if self.merge else None
        for item in reversed(sample.frames) if items is None else items:
            if isinstance(item, str):  # a Python frame (or a marker) the merge named
                parts.append(item)
                if kinds is not None:
                    kinds.append(layers.of_marker(item) or layers.PYTHON)
                continue
            names = self.native(item, sample.label)
            parts.extend(names)
            if kinds is not None and names:
                kind = layers.of_marker(names[0]) or layers.of_native(item, self.native.symbol(item))
                kinds.extend([kind] * len(names))
        stack = ";".join(parts)
        if kinds is not None:
            self.layers.setdefault(stack, tuple(kinds))
        return stack, items is not None
