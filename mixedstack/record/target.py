"""Find the CPython interpreter a command will run, and pick the perf mode for it.

`find_interpreter(command)` follows what exec would do: PATH lookup, pyenv shims,
shebang lines (`#!/usr/bin/env -S python3 -X dev`), venv console scripts, and the
plain wrappers env/nice/nohup/time. The interpreter found is then probed once
(`python -E -s -S -c ...`) and its machine code read with pyelftools to see whether
it was built with frame pointers, which decides how perf can unwind through it.

Only CPython counts: PyPy and anything else give None, i.e. "native" mode.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from mixedstack.errors import MixedstackError

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection


class TargetError(MixedstackError):
    """One-line message: what went wrong, why, and what to do."""


@dataclass
class Interpreter:
    executable: str            # real path of the ELF binary (shims and symlinks resolved)
    version: Tuple[int, ...]   # (3, 13, 0)
    libpython: Optional[str]   # the libpython .so it runs on, None when statically linked
    frame_pointers: bool       # its eval loop keeps frame pointers (read from the binary)
    perf_trampoline: bool      # 3.12+ built with perf trampoline support (-X perf)
    perf_jit: bool             # 3.13+ with the trampoline: -X perf_jit works

    def describe(self) -> str:
        return "CPython %s (%s, %s)" % (
            ".".join(map(str, self.version)), self.executable,
            "frame pointers" if self.frame_pointers else "no frame pointers")


@dataclass
class Mode:
    name: str                  # "perf-jit" | "perf-map" | "native"
    env: Dict[str, str]        # set in the target's environment
    call_graph: str            # perf record --call-graph: "dwarf" | "fp"
    needs_inject: bool         # perf inject --jit must run after recording
    reason: str                # one sentence for the user


def _perf_map(reason: str) -> Mode:
    return Mode("perf-map", {"PYTHONPERFSUPPORT": "1"}, "fp", False, reason)


def _perf_jit(reason: str) -> Mode:
    return Mode("perf-jit", {"PYTHON_PERF_JIT_SUPPORT": "1"}, "dwarf", True, reason)


def _agent(reason: str) -> Mode:
    # env (PYTHONPATH to the agent built for this interpreter) is filled in by record
    return Mode("agent", {}, "dwarf", True, reason)


def native(call_graph: str, reason: str) -> Mode:
    """No trampoline: Python frames show as the interpreter's C frames."""
    return Mode("native", {}, call_graph, False, reason)


AGENT_VERSIONS = ((3, 8), (3, 13))  # the agent builds for these, inclusive


def perf_mode(interp: Optional[Interpreter], call_graph: str = "auto", agent: str = "auto") -> Mode:
    """The cheapest mode that still shows Python frames for `interp`, or the best
    one for the unwinder that `call_graph` ("fp" | "dwarf") asks for. `agent`
    ("auto" | "always" | "never"): use our trampoline agent where CPython's own
    support is missing, always (DWARF), or never."""
    agent_fits = (interp is not None and call_graph != "fp"
                  and AGENT_VERSIONS[0] <= interp.version[:2] <= AGENT_VERSIONS[1])
    if agent == "always" and agent_fits:
        return _agent("the mixedstack agent was asked for: its trampolines, DWARF unwinding "
                      "and perf inject --jit")
    mode = _own_perf_mode(interp, call_graph)
    if agent == "auto" and agent_fits and mode.name == "native":
        return _agent("CPython %d.%d has no perf support usable here: using the mixedstack agent "
                      "(its trampolines, DWARF unwinding, perf inject --jit); --agent never to turn "
                      "it off" % interp.version[:2])
    return mode


