"""Safe to run as root on a shared machine: what other users place in /tmp is never
followed, adopted or read, and `record --user` runs the target as someone else.

Planted files are made by a real unprivileged account (`nobody`) through setpriv, as
an attacker on the machine would. These tests need root (to become that account).
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import WORKLOADS, Folded, interpreter, mixedstack, skip_or_fail

VICTIM = "nobody"


def account():
    if os.geteuid() != 0:
        skip_or_fail("these tests plant files as another user and need root")
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is not installed")
    try:
        return pwd.getpwnam(VICTIM)
    except KeyError:
        skip_or_fail("no unprivileged account %r here" % VICTIM)


def as_other_user(*command: str) -> None:
    """Run `command` as the unprivileged account (the 'attacker')."""
    user = account()
    subprocess.run(["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid), "--clear-groups",
                    *command], check=True)


@pytest.fixture
def public_dir():
    """A folder every user can enter (pytest's own tmp_path is its owner's only)."""
    folder = tempfile.mkdtemp(prefix="mixedstack-test-")
    os.chmod(folder, 0o755)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def planted():
    """Remember what the attacker placed, and remove it afterwards."""
    paths = []
    yield paths
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)


@pytest.fixture(scope="module")
def agent_recording(tmp_path_factory):
    """A 3.11 agent recording: it keeps a perf map, which fold lends perf."""
    from conftest import perf_problem

    if perf_problem():
        skip_or_fail(perf_problem())
    folder = tmp_path_factory.mktemp("agent")
    data = folder / "perf.data"
    recorded = mixedstack("record", "-o", str(data), "--", interpreter((3, 11)), str(WORKLOADS / "phases.py"),
                          str(folder / "t.json"), "0.3")
    assert recorded.returncode == 0, recorded.stderr
    maps = sorted((folder / "perf.data.d" / "tmp").glob("perf-*.map"))
    assert maps, "the agent kept no perf map: %s" % recorded.stderr
    clean = mixedstack("fold", str(data))
    assert clean.returncode == 0, clean.stderr
    assert "py_hot (phases.py" in clean.stdout
    return data, [int(path.name[5:-4]) for path in maps], clean.stdout


def test_fold_never_writes_through_a_link_planted_at_a_lent_name(agent_recording, planted, public_dir):
    data, pids, clean = agent_recording
    account()
    target = public_dir / "made-by-root"
    for pid in pids:
        planted.append("/tmp/perf-%d.map" % pid)
        as_other_user("ln", "-s", str(target), planted[-1])
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    assert not target.exists(), "fold created a file through another user's link"
    for path in planted:
        assert os.path.islink(path), "the other user's link was changed"
    assert folded.stdout == clean, "the planted links changed the profile"


def test_fold_never_reads_a_map_another_user_planted(agent_recording, planted):
    data, pids, clean = agent_recording
    account()
    for pid in pids:
        planted.append("/tmp/perf-%d.map" % pid)
        # a map claiming every address for a function of the attacker's choosing
        as_other_user("sh", "-c", "echo '0 7fffffffffff PLANTED_BY_ANOTHER_USER' > %s" % planted[-1])
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    assert "PLANTED_BY_ANOTHER_USER" not in folded.stdout
    assert folded.stdout == clean
    for path in planted:  # left as it was
        assert os.stat(path).st_uid == account().pw_uid
        assert "PLANTED_BY_ANOTHER_USER" in Path(path).read_text()


def test_fold_lends_nothing_that_stays_in_tmp(agent_recording):
    data, pids, _ = agent_recording
    before = {name for name in os.listdir("/tmp") if name.startswith("perf-")}
    assert mixedstack("fold", str(data)).returncode == 0
    after = {name for name in os.listdir("/tmp") if name.startswith("perf-")}
    assert after <= before


def test_record_takes_no_foreign_map_or_jitdump_for_the_targets_pid(perf_ok, tmp_path, planted, public_dir):
    user = account()
    pid_file, go = public_dir / "pid", public_dir / "go"
    victim = public_dir / "linked-target"
    data = tmp_path / "perf.data"
    # the target announces its pid, then waits until the attacker has planted files for it
    script = 'echo $$ > %s; i=0; while [ ! -e %s ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done' % (pid_file, go)
    record = subprocess.Popen([sys.executable, "-m", "mixedstack", "record", "-o", str(data), "--", "sh", "-c", script],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = int(pid_file.read_text())
    planted += ["/tmp/perf-%d.map" % pid, "/tmp/jit-%d.dump" % pid]
    as_other_user("ln", "-s", str(victim), planted[0])
    as_other_user("sh", "-c", "echo not-a-jitdump > %s" % planted[1])
    go.touch()
    _, stderr = record.communicate(timeout=120)
    assert record.returncode == 0, stderr
    kept = os.listdir(tmp_path / "perf.data.d" / "tmp")
    assert "perf-%d.map" % pid not in kept and "jit-%d.dump" % pid not in kept
    assert os.path.islink(planted[0]) and not victim.exists()
    assert os.stat(planted[1]).st_uid == user.pw_uid  # left in place, not moved
    assert "%s is a symbolic link" % planted[0] in stderr
    assert "%s is owned by uid %d" % (planted[1], user.pw_uid) in stderr


def test_recordings_are_their_owners_only(perf_ok, tmp_path):
    data = tmp_path / "perf.data"
    recorded = mixedstack("record", "-o", str(data), "--", interpreter((3, 13)), "-c", "sum(range(10**6))")
    assert recorded.returncode == 0, recorded.stderr
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o600
    folder = tmp_path / "perf.data.d"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            assert not os.stat(path).st_mode & 0o077, "%s is readable by others" % path
        for name in dirs:
            assert not os.stat(os.path.join(root, name)).st_mode & 0o077


def visible_to(user, program: str) -> list:
    """A command prefix under which `user` can run `program`: as it is where the
    user already can; else in a mount namespace of the test's own where the home
    folder above it (pyenv's root under a 0700 /root) is opened up by a tmpfs over it
    that holds only the interpreter's tree, mounted back. The machine's own mounts
    are left alone."""
    check = subprocess.run(["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid),
                            "--clear-groups", "test", "-x", program])
    if check.returncode == 0:
        return []
    real = os.path.realpath(program)
    home = os.path.expanduser("~")
    if not real.startswith(home + os.sep):
        skip_or_fail("%s cannot run %s, and it is not under this user's home" % (user.pw_name, real))
    top = os.path.join(home, os.path.relpath(real, home).split(os.sep)[0])  # e.g. ~/.pyenv
    script = ('set -e; hold=$(mktemp -d); mount --bind "$1" "$hold"; mount -t tmpfs -o mode=755 tmpfs "$2"; '
              'mkdir -p "$1"; mount --bind "$hold" "$1"; shift 2; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", top, home]


@pytest.mark.parametrize("minor,mode", [(11, "agent"), (13, "perf-jit")])
def test_record_as_another_user_keeps_full_stacks(perf_ok, public_dir, minor, mode):
    user = account()
    python = interpreter((3, minor))
    prefix = visible_to(user, python)
    workload = public_dir / "phases.py"
    shutil.copy(WORKLOADS / "phases.py", workload)
    os.chmod(workload, 0o644)
    outputs = public_dir / "out"
    outputs.mkdir()
    os.chmod(outputs, 0o777)
    report = ("import json, os, sys; json.dump({'uid': os.getuid(), 'gid': os.getgid(), 'groups': sorted(os.getgroups()),"
              " 'home': os.environ.get('HOME'), 'user': os.environ.get('USER')}, open(sys.argv[1], 'w'))")
    data = public_dir / "perf.data"
    env = dict(os.environ, SUDO_USER=user.pw_name, HOME=os.path.expanduser("~"))
    recorded = subprocess.run(
        prefix + [sys.executable, "-m", "mixedstack", "record", "--user", user.pw_name, "-o", str(data), "--",
                  python, "-c", report + "; sys.argv = sys.argv[2:]; import runpy; runpy.run_path(sys.argv[0], run_name='__main__')",
                  str(outputs / "who.json"), str(workload), str(outputs / "t.json"), "0.4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300, env=env, cwd=str(public_dir))
    assert recorded.returncode == 0, recorded.stderr
    assert "mode %s" % mode in recorded.stderr
    import json

    who = json.loads((outputs / "who.json").read_text())
    assert who["uid"] == user.pw_uid and who["gid"] == user.pw_gid
    assert who["groups"] == sorted(set(os.getgrouplist(user.pw_name, user.pw_gid)))
    assert who["home"] == user.pw_dir and who["user"] == user.pw_name
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    stacks = Folded(folded.stdout)
    hot = stacks.under("py_hot")
    assert hot.total() > 0, folded.stdout[:2000]
    rooted = hot.total(lambda frames: any(frame.startswith("<module> (") for frame in frames))
    # the agent and perf-jit root >= 99.4% here; a few samples in a trampoline's own
    # first instructions may not unwind, which a correct profile allows
    assert rooted / hot.total() >= 0.95, "py_hot stacks that do not reach <module>: %.3f" % (rooted / hot.total())
    assert not any(frame.startswith("[_mixedstack_agent") for frames in stacks.stacks for frame in frames)


def test_record_under_sudo_suggests_user(perf_ok, tmp_path):
    account()
    env = dict(os.environ, SUDO_USER=VICTIM)
    recorded = mixedstack("record", "-o", str(tmp_path / "perf.data"), "--", "true", env=env)
    assert recorded.returncode == 0, recorded.stderr
    assert "--user %s" % VICTIM in recorded.stderr


def test_record_user_errors_are_one_line(tmp_path):
    unknown = mixedstack("record", "--user", "no-such-user-here", "-o", str(tmp_path / "p.data"), "--", "true")
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and "no user no-such-user-here" in unknown.stderr
    with_pid = mixedstack("record", "--user", "root", "--pid", str(os.getpid()))
    assert with_pid.returncode == 2 and "--user goes with a COMMAND" in with_pid.stderr


def test_without_namespaces_maps_are_lent_at_free_names_only(monkeypatch, tmp_path, planted):
    from mixedstack.perf import tmpview

    account()
    monkeypatch.setattr(tmpview, "_namespaces", False)  # as on a kernel that refuses them
    ours = tmp_path / "maps"
    ours.mkdir()
    free_pid, taken_pid = 4194301, 4194302  # above any pid_max default: no live process has them
    (ours / ("perf-%d.map" % free_pid)).write_text("1000 10 py::ours\n")
    (ours / ("perf-%d.map" % taken_pid)).write_text("1000 10 py::ours\n")
    planted += ["/tmp/perf-%d.map" % free_pid, "/tmp/perf-%d.map" % taken_pid]
    as_other_user("ln", "-s", str(tmp_path / "victim"), planted[1])
    warnings = []
    with tmpview.perf_view(str(ours), warn=warnings.append) as view:
        assert view.preexec is None
        lent = os.lstat(planted[0])
        assert stat.S_ISREG(lent.st_mode) and lent.st_uid == os.getuid()
        assert stat.S_IMODE(lent.st_mode) == 0o600
        assert Path(planted[0]).read_text() == "1000 10 py::ours\n"
        assert os.path.islink(planted[1]) and not (tmp_path / "victim").exists()
    assert not os.path.lexists(planted[0]), "a lent name was not taken back"
    assert len(warnings) == 1 and planted[1] in warnings[0]
