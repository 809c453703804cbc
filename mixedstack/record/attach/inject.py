"""Running code in a live Python process: gdb queues a pending call (3.8-3.13), or
CPython's own sys.remote_exec (3.14+, PEP 768). Why each is safe: see the package's doc."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Tuple

from mixedstack.errors import MixedstackError

from mixedstack.record.system import capabilities, read
from mixedstack.record.tmpfiles import Refused
from mixedstack.record.tmpfiles import open_owned
from mixedstack.record.target import Interpreter
from mixedstack.record.attach.process import Place, place_of

GDB_TIMEOUT = 60.0  # seconds for gdb to attach, queue the call and detach
CAP_SYS_PTRACE = 19
REMOTE_EXEC = (3, 14)  # sys.remote_exec (PEP 768): no gdb needed from here on

ANCHOR, CHECK = "Py_AddPendingCall", "PyRun_SimpleString"


class ActivationError(MixedstackError):
    """One line: why code cannot be run in the process, and the fix."""


def find_gdb() -> Optional[str]:
    """MIXEDSTACK_GDB (a name or a path), else the gdb beside our own Python (the
    gdb-for-pwndbg wheel of `mixedstack[attach]` puts one there), else on PATH."""
    named = os.environ.get("MIXEDSTACK_GDB")
    if named:
        return shutil.which(named)
    return shutil.which("gdb", path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]))


def may_ptrace() -> bool:
    return os.geteuid() == 0 or bool(capabilities() >> CAP_SYS_PTRACE & 1)


def ptrace_problem(pid: Optional[int] = None) -> Optional[str]:
    """Why this process may not ptrace `pid` (or any process it does not own), or None."""
    scope = read("/proc/sys/kernel/yama/ptrace_scope")
    if scope == "3":
        return ("kernel.yama.ptrace_scope=3 forbids attaching to any process "
                "(only a reboot lowers it)")
    if scope in ("1", "2") and not may_ptrace():
        return ("kernel.yama.ptrace_scope=%s lets only root (CAP_SYS_PTRACE) attach to a running "
                "process: run mixedstack as root, or `sudo sysctl kernel.yama.ptrace_scope=0`" % scope)
    if pid is None:
        return None
    status = read("/proc/%d/status" % pid) or ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    tracer = fields.get("TracerPid", "0").strip()
    if tracer not in ("", "0"):
        return ("process %d is already traced by process %s (a debugger or another profiler): "
                "detach that first" % (pid, tracer))
    uid = fields.get("Uid", "").split()
    if uid and int(uid[1]) != os.geteuid() and not may_ptrace():
        return "process %d belongs to another user: run mixedstack as root" % pid
    return None


def gdb_version(gdb: str) -> Tuple[int, ...]:
    try:
        first = subprocess.run([gdb, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True, timeout=30).stdout.partition("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        return ()
    words = [w for w in first.split() if w[:1].isdigit()]
    return tuple(int(part) for part in re.findall(r"\d+", words[-1])[:2]) if words else ()


def gdb_problem(gdb: str) -> Optional[str]:
    """gdb before 14 sizes the x86 XSAVE area without AMX state: on a CPU with AMX the
    kernel refuses its register writes (PTRACE_SETREGSET: EFAULT) halfway through a
    call, which can break the system call the process was in (measured here: a
    time.sleep() raised OSError errno 514). Such a gdb is never let near a process."""
    flags = next((line for line in (read("/proc/cpuinfo") or "").splitlines() if line.startswith("flags")), "")
    version = gdb_version(gdb)
    if "amx_tile" in flags.split() and version and version < (14,):
        return ("%s is gdb %s, which cannot call functions in a process on a CPU with AMX registers "
                "(this one): pip install 'mixedstack[attach]' for a recent gdb, or set MIXEDSTACK_GDB "
                "to a gdb 14+" % (gdb, ".".join(map(str, version))))
    return None


def c_string(text: str) -> str:
    """A C string literal for gdb's expression parser (printable ASCII kept, other bytes octal)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else "\\%03o" % byte)
    return '"%s"' % "".join(out)


# CODE runs in a fresh namespace, reports to `status` whatever happens, and never
# raises: an error leaving a pending call would surface in the process's own code.
_WRAPPER = '''
def _mixedstack(status):
    import json
    try:
%(body)s
        result = {"ok": True}
    except BaseException as error:
        result = {"ok": False, "error": "%%s: %%s" %% (type(error).__name__, error)}
    try:
        with open(status, "w") as f:
            json.dump(result, f)
    except BaseException:
        pass
_mixedstack(%(status)r)
'''


