"""mixedstack: one stack for Python, C and kernel frames, from Linux perf.

Data flow, one module per step:
    perf.data -> perf script (perf.py) -> samples (samples.py)
              -> processors (processors/) -> stacks (fold.py) -> renderers (renderers/)

Everything on the fold path is standard-library only, so perf's embedded Python can
run it through perf_scripts/mixedstack-fold.py.
"""

__version__ = "0.1.0"
