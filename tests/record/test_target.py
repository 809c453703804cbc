"""target.py against the real interpreters of this machine, found rather than named.

Interpreters come from `pyenv root`/versions/*/bin/python3.X, then from PATH; each
test skips when what it needs is missing. The frame-pointer detector is checked on
a small C library built twice with gcc.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from mixedstack.record import target
from mixedstack.record.target import Interpreter
from mixedstack.record.target import TargetError
from mixedstack.record.target import find_interpreter
from mixedstack.record.target import has_frame_pointers
from mixedstack.record.target import perf_mode

MINORS = range(8, 14)   # 3.8 .. 3.13


def _is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _pyenv_root():
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    done = subprocess.run([pyenv, "root"], stdout=subprocess.PIPE, universal_newlines=True)
    root = done.stdout.strip()
    return root if done.returncode == 0 and os.path.isdir(root) else None


def _discover():
    """{minor: (path, expected version prefix)} for the CPython 3.x found here."""
    found = {}
    root = _pyenv_root()
    if root:
        for path in sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3.*"))):
            match = re.fullmatch(r"python3\.(\d+)", os.path.basename(path))
            version_dir = os.path.basename(os.path.dirname(os.path.dirname(path)))
            if match and re.fullmatch(r"3\.\d+\.\d+", version_dir) and _is_elf(path):
                found[int(match.group(1))] = (path, tuple(map(int, version_dir.split("."))))
    for minor in MINORS:   # PATH, skipping shims: they may not resolve in this env
        path = shutil.which("python3.%d" % minor)
        if minor not in found and path and _is_elf(os.path.realpath(path)):
            found[minor] = (path, (3, minor))
    return found


PYTHONS = _discover()


def python(minor):
    if minor not in PYTHONS:
        pytest.skip("no CPython 3.%d on this machine (pyenv or PATH)" % minor)
    return PYTHONS[minor][0]


def env_with(*paths):
    """os.environ with the directories of `paths` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(p) for p in paths] + [env.get("PATH", "")])
    return env


