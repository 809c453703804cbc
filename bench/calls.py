"""Call-heavy micro-benchmark: Python-to-Python calls per second (prints the rate and its pid).

Any PEP 523 hook (ours, or CPython's own -X perf) stops 3.11+ from inlining these
calls; the benchmark shows what that costs.
"""
import os
import sys
import time


def leaf(x):
    return x + 1


def caller(n):
    total = 0
    for i in range(n):
        total = leaf(total)
    return total


def main(n=3_000_000):
    started = time.perf_counter()
    caller(n)
    # the pid lets the benchmark remove the perf map/jitdump a trampoline left in /tmp
    print("%.0f %d" % (n / (time.perf_counter() - started), os.getpid()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000_000)
