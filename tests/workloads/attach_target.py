"""Test workload for `record --pid`: a long-running process that calls a known function.

    python attach_target.py SECONDS

Prints "ready PID" once running, then calls `leaf` from `serve` until SECONDS pass.
`serve` and `<module>` start before any attach, so after an activation only `leaf`
(called anew each time) has a trampoline.
"""
import os
import sys
import time


def leaf(n):
    mixed = 0
    while n:
        mixed ^= n * 31 % 11
        n -= 1
    return mixed


def serve(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        leaf(3000)


print("ready", os.getpid(), flush=True)
serve(float(sys.argv[1]))
