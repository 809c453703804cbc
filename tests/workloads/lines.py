"""One long function whose time goes to three loops, one after the other, for known
shares (tests/record/test_lines.py). The loops call no Python function: the function is
the innermost Python frame all along. It prints its own line range and each loop's
lines, on-CPU seconds (what perf samples: the wall time, 1/2, 1/3 and 1/6, is not
all on the CPU on a busy machine) and when it began and ended (time.monotonic_ns) as
JSON.

usage: lines.py [SECONDS [calls]]   (the three loops take 1/2, 1/3 and 1/6 of it; with
`calls`, each loop's body calls a Python function, so that long_function is not the
innermost frame: its lines are its callers' lines)
"""
import json
import sys
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
CALLS = sys.argv[2:3] == ["calls"]


def step(i):
    return i


def long_function(first, second, third):
    a = b = c = 0
    cpu = [time.thread_time()]  # on-CPU time is what perf samples
    at = [time.monotonic_ns()]  # when each loop began and ended (perf's clock under -k 1)
    end = time.monotonic() + first
    while time.monotonic() < end:  # loop one
        for i in range(200): a += step(i) if CALLS else i
    cpu.append(time.thread_time())
    at.append(time.monotonic_ns())
    end = time.monotonic() + second
    while time.monotonic() < end:  # loop two
        for i in range(200): b += (step(i) if CALLS else i) * 2
    cpu.append(time.thread_time())
    at.append(time.monotonic_ns())
    end = time.monotonic() + third
    while time.monotonic() < end:  # loop three
        for i in range(200): c += (step(i) if CALLS else i) * 3
    cpu.append(time.thread_time())
    at.append(time.monotonic_ns())
    return [(later - earlier, begun, ended) for earlier, later, begun, ended in zip(cpu, cpu[1:], at, at[1:])]


def lines_of(marker):
    """The loop's two lines: its `while` and its body."""
    with open(__file__) as f:
        numbered = list(enumerate(f, 1))
    at = next(n for n, text in numbered if text.rstrip().endswith("# " + marker))
    return [at, at + 1]


took = long_function(SECONDS / 2, SECONDS / 3, SECONDS / 6)
code = long_function.__code__
last = max(line for _, _, line in code.co_lines() if line)
print(json.dumps({"function": [code.co_firstlineno, last],
                  "loops": [{"lines": lines_of(name), "seconds": seconds, "between_ns": [begun, ended]}
                            for name, (seconds, begun, ended) in zip(("loop one", "loop two", "loop three"), took)]}))
