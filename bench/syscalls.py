"""A fixed number of system calls with a little Python between them (~100,000 calls a
second on this machine alone); prints the seconds it took and the calls it made.

bench/run.py's syscalls_figures runs it alone, under `mixedstack record` with and
without --syscalls, under `strace -f -c` and under `perf trace -s`.
usage: syscalls.py [CALLS]
"""
import os
import sys
import time

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000


def work(calls):
    folder = os.path.dirname(os.path.abspath(__file__))
    total = 0
    for i in range(calls):
        os.stat(folder)
        for j in range(140):  # the program's own work between its calls
            total += j * i % 7
    return total


started = time.perf_counter()
work(CALLS)
print("%.4f %d" % (time.perf_counter() - started, CALLS))
