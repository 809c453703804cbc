"""mixedstack: one stack for Python, C and kernel frames, from Linux perf.

The data flow, one folder per side:

    record/     run the target under perf (interpreter, mode, launch, attach, agent)
    perf/       the only code that runs perf or reads and rewrites perf.data
    analyze/    perf.data -> perf script -> samples -> processors -> stacks (load.py)
    renderers/  stacks -> folded text, flame graphs, speedscope, pprof
    cli/        the `mixedstack` command: options -> one call -> output

The library, as the CLI uses it:

    import mixedstack
    stacks = mixedstack.load("perf.data", what="wall")   # -> mixedstack.Stacks
    print(stacks.to_folded())
    mixedstack.render(stacks, "flamegraph", "out.svg")

Errors are mixedstack.MixedstackError, with the one-line message the CLI prints.
Everything on the analysis side is standard library only, so perf's embedded
Python can run it through perf_scripts/mixedstack-fold.py.
"""
from __future__ import annotations

from typing import Any

from mixedstack.errors import MixedstackError
from mixedstack.model import Stacks

__version__ = "0.1.0"
__all__ = ["MixedstackError", "Stacks", "load", "render", "__version__"]


def load(path: str = "perf.data", what: Any = None, **options: Any) -> Stacks:
    """A recording, `perf script` text or folded text -> Stacks (analyze.load.load)."""
    from mixedstack.analyze.load import load as load_stacks

    return load_stacks(path, what=what, **options)


def render(stacks: Stacks, format: str = "folded", output: str = "-", **options: Any) -> None:
    """Write `stacks` as folded, flamegraph, speedscope or pprof to `output` ("-": stdout)."""
    from mixedstack.renderers import render as render_stacks

    render_stacks(stacks, format, output, **options)
