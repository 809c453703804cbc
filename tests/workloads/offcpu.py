"""Off-CPU workloads for the tests: they measure their own truth and write it as JSON.

    offcpu.py gil OUT.json    4 CPU-bound threads contending for the GIL + a thread sleeping in a loop
    offcpu.py pipe OUT.json   a thread blocked in os.read on a pipe; a writer sends every 50 ms
"""
import json
import os
import sys
import threading
import time

SECONDS = 2.0
truth = {"pid": os.getpid()}


def native_id():
    return threading.get_native_id()


def spinner(tids):
    tids.append(native_id())
    x = 0
    end = time.time() + SECONDS
    while time.time() < end:
        for i in range(5000):
            x += i * i


def sleeper():
    truth["sleeper"] = native_id()
    end = time.time() + SECONDS
    while time.time() < end:
        time.sleep(0.01)


def reader(fd):
    truth["reader"] = native_id()
    blocked = 0.0
    while True:
        started = time.perf_counter()
        data = os.read(fd, 64)
        blocked += time.perf_counter() - started
        if not data:
            break
    truth["read_blocked_s"] = blocked


def writer(fd):
    for _ in range(int(SECONDS / 0.05)):
        time.sleep(0.05)
        os.write(fd, b"x")
    os.close(fd)


def main(kind, out):
    if kind == "gil":
        tids = truth["spinners"] = []
        threads = [threading.Thread(target=spinner, args=(tids,)) for _ in range(4)]
        threads.append(threading.Thread(target=sleeper))
    else:
        read_end, write_end = os.pipe()
        threads = [threading.Thread(target=reader, args=(read_end,)),
                   threading.Thread(target=writer, args=(write_end,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(out, "w") as f:
        json.dump(truth, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
