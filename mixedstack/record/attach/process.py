"""What runs in a process: its interpreter, and whether a trampoline is on in it."""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import shutil
import time
from typing import Dict, List, Optional, Tuple


from mixedstack.perf.command import PerfError
from mixedstack.record.tmpfiles import owned_mtime
from mixedstack.record.tmpfiles import owner_of
from mixedstack.record.target import Interpreter
from mixedstack.record.target import TargetError
from mixedstack.record.target import find_interpreter
from mixedstack.record.target import find_interpreter_at

AGENT_MODULE = "_mixedstack_agent"


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a process lives: a container (its own mount and pid namespaces, as Docker,
    Podman and Kubernetes run it) names its files and itself otherwise than we do.
    `root` reaches its files from here ("" in our own mount namespace); `nspid` is its
    pid in its own pid namespace (its /tmp/perf-NSPID.map, /tmp/jit-NSPID.dump);
    `enter` runs a command inside its namespaces."""

    pid: int
    root: str = ""
    nspid: int = 0

    @property
    def contained(self) -> bool:
        return bool(self.root)

    def host(self, path: str) -> str:
        """`path` as the process names it, reached from here."""
        return self.root + path

    def enter(self) -> List[str]:
        return ["nsenter", "--target", str(self.pid), "--mount", "--pid", "--"] if self.contained else []


def place_of(pid: int) -> Place:
    try:
        other = namespace(pid, "mnt") != namespace("self", "mnt")
        nspid = own_id("/proc/%d/status" % pid)
    except (OSError, ValueError):
        return Place(pid, "", pid)
    return Place(pid, "/proc/%d/root" % pid if other else "", pid if nspid is None else nspid)


def namespace(pid, kind: str) -> int:
    """The identity of a process's namespace of `kind` (mnt, pid, ...); pid may be "self"."""
    return os.stat("/proc/%s/ns/%s" % (pid, kind)).st_ino


def own_id(status: str) -> Optional[int]:
    """A process's or thread's id in its innermost pid namespace, from its /proc status
    file (the last of its NSpid line's ids; None: no such line)."""
    with open(status) as f:
        return next((int(line.split()[-1]) for line in f if line.startswith("NSpid:")), None)


def interpreter_of(pid: int) -> Optional[Interpreter]:
    """The CPython running as `pid`: its executable, or the python installed beside
    the libpython it maps (uwsgi and other programs embedding Python). In a container
    it is probed in there (its glibc may be newer than ours) and read through its root."""
    place = place_of(pid)
    if place.contained:
        return _contained_interpreter(place)
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
    interp = _probed(executable)
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


def _probed(executable: str) -> Optional[Interpreter]:
    """find_interpreter, once per interpreter file (a tree of 200 workers runs one)."""
    try:
        info = os.stat(executable)
    except OSError:
        return find_interpreter([executable])  # its own message
    return _probe_once(executable, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=None)
def _probe_once(executable: str, mtime_ns: int, size: int) -> Optional[Interpreter]:
    return find_interpreter([executable])


def _contained_interpreter(place: Place) -> Optional[Interpreter]:
    try:
        executable = os.readlink("/proc/%d/exe" % place.pid)
    except OSError as error:
        raise PerfError("process %d (in a container) cannot be read (%s): run mixedstack as root"
                        % (place.pid, error.strerror))
    if shutil.which("nsenter") is None:
        raise PerfError("process %d runs in a container, and its interpreter is probed in there with "
                        "nsenter, which is not installed: apt install util-linux" % place.pid)
    return find_interpreter_at(executable, place.enter(), place.root)


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
    place = place_of(pid)
    if "/tmp/jit-%d.dump" % place.nspid in mapped_files(pid):
        return "jit"
    # a map counts only if the process's own user wrote it: anyone can place one in /tmp
    owner = owner_of(pid)
    written = owned_mtime(place.host("/tmp/perf-%d.map" % place.nspid), owner) if owner is not None else None
    try:
        if written is not None and written >= started_at(pid):
            return "map"
    except OSError:
        pass
    return None


def runs_agent(pid: int) -> bool:
    return any(os.path.basename(path).startswith(AGENT_MODULE) for path in mapped_files(pid))


def _stat_fields(pid: int) -> List[str]:
    """/proc/PID/stat's fields after the command name (state first); OSError if gone."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rpartition(")")[2].split()


def started_at(pid: int) -> float:
    """The process's start, in seconds since the epoch."""
    ticks = int(_stat_fields(pid)[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> Optional[int]:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return None


def ancestry(pid: int) -> List[int]:
    """`pid` and the processes it runs under, up to (not including) pid 1."""
    line = []
    while pid and pid > 1 and pid not in line:
        line.append(pid)
        pid = parent_of(pid) or 0
    return line


def process_tree(roots: List[int]) -> Dict[int, Optional[int]]:
    """{pid: its parent's pid} for `roots` and every process descending from them now
    (a prefork master's workers, their children): one pass over /proc. A root's parent
    is given only when it is in the tree itself."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    tree: Dict[int, Optional[int]] = {}
    queue = collections.deque((root, None) for root in roots)
    while queue:  # breadth first: the roots first, in the order given
        pid, parent = queue.popleft()
        if pid in tree:
            continue
        tree[pid] = parent
        queue += [(child, pid) for child in children.get(pid, ())]
    return tree


def forked_at(pid: int) -> Optional[int]:
    """When the process began, in CLOCK_MONOTONIC ns (perf's -k 1 clock, the jitdumps'),
    one clock tick early: the kernel keeps it in ticks since boot, boot time included."""
    try:
        ticks = int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None
    asleep = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    tick = 10 ** 9 // os.sysconf("SC_CLK_TCK")
    return (ticks - 1) * tick - asleep