def _own_perf_mode(interp: Optional[Interpreter], call_graph: str) -> Mode:
    """The mode with CPython's own perf support only."""
    if interp is None:
        return native("fp" if call_graph == "fp" else "dwarf",
                       "not a CPython interpreter: only C and kernel frames are recorded")
    version = ".".join(map(str, interp.version[:2]))
    missing = "Python frames will be missing; C and kernel frames are recorded"
    if call_graph == "fp":
        if not interp.perf_trampoline:
            return native("fp", "frame-pointer unwinding was asked for; CPython %s has no "
                           "perf trampoline: %s" % (version, missing))
        return _perf_map("frame-pointer unwinding was asked for" + (
            "" if interp.frame_pointers else
            "; CPython %s has no frame pointers, so stacks will stop early" % version))
    if call_graph == "dwarf":
        if interp.perf_jit:
            return _perf_jit("DWARF unwinding was asked for: -X perf_jit and perf inject --jit")
        return native("dwarf", "DWARF unwinding was asked for; CPython %s has no -X perf_jit "
                       "(3.13+): %s" % (version, missing))
    # perf_jit writes DWARF unwind info for its trampolines, so no frame pointers needed;
    # and DWARF also walks the libraries built without them. An interpreter with frame
    # pointers does not make its libraries have them (Debian sid's 3.15: libcrypto and
    # libz have none, and 37% of -g stacks through them were cut), and which libraries a
    # program loads is only known once it runs: on 3.13+ DWARF is the default.
    if interp.perf_jit:
        return _perf_jit("CPython %s: -X perf_jit with DWARF unwinding and perf inject --jit%s" % (
            version, "" if not interp.frame_pointers else
            " (it has frame pointers, its libraries may not; --call-graph fp for the cheaper mode)"))
    # 3.12: the trampoline's perf map only helps if perf can walk through the
    # trampolines with frame pointers; then fp unwinding is far cheaper than copying stacks.
    if interp.perf_trampoline and interp.frame_pointers:
        return _perf_map("CPython %s has frame pointers: perf trampoline with frame-pointer "
                         "unwinding" % version)
    if interp.version < (3, 12):
        why = "has no perf trampoline (needs 3.12+ with frame pointers, or 3.13+)"
    elif interp.perf_trampoline:  # 3.12 without frame pointers
        why = "has no frame pointers (its perf trampoline needs them; 3.13+ can use perf_jit)"
    else:
        why = "was built without perf trampoline support"
    return native("dwarf", "CPython %s %s: %s" % (version, why, missing))


# --------------------------------------------------------------------------------------
# Resolving the command

_PYTHON_NAME = re.compile(r"python(\d+(\.\d+)?)?[a-z]*")   # python3.13t, python3.6m, pythonw
_MAX_DEPTH = 8            # shebangs pointing at shebangs; the kernel stops at 4 or 5
_PROBE_TIMEOUT = 10.0

# Wrappers that exec the rest of their arguments, with the options that take a value.
_WRAPPERS = {
    "env": {"-u", "--unset", "-C", "--chdir"},
    "nice": {"-n", "--adjustment"},
    "nohup": set(),
    "time": {"-f", "--format", "-o", "--output"},
}


def find_interpreter(command: List[str],
                     env: Optional[Mapping[str, str]] = None) -> Optional[Interpreter]:
    """The CPython interpreter `command` will run, or None when it runs something else.

    Raises TargetError when the command cannot be found or the interpreter not probed.
    """
    env = dict(os.environ if env is None else env)
    command, env = _unwrap(list(command), env)
    if not command:
        raise TargetError("no target command given; put it after `--`, e.g. "
                          "`mixedstack record -- python3 app.py`")
    return _resolve(_which(command[0], env), env, 0)


def find_interpreter_at(executable: str, enter: List[str], root: str) -> Optional[Interpreter]:
    """The CPython at `executable` of another mount namespace (a container): probed in
    there (`enter`: the command prefix that runs it inside), its files read from here
    through `root`. Its paths stay as the container names them. Never run on the host:
    it is built for the container's libraries."""
    try:
        with open(root + executable, "rb") as f:
            head = f.read(4)
    except OSError as error:
        raise TargetError("cannot read %s in the container (%s): run mixedstack as root" % (executable, error.strerror))
    if head != b"\x7fELF" or not (_PYTHON_NAME.fullmatch(os.path.basename(executable))
                                  or _calls_python_main(root + executable)):
        return None
    return _interpreter(_probe(enter + [executable], {"PATH": os.defpath}, executable), root)


