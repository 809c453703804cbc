"""A user who is not root records their own program, with the distribution's own python3,
at perf_event_paranoid 2 (this machine's setting): user-space stacks work; the kernel is
not sampled, and both record's summary and report say so, with the setting that brings it.

The account is a real one (`nobody`, through setpriv), running mixedstack from a venv of
the distribution's python3 that the test installs the project into (pip, from the
project's own files), in a folder that account can read.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, Folded, skip_or_fail

pytestmark = pytest.mark.perf

ACCOUNT = "nobody"
WORKLOAD = """import os, time
def sys_heavy():
    end = time.process_time() + 1.0
    while time.process_time() < end:
        os.stat("/")
def py_hot():
    end = time.process_time() + 1.0
    while time.process_time() < end:
        sum(i * i for i in range(1000))
sys_heavy()
py_hot()
"""


def paranoid() -> int:
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        return int(f.read())


@pytest.fixture(scope="module")
def unprivileged():
    """(run as the account, the folder it works in), mixedstack installed for it."""
    python = "/usr/bin/python3"  # the distribution's own, as such a user has it
    if os.geteuid() != 0:
        skip_or_fail("needs root to act as the unprivileged account %s" % ACCOUNT)
    if not os.access(python, os.X_OK) or shutil.which("setpriv") is None:
        skip_or_fail("needs the distribution's %s and setpriv (util-linux)" % python)
    if paranoid() < 2:
        pytest.skip("kernel.perf_event_paranoid is %d here: an unprivileged user samples the kernel" % paranoid())
    user = pwd.getpwnam(ACCOUNT)
    folder = Path(tempfile.mkdtemp(prefix="mixedstack-unprivileged-"))
    try:
        venv = folder / "venv"
        made = subprocess.run([python, "-m", "venv", str(venv)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=300)
        if made.returncode != 0:
            skip_or_fail("%s -m venv fails (Debian: apt install python3-venv): %s" % (python, made.stdout[-300:]))
        installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert installed.returncode == 0, installed.stdout[-2000:]
        work = folder / "work"
        work.mkdir()
        (work / "mix.py").write_text(WORKLOAD)
        os.chown(work, user.pw_uid, user.pw_gid)
        subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid), "--clear-groups",
                 "env", "HOME=%s" % work, "XDG_CACHE_HOME=%s" % (work / "cache"), str(venv / "bin" / "mixedstack"),
                 *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300, cwd=str(work))
        yield run, work
    finally:
        shutil.rmtree(str(folder), ignore_errors=True)


def test_an_unprivileged_user_records_and_is_told_the_kernel_was_not_sampled(perf_ok, unprivileged):
    run, work = unprivileged
    done = run("record", "-o", "u.data", "--", "/usr/bin/python3", "mix.py")
    assert done.returncode == 0, done.stderr
    assert "kernel time was not sampled" in done.stderr and "perf_event_paranoid=1" in done.stderr, done.stderr

    folded = run("fold", "--kernel", "u.data")  # kernel frames marked _[k]
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    # user space is all there, and named: both functions, whole stacks
    assert stacks.under("sys_heavy").total() > 0.2 * stacks.total()
    assert stacks.under("py_hot").total() > 0.2 * stacks.total()
    assert stacks.complete_share() >= 0.95
    # no kernel frame (the vDSO, user-space code the kernel maps, is marked as stackcollapse marks it)
    assert not any(frame.endswith("_[k]") and "vdso" not in frame for frames in stacks.stacks for frame in frames)

    report = run("report", "u.data")
    assert report.returncode == 0, report.stderr
    layers = report.stdout.split("Where on-CPU time went", 1)[1].split("System calls", 1)[0]
    assert "kernel" in layers and "not sampled" in layers.split("kernel", 1)[1].splitlines()[0], layers
    calls = report.stdout.split("System calls", 1)[1].split("GIL", 1)[0]
    assert "not sampled" in calls and "(none)" not in calls, calls
    assert "perf_event_paranoid=1" in report.stdout
