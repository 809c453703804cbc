"""`record --pid`: what a running process allows, and turning its trampoline on.

What runs there: the interpreter behind /proc/PID/exe (or, for a program that
embeds Python, the libpython in its maps), and whether a trampoline is already on:
its jitdump is mapped (CPython's -X perf_jit, or our agent), or its perf map was
written since it started (-X perf).

Turning it on (`--activate`): gdb attaches for a moment and queues one pending
call, `Py_AddPendingCall(PyRun_SimpleString, CODE)`, then detaches. CPython runs
CODE in its main thread at its next check between bytecodes, with the GIL held: a
point where running Python code is safe, not wherever gdb happened to stop the
process. CODE turns the trampoline on and writes its outcome to a status file that
record waits for:

    perf-map  (3.12+ with frame pointers)  sys.activate_stack_trampoline("perf")
    perf-jit  (3.13 without them)          what -X perf_jit does at start-up:
              _PyPerfTrampoline_SetCallbacks(&_Py_perfmap_jit_callbacks) and
              _PyPerfTrampoline_Init(1), called through ctypes at addresses read from
              libpython's symbol table. sys.activate_stack_trampoline cannot do it:
              in 3.12 and 3.13 it accepts "perf" only (its "perf_jit" branch sits
              inside the "perf" one and is never reached).
    agent     (3.8-3.12 without them; a    imports mixedstack's agent, built for that
              3.13 without a symbol table)  interpreter, and activates it

On 3.14+ the route is CPython's own, `sys.remote_exec(PID, SCRIPT)` (PEP 768), run by
the target's own interpreter: the target runs SCRIPT at the same kind of safe point,
and `sys.activate_stack_trampoline("perf_jit")` works there. No gdb; but the target
may have turned remote debugging off (PYTHON_DISABLE_REMOTE_DEBUG, -X
disable_remote_debug, a build --without-remote-debug), which record then says.

The same route flushes CPython 3.13+'s jitdump when the recording stops: CPython
writes it through a 2 MiB stdio buffer, so entries still in the buffer would leave
their Python frames `[unknown]` after `perf inject --jit`.

Calls already running at activation go on without a trampoline; the Python merge
marks them (processors/python.py, BEFORE_ACTIVATION). The trampoline stays on after
the recording (CPython's own deactivation has had use-after-free bugs, gh-112367).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Optional, Tuple

from mixedstack.errors import MixedstackError

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from mixedstack.record.agent import AgentError
from mixedstack.record.doctor import capabilities
from mixedstack.record.doctor import read
from mixedstack.perf.command import PerfError
from mixedstack.record.tmpfiles import Refused
from mixedstack.record.tmpfiles import open_owned
from mixedstack.record.tmpfiles import owned_mtime
from mixedstack.record.tmpfiles import owner_of
from mixedstack.record.target import Interpreter
from mixedstack.record.target import Mode
from mixedstack.record.target import TargetError
from mixedstack.record.target import find_interpreter
from mixedstack.record.target import perf_mode

GDB_TIMEOUT = 60.0  # seconds for gdb to attach, queue the call and detach
ACTIVATION_WAIT = 10.0  # seconds for the main thread to run the queued code
FLUSH_WAIT = 5.0
CAP_SYS_PTRACE = 19
ACTIVATABLE = ((3, 8), (3, 15))  # tested here, inclusive
REMOTE_EXEC = (3, 14)  # sys.remote_exec (PEP 768): no gdb needed from here on
AGENT_MODULE = "_mixedstack_agent"

# Symbols the perf-jit activation calls; the anchor is exported, so the target
# finds its own address with ctypes and the others follow from the ELF's offsets.
JIT_SYMBOLS = ("_PyPerfTrampoline_SetCallbacks", "_PyPerfTrampoline_Init", "_Py_perfmap_jit_callbacks")
ANCHOR, CHECK = "Py_AddPendingCall", "PyRun_SimpleString"

Ask = Optional[Callable[[str], bool]]
Say = Callable[[str], None]


class ActivationError(MixedstackError):
    """One line: why code cannot be run in the process, and the fix."""


# --------------------------------------------------------------------------------------
# What runs in the process


def interpreter_of(pid: int) -> Optional[Interpreter]:
    """The CPython running as `pid`: its executable, or the python installed beside
    the libpython it maps (uwsgi and other programs embedding Python)."""
    try:
        executable = os.readlink("/proc/%d/exe" % pid)
    except FileNotFoundError:
        if os.path.exists("/proc/%d" % pid):  # a kernel thread, or a zombie: no program
            raise PerfError("process %d runs no program file (a kernel thread or an exited process): "
                            "attach to a Python process" % pid)
        raise PerfError("no process %d to attach to; check the pid with ps" % pid)
    except OSError as error:
        raise PerfError("process %d exists but cannot be read (%s: another user's, or a container "
                        "here keeps it from us): run mixedstack as that user or as root, or pick "
                        "another pid" % (pid, error.strerror))
    if executable.endswith(" (deleted)"):
        raise PerfError("process %d runs %s, which has been replaced on disk since it started: "
                        "its interpreter cannot be probed; restart it" % (pid, executable))
    interp = find_interpreter([executable])
    libpython = mapped_libpython(pid)
    if interp is not None and libpython and interp.libpython != libpython:
        # e.g. LD_LIBRARY_PATH gave it another copy: the one it runs is the one that counts
        interp = dataclasses.replace(interp, libpython=libpython)
    if interp is None:
        if libpython:
            version = os.path.basename(libpython)[len("libpython"):].split(".so")[0].rstrip("dmu")
            prefix = os.path.dirname(os.path.dirname(libpython))
            python = os.path.join(prefix, "bin", "python" + version)
            if os.access(python, os.X_OK):
                try:
                    interp = find_interpreter([python])
                except TargetError:
                    interp = None
    return interp


def mapped_libpython(pid: int) -> Optional[str]:
    for path in mapped_files(pid):
        if os.path.basename(path).startswith("libpython"):
            return path
    return None


def mapped_files(pid: int) -> Dict[str, Tuple[str, int]]:
    """{path: (device "MAJOR:MINOR" in hex, inode)} of the files mapped in `pid`."""
    files: Dict[str, Tuple[str, int]] = {}
    try:
        with open("/proc/%d/maps" % pid) as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    files.setdefault(parts[5].rstrip("\n"), (parts[3], int(parts[4])))
    except OSError:
        pass
    return files


def trampoline_on(pid: int) -> Optional[str]:
    """"jit" (a jitdump mapped: CPython's perf_jit or the agent), "map" (a perf map
    written since the process started: CPython's perf backend), or None."""
    if "/tmp/jit-%d.dump" % pid in mapped_files(pid):
        return "jit"
    # a map counts only if the process's own user wrote it: anyone can place one in /tmp
    owner = owner_of(pid)
    written = owned_mtime("/tmp/perf-%d.map" % pid, owner) if owner is not None else None
    try:
        if written is not None and written >= started_at(pid):
            return "map"
    except OSError:
        pass
    return None


def runs_agent(pid: int) -> bool:
    return any(os.path.basename(path).startswith(AGENT_MODULE) for path in mapped_files(pid))


def started_at(pid: int) -> float:
    """The process's start, in seconds since the epoch."""
    with open("/proc/%d/stat" % pid) as f:
        ticks = int(f.read().rpartition(")")[2].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# Running code in the process


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
    folder = tempfile.mkdtemp(prefix="mixedstack-run-")
    try:
        uid = os.stat("/proc/%d" % pid).st_uid
        if uid != os.geteuid() and os.geteuid() == 0:
            os.chown(folder, uid, -1)  # the process writes its status here
        status = os.path.join(folder, "status.json")
        indented = "\n".join("        " + line for line in body.strip("\n").splitlines())
        # in a namespace of its own, whatever the route runs it in
        code = "__import__('builtins').exec(%r, {})" % (_WRAPPER % {"body": indented, "status": status})
        if via_remote:
            _remote_exec(remote, pid, code, folder)
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


def _remote_exec(interp: Interpreter, pid: int, code: str, folder: str) -> None:
    """Hand `code` to `pid` through sys.remote_exec. The target reads the script when it
    runs it, later: it stays in `folder` until run_in is done waiting."""
    script = os.path.join(folder, "run.py")
    with open(script, "w") as f:
        f.write(code)
    os.chmod(folder, 0o755)  # the process may run as another user: it reads run.py there
    os.chmod(script, 0o644)
    done = subprocess.run([interp.executable, "-I", "-c", "import sys; sys.remote_exec(%d, %r)" % (pid, script)],
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


# --------------------------------------------------------------------------------------
# The code that turns each kind of trampoline on


def symbol_values(path: str, names) -> Optional[Dict[str, int]]:
    """{name: st_value} from the ELF's .symtab (needs an unstripped file), or None."""
    try:
        with open(path, "rb") as f:
            table = ELFFile(f).get_section_by_name(".symtab")
            if not isinstance(table, SymbolTableSection):
                return None
            wanted, found = set(names), {}
            for symbol in table.iter_symbols():
                if symbol.name in wanted and symbol["st_value"]:
                    found[symbol.name] = symbol["st_value"]
    except (ELFError, OSError):
        return None
    return found if len(found) == len(set(names)) else None


def same_file(pid: int, path: str) -> bool:
    """Is `path` on disk the very file mapped in `pid` (not replaced since)?"""
    mapped = mapped_files(pid).get(path)
    try:
        st = os.stat(path)
    except OSError:
        return False
    return mapped is not None and mapped[1] == st.st_ino and mapped[0] == "%02x:%02x" % (
        os.major(st.st_dev), os.minor(st.st_dev))


def perf_map_code() -> str:
    return 'import sys\nsys.activate_stack_trampoline("perf")\n'


def perf_jit_code(pid: int, interp: Interpreter) -> str:
    """CODE for 3.13's perf_jit; ActivationError without the symbols it needs."""
    path = interp.libpython or interp.executable
    if not same_file(pid, path):
        raise ActivationError("%s is not the file process %d has mapped (replaced since it started?)"
                              % (path, pid))
    values = symbol_values(path, JIT_SYMBOLS + (ANCHOR, CHECK))
    if values is None:
        raise ActivationError("%s has no symbol table (stripped) to find CPython's perf_jit functions in"
                              % path)
    offset = {name: values[name] - values[ANCHOR] for name in values}
    return (
        "import ctypes, sys\n"
        "if not sys.is_stack_trampoline_active():\n"
        "    api = ctypes.pythonapi\n"
        "    base = ctypes.cast(api.%(anchor)s, ctypes.c_void_p).value\n"
        "    if ctypes.cast(api.%(check)s, ctypes.c_void_p).value != base + %(check_at)d:\n"
        "        raise RuntimeError('libpython is not laid out as the file mixedstack read')\n"
        "    set_callbacks = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(base + %(set)d)\n"
        "    init = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_int)(base + %(init)d)\n"
        "    if set_callbacks(base + %(callbacks)d) != 0 or init(1) != 0:\n"
        "        raise RuntimeError('the perf_jit trampoline refused to start')\n"
        "if not sys.is_stack_trampoline_active():\n"
        "    raise RuntimeError('the trampoline is not on')\n"
    ) % {"anchor": ANCHOR, "check": CHECK, "check_at": offset[CHECK],
         "set": offset[JIT_SYMBOLS[0]], "init": offset[JIT_SYMBOLS[1]], "callbacks": offset[JIT_SYMBOLS[2]]}


def agent_code(interp: Interpreter) -> str:
    from mixedstack.record.agent import agent_path  # builds it for the target on first use

    return (
        "import sys\n"
        "if tuple(sys.version_info[:3]) != %(version)r:\n"
        "    raise RuntimeError('the agent was built for CPython %(shown)s')\n"
        "sys.path.insert(0, %(folder)r)\n"
        "try:\n"
        "    import %(module)s as agent\n"
        "finally:\n"
        "    sys.path.remove(%(folder)r)\n"
        "answer = agent.activate()\n"
        "if answer is not True:\n"
        "    raise RuntimeError(answer)\n"
    ) % {"version": tuple(interp.version[:3]), "shown": ".".join(map(str, interp.version)),
         "folder": agent_path(interp), "module": AGENT_MODULE}


FLUSH_CODE = "import ctypes\nctypes.CDLL(None).fflush(None)\n"


# --------------------------------------------------------------------------------------
# record --pid


@dataclasses.dataclass
class Attached:
    pid: int
    interp: Optional[Interpreter]
    mode: Mode
    activated: bool = False  # mixedstack turned the trampoline on
    flush: bool = False  # flush the jitdump's stdio buffer when the recording stops

    def before_inject(self, say: Say) -> None:
        """Flush CPython's jitdump buffer in the still running process."""
        if not self.flush or not os.path.exists("/proc/%d" % self.pid):
            return
        try:
            outcome = run_in(self.pid, FLUSH_CODE, FLUSH_WAIT, remote=self.interp)
        except ActivationError as error:
            outcome = {"error": str(error)}
        if outcome is None:
            outcome = {"error": "its main thread ran no Python code within %gs" % FLUSH_WAIT}
        if not outcome.get("ok"):
            say("mixedstack: could not flush the jitdump of process %d (%s): Python frames of "
                "functions first called in the last moments may show as [unknown]"
                % (self.pid, outcome["error"]))


def _native(mode: Mode, reason: str) -> Mode:
    return dataclasses.replace(mode, name="native", env={}, needs_inject=False, reason=reason)


def attach(pid: int, call_graph: str, agent: str, activate: Optional[bool], say: Say,
           ask: Ask = None) -> Attached:
    """Look at `pid`, turn its trampoline on if allowed and possible; the mode to record in."""
    interp = interpreter_of(pid)
    mode = perf_mode(interp, call_graph)
    if interp is None:
        return Attached(pid, interp, mode)
    version = "CPython %d.%d" % interp.version[:2]
    state = trampoline_on(pid)
    if state is not None:
        agent_on = runs_agent(pid)
        mode = perf_mode(interp, "dwarf", "always" if agent_on else "never") if state == "jit" \
            else perf_mode(interp, "fp")
        if mode.name != "native":
            mode = dataclasses.replace(mode, env={}, reason="process %d already has its trampoline on" % pid)
        if state == "jit" and not agent_on:  # CPython's own perf_jit: a buffered jitdump
            if _consent(pid, activate, ask, "flush %s's jitdump buffer when the recording stops" % version):
                return Attached(pid, interp, mode, flush=True)
            say("mixedstack: CPython 3.13+ writes its jitdump through a 2 MiB buffer: Python frames of "
                "functions process %d first called since it last flushed will be [unknown]; --activate "
                "lets mixedstack flush it when the recording stops" % pid)
        return Attached(pid, interp, mode)

    missing = "Python frames will be missing"
    restart = "(restarted under `mixedstack record -- CMD` it would have them)"
    wanted = perf_mode(interp, call_graph, agent)
    if wanted.name == "native":  # no trampoline for this interpreter at all
        return Attached(pid, interp, _native(mode, "process %d: %s" % (pid, wanted.reason)))
    if not ACTIVATABLE[0] <= interp.version[:2] <= ACTIVATABLE[1]:
        return Attached(pid, interp, _native(mode, "process %d (%s) has no perf trampoline on, and mixedstack "
                                             "turns one on in CPython 3.8-3.15 only: %s %s"
                                             % (pid, version, missing, restart)))
    if not _consent(pid, activate, ask, "turn %s's perf trampoline on in it (it stays on)" % version):
        return Attached(pid, interp, _native(mode, "process %d (%s) has no perf trampoline on: %s; %s" % (
            pid, version, missing, "--no-activate was given" if activate is False else
            "--activate turns it on (%s runs code in the process)" % (
                "sys.remote_exec" if interp.version[:2] >= REMOTE_EXEC else "gdb"))))
    try:
        wanted, body = _activation(pid, interp, wanted, call_graph, agent)
        outcome = run_in(pid, body, ACTIVATION_WAIT, remote=interp)
    except (ActivationError, AgentError) as error:
        return Attached(pid, interp, _native(mode, "cannot turn the trampoline on in process %d: %s; %s %s"
                                             % (pid, error, missing, restart)))
    if outcome is not None and not outcome.get("ok"):
        return Attached(pid, interp, _native(mode, "turning the trampoline on in process %d failed (%s): %s %s"
                                             % (pid, outcome["error"], missing, restart)))
    how = {"perf-map": "its perf trampoline (perf map, frame pointers)",
           "perf-jit": "its perf_jit trampoline (DWARF unwinding, perf inject --jit)",
           "agent": "the mixedstack agent (DWARF unwinding, perf inject --jit)"}[wanted.name]
    reason = "turned %s on in process %d (%s); calls already running show under " \
             "[python frames before activation]" % (how, pid, version)
    if outcome is None:
        reason = ("queued %s for process %d, whose main thread ran no Python code within %gs: Python "
                  "frames appear once it does" % (how, pid, ACTIVATION_WAIT))
    return Attached(pid, interp, dataclasses.replace(wanted, env={}, reason=reason),
                    activated=outcome is not None, flush=wanted.name == "perf-jit")


def _activation(pid: int, interp: Interpreter, wanted: Mode, call_graph: str, agent: str) -> Tuple[Mode, str]:
    if wanted.name == "perf-map":
        return wanted, perf_map_code()
    if wanted.name == "perf-jit" and interp.version[:2] >= REMOTE_EXEC:  # its own switch works there
        return wanted, 'import sys\nif not sys.is_stack_trampoline_active():\n' \
                       '    sys.activate_stack_trampoline("perf_jit")\n'
    if wanted.name == "perf-jit":
        try:
            return wanted, perf_jit_code(pid, interp)
        except ActivationError as error:
            if agent == "never":
                raise ActivationError("%s, and --agent never forbids the mixedstack agent" % error)
        wanted = perf_mode(interp, call_graph, "always")  # the agent serves 3.13 too
    return wanted, agent_code(interp)


def _consent(pid: int, activate: Optional[bool], ask: Ask, action: str) -> bool:
    """--activate, --no-activate, or (neither) the answer to a question on a terminal."""
    if activate is not None or ask is None:
        return bool(activate)
    return ask("mixedstack: may mixedstack run code in process %d (through gdb, or sys.remote_exec on "
               "3.14+) to %s?" % (pid, action))
