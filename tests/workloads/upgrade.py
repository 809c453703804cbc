"""Test workload for diff across interpreters: two functions, each for a CPU time.

    python upgrade.py SLOW_FACTOR

steady() runs 1.0 s; slow() runs 0.5 s times SLOW_FACTOR (pure Python arithmetic).
"""
import sys
import time


def spin(seconds):
    end = time.thread_time() + seconds
    total = 0
    while time.thread_time() < end:
        for i in range(2000):
            total += i * i % 7
    return total


def steady():
    return spin(1.0)


def slow(factor):
    return spin(0.5 * factor)


def main(factor):
    steady()
    slow(factor)


if __name__ == "__main__":
    main(float(sys.argv[1]))
