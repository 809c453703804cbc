"""Start the target and attach perf to it, so that Ctrl-C reaches the target only.

`perf record -- CMD` answers Ctrl-C by sending SIGTERM to CMD, and a CPython killed
by a signal loses the jitdump entries it had not yet flushed: its Python frames
become `[unknown]`. So we start CMD ourselves, held before exec in our own
(foreground) process group, attach `perf record -p` from a session of its own
with events disabled, enable them through perf's control pipe, wait for perf's
ack, and only then let CMD exec. Ctrl-C then interrupts CMD like any program;
CPython exits normally, flushing its jitdump, and perf stops when CMD is gone.
We also learn CMD's exit status first-hand.
"""
from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, List, NamedTuple, Optional, Tuple

from mixedstack.perf.command import PerfError

ACK_TIMEOUT = 30.0  # seconds for perf to attach and acknowledge "enable"
PERF_GRACE = 10.0  # seconds perf may take to notice the target is gone


class Account(NamedTuple):
    """Who the target runs as (record --user): perf keeps root, the program does not."""

    name: str
    uid: int
    gid: int
    groups: List[int]
    home: str
    shell: str

    @classmethod
    def named(cls, name: str) -> "Account":
        """Raises KeyError for an unknown user."""
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid),
                   entry.pw_dir, entry.pw_shell)

    def environment(self, env: dict) -> dict:
        """`env` as this user's login would see it: their name, home and shell."""
        env = {key: value for key, value in env.items() if not key.startswith("SUDO_")}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, SHELL=self.shell)
        return env

    def become(self) -> None:
        os.setgroups(self.groups)
        os.setgid(self.gid)
        os.setuid(self.uid)

    def can(self, path: str, mode: int) -> bool:
        """Whether this user may access `path` (os.access as them, in a forked child)."""
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only reports
            try:
                self.become()
                os._exit(0 if os.access(path, mode) else 1)
            except BaseException:
                os._exit(1)
        return os.waitpid(child, 0)[1] == 0


def _hold_then_exec(go: int, path: str, command: List[str], env: dict, umask: int,
                    account: Optional[Account], output: Optional[str] = None) -> None:
    """In the forked child: wait for the go byte, then exec; never returns. `output`:
    the file its stdout and stderr go to (its stdin is then /dev/null).

    Everything is prepared before the fork, so that perf sees (almost) no samples
    of this child before it becomes the target."""
    try:
        if os.read(go, 1) != b"g":
            os._exit(127)  # mixedstack gave up (perf failed to attach)
        if output is not None:
            written = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            nothing = os.open(os.devnull, os.O_RDONLY)
            for fd, to in ((nothing, 0), (written, 1), (written, 2)):
                os.dup2(fd, to)
        os.umask(umask)  # record's own files are owner-only; the target's are as usual
        if account is not None:
            account.become()
        os.execve(path, command, env)
    except OSError as error:
        sys.stderr.write("mixedstack: cannot run %s: %s\n" % (command[0], error.strerror))
    os._exit(127)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopper:
    """While installed, SIGINT, SIGTERM and SIGHUP sent to record (`kill`, `timeout`, a
    closed terminal), and -d running out, stop the target as Ctrl-C would: SIGINT to its
    process group, so that CPython exits normally and flushes its jitdump. If the target
    is still there GRACE seconds later, record escalates by itself, one step each GRACE:
    a second SIGINT (what ends a CPython whose exit waits on non-daemon threads: the
    first one only ends its main thread), then SIGTERM, then SIGKILL. Python names
    survive the stronger signals because a perf_jit target flushes its jitdump every
    second (agent/__init__.py's fork guard; the agent and perf maps write unbuffered).
    A further stop request advances one step at once. `received` lists the signals
    that came, first first.

    Requests within REPEAT seconds of the last step count once: `timeout` sends its
    SIGTERM to record and then to record's whole process group, so record gets it
    twice at once; taken as two, the second became a SIGTERM that killed the target
    before it could flush its jitdump (a CI run's Python frames all unnamed)."""

    ESCALATION = (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
    GRACE = 2.0  # seconds between steps: the target is gone within 3 GRACE of the stop
    REPEAT = 0.5  # seconds

    def __init__(self) -> None:
        self.received: List[int] = []
        self.group: Optional[int] = None  # the target's process group, once it has one
        self._previous: dict = {}
        self._steps = 0
        self._last = -1e9

    def __enter__(self) -> "Stopper":
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def stopping(self) -> bool:
        return self._steps > 0

    def stop(self) -> None:
        """Stop the target as a first Ctrl-C would, without a signal to record."""
        if not self._steps:
            self._step(time.monotonic())

    def next_step_in(self) -> Optional[float]:
        """Seconds until the next step of a stop under way (None: no stop, or no step left)."""
        if not self._steps or self._steps >= len(self.ESCALATION):
            return None
        return max(0.0, self._last + self.GRACE - time.monotonic())

    def tick(self) -> None:
        """Take the next step if its grace period is over."""
        if self.next_step_in() == 0.0:
            self._step(time.monotonic())

    def group_alive(self) -> bool:
        if self.group is None:
            return False
        try:
            os.killpg(self.group, 0)
        except OSError:
            return False
        return True

    def _step(self, now: float) -> None:
        self._last = now
        self._steps = min(self._steps + 1, len(self.ESCALATION))
        if self.group is not None:
            try:
                os.killpg(self.group, self.ESCALATION[self._steps - 1])
            except OSError:
                pass  # gone already

    def _on_signal(self, signum, frame) -> None:
        self.received.append(signum)
        now = time.monotonic()
        if now - self._last < self.REPEAT:
            return  # the same request, delivered again
        self._step(now)


def _foreground_terminal() -> Optional[int]:
    """Our controlling terminal, if our process group is its foreground group."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _give_terminal(fd: Optional[int], group: int) -> None:
    """Make `group` the terminal's foreground group (from the background: SIGTTOU ignored)."""
    if fd is None:
        return
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, previous)


