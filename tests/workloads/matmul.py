"""numpy matmuls (OpenBLAS's kernels: no unwind information) between Python glue, for
SECONDS (default 3): `matmuls` calls them, `glue` is pure Python.

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


main()