def _unwrap(command: List[str], env: Dict[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """Strip `env VAR=1 nice -n 5 ...` style wrappers, applying env's changes."""
    while command and os.path.basename(command[0]) in _WRAPPERS:
        wrapper, args = os.path.basename(command[0]), command[1:]
        takes_value = _WRAPPERS[wrapper]
        while args:
            arg = args[0]
            if wrapper == "env" and arg in ("-i", "--ignore-environment", "-"):
                env = {}
            elif wrapper == "env" and arg in ("-S", "--split-string") and len(args) > 1:
                args = shlex.split(args[1]) + args[2:]
                continue
            elif wrapper == "env" and arg.startswith("-S"):
                args = shlex.split(arg[2:]) + args[1:]
                continue
            elif wrapper == "env" and "=" in arg and not arg.startswith("-"):
                name, _, value = arg.partition("=")
                env[name] = value
            elif wrapper == "env" and arg in ("-u", "--unset") and len(args) > 1:
                env.pop(args[1], None)
            elif arg == "--":
                args = args[1:]
                break
            elif not arg.startswith("-"):
                break
            if arg in takes_value:
                args = args[1:]
            args = args[1:]
        command = args
    return command, env


def _which(name: str, env: Mapping[str, str]) -> str:
    if "/" in name:
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise TargetError("target command not found: %s (no such file); check the "
                              "spelling or give a full path" % name)
        if not os.access(path, os.X_OK):
            raise TargetError("target command is not executable: %s; chmod +x it or run "
                              "it through its interpreter" % name)
        return path
    path = shutil.which(name, path=env.get("PATH", os.defpath))
    if path is None:
        raise TargetError("target command not found: %s (not a file and not on PATH); "
                          "check the spelling or give a full path" % name)
    return os.path.abspath(path)


def _resolve(path: str, env: Dict[str, str], depth: int) -> Optional[Interpreter]:
    if depth > _MAX_DEPTH:
        raise TargetError("too many nested interpreters (shebangs or shims) behind %s; "
                          "run the final interpreter directly" % path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as error:
        raise TargetError("cannot read target command %s: %s; check its permissions"
                          % (path, error.strerror))
    name = os.path.basename(path)

    if head.startswith(b"\x7fELF"):
        # Running an arbitrary program with `-c <code>` is not safe, so an ELF is only
        # probed when its name says python or it calls CPython's own main().
        if _PYTHON_NAME.fullmatch(name) or _calls_python_main(path):
            return _interpreter(_probe([path], env, path))
        return None

    shim = _pyenv_shim(head)
    if shim is not None:
        return _resolve(_pyenv_which(shim, name, path, env), env, depth + 1)

    # Some other wrapper named like an interpreter (asdf shim, conda wrapper): it
    # passes its arguments on to python, so let it answer the probe itself.
    if _PYTHON_NAME.fullmatch(name):
        return _interpreter(_probe([path], env, path))

    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        parts = line.split(None, 1)
        if not parts:
            return None
        interp, rest = parts[0], parts[1] if len(parts) > 1 else ""
        if os.path.basename(interp) == "env":
            # The kernel passes everything after the interpreter as one argument;
            # splitting it also covers `env -S python3 -X dev`.
            command, env2 = _unwrap(["env"] + shlex.split(rest), dict(env))
            if not command:
                return None
            return _resolve(_which(command[0], env2), env2, depth + 1)
        if not os.path.isfile(interp):
            raise TargetError("the shebang of %s names %s, which does not exist; fix the "
                              "script's first line" % (path, interp))
        return _resolve(os.path.abspath(interp), env, depth + 1)
    return None


def _calls_python_main(path: str) -> bool:
    """Does this ELF define or import Py_BytesMain/Py_Main, as a python binary does?"""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for section in (elf.get_section_by_name(".dynsym"),
                            elf.get_section_by_name(".symtab")):
                if isinstance(section, SymbolTableSection) and (
                        section.get_symbol_by_name("Py_BytesMain")
                        or section.get_symbol_by_name("Py_Main")):
                    return True
    except (ELFError, OSError):
        pass
    return False


_SHIM = re.compile(r'exec "([^"]*pyenv)" exec "\$program"')
_SHIM_ROOT = re.compile(r'export PYENV_ROOT="([^"]*)"')


def _pyenv_shim(head: bytes) -> Optional[Tuple[str, Optional[str]]]:
    """(pyenv executable, PYENV_ROOT) when this file is a pyenv shim."""
    text = head.decode("utf-8", "replace")
    match = _SHIM.search(text)
    if match is None:
        return None
    root = _SHIM_ROOT.search(text)
    return match.group(1), root.group(1) if root else None


def _pyenv_which(shim: Tuple[str, Optional[str]], name: str, path: str,
                 env: Mapping[str, str]) -> str:
    """Ask pyenv what the shim runs (console scripts too, not only python)."""
    pyenv, root = shim
    run_env = dict(env)
    if root:
        run_env.setdefault("PYENV_ROOT", root)
    try:
        done = subprocess.run([pyenv, "which", name], env=run_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=_PROBE_TIMEOUT,
                              universal_newlines=True)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TargetError("cannot ask pyenv what the shim %s runs: %s; give the "
                          "interpreter's full path" % (path, error))
    target = done.stdout.strip()
    if done.returncode != 0 or not os.path.isfile(target):
        lines = done.stderr.strip().splitlines() or ["no output"]
        why = lines[0]
        # pyenv goes on to list the versions that do have the command: worth a mention.
        listed = [i for i, l in enumerate(lines) if "exists in these Python versions" in l]
        versions = []
        for line in lines[listed[0] + 1:] if listed else []:
            if not line.strip():
                break
            versions.append(line.strip())
        if versions:
            why += "; pyenv versions that have it: %s" % ", ".join(versions)
        raise TargetError("the pyenv shim %s runs nothing in this environment (%s); pick a "
                          "version with PYENV_VERSION or `pyenv shell`, or give a full path"
                          % (path, why))
    return target


# --------------------------------------------------------------------------------------
# Probing the interpreter

# Python 2.7 compatible, so an old interpreter is reported as old rather than as an
# error. -E -s -S plus dropping the cwd entry is what -I does on 3.4+: nothing from the
# user's environment or current directory can shadow json or sysconfig.
PROBE_CODE = r"""
import sys
sys.path[:] = [p for p in sys.path if p not in ('', '.')]
import json, os, platform, sysconfig
libpython = None
try:
    for line in open('/proc/self/maps'):
        parts = line.split(None, 5)
        if len(parts) == 6:
            p = parts[5].strip()
            if os.path.basename(p).startswith('libpython'):
                libpython = p
                break
except (IOError, OSError):
    pass
v = sysconfig.get_config_var
sys.stdout.write(json.dumps({
    'executable': os.path.realpath(sys.executable),
    'version': list(sys.version_info[:3]),
    'implementation': platform.python_implementation().lower(),
    'machine': platform.machine(),
    'platform': sys.platform,
    'trampoline': hasattr(sys, 'activate_stack_trampoline'),
    'PY_HAVE_PERF_TRAMPOLINE': v('PY_HAVE_PERF_TRAMPOLINE'),
    'libpython': libpython,
    'LDLIBRARY': v('LDLIBRARY'),
    'LIBDIR': v('LIBDIR'),
    'Py_ENABLE_SHARED': v('Py_ENABLE_SHARED'),
    'CFLAGS': v('CFLAGS'),
    'CONFIG_ARGS': v('CONFIG_ARGS'),
    # what the agent builds with (record/agent): the target's own headers and suffix
    'base_prefix': os.path.realpath(getattr(sys, 'base_prefix', sys.prefix)),
    'include': sysconfig.get_paths().get('include'),
    'platinclude': sysconfig.get_paths().get('platinclude'),
    'ext_suffix': v('EXT_SUFFIX') or '.so',
    'debug': hasattr(sys, 'gettotalrefcount'),
}))
"""


def _probe(argv: List[str], env: Mapping[str, str], shown: str) -> dict:
    try:
        done = subprocess.run(argv + ["-E", "-s", "-S", "-c", PROBE_CODE], env=dict(env),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=_PROBE_TIMEOUT,
                              universal_newlines=True)
    except subprocess.TimeoutExpired:
        raise TargetError("probing the interpreter %s timed out after %ds; check that "
                          "`%s -c pass` runs" % (shown, _PROBE_TIMEOUT, shown))
    except OSError as error:
        raise TargetError("cannot run the interpreter %s: %s; check that `%s -c pass` runs"
                          % (shown, error.strerror, shown))
    try:
        info = json.loads(done.stdout)
        if done.returncode != 0 or not isinstance(info, dict):
            raise ValueError
    except ValueError:
        why = (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
        raise TargetError("could not probe the interpreter %s (%s); check that `%s -c pass` "
                          "runs" % (shown, why, shown))
    return info


def _interpreter(info: dict, root: str = "") -> Optional[Interpreter]:
    """The probe's answer as an Interpreter; its files read through `root` (a container's)."""
    if info.get("implementation") != "cpython":
        return None   # PyPy & co: no CPython frames to find, so "native" mode
    executable = info["executable"]
    version = tuple(info["version"])
    libpython = info.get("libpython") or _needed_libpython(executable, info, root)
    if libpython and not root:  # the probe resolved links in the container already
        libpython = os.path.realpath(libpython)
    fp = _fp_verdict(root + (libpython or executable))
    if fp is None:
        # The machine code could not tell (unknown arch, too few symbols): fall back
        # on how it says it was compiled, the last flag winning as in the compiler.
        flags = re.findall(r"-f(no-)?omit-frame-pointer", info.get("CFLAGS") or "")
        fp = bool(flags) and flags[-1] == "no-"
    has_support = info.get("PY_HAVE_PERF_TRAMPOLINE")
    if has_support is None:   # not in sysconfig: the platforms CPython supports
        has_support = (info.get("platform", "").startswith("linux")
                       and info.get("machine") in ("x86_64", "aarch64"))
    trampoline = bool(info.get("trampoline")) and bool(has_support) and version >= (3, 12)
    return Interpreter(executable=executable, version=version, libpython=libpython,
                       frame_pointers=fp, perf_trampoline=trampoline,
                       perf_jit=trampoline and version >= (3, 13))


def _needed_libpython(executable: str, info: dict, root: str = "") -> Optional[str]:
    """libpython from DT_NEEDED, when /proc/self/maps was not readable in the probe.

    DT_NEEDED, not Py_ENABLE_SHARED: Debian's /usr/bin/python3.11 says shared in
    sysconfig but is linked statically.
    """
    try:
        with open(root + executable, "rb") as f:
            dynamic = ELFFile(f).get_section_by_name(".dynamic")
            needed = [tag.needed for tag in dynamic.iter_tags("DT_NEEDED")] \
                if isinstance(dynamic, DynamicSection) else []
    except (ELFError, OSError):
        return None
    dirs = [d for d in (info.get("LIBDIR"), os.path.join(os.path.dirname(executable), "..", "lib")) if d]
    for soname in needed:
        if soname.startswith("libpython"):
            for directory in dirs:
                if os.path.isfile(root + os.path.join(directory, soname)):
                    return os.path.join(directory, soname)
    return None


# --------------------------------------------------------------------------------------
# Frame pointers, from the machine code

# Hot, non-leaf functions that sit on every Python stack (names across 3.8-3.13; the
# missing ones are skipped). Many are static, so only in .symtab when not stripped.
HOT_FUNCTIONS = (
    "_PyEval_EvalFrameDefault", "_PyEval_EvalFrame", "_PyEval_Vector", "_PyEval_EvalCode",
    "PyEval_EvalCode", "PyEval_EvalCodeEx", "_PyFunction_Vectorcall",
    "function_code_fastcall", "call_function", "PyObject_Vectorcall",
    "PyObject_VectorcallMethod", "_PyObject_MakeTpCall", "PyObject_Call", "_PyObject_Call",
    "PyObject_CallObject", "_PyObject_FastCallDictTstate", "_PyObject_Call_Prepend",
    "slot_tp_call", "type_call", "method_vectorcall", "PyObject_GetAttr",
    "_PyObject_GenericGetAttrWithDict", "PyObject_RichCompare", "PyNumber_Add",
    "PyImport_ImportModuleLevelObject", "PyRun_StringFlags", "PyRun_SimpleFileExFlags",
    "_PyRun_SimpleFileObject", "pyrun_file", "run_mod", "run_eval_code_obj", "Py_RunMain",
    "pymain_run_python", "builtin_exec", "builtin___import__", "builtin_print",
    "builtin___build_class__", "builtin_sorted", "builtin_compile", "PyDict_SetItem",
    "PyList_Append",
)
_SAMPLES = 40         # functions looked at when not told which
_MIN_SAMPLES = 8      # fewer than this and the binary cannot tell
_MIN_SIZE = 32        # bytes; tiny functions are often leaves or tail calls
_THRESHOLD = 0.8      # share of sampled functions that must set up a frame pointer

_EM_X86_64, _EM_AARCH64 = "EM_X86_64", "EM_AARCH64"
_ENDBR64 = b"\xf3\x0f\x1e\xfa"
_MOV_RSP_RBP = (b"\x48\x89\xe5", b"\x48\x8b\xec")   # the two encodings of mov %rsp,%rbp

_fp_cache: Dict[tuple, Optional[bool]] = {}


def has_frame_pointers(elf_path: str, symbols: Optional[Iterable[str]] = None) -> bool:
    """Whether the code in `elf_path` was compiled with frame pointers.

    Looks at the prologue of `symbols` (default: CPython's hot functions, topped up
    with the largest functions) and says True when at least 80% set up a frame
    pointer. False also when it cannot tell (unknown architecture, too few symbols).
    """
    return bool(_fp_verdict(elf_path, tuple(symbols) if symbols is not None else None))


def _fp_verdict(elf_path: str, symbols: Optional[tuple] = None) -> Optional[bool]:
    """True/False from the machine code, None when it cannot tell."""
    try:
        stat = os.stat(elf_path)
    except OSError as error:
        raise TargetError("cannot read %s: %s; check that the file exists"
                          % (elf_path, error.strerror))
    key = (os.path.realpath(elf_path), stat.st_mtime_ns, stat.st_size, symbols)
    if key not in _fp_cache:
        try:
            with open(elf_path, "rb") as f:
                _fp_cache[key] = _read_verdict(f, symbols)
        except (ELFError, OSError, struct.error) as error:
            raise TargetError("cannot read the ELF file %s (%s); is it a native binary?"
                              % (elf_path, error))
    return _fp_cache[key]


def _read_verdict(f, symbols: Optional[tuple]) -> Optional[bool]:
    elf = ELFFile(f)
    machine = elf["e_machine"]
    if machine not in (_EM_X86_64, _EM_AARCH64):
        return None   # no prologue pattern known for this architecture

    # .symtab when not stripped (it has the static functions), else .dynsym.
    table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
    if not isinstance(table, SymbolTableSection):
        return None
    functions = {}   # address -> (name, size, section index); aliases share an address
    for sym in table.iter_symbols():
        if (sym["st_info"]["type"] == "STT_FUNC" and isinstance(sym["st_shndx"], int)
                and sym["st_size"] >= _MIN_SIZE and ".cold" not in sym.name):
            functions.setdefault(sym["st_value"], (sym.name, sym["st_size"], sym["st_shndx"]))

    wanted = set(symbols if symbols is not None else HOT_FUNCTIONS)
    chosen = [(a, f) for a, f in functions.items() if f[0] in wanted]
    if symbols is None:
        # Top up with the largest functions: big ones always have a stack frame.
        rest = sorted((item for item in functions.items() if item[1][0] not in wanted),
                      key=lambda item: -item[1][1])
        chosen += rest[:max(0, _SAMPLES - len(chosen))]
    if len(chosen) < (_MIN_SAMPLES if symbols is None else 1):
        return None

    hits = 0
    for address, (_name, _size, shndx) in chosen:
        section = elf.get_section(shndx)
        f.seek(section["sh_offset"] + address - section["sh_addr"])
        code = f.read(32)
        hits += _x86_64_sets_fp(code) if machine == _EM_X86_64 else _aarch64_sets_fp(code)
    return hits >= _THRESHOLD * len(chosen)


def _x86_64_sets_fp(code: bytes) -> bool:
    """`push %rbp` ... `mov %rsp,%rbp` near the start.

    GCC interleaves other instructions (`push %rbp; xor %ecx,%ecx; mov %rsp,%rbp`),
    so the two are searched for rather than matched as 55 48 89 e5. Without frame
    pointers %rbp is an ordinary register: pushed maybe, but never loaded from %rsp
    (bar functions with variable-size frames, which the 80% threshold absorbs).
    """
    if code.startswith(_ENDBR64):
        code = code[4:]
    push = code.find(b"\x55")
    return push >= 0 and any(code.find(mov, push + 1) > push for mov in _MOV_RSP_RBP)


def _aarch64_sets_fp(code: bytes) -> bool:
    """`stp x29, x30, [sp, ...]` then `add x29, sp, #n` (mov x29, sp) in the first
    instructions, after optional bti/paciasp hints. Not exercised on real hardware
    here; the encodings are from the Arm ARM."""
    words = struct.unpack("<%dI" % (len(code) // 4), code[:len(code) // 4 * 4])
    hints = (0xD503201F, 0xD503233F, 0xD503237F, 0xD503245F)   # nop, paciasp, pacibsp, bti c
    words = [w for w in words[:8] if w not in hints]
    saved = False
    for word in words[:6]:
        if word & 0xFFC07FFF in (0xA9807BFD, 0xA9007BFD):   # stp x29, x30, [sp, #n](!)
            saved = True
        elif saved and word & 0xFFC003FF == 0x910003FD:      # add x29, sp, #n
            return True
    return False
