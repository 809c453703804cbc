"""A program whose system calls are known: so many os.stat, os.read and failing os.open
calls, each kind from its own function, and a few fsyncs (tests/record/test_syscalls.py,
bench/run.py).

usage: syscalls.py FOLDER [SCALE]   (files in FOLDER; SCALE multiplies the counts; it
prints the counts it made as JSON)
"""
import json
import os
import sys

FOLDER = sys.argv[1]
SCALE = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
STATS, READS, FAILED_OPENS, FSYNCS = (max(1, int(n * SCALE)) for n in (20000, 30000, 10000, 20))


def stat_files(n):
    for _ in range(n):
        os.stat(FOLDER)


def read_zeros(n):
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        for _ in range(n):
            os.read(fd, 16)
    finally:
        os.close(fd)


def open_missing(n):
    missing = os.path.join(FOLDER, "no-such-file")
    for _ in range(n):
        try:
            os.open(missing, os.O_RDONLY)
        except FileNotFoundError:
            pass


def write_and_sync(n):
    fd = os.open(os.path.join(FOLDER, "synced"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
    finally:
        os.close(fd)


stat_files(STATS)
read_zeros(READS)
open_missing(FAILED_OPENS)
write_and_sync(FSYNCS)
print(json.dumps({"stat": STATS, "read": READS, "failed_open": FAILED_OPENS, "fsync": FSYNCS}))
