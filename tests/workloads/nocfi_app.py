"""Calls spin_no_cfi (tests/workloads/nocfi/spin.S: code without unwind information)
through C callers that have it, from Python, for SECONDS: every sample in spin_no_cfi
belongs under crunch -> work -> spin_directly or spin_through_pointer.

    python nocfi_app.py LIBRARY.so [SECONDS]
"""
import ctypes
import sys
import time


def crunch(library, count):
    return library.work(count)


def main():
    library = ctypes.CDLL(sys.argv[1])
    library.work.argtypes = [ctypes.c_uint64]
    library.work.restype = ctypes.c_uint64
    end = time.monotonic() + float(sys.argv[2] if len(sys.argv) > 2 else 2)
    while time.monotonic() < end:
        crunch(library, 2_000_000)


main()
