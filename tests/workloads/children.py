"""Test workload: Python work in child processes started by fork, spawn and subprocess.

    python children.py METHOD   (METHOD: fork | spawn | subprocess)
"""
import multiprocessing
import subprocess
import sys
import time


def child_work(seconds):
    # CPU seconds: on a loaded machine wall time would hold fewer samples (cpu-clock)
    end = time.process_time() + seconds
    total = 0
    while time.process_time() < end:
        for i in range(1000):
            total += i % 3
    return total


def main(method):
    if method == "subprocess":
        code = "import children; children.child_work(0.6)"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=sys.path[0])
        return
    pool = multiprocessing.get_context(method).Pool(2)
    pool.map(child_work, [0.6, 0.6])
    # close+join, not `with Pool()`: its terminate() SIGTERMs the workers, and a
    # killed CPython loses the jitdump entries it had not flushed (see README).
    pool.close()
    pool.join()


if __name__ == "__main__":
    main(sys.argv[1])
