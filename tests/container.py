"""A container in miniature, run the way Docker, Podman and Kubernetes run one, without
any container engine: for tests of profiling a program that runs in a container.

    with Container(["python3.15", "-X", "perf", "/app.py"], binds=[(app, "/app.py")],
                   env={"PYTHONPERFSUPPORT": "1"}) as c:
        c.wait_for("ready")            # a line of its output (the file c.log)
        c.host_pid, c.nspid            # e.g. 4711 on the host, 1 inside
        c.path("/tmp/perf-1.map")      # the container's file, as the host reaches it

The root (`container_root()`) is Debian sid's CPython that `make current-python` extracted,
copied once (hard links) to CACHE/mixedstack/container/X.Y, its pythonX.Y given back
/lib64/ld-linux-x86-64.so.2 as interpreter and no rpath (both named the host path of the
extracted root), and libgcc_s (glibc loads it to unwind threads). `unshare --mount --pid
--fork` runs a setup as pid 1 of new namespaces: a throwaway overlay over the root (as
Docker's overlay2: writes and mount points never reach the cache), a fresh proc, private
tmpfs /tmp, a few /dev devices, the binds; then `pivot_root` into it, the host's tree
unmounted, exec. A chroot would not do: perf would read perf maps from the host's /tmp.
A host interpreter runs inside with `prefix_bind(its path)` (pyenv's builds for Debian
12's glibc run on sid's newer one). As pid 1 the program ignores the signals it has no
handler for (SIGTERM too), as in Docker; `__exit__` SIGKILLs it, ending the namespace.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixedstack"
CURRENT_PYTHON = Path(os.environ.get("MIXEDSTACK_CURRENT_PYTHON") or CACHE / "current-python")  # as conftest's
LIBDIR = "usr/lib/x86_64-linux-gnu"  # sid's amd64 packages
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "LANG": "C.UTF-8"}  # an image's environment: nothing of the host's
SETUP_FAILED = 125  # `docker run`'s status when the container could not be started


class ContainerUnavailable(RuntimeError):
    pass


def container_root(version: Tuple[int, int] = (3, 15)) -> Path:
    """The root for sid's CPython X.Y, built on first use into a temporary folder renamed
    into place: a build cut short is never taken for a root."""
    name = "%d.%d" % version
    dest = CACHE / "container" / name
    if os.access(str(dest / "usr/bin" / ("python" + name)), os.X_OK):
        return dest
    source = CURRENT_PYTHON / name / "root"
    if not (source / "usr/bin" / ("python" + name)).is_file():
        raise ContainerUnavailable("no Debian CPython %s in %s: get it with `make current-python`" % (name, source))
    if not shutil.which("patchelf"):
        raise ContainerUnavailable("patchelf not found (`make current-python` installs it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".%s-" % name, dir=str(dest.parent)))
    try:
        tree = work / "root"
        if subprocess.run(["cp", "-al", str(source), str(tree)], stderr=subprocess.DEVNULL).returncode:
            shutil.rmtree(str(tree), ignore_errors=True)  # another file system: copies
            subprocess.run(["cp", "-a", str(source), str(tree)], check=True)
        python = tree / "usr/bin" / ("python" + name)
        shutil.copy2(str(python), str(python) + ".new")  # a file of its own: edits would reach the source
        os.replace(str(python) + ".new", str(python))
        _set_interpreter(python, "/lib64/ld-linux-x86-64.so.2")
        subprocess.run(["patchelf", "--remove-rpath", str(python)], check=True)  # in place
        for link in ("bin", "lib", "lib64"):  # merged /usr, as sid's images have it
            if not os.path.lexists(str(tree / link)):
                os.symlink("usr/" + link, str(tree / link))
        gcc_s = glob.glob("/usr/lib/*-linux-gnu/libgcc_s.so.1") + glob.glob("/lib*/libgcc_s.so.1")
        if not (tree / LIBDIR / "libgcc_s.so.1").exists() and gcc_s:
            shutil.copy2(gcc_s[0], str(tree / LIBDIR / "libgcc_s.so.1"))
        for folder in ("proc", "tmp", "dev", "oldroot", "root"):
            (tree / folder).mkdir(exist_ok=True)
        try:
            os.rename(str(tree), str(dest))
        except OSError:  # built meanwhile by another process: take that one
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
    return dest


def _set_interpreter(path: Path, interpreter: str) -> None:
    """Write the program interpreter over the old, longer one. Not with patchelf: it would
    move the sections a page on, and perf, finding the host root's copy of the same build
    id in its cache (~/.debug), would then name the wrong functions of this one."""
    with open(str(path), "r+b") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            kind, _, offset, _, _, size = struct.unpack("<IIQQQQ", f.read(40))
            if kind == 3 and len(interpreter) < size:  # PT_INTERP
                f.seek(offset)
                f.write(interpreter.encode().ljust(size, b"\0"))
                return
    raise ContainerUnavailable("%s: no program interpreter to replace" % path)


def prefix_bind(python: str) -> Tuple[str, str, bool]:
    """A read-only bind, at the same path, of the prefix of a host interpreter
    (PREFIX/bin/pythonX.Y, e.g. pyenv's), so that it runs in the container as well."""
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    return (prefix, prefix, True)


@functools.lru_cache(maxsize=None)
def container_problem(version: Tuple[int, int] = (3, 15)) -> Optional[str]:
    """Why containers cannot run here (for a test's skip), or None."""
    missing = [tool for tool in ("unshare", "mount", "pivot_root") if not shutil.which(tool)]
    if os.geteuid() != 0 or missing:
        return "containers need root and util-linux's unshare, mount, pivot_root"
    if not re.search(r"\toverlay$", Path("/proc/filesystems").read_text(), re.M):
        return "no overlay file system in this kernel"
    try:
        container_root(version)
    except (ContainerUnavailable, OSError, subprocess.CalledProcessError) as e:
        return "no container root: %s" % e
    probe = subprocess.run(["unshare", "--mount", "--pid", "--fork", "true"], stderr=subprocess.PIPE, text=True)
    return "unshare fails here: %s" % probe.stderr.strip() if probe.returncode else None


# pid 1 of the new namespaces, on the host's Python: mount and pivot_root are the host's
# tools, reachable only before pivot_root; umount2 comes through ctypes, loaded before.
SETUP = r"""
import ctypes, json, os, subprocess, sys, traceback
try:
    s = json.loads(sys.argv[1])
    new = s["dir"] + "/merged"
    def mount(*args):
        subprocess.run(("mount",) + args, check=True)
    mount("--make-rprivate", "/")
    mount("-t", "overlay", "overlay", "-o", "lowerdir=%(root)s,upperdir=%(dir)s/upper,workdir=%(dir)s/work" % s, new)
    mount("-t", "proc", "proc", new + "/proc")
    for tmpfs, mode in (("/tmp", "1777"), ("/dev", "755"), ("/dev/shm", "1777")):
        os.makedirs(new + tmpfs, exist_ok=True)
        mount("-t", "tmpfs", "-o", "mode=" + mode, "tmpfs", new + tmpfs)
    os.symlink("/proc/self/fd", new + "/dev/fd")
    devices = [("/dev/" + d, "/dev/" + d, False) for d in ("null", "zero", "full", "random", "urandom")]
    for host, inside, read_only in devices + s["binds"]:
        target = new + "/" + inside.lstrip("/")
        os.makedirs(target if os.path.isdir(host) else os.path.dirname(target), exist_ok=True)
        if not os.path.isdir(host):
            open(target, "a").close()
        mount("--bind", *(("-o", "ro") if read_only else ()), host, target)
    os.chdir(new)
    subprocess.run(["pivot_root", ".", "oldroot"], check=True)
    os.chdir("/")
    if ctypes.CDLL(None, use_errno=True).umount2(b"/oldroot", 2):  # MNT_DETACH: `umount -l`
        raise OSError(ctypes.get_errno(), "umount -l /oldroot")
    os.chdir(s["cwd"])
    os.execvpe(s["command"][0], s["command"], s["env"])
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(SETUP_FAILED)
""".replace("SETUP_FAILED", str(SETUP_FAILED))


class Container:
    """`command` run as pid 1 of a container on `root` (by default `container_root()`).
    binds: (host_path, container_path[, read_only]). env: added to ENV. stdout and stderr
    go to the file `self.log`: `output()` reads it, `wait_for()` waits for a text in it."""

    def __init__(self, command: Sequence[str], binds: Sequence[tuple] = (), env: Optional[Dict[str, str]] = None,
                 root: Optional[Path] = None, cwd: str = "/", start_timeout: float = 20):
        self.command: List[str] = [str(a) for a in command]
        self.binds = [(os.path.abspath(str(b[0])), str(b[1]), len(b) > 2 and bool(b[2])) for b in binds]
        self.env = dict(ENV, **(env or {}))
        self.root, self.cwd, self.start_timeout = root, cwd, start_timeout
        self.host_pid: Optional[int] = None

    def __enter__(self) -> "Container":
        root = Path(self.root or container_root())
        self.dir = Path(tempfile.mkdtemp(prefix="mixedstack-container-"))
        for folder in ("upper", "work", "merged"):
            (self.dir / folder).mkdir()
        self.log = self.dir / "output"
        spec = dict(root=str(root), dir=str(self.dir), binds=self.binds, command=self.command, env=self.env,
                    cwd=self.cwd)
        unshare = shutil.which("unshare") or "unshare"
        with open(str(self.log), "wb") as out:
            self.proc = subprocess.Popen(  # --kill-child: should unshare die, its child does too
                [unshare, "--mount", "--pid", "--fork", "--kill-child", sys.executable, "-I", "-c", SETUP,
                 json.dumps(spec)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        before = (None, os.path.realpath(unshare), os.path.realpath(sys.executable))  # unshare, the setup
        while True:  # started once unshare's child (pid 1 inside) has exec'd the command
            self.host_pid = self.host_pid or _child_of(self.proc.pid)
            if self.host_pid and (_read(self.host_pid, "cmdline").split("\0")[:-1] == self.command
                                  or _exe(self.host_pid) not in before):
                return self
            if self.proc.poll() is not None and self.proc.returncode != SETUP_FAILED:
                return self  # it ran, and has ended already
            if self.proc.returncode is not None or time.monotonic() > deadline:
                output = self.output()
                self.__exit__()
                raise ContainerUnavailable("the container did not start:\n" + output)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None and self.host_pid:  # unshare has not reaped it: the pid is its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.host_pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc.kill()  # if still there: --kill-child then kills its child
        self.proc.wait()
        shutil.rmtree(str(self.dir), ignore_errors=True)

    @property
    def nspid(self) -> int:
        """The program's pid inside (the last one on /proc/PID/status's NSpid line)."""
        return int(re.search(r"^NSpid:.*\s(\d+)$", _read(self.host_pid, "status"), re.M).group(1))

    def path(self, inside: str) -> Path:
        return Path("/proc/%d/root" % self.host_pid) / inside.lstrip("/")

    def output(self) -> str:  # all it wrote so far
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            ended = self.proc.poll() is not None
            if (ended or time.monotonic() > deadline) and text not in self.output():
                raise AssertionError("no %r from the container (%s):\n%s"
                                     % (text, "it ended" if ended else "timeout", self.output()))
            time.sleep(0.05)
        return self.output()


def _read(pid: int, name: str) -> str:
    with contextlib.suppress(OSError), open("/proc/%d/%s" % (pid, name)) as f:
        return f.read()
    return ""


def _exe(pid: int) -> Optional[str]:
    with contextlib.suppress(OSError):
        return os.readlink("/proc/%d/exe" % pid)
    return None


def _child_of(pid: int) -> Optional[int]:
    """A child of `pid`, from /proc/*/stat (/proc/PID/task/TID/children may be configured out)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        stat = _read(int(entry), "stat")
        if stat and stat[stat.rfind(")") + 2:].split()[1] == str(pid):
            return int(entry)
    return None
