"""What is hot moves, for a live view: `alpha_python` (pure Python), then `beta_syscalls`
(os.stat: the kernel), then `gamma_zlib` (zlib: C in a library), SECONDS each (default 4),
then it waits for stdin to close or a signal (`--then-wait`), so that a test can look.

    python moving.py [SECONDS] [--then-wait]
"""
import os
import sys
import time
import zlib


def alpha_python(seconds):
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        for i in range(10000):
            total += i * i % 7
    return total


def beta_syscalls(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(200):
            os.stat("/")


def gamma_zlib(seconds):
    data = os.urandom(1 << 20)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        zlib.compress(data, 6)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1][0].isdigit() else 4.0
    for phase in (alpha_python, beta_syscalls, gamma_zlib):
        print("%s starts at %.3f" % (phase.__name__, time.monotonic()), flush=True)
        phase(seconds)
    print("done at %.3f" % time.monotonic(), flush=True)
    if "--then-wait" in sys.argv:
        time.sleep(3600)


main()
