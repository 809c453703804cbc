"""Who holds the GIL while the main thread waits for it, for SECONDS (default 3): the
main thread takes small Python steps with 1 ms sleeps between them; `pure_python_loop`
(a thread) never leaves Python code; `compress_buffers` (a thread) compresses large
buffers with zlib, which releases the GIL while it deflates. The main thread's GIL
waits belong to pure_python_loop, all but the small part compress_buffers spends in
Python.

    python gil_blame.py [SECONDS]
"""
import os
import sys
import threading
import time
import zlib

STOP = threading.Event()


def pure_python_loop():
    total = 0
    while not STOP.is_set():
        for i in range(2000):
            total += i * i % 7
    return total


def compress_buffers():
    data = os.urandom(1 << 20) + bytes(3 << 20)  # 4 MB: part noise, part zeros
    size = 0
    while not STOP.is_set():
        size += len(zlib.compress(data, 6))
    return size


def small_step(count):
    return sum(i * 3 for i in range(count))


def main():
    threads = [threading.Thread(target=pure_python_loop), threading.Thread(target=compress_buffers)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 3)
    while time.monotonic() < end:
        small_step(200)
        time.sleep(0.001)
    STOP.set()
    for thread in threads:
        thread.join()


main()
