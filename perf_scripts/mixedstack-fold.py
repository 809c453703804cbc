"""mixedstack fold as a perf script: for a machine that has perf and nothing else.

    perf script -i perf.data --no-inline --max-stack 4096 -s perf_scripts/mixedstack-fold.py -- [OPTIONS]

OPTIONS are fold's: --pid --tid --kernel --jit --all --addrs --event-filter EV
--keep-interpreter, and -o FILE (default: standard output). Runs in perf's embedded
Python and uses the same merge code as `mixedstack fold` (mixedstack/ beside this
folder), so both give the same folded output for the same recording. One known
difference: with --addrs, perf's Python API gives absolute addresses where
`perf script` text gives addresses relative to the module.
"""
from __future__ import annotations

import os
import sys

try:
    import mixedstack  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mixedstack.analyze.callbacks import FoldCallbacks  # noqa: E402

_fold = FoldCallbacks(sys.argv[1:])


def process_event(param_dict):
    _fold.process_event(param_dict)


def trace_end():
    _fold.trace_end()
