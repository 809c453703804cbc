"""Test workload: a parent that forks, then goes on with Python work, pools and threads.

    python forks.py

Before forking it defines many functions, so that CPython's perf_jit has a buffer
of unwritten jitdump records when each child starts. Then: os.fork (child ends in
os._exit), a multiprocessing fork pool, two threads started after the forks, and
more work in the parent. Each part spins in a function named after it.
"""
import multiprocessing
import os
import threading
import time


def spin(seconds):
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        for i in range(1000):
            total += i * i
    return total


def forked_child():
    spin(0.4)


def parent_between():
    spin(0.4)


def pool_worker(n):
    return spin(0.1)


def late_thread():
    spin(0.4)


def parent_after():
    spin(0.4)


def main():
    for i in range(300):
        exec(compile("def f%d(): return %d\nf%d()" % (i, i, i), "generated%d.py" % i, "exec"), {})
    pid = os.fork()
    if pid == 0:
        forked_child()
        os._exit(0)
    parent_between()
    os.waitpid(pid, 0)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(pool_worker, range(4))
    threads = [threading.Thread(target=late_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parent_after()


if __name__ == "__main__":
    main()
