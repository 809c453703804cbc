"""What a perf process sees in /tmp: the recording's perf maps, never a file another
user placed at those names (see record/tmpfiles.py for the rules about /tmp).

`perf script` reads /tmp/perf-PID.map for every process with anonymous code, by
that fixed name. Where the kernel allows, perf runs in a mount namespace with a
/tmp of its own (private_tmp); elsewhere the recording's maps are lent at those
names and taken back (PerfView).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import sys
from typing import Callable, Dict, Iterator, List, Optional, Tuple

TMP = "/tmp"
PERF_MAP = re.compile(r"^perf-\d+\.map$")
OWNER_ONLY = 0o600
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_BIND = 0x1000
O_PATH = getattr(os, "O_PATH", 0o10000000)


def create_new(path: str, mode: int = OWNER_ONLY) -> int:
    """A write descriptor for a file made now at `path`: never an existing file or a link."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


_libc = None


def _syscalls():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def private_tmp(maps: Dict[str, str]) -> Callable[[], None]:
    """A Popen preexec_fn: the child gets a mount namespace of its own with a /tmp of
    its own, which shows what /tmp holds now (each entry mounted back from the real
    /tmp, symbolic links made again) except the perf-PID.map names: those are the
    files of `maps` ({name: our file}), or nothing. So perf reads the recording's
    maps, never one another user placed, and finds everything else as before.
    Without root, a user namespace mapping the user to itself gives the right to
    mount. Raises OSError in the child (Popen re-raises it) when the kernel refuses."""
    libc = _syscalls()
    uid, gid = os.getuid(), os.getgid()
    root = os.geteuid() == 0
    entries: List[Tuple[bytes, str, bytes]] = []  # name, kind ("dir", "file", "link"), link text
    for entry in os.scandir(TMP):
        if PERF_MAP.match(entry.name):
            continue
        try:
            if entry.is_symlink():
                entries.append((os.fsencode(entry.name), "link", os.fsencode(os.readlink(entry.path))))
            elif entry.is_dir(follow_symlinks=False):
                entries.append((os.fsencode(entry.name), "dir", b""))
            elif entry.is_file(follow_symlinks=False):
                entries.append((os.fsencode(entry.name), "file", b""))
        except OSError:
            continue  # gone meanwhile
    ours = [(os.fsencode(name), os.fsencode(path)) for name, path in maps.items()]

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), what)

    def enter() -> None:
        check(libc.unshare(CLONE_NEWNS if root else CLONE_NEWNS | CLONE_NEWUSER), "unshare")
        if not root:
            for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)),
                               ("gid_map", "%d %d 1" % (gid, gid))):
                fd = os.open("/proc/self/" + name, os.O_WRONLY)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
        # our mounts must not propagate back to the machine's namespace
        check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        real = os.open(TMP, O_PATH | os.O_DIRECTORY)
        check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, b"mode=1777"), "mount tmpfs /tmp")
        base = b"/proc/self/fd/%d/" % real
        for name, kind, text in entries:
            place = b"/tmp/" + name
            if kind == "link":
                os.symlink(text, place)
                continue
            if kind == "dir":
                os.mkdir(place)
            else:
                os.close(os.open(place, os.O_CREAT | os.O_WRONLY, 0o600))
            libc.mount(base + name, place, None, MS_BIND | MS_REC, None)  # gone meanwhile: left empty
        for name, path in ours:
            place = b"/tmp/" + name
            os.close(os.open(place, os.O_CREAT | os.O_WRONLY, 0o600))
            check(libc.mount(path, place, None, MS_BIND, None), "mount a perf map")
        os.close(real)

    return enter


_namespaces: Optional[bool] = None


def namespaces_work() -> bool:
    """Whether this process may give a child a mount namespace (tried once, in a fork)."""
    global _namespaces
    if _namespaces is None:
        libc = _syscalls()
        flags = CLONE_NEWNS if os.geteuid() == 0 else CLONE_NEWNS | CLONE_NEWUSER
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only reports
            os._exit(0 if libc.unshare(flags) == 0 else 1)
        _namespaces = os.waitpid(child, 0)[1] == 0
    return _namespaces


class PerfView:
    """What `perf script` finds at the /tmp/perf-PID.map names it reads by itself: the
    maps the recording kept, and nothing another user placed there. Where the kernel
    allows, perf gets a /tmp of its own (private_tmp: `preexec`). Elsewhere ours are
    lent at those names (new owner-only files, removed afterwards); a name that is
    taken is left alone, with a warning, as perf will read it."""

    def __init__(self, maps_folder: Optional[str], warn: Callable[[str], None]):
        self.preexec: Optional[Callable[[], None]] = None
        self.lent: List[str] = []
        folder = maps_folder or "/nonexistent"
        ours = {name: os.path.join(folder, name) for name in
                (os.listdir(folder) if os.path.isdir(folder) else []) if PERF_MAP.match(name)}
        if namespaces_work():
            self.preexec = private_tmp(ours)
            return
        taken = []
        for name, path in sorted(ours.items()):
            target = os.path.join(TMP, name)
            try:
                fd = create_new(target)
            except FileExistsError:
                taken.append(target)
                continue
            self.lent.append(target)
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                shutil.copyfileobj(source, out)
        if taken:
            warn("%s: taken by a file that is not this recording's, which perf reads instead "
                 "(this machine allows no private mount namespace)" % ", ".join(taken))

    def close(self) -> None:
        for name in self.lent:
            with contextlib.suppress(OSError):
                os.remove(name)
        self.lent = []


def _warn(message: str) -> None:
    sys.stderr.write("mixedstack: warning: %s\n" % message)


@contextlib.contextmanager
def perf_view(maps_folder: Optional[str], warn: Callable[[str], None] = _warn) -> Iterator[PerfView]:
    """The perf maps `perf script` is to see for a recording (PerfView), taken back after."""
    view = PerfView(maps_folder, warn)
    try:
        yield view
    finally:
        view.close()
