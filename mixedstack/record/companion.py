"""record's companion sampler: the line each Python frame of a CPython 3.14+ process is
on, read from another process by CPython's own `_remote_debugging` (what its sampling
profiler uses: process_vm_readv, the target is not stopped).

Run by the target's own interpreter (`_remote_debugging` reads only its own version's
structures), as a script (or its text, with -c, in a target's container), standard
library only:

    python3.14 companion.py PID[,PID...] HZ > OUTPUT

OUTPUT gets one JSON line a thread a snapshot, `[ns, tid, [[function, file, line],
...]]` (innermost first; ns: time.monotonic_ns(), perf's clock under `-k 1`), HZ
snapshots a second, until every PID has ended, its stdin is closed (how record stops
it, through nsenter too) or SIGTERM/SIGINT. Its last line is `["end",
snapshots, failed, cpu_seconds]`. Exit status 3: it could read none of the PIDs (the
first line of OUTPUT then says why). In a container, PID and the threads' ids are the
container's own (record/lines.py maps them to ours).
"""
import json
import os
import select
import signal
import sys
import time

STARTUP_SECONDS = 5.0  # the target's runtime may not be up yet when we start


def snapshot(unwinder):
    """[(tid, [[function, file, line], ...]), ...] of 3.14's list of ThreadInfo or 3.15's
    list of InterpreterInfo (each with its threads)."""
    found = []
    for item in unwinder.get_stack_trace():
        for thread in getattr(item, "threads", None) or [item]:
            frames = []
            for frame in thread.frame_info or ():
                location = getattr(frame, "location", None)
                line = getattr(location, "lineno", None) if location is not None else getattr(frame, "lineno", None)
                frames.append([frame.funcname, frame.filename, line or 0])
            found.append((thread.thread_id, frames))
    return found


def main():
    pids, rate = [int(pid) for pid in sys.argv[1].split(",")], float(sys.argv[2])
    output = sys.stdout.fileno()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        import _remote_debugging
    except ImportError as error:
        _say(output, "no _remote_debugging in %s: %s" % (sys.version.split()[0], error))
        return 3
    unwinders = {}  # pid -> its RemoteUnwinder, once it could be read
    pending = list(pids)
    problem = None
    waited = time.monotonic() + STARTUP_SECONDS

    def reach():
        nonlocal problem
        for pid in list(pending):
            try:
                unwinders[pid] = _remote_debugging.RemoteUnwinder(pid, all_threads=True)
                pending.remove(pid)
            except Exception as error:  # not a Python process yet, or not readable
                problem = problem or "cannot read process %d: %s: %s" % (pid, type(error).__name__, error)
                if time.monotonic() > waited or not os.path.exists("/proc/%d" % pid):
                    pending.remove(pid)

    def wait(seconds):
        """Sleep, or less: till stdin closes (record's stop)."""
        if select.select([0], [], [], seconds)[0] and not os.read(0, 512):
            stop.append(1)

    while not unwinders and pending and not stop:
        reach()
        if not unwinders:
            wait(0.005)
    if not unwinders:
        _say(output, problem or "stopped before any process could be read")
        return 3
    try:
        # as perf itself under record --syscalls (as root): a sampler that waits behind a
        # busy machine's threads leaves holes of half a second in its snapshots (measured
        # on 2 cores, a prefork service of 4 busy threads and record's unwinding)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        pass  # not root: at the normal priority
    period = 1.0 / rate
    taken = failed = 0
    with open(output, "w", buffering=1 << 16, closefd=False) as out:
        next_at = time.monotonic()
        while not stop and unwinders:
            began = time.monotonic()
            if pending:  # the rest of a tree, or one still starting
                reach()
            for pid, unwinder in list(unwinders.items()):
                now = time.monotonic_ns()
                try:
                    threads = snapshot(unwinder)
                except Exception:  # a stack changing under the reader, or the process gone
                    failed += 1
                    if not os.path.exists("/proc/%d" % pid):
                        del unwinders[pid]
                    threads = ()
                for tid, frames in threads:
                    out.write(json.dumps([now, tid, frames], separators=(",", ":")) + "\n")
            taken += 1
            next_at += period
            now = time.monotonic()
            if next_at < now:
                next_at = now  # behind: no burst to catch up
            # and never more than half of a core, whatever the rate and the processes
            wait(max(next_at - now, now - began))
        times = os.times()
        out.write(json.dumps(["end", taken, failed, round(times.user + times.system, 3)]) + "\n")
    return 0


def _say(output, why):
    with open(output, "w", closefd=False) as out:
        out.write(json.dumps(["error", why]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
