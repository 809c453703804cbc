"""Files in /tmp, the folder every user can write to, handled as if others were hostile.

CPython, the agent and perf use fixed names there (/tmp/perf-PID.map, /tmp/jit-PID.dump,
/tmp/jitted-PID-N.so), so anyone on the machine can place a link or a file of their own
at a name mixedstack is about to use, and mixedstack often runs as root. The rules:

- A file is taken from /tmp only if it is a regular file (never through a link) owned
  by the user the target ran as; anything else is left where it is, with a warning.
- Whatever mixedstack writes is created anew (O_CREAT|O_EXCL|O_NOFOLLOW), owner-only.
- perf's own fixed-name lookups are lent the recording's files (PerfView), or handed
  them by a relative name (perf inject's jitdumps: perf/rewrite.py and record/session.py).
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from typing import Optional

from mixedstack.perf.tmpview import create_new


class Refused(Exception):
    """A /tmp file left alone: the one-line reason says whose it is and what it is."""


def _describe(info: os.stat_result) -> str:
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return "owned by uid %d" % info.st_uid


def open_owned(path: str, uid: int) -> int:
    """A read descriptor for `path` if it is a regular file owned by `uid` (checked on
    the open file itself, so nothing can be swapped in between); else Refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Refused("%s is a symbolic link" % path)
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
        os.close(fd)
        raise Refused("%s is %s" % (path, _describe(info)))
    return fd


def copy_owned(path: str, destination: str, uid: int) -> None:
    """Copy /tmp's `path` (see open_owned) to a new owner-only `destination`."""
    with os.fdopen(open_owned(path, uid), "rb") as source:
        with os.fdopen(create_new(destination), "wb") as target:
            shutil.copyfileobj(source, target)


def owned_mtime(path: str, uid: int) -> Optional[float]:
    """`path`'s modification time if it is a regular file of `uid` (lstat: no link followed)."""
    info = _owned(path, uid)
    return info.st_mtime if info else None


def owned(path: str, uid: int) -> bool:
    """Whether `path` is a regular file of `uid` (lstat: no link followed)."""
    return _owned(path, uid) is not None


def _owned(path: str, uid: int) -> Optional[os.stat_result]:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) and info.st_uid == uid else None


# record's fork guard makes it in a process that flushes its jitdump as each function first runs
FLUSH_MARK = "/tmp/jit-%d.flushed"


def remove_flush_marks(pids, uid_of) -> None:
    """The fork guard's marks of `pids` (each owned by `uid_of(pid)`), once record is done with them."""
    for pid in pids:
        path = FLUSH_MARK % pid
        if owned(path, uid_of(pid)):
            try:
                os.remove(path)
            except OSError:
                pass


def owner_of(pid: int) -> Optional[int]:
    """The user a process runs as (the owner of /proc/PID)."""
    try:
        return os.stat("/proc/%d" % pid).st_uid
    except OSError:
        return None
