"""Two threads that take turns: thread A runs pure Python for SECONDS while B sleeps,
then B runs for SECONDS while A sleeps (tests/renderers/test_timelines.py reads the
order back from timelines). It prints each phase's start and end (time.monotonic_ns,
perf's clock with -k 1) as JSON lines.

usage: alternate.py [SECONDS]
"""
import json
import sys
import threading
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
a_done = threading.Event()
b_done = threading.Event()


def spin(seconds):
    total = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i in range(2000):
            total += i * i
    return total


def phase_a_work():
    return spin(SECONDS)


def phase_b_work():
    return spin(SECONDS)


def report(name, start):
    print(json.dumps({"phase": name, "start": start, "end": time.monotonic_ns()}), flush=True)


def thread_a():
    start = time.monotonic_ns()
    phase_a_work()
    report("a", start)
    a_done.set()
    b_done.wait()  # asleep while B runs


def thread_b():
    a_done.wait()  # asleep while A runs
    start = time.monotonic_ns()
    phase_b_work()
    report("b", start)
    b_done.set()


threads = [threading.Thread(target=thread_a, name="A"), threading.Thread(target=thread_b, name="B")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
