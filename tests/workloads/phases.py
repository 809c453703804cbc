"""Test workload: three phases of known length, timed by the workload itself.

    python phases.py TIMINGS.json [SECONDS_PER_PHASE]

py_hot: pure Python arithmetic. c_heavy: hashlib and zlib on large buffers (time in
C). sys_heavy: os.stat and os.read of /dev/zero (time in the kernel). Writes the
CPU seconds each phase and `main` took (thread_time: what cpu-clock samples
measure), so tests can compare profile shares with them.
"""
import hashlib
import json
import os
import sys
import time
import zlib


def py_hot(seconds):
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        for i in range(2000):
            total += i * i % 7
    return total


def c_heavy(seconds):
    blob = os.urandom(1 << 20)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(blob).digest()
        zlib.compress(blob[: 1 << 18], 6)


def sys_heavy(seconds):
    fd = os.open("/dev/zero", os.O_RDONLY)
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            for _ in range(50):
                os.read(fd, 1 << 16)
                os.stat("/")
    finally:
        os.close(fd)


def main(path, seconds):
    timings = {}
    started = time.thread_time()
    for phase in (py_hot, c_heavy, sys_heavy):
        t0 = time.thread_time()
        phase(seconds)
        timings[phase.__name__] = time.thread_time() - t0
    timings["main"] = time.thread_time() - started
    with open(path, "w") as f:
        json.dump(timings, f)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
