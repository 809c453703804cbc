"""Signals to `record`: each stops the target as Ctrl-C does, keeps a recording that
folds, and leaves no target running. The status is 128+N for the signal N record got."""
from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Folded, alive, interpreter, mixedstack

LOOP = """import os, sys
open(sys.argv[1], "w").write(str(os.getpid()))
def spin():
    while True:
        sum(range(10000))
spin()
"""


def start(tmp_path: Path, **popen):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    pid_file = tmp_path / "pid"
    record = subprocess.Popen(
        [sys.executable, "-m", "mixedstack", "record", "-o", str(tmp_path / "perf.data"), "--",
         interpreter((3, 13)), str(script), str(pid_file)], **popen)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # some samples of spin()
    return record, int(pid_file.read_text())


def assert_recording_of_the_loop(tmp_path: Path) -> None:
    folded = mixedstack("fold", str(tmp_path / "perf.data"))
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    assert stacks.under("spin").total() > 0.5 * stacks.total(), folded.stdout[:1000]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_record_alone_stops_the_target_and_keeps_the_recording(perf_ok, tmp_path, signum):
    record, target = start(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    os.kill(record.pid, signum)  # record's pid only, not its group
    _, err = record.communicate(timeout=120)
    assert record.returncode == 128 + signum, err
    assert not alive(target), "the target was left running"
    assert "exit status %d" % (128 + signum) in err.splitlines()[-1]
    assert_recording_of_the_loop(tmp_path)


def test_timeout_leaves_a_recording(perf_ok, tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    done = subprocess.run(["timeout", "3", sys.executable, "-m", "mixedstack", "record", "-o",
                           str(tmp_path / "perf.data"), "--", interpreter((3, 13)), str(script), str(tmp_path / "pid")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 124, done.stderr  # timeout's own status once it had to signal
    assert not alive(int((tmp_path / "pid").read_text()))
    assert_recording_of_the_loop(tmp_path)


def test_ctrl_c_on_a_terminal_reaches_the_target(perf_ok, tmp_path):
    """A real pseudo-terminal: the target's group is its foreground group while it runs."""
    primary, secondary = pty.openpty()

    def controlling_terminal():
        os.setsid()
        import fcntl
        import termios
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    record, target = start(tmp_path, stdin=secondary, stdout=secondary, stderr=secondary,
                           preexec_fn=controlling_terminal)
    os.close(secondary)
    os.write(primary, b"\x03")  # Ctrl-C, as typed
    output = b""
    deadline = time.monotonic() + 120
    while record.poll() is None and time.monotonic() < deadline:
        try:
            output += os.read(primary, 4096)
        except OSError:
            break
    record.wait(timeout=10)
    os.close(primary)
    text = output.decode(errors="replace")
    assert "KeyboardInterrupt" in text, text  # the target itself got the Ctrl-C
    assert record.returncode == 130, text
    assert not alive(target)
    assert_recording_of_the_loop(tmp_path)


def test_an_interrupted_recording_does_not_block_the_next(perf_ok, tmp_path):
    leftover = tmp_path / "perf.data.d"
    leftover.mkdir()
    (leftover / "raw.data").write_bytes(b"PERFILE2")  # what a killed record leaves
    done = mixedstack("record", "-o", str(tmp_path / "perf.data"), "--", "true")
    assert done.returncode == 0, done.stderr
    assert "left unfinished by an interrupted record" in done.stderr
    assert (tmp_path / "perf.data").exists()


def test_a_running_recording_is_not_taken_for_unfinished(perf_ok, tmp_path):
    record, target = start(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        second = mixedstack("record", "-o", str(tmp_path / "perf.data"), "--", "true")
        assert second.returncode == 1 and "already exists" in second.stderr, second.stderr
    finally:
        os.kill(record.pid, signal.SIGTERM)
        record.communicate(timeout=120)
    assert_recording_of_the_loop(tmp_path)


def test_a_stop_request_delivered_twice_at_once_counts_once(monkeypatch):
    """`timeout` signals record, then record's whole process group: one request."""
    from mixedstack.record import launch

    sent = []
    monkeypatch.setattr(launch.os, "killpg", lambda group, signum: sent.append(signum))
    stopper = launch.Stopper()
    stopper.group = 12345
    clock = iter([100.0, 100.1, 101.0, 102.0, 103.0])
    monkeypatch.setattr(launch.time, "monotonic", lambda: next(clock))
    for _ in range(5):
        stopper._on_signal(signal.SIGTERM, None)
    assert sent == [signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    assert stopper.received == [signal.SIGTERM] * 5


def test_a_stop_escalates_by_itself_after_each_grace_period(monkeypatch):
    """A target that ignores the first Ctrl-C (a CPython joining non-daemon threads)
    gets a second one, then SIGTERM, then SIGKILL, GRACE seconds apart, unasked."""
    from mixedstack.record import launch

    sent = []
    monkeypatch.setattr(launch.os, "killpg", lambda group, signum: sent.append(signum))
    now = [100.0]
    monkeypatch.setattr(launch.time, "monotonic", lambda: now[0])
    stopper = launch.Stopper()
    stopper.group = 12345
    stopper.tick()
    assert sent == [] and stopper.next_step_in() is None  # nothing asked yet
    stopper.stop()
    assert sent == [signal.SIGINT]
    for steps, expected in enumerate((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), start=2):
        now[0] += launch.Stopper.GRACE - 0.01
        stopper.tick()
        assert len(sent) == steps - 1  # not before its time
        now[0] += 0.01
        stopper.tick()
        assert len(sent) == steps and sent[-1] == expected
    assert stopper.next_step_in() is None  # nothing after SIGKILL
    assert len(sent) == 4


@pytest.mark.parametrize("version", [(3, 13), (3, 12)], ids=["3.13-perf-jit", "3.12-perf-map"])
def test_the_programs_signal_handlers_are_its_own(tmp_path, version):
    """record's sitecustomize (the perf_jit fork guard) sets no handler: a Python
    handler runs between bytecodes only, so a SIGTERM that came just before a blocking
    call (a pool worker entering its queue's semaphore as Pool.terminate signalled it)
    would leave the process blocked for ever, its parent joining it."""
    script = tmp_path / "dispositions.py"
    script.write_text("import signal\nnames = {signal.SIG_DFL: 'default', signal.SIG_IGN: 'ignored'}\n"
                      "print(' '.join(names.get(signal.getsignal(s)) or signal.getsignal(s).__name__ for s in "
                      "(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)))\n")
    alone = subprocess.run([interpreter(version), str(script)], stdout=subprocess.PIPE, text=True, timeout=60)
    recorded = mixedstack("record", "-o", str(tmp_path / "perf.data"), "--", interpreter(version), str(script))
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == alone.stdout, (recorded.stdout, alone.stdout)
    assert alone.stdout.split()[0] == "default", alone.stdout
