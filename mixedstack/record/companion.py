"""record's companion sampler: the line each Python frame of a CPython 3.14+ process is
on, read from another process by CPython's own `_remote_debugging` (what its sampling
profiler uses: process_vm_readv, the target is not stopped).

Run by the target's own interpreter (`_remote_debugging` reads only its own version's
structures), as a script, standard library only:

    python3.14 companion.py PID OUTPUT HZ

OUTPUT gets one JSON line a thread a snapshot, `[ns, tid, [[function, file, line],
...]]` (innermost first; ns: time.monotonic_ns(), perf's clock under `-k 1`), HZ
snapshots a second, until PID ends or SIGTERM/SIGINT. Its last line is `["end",
snapshots, failed, cpu_seconds]`. Exit status 3: it could not read PID at all (the
first line of OUTPUT then says why).
"""
import json
import os
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
    pid, output, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        import _remote_debugging
    except ImportError as error:
        _say(output, "no _remote_debugging in %s: %s" % (sys.version.split()[0], error))
        return 3
    unwinder = None
    waited = time.monotonic() + STARTUP_SECONDS
    while unwinder is None and not stop:
        try:
            unwinder = _remote_debugging.RemoteUnwinder(pid, all_threads=True)
        except Exception as error:  # not a Python process yet, or not readable
            if time.monotonic() > waited or not os.path.exists("/proc/%d" % pid):
                _say(output, "cannot read process %d: %s: %s" % (pid, type(error).__name__, error))
                return 3
            time.sleep(0.005)
    period = 1.0 / rate
    taken = failed = 0
    with open(output, "w", buffering=1 << 16) as out:
        next_at = time.monotonic()
        while not stop:
            now = time.monotonic_ns()
            try:
                threads = snapshot(unwinder)
            except Exception:  # a stack changing under the reader, or the process gone
                failed += 1
                if not os.path.exists("/proc/%d" % pid):
                    break
                threads = ()
            for tid, frames in threads:
                out.write(json.dumps([now, tid, frames], separators=(",", ":")) + "\n")
            taken += 1
            next_at += period
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()  # behind: no burst to catch up
        times = os.times()
        out.write(json.dumps(["end", taken, failed, round(times.user + times.system, 3)]) + "\n")
    return 0


def _say(output, why):
    with open(output, "w") as out:
        out.write(json.dumps(["error", why]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
