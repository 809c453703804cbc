"""Test workload for diff across interpreters: two functions, each for a time.

    python upgrade.py SLOW_FACTOR

steady() runs 1.0 s; slow() runs 0.5 s times SLOW_FACTOR, both in phases.py's
pure-Python loop.
"""
import sys

from phases import py_hot


def steady():
    return py_hot(1.0)


def slow(factor):
    return py_hot(0.5 * factor)


def main(factor):
    steady()
    slow(factor)


if __name__ == "__main__":
    main(float(sys.argv[1]))