def run_in(pid: int, body: str, wait: float, gdb: Optional[str] = None,
           remote: Optional[Interpreter] = None) -> Optional[dict]:
    """Run the Python statements `body` in `pid`'s main thread (see the module doc):
    through sys.remote_exec when `remote` (the target's interpreter) has it, else gdb.

    Returns the outcome ({"ok": True} or {"ok": False, "error": ...}), or None when
    the main thread ran no Python code within `wait` seconds (it runs `body` when it
    does). Raises ActivationError when the code cannot be queued."""
    via_remote = remote is not None and remote.version[:2] >= REMOTE_EXEC
    if not via_remote:
        gdb = gdb or find_gdb()
        if gdb is None:
            raise ActivationError("gdb is not installed (mixedstack runs code in the process through it): "
                                  "pip install 'mixedstack[attach]' (a recent gdb), or apt install gdb")
        problem = gdb_problem(gdb) or ptrace_problem(pid)
    else:
        problem = ptrace_problem(pid)
    if problem:
        raise ActivationError(problem)
    # a folder both sides see: in the process's own /tmp (a container's, reached through
    # its root), named there as the process names it
    place = place_of(pid)
    folder = tempfile.mkdtemp(prefix="mixedstack-run-", dir=place.host("/tmp"))
    inside = folder[len(place.root):]
    try:
        uid = os.stat("/proc/%d" % pid).st_uid
        if uid != os.geteuid() and os.geteuid() == 0:
            os.chown(folder, uid, -1)  # the process writes its status here
        status = os.path.join(folder, "status.json")
        indented = "\n".join("        " + line for line in body.strip("\n").splitlines())
        # in a namespace of its own, whatever the route runs it in
        code = "__import__('builtins').exec(%r, {})" % (_WRAPPER % {"body": indented,
                                                                    "status": os.path.join(inside, "status.json")})
        if via_remote:
            _remote_exec(remote, place, code, folder)
        else:
            _queue(gdb, pid, code)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if os.path.exists(status):
                time.sleep(0.05)  # written in one go, but let the writer close it
                try:  # the process's user owns the folder: never follow a link it placed
                    with os.fdopen(open_owned(status, uid)) as f:
                        return json.load(f)
                except Refused as refused:
                    raise ActivationError("%s: not read" % refused)
                except (OSError, ValueError):
                    pass
            if not os.path.exists("/proc/%d" % pid):
                raise ActivationError("process %d ended before it ran mixedstack's code" % pid)
            time.sleep(0.05)
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remote_exec(interp: Interpreter, place: Place, code: str, folder: str) -> None:
    """Hand `code` to the process through sys.remote_exec, run by its own interpreter
    (in its container, where it has one). The target reads the script when it runs it,
    later: it stays in `folder` until run_in is done waiting."""
    pid = place.pid
    script = os.path.join(folder, "run.py")
    with open(script, "w") as f:
        f.write(code)
    os.chmod(folder, 0o755)  # the process may run as another user: it reads run.py there
    os.chmod(script, 0o644)
    done = subprocess.run(place.enter() + [interp.executable, "-I", "-c", "import sys; sys.remote_exec(%d, %r)" % (
        place.nspid, script[len(place.root):])],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=GDB_TIMEOUT)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
        if "not enabled" in last or "disable" in last.lower():
            raise ActivationError("process %d has remote debugging turned off (PYTHON_DISABLE_REMOTE_DEBUG, "
                                  "-X disable_remote_debug, or a build without it), so sys.remote_exec cannot "
                                  "reach it (%s); restart it without that" % (pid, last))
        raise ActivationError("sys.remote_exec could not reach process %d: %s" % (pid, last))


def _queue(gdb: str, pid: int, code: str) -> None:
    # -readnever: no debug info needed (only the dynamic symbols of libpython), and
    # the process stays stopped ~0.1 s instead of the seconds DWARF loading takes.
    command = [gdb, "-p", str(pid), "-batch", "-nx", "-readnever",
               "-iex", "set debuginfod enabled off", "-iex", "set auto-load off",
               "-ex", "call (int)%s((void*)%s, (void*)%s)" % (ANCHOR, CHECK, c_string(code))]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=GDB_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ActivationError("gdb did not finish within %ds attaching to process %d; "
                              "check `%s -p %d -batch`" % (GDB_TIMEOUT, pid, gdb, pid))
    except OSError as error:
        raise ActivationError("cannot run gdb (%s): %s" % (gdb, error.strerror))
    output = done.stdout
    if "$1 = 0" in output:
        return
    if "$1 = -1" in output:
        raise ActivationError("process %d refused the call (its queue of pending calls is full); "
                              "try again" % pid)
    if "Operation not permitted" in output:
        raise ActivationError("gdb may not attach to process %d (ptrace: Operation not permitted): run "
                              "as root, or allow ptrace (kernel.yama.ptrace_scope, a container's "
                              "CAP_SYS_PTRACE)" % pid)
    if "extended state" in output:
        # gdb before 14 sizes the x86 XSAVE area without AMX; kernels then refuse to
        # restore registers after an inferior call (PTRACE_SETREGSET: EFAULT)
        raise ActivationError("%s cannot call functions in a process on this CPU (it does not know "
                              "its AMX registers: gdb 14+ needed): pip install 'mixedstack[attach]' "
                              "for a recent gdb, or set MIXEDSTACK_GDB to one" % gdb)
    if "No symbol" in output:
        raise ActivationError("process %d exports no %s/%s: not a CPython gdb can call into"
                              % (pid, ANCHOR, CHECK))
    lines = [line for line in output.strip().splitlines() if line.strip()]
    raise ActivationError("gdb could not run code in process %d: %s" % (pid, lines[-1] if lines else
                                                                       "exit status %d" % done.returncode))
