"""What is hot moves, for a live view: `alpha_python` (pure Python), then `beta_syscalls`
(os.stat: the kernel), then `gamma_zlib` (zlib: C in a library), SECONDS each (default 4),
then it sleeps until a signal ends it (`--then-wait`). With `--step FOLDER`, each phase
runs until FOLDER holds a file named after the next phase (the last, until a signal), so
that a test moves on once it has seen what it looks for, however slow the machine.

    python moving.py [SECONDS] [--then-wait] [--step FOLDER]
"""
import os
import sys
import time
import zlib


class Until:
    """True while the phase goes on: for SECONDS, or until the next phase's file appears."""

    def __init__(self, seconds, step, following):
        self.end = time.monotonic() + seconds
        self.step, self.following = step, following
        self.looked = time.monotonic()

    def __call__(self):
        if self.step is None:
            return time.monotonic() < self.end
        if time.monotonic() - self.looked < 0.2:
            return True
        self.looked = time.monotonic()
        return self.following is None or not os.path.exists(os.path.join(self.step, self.following))


def alpha_python(going):
    total = 0
    while going():
        for i in range(10000):
            total += i * i % 7
    return total


def beta_syscalls(going):
    while going():
        for _ in range(200):
            os.stat("/")


def gamma_zlib(going):
    data = os.urandom(1 << 20)
    while going():
        zlib.compress(data, 6)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1][0].isdigit() else 4.0
    step = sys.argv[sys.argv.index("--step") + 1] if "--step" in sys.argv else None
    phases = (alpha_python, beta_syscalls, gamma_zlib)
    for phase, following in zip(phases, ("beta", "gamma", None)):
        print("%s starts at %.3f" % (phase.__name__, time.monotonic()), flush=True)
        phase(Until(seconds, step, following))
    print("done at %.3f" % time.monotonic(), flush=True)
    if "--then-wait" in sys.argv:
        time.sleep(3600)


main()