class Ended(NamedTuple):
    """How a recording ended."""

    status: int  # the target's returncode (negative: killed by that signal); 0 with --pid
    received: List[int]  # the stop signals record received
    perf_status: int  # perf's exit status
    early: Optional[str] = None  # "duration": -d ran out; "perf": perf ended before the target
    seconds: Optional[float] = None  # when the recording stopped early (seconds after start)


def run_attached(perf_command: List[str], command: List[str], env: dict, umask: int = 0o022,
                 account: Optional[Account] = None, duration: Optional[float] = None,
                 stop_target: bool = True, started: Callable[[subprocess.Popen], None] = lambda perf: None,
                 output: Optional[str] = None, released: Callable[[int], None] = lambda pid: None) -> Ended:
    """Run CMD under `perf_command` (a `perf record` line without -p/--), with `umask`,
    as `account` (None: as we run). `output`: CMD's stdout and stderr go to that file,
    and the terminal stays ours (a live view: cli/top.py).

    CMD runs in a process group of its own, which is the terminal's foreground group
    while it runs: Ctrl-C and the terminal's other signals reach CMD (and its
    children) only, and a signal to mixedstack's own group (`timeout`) does not kill
    CMD before it could flush its jitdump: mixedstack passes it on (Stopper).

    `duration`: stop recording after that many seconds, and CMD too (as Ctrl-C would)
    if `stop_target`; else CMD runs on to its end. perf ending first (killed, or a full
    disk) stops the recording, not CMD. `started` is handed perf's process once it runs,
    `released` CMD's pid once it goes on to exec."""
    path = command[0] if "/" in command[0] else shutil.which(command[0], path=env.get("PATH")) or command[0]
    go_read, go_write = os.pipe()
    ctl_read, ctl_write = os.pipe()
    ack_read, ack_write = os.pipe()
    terminal = _foreground_terminal() if output is None else None
    target = os.fork()
    if target == 0:  # pragma: no cover - the child execs or exits
        os.setpgid(0, 0)
        for fd in (go_write, ctl_read, ctl_write, ack_read, ack_write):
            os.close(fd)
        _hold_then_exec(go_read, path, command, env, umask, account, output)
    os.close(go_read)
    try:
        os.setpgid(target, target)  # as the child does: whichever runs first
    except OSError:
        pass
    perf = None
    with Stopper() as stopper:
        try:
            perf = subprocess.Popen(
                perf_command + ["-D", "-1", "--control", "fd:%d,%d" % (ctl_read, ack_write), "-p", str(target)],
                pass_fds=(ctl_read, ack_write), start_new_session=True, stdin=subprocess.DEVNULL,
            )
            os.close(ctl_read)
            os.close(ack_write)
            os.write(ctl_write, b"enable\n")
            if not _wait_for_ack(ack_read, perf) or stopper.received:
                if stopper.received:
                    raise KeyboardInterrupt
                raise PerfError("perf record did not attach to the target: see perf's message above; "
                                "`perf record -- true` shows whether perf works here")
            _give_terminal(terminal, target)
            stopper.group = target
            started(perf)
            begun = time.monotonic()
            os.write(go_write, b"g")
            os.close(go_write)
            released(target)
            status, early, seconds = _watch(target, perf, stopper, begun, duration, stop_target, ctl_write)
            perf_status = _wait_at_most(perf, PERF_GRACE)
            if perf_status is None:  # children that outlive the target keep perf going
                perf.send_signal(signal.SIGINT)
                perf_status = perf.wait()
            return Ended(status, stopper.received, perf_status, early, seconds)
        except BaseException:
            _close_quietly(go_write)  # the held child sees EOF and exits
            if perf is not None and perf.poll() is None:
                perf.send_signal(signal.SIGINT)
                perf.wait()
            _wait_for(target)
            raise
        finally:
            _give_terminal(terminal, os.getpgrp())
            if terminal is not None:
                _close_quietly(terminal)
            for fd in (ctl_write, ack_read):
                _close_quietly(fd)


