"""A fixed amount of mixed work (Python, C, syscalls); prints the seconds it took.

The benchmark runs it with and without `mixedstack record` to measure slowdown:
unlike the tests' time-boxed workloads, its work does not depend on the clock.
"""
import hashlib
import os
import sys
import time
import zlib


def python_work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def c_work(rounds):
    blob = os.urandom(1 << 20)
    for _ in range(rounds):
        hashlib.sha256(blob).digest()
        zlib.compress(blob[: 1 << 18], 6)


def syscall_work(rounds):
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        for _ in range(rounds):
            os.read(fd, 1 << 16)
            os.stat("/")
    finally:
        os.close(fd)


def main(scale):
    started = time.perf_counter()
    python_work(4_000_000 * scale)
    c_work(60 * scale)
    syscall_work(60_000 * scale)
    print("%.4f" % (time.perf_counter() - started))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
