"""The command line without perf: fold on text, and every bad input's one-line error."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest
from pathlib import Path

from conftest import one_line_error
from conftest import TESTS, mixedstack
from folding import read_text, split_lines

ODD = str(TESTS / "data" / "odd")
TEXT = ("app 10/10 [000] 1.0: 1000 cpu-clock:\n"
        "\t400100 leaf+0x10 (/usr/bin/app)\n"
        "\t400000 main+0x20 (/usr/bin/app)\n\n")


def test_fold_text_file_and_stdin_give_the_same_bytes(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(TEXT)
    from_file = mixedstack("fold", "--pid", str(path))
    from_stdin = subprocess.run([sys.executable, "-m", "mixedstack", "fold", "--pid", "-"],
                                input=TEXT, stdout=subprocess.PIPE, text=True)
    assert from_file.stdout == from_stdin.stdout == "app-10;main;leaf 1000\n"


@pytest.mark.parametrize("name", sorted(n[:-4] for n in os.listdir(ODD) if n.endswith(".txt")))
def test_fold_keeps_every_byte_of_odd_input(name):
    # latin-1 bytes and CRLF line ends come out of the CLI exactly as stackcollapse-perf.pl writes them
    done = subprocess.run([sys.executable, "-m", "mixedstack", "fold", os.path.join(ODD, name + ".txt")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    expected = split_lines(read_text(os.path.join(ODD, "expected", name + "-plain.txt")))
    if not expected:  # nothing to fold: the CLI says so instead of printing nothing
        assert done.returncode == 1 and b"no " in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert sorted(split_lines(done.stdout.decode("latin-1"))) == sorted(expected)


def test_output_file_and_summary(tmp_path):
    source, out = tmp_path / "in.txt", tmp_path / "out.folded"
    source.write_text(TEXT)
    done = mixedstack("fold", str(source), "-o", str(out))
    assert done.returncode == 0 and done.stdout == ""
    assert out.read_text() == "app;main;leaf 1000\n"
    assert "1 samples -> 1 stacks" in done.stderr and str(out) in done.stderr


def test_missing_input(tmp_path):
    one_line_error(mixedstack("fold", str(tmp_path / "nope.data")), 1, "no such file", "nope.data")


def test_missing_default_input_says_how_to_record(tmp_path):
    one_line_error(mixedstack("fold", cwd=tmp_path), 1, "perf.data", "mixedstack record")


def test_empty_input(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    one_line_error(mixedstack("fold", str(tmp_path / "empty.txt")), 1, "empty")


def test_text_that_is_not_perf_script(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\nthis is not perf output\n\n")
    one_line_error(mixedstack("fold", str(tmp_path / "notes.txt")), 1, "not `perf script` output", "hello")


def test_a_folder_is_not_an_input(tmp_path):
    one_line_error(mixedstack("fold", str(tmp_path)), 1, "folder")


def test_samples_without_frames_fold_like_stackcollapse_with_a_warning(tmp_path):
    (tmp_path / "flat.txt").write_text("swapper     0 \n\tffffffff821f4dab pv_native_safe_halt\n\n")
    done = mixedstack("fold", str(tmp_path / "flat.txt"))
    assert done.returncode == 0 and done.stdout == "swapper 1\n"
    assert "warning: no frame lines" in done.stderr and "dso" in done.stderr


def test_a_recording_without_call_graphs(perf_ok, tmp_path):
    data = tmp_path / "nog.data"
    subprocess.run(["perf", "record", "-q", "--no-bpf-event", "-o", str(data), "--", "true"], check=True)
    one_line_error(mixedstack("fold", str(data)), 1, "without call graphs", "mixedstack record")


def test_fold_never_writes_over_a_recording(tmp_path):
    (tmp_path / "in.txt").write_text(TEXT)
    recording = tmp_path / "x.data"
    recording.write_bytes(b"PERFILE2 recorded")
    one_line_error(mixedstack("fold", str(tmp_path / "in.txt"), "-o", str(recording)), 1, "perf recording")
    assert recording.read_bytes() == b"PERFILE2 recorded"


@pytest.mark.parametrize("output, words", [
    ("{tmp}", ("is a folder",)),
    ("{tmp}/missing/x.data", ("does not exist",)),
    ("/proc/x.data", ("cannot record",)),
])
def test_record_to_an_unusable_place(tmp_path, output, words):
    done = mixedstack("record", "-f", "-o", output.format(tmp=tmp_path), "--", "true")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("mixedstack: error: ")
    for word in words:
        assert word in done.stderr


def test_unwritable_output_keeps_nothing_half_written(tmp_path):
    (tmp_path / "in.txt").write_text(TEXT)
    target = tmp_path / "no-such-dir" / "out.folded"
    one_line_error(mixedstack("fold", str(tmp_path / "in.txt"), "-o", str(target)), 1, "cannot write")
    assert not target.parent.exists()


def test_corrupt_recording(tmp_path):
    (tmp_path / "bad.data").write_bytes(b"PERFILE2" + b"\0" * 200)
    done = mixedstack("fold", str(tmp_path / "bad.data"))
    if "perf not found" in done.stderr:
        pytest.skip("perf is not installed")
    one_line_error(done, 1, "perf script failed", "bad.data")


def test_record_needs_a_command():
    done = mixedstack("record")
    assert done.returncode == 2 and "either a COMMAND" in done.stderr


def test_an_unknown_record_option_is_a_usage_error_naming_it(perf_ok, tmp_path):
    done = mixedstack("record", "-o", str(tmp_path / "x.data"), "--syscals", "--", "true")
    assert done.returncode == 2 and "No such option '--syscals'" in done.stderr, done.stderr
    assert os.listdir(tmp_path) == []
    # the command's own options still pass through, with or without --
    script = "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))"
    for separator in ([], ["--"]):
        out = tmp_path / "argv"
        done = mixedstack("record", "-f", "-o", str(tmp_path / "x.data"), *separator,
                          sys.executable, "-c", script, str(out), "-X", "--syscals")
        assert done.returncode == 0, done.stderr
        assert out.read_text() == "-X --syscals"


def test_record_of_a_missing_command_leaves_nothing(tmp_path):
    done = mixedstack("record", "-o", str(tmp_path / "x.data"), "--", "no-such-program-here")
    one_line_error(done, 1, "not found", "no-such-program-here")
    assert os.listdir(tmp_path) == []


def test_event_filter_through_the_cli(tmp_path):
    two = TEXT + TEXT.replace("cpu-clock", "page-faults").replace("leaf", "fault")
    (tmp_path / "two.txt").write_text(two)
    done = mixedstack("fold", "--event-filter", "page-faults", str(tmp_path / "two.txt"))
    assert done.stdout == "app;main;fault 1000\n"
    default = mixedstack("fold", str(tmp_path / "two.txt"))
    assert default.stdout == "app;main;leaf 1000\n"
    assert "Filtering for events of type: page-faults" in default.stderr


def test_doctor_says_what_record_will_do(perf_ok):
    from conftest import interpreter

    done = mixedstack("doctor", "--", interpreter((3, 13)), "app.py")
    assert done.returncode == 0, done.stdout
    assert "ok    perf record:" in done.stdout
    assert "record will use: mode perf-jit" in done.stdout


def test_doctor_without_perf_fails_with_the_fix(tmp_path):
    done = mixedstack("doctor", env=dict(os.environ, PATH=str(tmp_path)))
    assert done.returncode == 1
    assert "fail  perf: not found on PATH  -> install it" in done.stdout


def test_truncated_recording(tmp_path):
    data = tmp_path / "cut.data"
    header = b"PERFILE2" + (104).to_bytes(8, "little") + (136).to_bytes(8, "little")
    header += (168).to_bytes(8, "little") + (136).to_bytes(8, "little")  # attrs
    header += (304).to_bytes(8, "little") + (10 ** 6).to_bytes(8, "little")  # data: 1 MB promised
    data.write_bytes(header + b"\0" * 300)
    one_line_error(mixedstack("fold", str(data)), 1, "truncated", "record it again")


def test_without_perf_record_and_fold_say_how_to_install_it(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    (tmp_path / "x.data").write_bytes(b"PERFILE2" + b"\0" * 200)
    for args in (["fold", str(tmp_path / "x.data")],
                 ["record", "-o", str(tmp_path / "r.data"), "--", "/bin/true"]):
        done = subprocess.run([sys.executable, "-m", "mixedstack"] + args, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        one_line_error(done, 1, "perf not found", "apt install linux-perf")
    assert not (tmp_path / "r.data.d").exists()


def test_ctrl_c_during_fold_writes_nothing(tmp_path):
    import signal
    import time

    out = tmp_path / "out.folded"
    process = subprocess.Popen([sys.executable, "-m", "mixedstack", "fold", "-", "-o", str(out)],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdin.write(TEXT * 100)
    process.stdin.flush()
    time.sleep(1.5)  # fold is now waiting for more input
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted: nothing was written" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.folded.partial").exists()


def test_disk_full(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        many = "".join("app 1/1 1.0: 1 cpu-clock:\n\t1 f%05d (/usr/bin/app)\n\n" % i for i in range(20000))
        (tmp_path / "many.txt").write_text(many)
        done = mixedstack("fold", str(tmp_path / "many.txt"), "-o", str(full / "out.folded"))
        one_line_error(done, 1, "cannot write", "No space left")
        assert os.listdir(full) == []
    finally:
        subprocess.run(["umount", str(full)])


def test_an_unprivileged_user_is_told_what_perf_allows(perf_ok):
    paranoid = int(open("/proc/sys/kernel/perf_event_paranoid").read())
    if os.geteuid() != 0 or paranoid < 2 or not shutil.which("setpriv"):
        pytest.skip("needs root (to become nobody), setpriv and perf_event_paranoid >= 2")
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="mixedstack-nobody-"))  # pytest's tmp is private to root
    os.chown(tmp_path, 65534, 65534)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "mixedstack"]
    doctor = subprocess.run(as_nobody + ["doctor"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    permissions = [line for line in doctor.stdout.splitlines() if "permissions:" in line]
    expected = "warn" if paranoid == 2 else "fail"
    assert permissions and permissions[0].startswith(expected), doctor.stdout
    done = subprocess.run(as_nobody + ["record", "-o", str(tmp_path / "u.data"), "--", "/bin/true"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "Traceback" not in done.stderr
    if paranoid == 2:  # own processes, user space: recording works
        assert done.returncode == 0, done.stderr
    else:
        one_line_error(done, 1, "perf")
    shutil.rmtree(tmp_path)


def test_binary_input_is_refused_in_one_line(tmp_path):
    """Random bytes are no profile: the lenient perf script parser must not read them."""
    junk = tmp_path / "junk.bin"
    junk.write_bytes(random.Random(7).randbytes(1 << 20))
    for args, stdin in (([str(junk)], None), (["-"], junk.read_bytes())):
        done = subprocess.run([sys.executable, "-m", "mixedstack", "fold", *args], input=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert done.returncode == 1 and done.stdout == b""
        assert done.stderr.count(b"\n") == 1 and b"is binary" in done.stderr


def _pid_without_program():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                os.readlink("/proc/%s/exe" % entry)
            except FileNotFoundError:
                return int(entry)  # a kernel thread
            except OSError:
                continue
    return None


def test_record_pid_says_what_is_wrong_with_the_pid(tmp_path):
    free = max(int(entry) for entry in os.listdir("/proc") if entry.isdigit()) + 100000
    gone = mixedstack("record", "--pid", str(free), "-o", str(tmp_path / "a.data"))
    assert gone.returncode == 1 and "no process %d" % free in gone.stderr
    kernel = _pid_without_program()
    if kernel is None:
        pytest.skip("no kernel thread visible here")
    thread = mixedstack("record", "--pid", str(kernel), "-o", str(tmp_path / "b.data"))
    assert thread.returncode == 1 and "runs no program file" in thread.stderr
    assert thread.stderr.count("\n") == 1