def _watch(target: int, perf: subprocess.Popen, stopper: Stopper, begun: float, duration: Optional[float],
           stop_target: bool, control: int) -> Tuple[int, Optional[str], Optional[float]]:
    """Wait for the target to end, stopping perf when `duration` runs out (and the
    target with it, if `stop_target`) and noticing perf ending first.
    Returns (the target's returncode, why the recording stopped early, when)."""
    early = seconds = None
    waiting = _ProcessWaiter(target)
    try:
        while True:
            now = time.monotonic()
            timeout = 1.0 if early or duration is None else max(0.0, min(1.0, begun + duration - now))
            step = stopper.next_step_in()
            status = waiting.wait(timeout if step is None else min(timeout, step))
            if status is not None:
                _stop_the_rest(stopper)
                return status, early, seconds
            stopper.tick()
            if early is None and perf.poll() is not None:
                early, seconds = "perf", time.monotonic() - begun
            elif early is None and duration is not None and time.monotonic() >= begun + duration:
                early, seconds = "duration", duration
                try:  # no more samples from now on: perf takes a while to stop after SIGINT
                    os.write(control, b"disable\n")
                except OSError:
                    pass
                perf.send_signal(signal.SIGINT)
                if stop_target:
                    stopper.stop()
    finally:
        waiting.close()


def _stop_the_rest(stopper: Stopper) -> None:
    """Once a stopped target has ended, the rest of its process group (a prefork
    master's workers) goes on through the escalation, so that none is left behind."""
    while stopper.stopping and stopper.group_alive():
        step = stopper.next_step_in()
        if step is None:  # SIGKILL was sent: it is only a moment
            deadline = time.monotonic() + 1.0
            while stopper.group_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            return
        time.sleep(min(step, 0.05))
        stopper.tick()


class _ProcessWaiter:
    """waitpid with a timeout: a pidfd says when our child has ended (polling where
    Python or Linux has none)."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self.fd: Optional[int] = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, timeout: float) -> Optional[int]:
        """The child's returncode once it has ended, or None after `timeout` seconds."""
        if self.fd is not None:
            select.select([self.fd], [], [], timeout)
        else:
            time.sleep(min(timeout, 0.1))
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            return None
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _wait_for_ack(ack: int, perf: subprocess.Popen) -> bool:
    deadline = time.monotonic() + ACK_TIMEOUT
    received = b""
    while time.monotonic() < deadline and perf.poll() is None:
        ready, _, _ = select.select([ack], [], [], 0.1)
        if ready:
            chunk = os.read(ack, 64)
            if not chunk:
                return False
            received += chunk
            if b"ack" in received:
                return True
    return False


def _wait_at_most(process: subprocess.Popen, timeout: float) -> Optional[int]:
    """process.wait(timeout), or None when it times out. Popen.wait polls with
    sleeps of up to 50 ms; a pidfd wakes us the moment perf exits."""
    try:
        fd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # Python < 3.9 or Linux < 5.3
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return process.wait() if ready else None


def _wait_for(pid: int) -> int:
    """waitpid through Ctrl-C; returns a Popen-style returncode."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except ChildProcessError:
            return 0
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def attach_to(perf_command: List[str], pids: Optional[List[int]], children: bool, duration: Optional[float],
              started: Callable[[subprocess.Popen], None] = lambda perf: None) -> Ended:
    """`perf record -p PID,...` (`pids` None: -a, every process) until the processes end,
    `duration` passes, or Ctrl-C (which perf receives with us), SIGTERM or SIGHUP (passed
    on to perf as SIGINT); the processes themselves are left running. perf's inherit
    follows the children they start while recording; `children` False: not those either."""
    if pids is None:
        command = perf_command + ["-a"]
    else:
        alive = [pid for pid in pids if os.path.exists("/proc/%d" % pid)]  # perf refuses a gone pid
        command = perf_command + ["-p", ",".join(map(str, alive or pids))] + ([] if children else ["--no-inherit"])
    if duration is not None:
        command += ["--", "sleep", "%g" % duration]
    with Stopper() as stopper:
        perf = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        stopper.group = perf.pid  # perf stops at SIGINT; a second request, SIGTERM
        started(perf)
        try:
            perf_status = perf.wait()
        except BaseException:
            perf.send_signal(signal.SIGINT)
            perf.wait()
            raise
    return Ended(0, stopper.received, perf_status)
