"""`mixedstack doctor`: what this machine allows, and what record will do.

Each check gives a line `ok|warn|fail  what: finding [-> fix]`; the exit status is
non-zero when a `fail` means record cannot work.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import List, NamedTuple

from mixedstack.record import debuginfo
from mixedstack.record.attach.inject import ActivationError, find_gdb, ptrace_problem, run_in
from mixedstack.perf import command
from mixedstack.record.elf import build_id, read_file
from mixedstack.record.system import capabilities, read
from mixedstack.record.target import TargetError
from mixedstack.record.target import find_interpreter
from mixedstack.record.target import perf_mode

CAP_PERFMON, CAP_SYS_ADMIN = 38, 21


class Check(NamedTuple):
    level: str  # ok | warn | fail
    what: str
    finding: str
    fix: str = ""

    def line(self) -> str:
        return "%-4s  %s: %s%s" % (self.level, self.what, self.finding, "  -> " + self.fix if self.fix else "")


def perf_checks() -> List[Check]:
    perf = shutil.which("perf")
    if perf is None:
        return [Check("fail", "perf", "not found on PATH", "install it (Debian/Ubuntu: apt install linux-perf)")]
    version = subprocess.run([perf, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True).stdout.strip()
    checks = [Check("ok", "perf", "%s (%s)" % (version, perf)),
              Check("ok", "kernel", platform.release())]
    caps = capabilities()
    privileged = os.geteuid() == 0 or caps >> CAP_PERFMON & 1 or caps >> CAP_SYS_ADMIN & 1
    paranoid = read("/proc/sys/kernel/perf_event_paranoid")
    level = int(paranoid) if paranoid and paranoid.lstrip("-").isdigit() else 3
    if privileged:
        checks.append(Check("ok", "permissions", "root or CAP_PERFMON: every event is allowed"))
    elif level <= 1:
        checks.append(Check("ok", "permissions", "perf_event_paranoid=%s allows user profiling" % paranoid))
    elif level == 2:
        checks.append(Check("warn", "permissions", "perf_event_paranoid=2: your own processes, user space "
                            "only (no kernel frames)", "sudo sysctl kernel.perf_event_paranoid=1, or run as root"))
    else:
        checks.append(Check("fail", "permissions", "not root, no CAP_PERFMON, perf_event_paranoid=%s" % paranoid,
                            "sudo sysctl kernel.perf_event_paranoid=1, or run as root"))
    kptr = read("/proc/sys/kernel/kptr_restrict")
    if kptr not in (None, "0") and not privileged:
        checks.append(Check("warn", "kernel symbols", "kptr_restrict=%s hides kernel addresses" % kptr,
                            "sudo sysctl kernel.kptr_restrict=0 for named kernel frames"))
    with tempfile.TemporaryDirectory(prefix="mixedstack-doctor-") as tmp:
        trial = subprocess.run(command.trial_record_command(os.path.join(tmp, "t.data"), ["--call-graph", "dwarf"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if trial.returncode == 0:
        checks.append(Check("ok", "perf record", "a DWARF call-graph recording works here"))
    else:
        reason = (trial.stderr.strip().splitlines() or ["exit status %d" % trial.returncode])[0]
        checks.append(Check("fail", "perf record", reason, "see `perf record -- true`"))
    return checks + [off_cpu_check(perf)]


def off_cpu_check(perf: str) -> Check:
    """`record --off-cpu` needs the sched_switch tracepoint (tracefs, and permission)."""
    with tempfile.TemporaryDirectory(prefix="mixedstack-doctor-") as tmp:
        trial = subprocess.run(command.trial_record_command(os.path.join(tmp, "t.data"),
                                                            command.off_cpu_events(99)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if trial.returncode == 0:
        return Check("ok", "off-CPU", "context switches can be recorded (record --off-cpu)")
    reason = (trial.stderr.strip().splitlines() or ["exit status %d" % trial.returncode])[0]
    return Check("warn", "off-CPU", "record --off-cpu will not work: %s" % reason,
                 "run as root, or mount tracefs (/sys/kernel/tracing) and allow access to sched:sched_switch")


def target_checks(command: List[str]) -> List[Check]:
    try:
        interp = find_interpreter(command)
    except TargetError as error:
        return [Check("fail", "target", str(error))]
    mode = perf_mode(interp)
    level = "warn" if mode.name == "native" and interp is not None else "ok"
    checks = [Check("ok", "target", interp.describe() if interp else "%s: not a CPython interpreter" % command[0])]
    checks.append(Check(level, "record will use", "mode %s: %s" % (mode.name, mode.reason)))
    if interp is not None:
        binary = interp.libpython or interp.executable
        note = debuginfo.missing_note(binary, build_id(read_file(binary)), interp.version)
        checks.append(Check("warn", "symbols", note) if note else
                      Check("ok", "symbols", "%s's functions have names (its own or a debug file's)" % binary))
    return checks


def attach_checks() -> List[Check]:
    """Can `record --pid --activate` run code in a live CPython here? Tried for real on
    a short-lived Python of our own, since a gdb may attach and still fail to call."""

    what = "record --pid --activate"
    gdb = find_gdb()
    if gdb is None:
        return [Check("warn", what, "gdb not found: attaching works, turning a process's trampoline on does "
                      "not", "pip install 'mixedstack[attach]' (a recent gdb), or apt install gdb")]
    problem = ptrace_problem()
    if problem:
        return [Check("warn", what, problem.split(":")[0], problem.partition(": ")[2] or "")]
    try:
        child = subprocess.Popen([sys.executable, "-S", "-c", "import time\nwhile True: time.sleep(0.01)"],
                                 stdin=subprocess.DEVNULL)
    except OSError as error:
        return [Check("warn", what, "cannot start a trial Python (%s) to try gdb on" % error.strerror)]
    try:
        outcome = run_in(child.pid, "pass", 10.0, gdb)
        finding = None if outcome and outcome.get("ok") else \
            "%s queued code in a trial Python process, which never ran it" % gdb
    except ActivationError as error:
        finding = str(error)
    finally:
        child.kill()
        child.wait()
    if finding:
        return [Check("warn", what, finding)]
    return [Check("ok", what, "%s can run code in a live CPython here (tried on one), so record --pid can "
                  "turn its trampoline on" % gdb)]


def doctor(command: List[str]) -> List[Check]:
    return perf_checks() + attach_checks() + (target_checks(command) if command else [])
