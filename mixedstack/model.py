"""The core data model: a frame as perf printed it, and a sample (one stack).

Standard library only (perf's embedded Python imports it too).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple


class Frame(NamedTuple):
    """One call-chain entry as perf printed it: `pc symbol+0xoff (dso)`."""

    pc: str  # the address text, e.g. "7f0a1b2c3d"
    symbol: str  # raw symbol text, offset included, e.g. "os_stat+0x150" or "[unknown]"
    dso: str  # module text, e.g. "/usr/lib/libc.so.6", "[kernel.kallsyms]", "inlined"


class Sample(NamedTuple):
    """One sample: who it belongs to, its weight, and its frames leaf first."""

    label: str  # process label: comm, or comm-PID, or comm-PID/TID (spaces -> _)
    period: int  # weight (event period; 1 when perf printed none)
    event: Optional[str]
    frames: List[Frame]  # leaf first, as perf prints them
    # comm/pid/tid are kept for processors that need them (e.g. per-thread output).
    comm: str = ""
    pid: str = "?"
    tid: str = ""
    # perf's timestamp text ("12345.678901234"), kept only for the events that need
    # it (context switches, whose off-CPU time is measured from it).
    time: str = ""


class Stacks(NamedTuple):
    """What renderers draw: folded stacks (root first, `;`-joined) and their weights."""

    weights: Dict[str, int]  # stack -> total period (what folded output prints)
    unit: str = "nanoseconds"  # of the weights: "nanoseconds" (cpu-clock), "events" (other periods), "samples"
    counts: Optional[Dict[str, int]] = None  # stack -> samples, when known (recordings)
    layers: Optional[Dict[str, Tuple[str, ...]]] = None  # stack -> each frame's layer, from DSOs

    def folded_lines(self) -> Iterator[str]:
        """`stack WEIGHT` lines, in byte order of the stacks (stackcollapse-perf.pl's)."""
        weights = self.weights
        for stack in sorted(weights):
            yield "%s %d\n" % (stack, weights[stack])

    def to_folded(self) -> str:
        """The folded text: one `frame;frame;... WEIGHT` line per distinct stack."""
        return "".join(self.folded_lines())
