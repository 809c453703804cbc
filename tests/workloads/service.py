"""A service as servers are: it never ends on its own.

    python service.py threads PIDFILE   two non-daemon threads in `handle`; main joins them
    python service.py prefork PIDFILE   a master forks 2 workers, each with a pool of 2
                                        threads calling `handle`; on SIGINT or SIGTERM the
                                        master ends its workers with SIGTERM (as gunicorn's
                                        and uwsgi's masters do) and exits; between, the
                                        master wakes 20 times a second for `heartbeat`

PIDFILE gets one pid a line, the master's first, once every process runs.
SIGINT stops `threads` only half-way: its main thread ends, then the interpreter
waits for the non-daemon threads forever; a second SIGINT ends it.
"""
import hashlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def handle(request):
    total = 0
    for k in range(3000):
        total += k * k
    hashlib.sha1(b"%d" % request * 2000).digest()
    return total


def serve_forever():
    request = 0
    while True:
        request += 1
        handle(request)


def worker():
    with ThreadPoolExecutor(2) as pool:
        while True:
            list(pool.map(handle, range(20)))


def write_pids(pids):
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write("".join("%d\n" % pid for pid in pids))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])


def threads():
    pool = [threading.Thread(target=serve_forever) for _ in range(2)]
    for thread in pool:
        thread.start()
    write_pids([os.getpid()])
    for thread in pool:
        thread.join()


def prefork():
    workers = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            worker()
            os._exit(0)
        workers.append(pid)

    def stop(signum, frame):
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        for pid in workers:
            os.waitpid(pid, 0)
        sys.exit(0)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    write_pids([os.getpid()] + workers)
    while True:  # a master's loop: a little work (its workers' health) now and then
        time.sleep(0.05)
        heartbeat(workers)


def heartbeat(workers):
    return sum(k * k for k in range(100000)) + len(workers)


{"threads": threads, "prefork": prefork}[sys.argv[1]]()