def script(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


# --- each interpreter ---------------------------------------------------------------

@pytest.mark.parametrize("minor", MINORS, ids=["3.%d" % m for m in MINORS])
def test_interpreter(minor):
    path, expected = python(minor), PYTHONS[minor][1]
    interp = find_interpreter([path])
    assert isinstance(interp, Interpreter)
    assert interp.version[:len(expected)] == expected
    assert interp.executable == os.path.realpath(path)
    assert interp.libpython is None or os.path.isfile(interp.libpython)
    # Cross-check with the build flags: the pyenv builds here have no frame pointers.
    flags = subprocess.run([path, "-c", "import sysconfig as s; print(s.get_config_var('CFLAGS'))"],
                           stdout=subprocess.PIPE, universal_newlines=True).stdout
    assert "-fno-omit-frame-pointer" not in flags, "this test expects builds without frame pointers"
    assert interp.frame_pointers is False
    assert interp.perf_trampoline is (minor >= 12)
    assert interp.perf_jit is (minor >= 13)
    assert "CPython 3.%d." % minor in interp.describe()

    assert perf_mode(interp).name == ("perf-jit" if minor >= 13 else "agent")
    mode = perf_mode(interp, agent="never")  # CPython's own support only
    if minor >= 13:
        assert (mode.name, mode.call_graph, mode.needs_inject) == ("perf-jit", "dwarf", True)
        assert mode.env == {"PYTHON_PERF_JIT_SUPPORT": "1"}
    else:
        assert (mode.name, mode.call_graph, mode.env, mode.needs_inject) == ("native", "dwarf", {}, False)
        assert "CPython 3.%d " % minor in mode.reason
        assert "Python frames will be missing" in mode.reason


# --- how the command names the interpreter --------------------------------------------

def test_python_dash_m_through_path():
    py = python(13)
    interp = find_interpreter([os.path.basename(py), "-m", "json.tool"], env=env_with(py))
    assert interp.version[:2] == (3, 13)
    assert interp.executable == os.path.realpath(py)


def test_env_shebang(tmp_path):
    py = python(12)
    tool = script(tmp_path, "tool", "#!/usr/bin/env python3.12\nprint('hi')\n")
    interp = find_interpreter([tool, "--flag"], env=env_with(py))
    assert interp.executable == os.path.realpath(py)


def test_env_split_shebang(tmp_path):
    py = python(13)
    tool = script(tmp_path, "tool", "#!/usr/bin/env -S python3.13 -X dev\npass\n")
    assert find_interpreter([tool], env=env_with(py)).version[:2] == (3, 13)


def test_absolute_shebang_with_argument(tmp_path):
    py = python(11)
    tool = script(tmp_path, "tool", "#!%s -u\npass\n" % py)
    assert find_interpreter([tool]).executable == os.path.realpath(py)


def test_relative_script_found_on_path(tmp_path):
    py = python(10)
    script(tmp_path, "mytool", "#!%s\npass\n" % py)
    env = env_with(str(tmp_path / "mytool"))
    assert find_interpreter(["mytool"], env=env).version[:2] == (3, 10)


def test_venv_console_script(tmp_path):
    py = python(12)
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", "--without-pip", str(venv)], check=True)
    tool = script(tmp_path, "console-tool",
                  "#!%s\nimport sys\nfrom json.tool import main\nsys.exit(main())\n"
                  % (venv / "bin" / "python"))
    interp = find_interpreter([tool])
    assert interp.executable == os.path.realpath(py)   # the venv's python is a symlink


def test_pyenv_shim_resolves_to_the_real_binary():
    root = _pyenv_root()
    py = python(13)
    shim = os.path.join(root or "", "shims", "python3")
    if not root or not os.path.isfile(shim) or _is_elf(shim):
        pytest.skip("no pyenv python3 shim")
    version = os.path.basename(os.path.dirname(os.path.dirname(py)))
    env = dict(os.environ, PYENV_VERSION=version)
    interp = find_interpreter([shim, "-c", "pass"], env=env)
    assert interp.executable == os.path.realpath(py)
    assert interp.version[:2] == (3, 13)


def test_pyenv_shim_without_that_version_says_what_to_do():
    root = _pyenv_root()
    python(13)
    shim = os.path.join(root or "", "shims", "python3.13")
    if not root or not os.path.isfile(shim):
        pytest.skip("no pyenv python3.13 shim")
    env = dict(os.environ, PYENV_VERSION="system")
    if shutil.which("python3.13", path=os.defpath + ":/usr/local/bin"):
        pytest.skip("a system python3.13 exists, so the shim resolves")
    with pytest.raises(TargetError, match="PYENV_VERSION") as error:
        find_interpreter([shim], env=env)
    assert "\n" not in str(error.value)


def test_wrappers_are_looked_through():
    py = python(13)
    interp = find_interpreter(["env", "FOO=1", "nice", "-n", "5", py, "-c", "pass"])
    assert interp.version[:2] == (3, 13)


def test_not_python():
    if not shutil.which("ls"):
        pytest.skip("no ls")
    assert find_interpreter(["ls", "-l"]) is None
    assert find_interpreter(["sh", "-c", "python3 -c pass"]) is None
    assert perf_mode(None).name == "native"
    assert "not a CPython interpreter" in perf_mode(None).reason


def test_shell_script_is_not_python(tmp_path):
    tool = script(tmp_path, "tool", "#!/bin/sh\nexec python3 \"$@\"\n")
    assert find_interpreter([tool]) is None


def test_missing_command():
    with pytest.raises(TargetError) as error:
        find_interpreter(["no-such-command-xyz", "arg"])
    assert str(error.value) == ("target command not found: no-such-command-xyz (not a file "
                                "and not on PATH); check the spelling or give a full path")


def test_missing_shebang_interpreter(tmp_path):
    tool = script(tmp_path, "tool", "#!/nonexistent/python3\npass\n")
    with pytest.raises(TargetError, match="does not exist"):
        find_interpreter([tool])


def test_probe_failure_and_timeout(tmp_path, monkeypatch):
    broken = script(tmp_path, "python3", "#!/bin/sh\necho boom >&2\nexit 3\n")
    with pytest.raises(TargetError, match="could not probe .*boom"):
        find_interpreter([broken])
    slow = script(tmp_path, "python3.99", "#!/bin/sh\nexec sleep 5\n")
    monkeypatch.setattr(target, "_PROBE_TIMEOUT", 0.3)
    with pytest.raises(TargetError, match="timed out"):
        find_interpreter([slow])


# --- perf_mode rules on made-up interpreters ------------------------------------------

def fake(version, fp, trampoline=True):
    return Interpreter("/x/python", version, None, fp, trampoline and version >= (3, 12),
                       trampoline and version >= (3, 13))


@pytest.mark.parametrize("version,fp,name,call_graph", [
    ((3, 13, 0), False, "perf-jit", "dwarf"),
    ((3, 13, 0), True, "perf-jit", "dwarf"),  # its libraries may lack frame pointers
    ((3, 15, 2), True, "perf-jit", "dwarf"),
    ((3, 12, 1), True, "perf-map", "fp"),
    ((3, 12, 1), False, "native", "dwarf"),
    ((3, 11, 7), True, "native", "dwarf"),
])
def test_perf_mode_rules(version, fp, name, call_graph):
    mode = perf_mode(fake(version, fp), agent="never")
    assert (mode.name, mode.call_graph) == (name, call_graph)
    assert mode.env == {"perf-jit": {"PYTHON_PERF_JIT_SUPPORT": "1"},
                        "perf-map": {"PYTHONPERFSUPPORT": "1"}, "native": {}}[name]
    assert mode.needs_inject is (name == "perf-jit")


@pytest.mark.parametrize("version,fp,asked,name,note", [
    ((3, 13, 0), False, "fp", "perf-map", "stop early"),  # works only as far as fp reach
    ((3, 13, 0), True, "dwarf", "perf-jit", "DWARF"),
    ((3, 12, 1), True, "dwarf", "native", "Python frames will be missing"),
    ((3, 11, 7), False, "fp", "native", "Python frames will be missing"),
])
def test_call_graph_asked_for_overrides_the_choice(version, fp, asked, name, note):
    mode = perf_mode(fake(version, fp), asked, agent="never")
    assert (mode.name, mode.call_graph) == (name, asked)
    assert note in mode.reason


def test_perf_mode_reason_for_3_11():
    assert perf_mode(fake((3, 11, 7), False), agent="never").reason == (
        "CPython 3.11 has no perf trampoline (needs 3.12+ with frame pointers, or 3.13+): "
        "Python frames will be missing; C and kernel frames are recorded")


def test_perf_mode_without_trampoline_support():
    mode = perf_mode(fake((3, 13, 0), False, trampoline=False), agent="never")
    assert mode.name == "native" and "without perf trampoline support" in mode.reason


# --- the frame-pointer detector --------------------------------------------------------

N_FUNCTIONS = 25


def _c_source():
    """A chain f0 -> f1 -> ... -> leaf of non-trivial, non-inlined functions."""
    lines = ["#include <stddef.h>", "volatile long sink;",
             "__attribute__((noinline)) long leaf(long *v, size_t k) {",
             "    long s = 0; for (size_t j = 0; j < k; j++) s += v[j] * (long)j; return s; }"]
    for i in reversed(range(N_FUNCTIONS)):
        callee = "f%d" % (i + 1) if i + 1 < N_FUNCTIONS else "leaf"
        lines.append("""__attribute__((noinline)) long f%d(long *v, size_t k) {
    long buf[16];
    for (size_t j = 0; j < 16; j++) buf[j] = v[j %% k] ^ (long)(j * %d);
    long r = %s(buf, 16);
    sink = r;
    return r + %s(v, k) * %d;
}""" % (i, i + 3, callee, callee, i + 1))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_libraries(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    directory = tmp_path_factory.mktemp("fp")
    source = directory / "chain.c"
    source.write_text(_c_source())
    built = {}
    for fp, flag in ((True, "-fno-omit-frame-pointer"), (False, "-fomit-frame-pointer")):
        out = str(directory / ("fp.so" if fp else "nofp.so"))
        subprocess.run([gcc, "-O2", "-fPIC", "-shared", flag, "-o", out, str(source)], check=True)
        built[fp] = out
    return built


def test_frame_pointer_detector(c_libraries):
    assert has_frame_pointers(c_libraries[True]) is True
    assert has_frame_pointers(c_libraries[False]) is False


def test_frame_pointer_detector_with_named_symbols(c_libraries):
    names = ["f%d" % i for i in range(N_FUNCTIONS)]
    assert has_frame_pointers(c_libraries[True], names) is True
    assert has_frame_pointers(c_libraries[False], names) is False
    assert has_frame_pointers(c_libraries[True], ["no_such_function"]) is False


def test_frame_pointer_detector_on_a_real_interpreter():
    interp = find_interpreter([python(13)])
    assert has_frame_pointers(interp.libpython or interp.executable) is False


def test_frame_pointer_detector_rejects_non_elf(tmp_path):
    text = tmp_path / "not-elf"
    text.write_text("hello\n")
    with pytest.raises(TargetError, match="cannot read the ELF file"):
        has_frame_pointers(str(text))


def test_prologue_patterns():
    # x86-64: GCC may schedule an instruction between push %rbp and mov %rsp,%rbp.
    assert target._x86_64_sets_fp(bytes.fromhex("f30f1efa554889e54157"))
    assert target._x86_64_sets_fp(bytes.fromhex("5531c94889e54155"))
    assert not target._x86_64_sets_fp(bytes.fromhex("415741564155415455534883ec18"))
    # aarch64: [bti c] stp x29, x30, [sp, #-32]!; mov x29, sp   (little-endian words)
    assert target._aarch64_sets_fp(bytes.fromhex("5f2403d5fd7bbea9fd030091"))
    # sub sp, sp, #64; stp x29, x30, [sp, #48]; add x29, sp, #48
    assert target._aarch64_sets_fp(bytes.fromhex("ff0301d1fd7b03a9fdc30091"))
    # stp x19, x20, [sp, #-16]!; ret
    assert not target._aarch64_sets_fp(bytes.fromhex("f353bfa9c0035fd6"))


def test_frame_pointer_cache(c_libraries, monkeypatch):
    has_frame_pointers(c_libraries[True])
    monkeypatch.setattr(target, "_read_verdict", lambda *a: pytest.fail("not cached"))
    assert has_frame_pointers(c_libraries[True]) is True


@pytest.mark.parametrize("version,fp,agent,name", [
    ((3, 8, 18), False, "auto", "agent"),
    ((3, 12, 1), False, "auto", "agent"),
    ((3, 12, 1), True, "auto", "perf-map"),   # CPython's own support wins where it works
    ((3, 13, 0), False, "auto", "perf-jit"),
    ((3, 13, 0), False, "always", "agent"),
    ((3, 11, 7), False, "never", "native"),
    ((3, 7, 16), False, "auto", "native"),    # older than the agent supports
])
def test_agent_where_cpython_support_is_missing(version, fp, agent, name):
    mode = perf_mode(fake(version, fp), agent=agent)
    assert mode.name == name
    if name == "agent":
        assert (mode.call_graph, mode.needs_inject) == ("dwarf", True)
