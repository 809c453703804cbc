"""numpy matmuls (OpenBLAS's kernels: no unwind information) between Python glue, for
SECONDS (default 3): `matmuls` calls them, `glue` is pure Python. Its last line says it
finished (py-spy exits 0 when the program it runs crashes).

    python matmul.py [SECONDS]
"""
import sys
import time

import numpy as np


def glue(count):
    total = 0
    for i in range(count):
        total += i * i
    return total


def matmuls(a, b, count):
    for _ in range(count):
        c = a @ b
    return c


def main():
    a = np.random.rand(600, 600)
    b = np.random.rand(600, 600)
    end = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 3)
    while time.monotonic() < end:
        matmuls(a, b, 3)
        glue(20000)
    print("matmul.py: finished")  # its end, for a profiler that does not pass exit statuses on


main()
