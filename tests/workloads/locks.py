"""Lock contention on free-threaded CPython, for SECONDS (default 3): three threads take
turns on one threading.Lock (`locked_work`), two write one shared dict (`dict_writer`:
its per-object critical section), and `free_runner` shares nothing.

    python3.13t locks.py [SECONDS]
"""
import sys
import threading
import time

STOP = threading.Event()
LOCK = threading.Lock()
SHARED = {}


def locked_work():
    done = 0
    while not STOP.is_set():
        with LOCK:
            done += sum(i * i for i in range(300))
    return done


def dict_writer(start):
    i = start
    while not STOP.is_set():
        for _ in range(1000):
            SHARED[i % 64] = i
            i += 1
    return i


def free_runner():
    own = 0
    while not STOP.is_set():
        for i in range(1000):
            own += i % 13
    return own


def main():
    threads = [threading.Thread(target=locked_work) for _ in range(3)]
    threads += [threading.Thread(target=dict_writer, args=(n * 1000,)) for n in range(2)]
    threads.append(threading.Thread(target=free_runner))
    for thread in threads:
        thread.start()
    time.sleep(float(sys.argv[1] if len(sys.argv) > 1 else 3))
    STOP.set()
    for thread in threads:
        thread.join()


main()
