"""The code that turns each kind of trampoline on in a running process."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from mixedstack.record.target import Interpreter
from mixedstack.record.attach.inject import ActivationError
from mixedstack.record.attach.process import mapped_files, place_of
from mixedstack.record.attach.process import AGENT_MODULE
from mixedstack.record.attach.inject import ANCHOR, CHECK

# Symbols the perf-jit activation calls; the anchor is exported, so the target
# finds its own address with ctypes and the others follow from the ELF's offsets.
JIT_SYMBOLS = ("_PyPerfTrampoline_SetCallbacks", "_PyPerfTrampoline_Init", "_Py_perfmap_jit_callbacks")


def symbol_values(path: str, names) -> Optional[Dict[str, int]]:
    """{name: st_value} from the ELF's .symtab (needs an unstripped file), or None."""
    try:
        with open(path, "rb") as f:
            table = ELFFile(f).get_section_by_name(".symtab")
            if not isinstance(table, SymbolTableSection):
                return None
            wanted, found = set(names), {}
            for symbol in table.iter_symbols():
                if symbol.name in wanted and symbol["st_value"]:
                    found[symbol.name] = symbol["st_value"]
    except (ELFError, OSError):
        return None
    return found if len(found) == len(set(names)) else None


def same_file(pid: int, path: str) -> bool:
    """Is `path` on disk (as the process names it) the very file mapped in `pid` (not replaced since)?"""
    mapped = mapped_files(pid).get(path)
    try:
        st = os.stat(place_of(pid).host(path))
    except OSError:
        return False
    return mapped is not None and mapped[1] == st.st_ino and mapped[0] == "%02x:%02x" % (
        os.major(st.st_dev), os.minor(st.st_dev))


def perf_map_code() -> str:
    return 'import sys\nsys.activate_stack_trampoline("perf")\n'


def perf_jit_code(pid: int, interp: Interpreter) -> str:
    """CODE for 3.13's perf_jit; ActivationError without the symbols it needs."""
    path = interp.libpython or interp.executable
    if not same_file(pid, path):
        raise ActivationError("%s is not the file process %d has mapped (replaced since it started?)"
                              % (path, pid))
    values = symbol_values(place_of(pid).host(path), JIT_SYMBOLS + (ANCHOR, CHECK))
    if values is None:
        raise ActivationError("%s has no symbol table (stripped) to find CPython's perf_jit functions in"
                              % path)
    offset = {name: values[name] - values[ANCHOR] for name in values}
    return (
        "import ctypes, sys\n"
        "if not sys.is_stack_trampoline_active():\n"
        "    api = ctypes.pythonapi\n"
        "    base = ctypes.cast(api.%(anchor)s, ctypes.c_void_p).value\n"
        "    if ctypes.cast(api.%(check)s, ctypes.c_void_p).value != base + %(check_at)d:\n"
        "        raise RuntimeError('libpython is not laid out as the file mixedstack read')\n"
        "    set_callbacks = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(base + %(set)d)\n"
        "    init = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_int)(base + %(init)d)\n"
        "    if set_callbacks(base + %(callbacks)d) != 0 or init(1) != 0:\n"
        "        raise RuntimeError('the perf_jit trampoline refused to start')\n"
        "if not sys.is_stack_trampoline_active():\n"
        "    raise RuntimeError('the trampoline is not on')\n"
    ) % {"anchor": ANCHOR, "check": CHECK, "check_at": offset[CHECK],
         "set": offset[JIT_SYMBOLS[0]], "init": offset[JIT_SYMBOLS[1]], "callbacks": offset[JIT_SYMBOLS[2]]}


def agent_code(interp: Interpreter, pid: int) -> str:
    from mixedstack.record.agent import agent_path, publish, readable_copy  # builds it for the target on first use

    folder = agent_path(interp)
    place = place_of(pid)
    if place.contained:  # our cache is not in there: a copy in its /tmp, read from there
        copy = place.host("/tmp/mixedstack-agent-%s" % os.path.basename(folder))
        if not os.path.isdir(copy):
            work = tempfile.mkdtemp(prefix=".mixedstack-agent-", dir=place.host("/tmp"))
            try:
                readable_copy(folder, os.path.join(work, "agent"))
                os.chmod(work, 0o755)
                publish(os.path.join(work, "agent"), copy, "build.json")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        folder = copy[len(place.root):]
    return (
        "import sys\n"
        "if tuple(sys.version_info[:3]) != %(version)r:\n"
        "    raise RuntimeError('the agent was built for CPython %(shown)s')\n"
        "sys.path.insert(0, %(folder)r)\n"
        "try:\n"
        "    import %(module)s as agent\n"
        "finally:\n"
        "    sys.path.remove(%(folder)r)\n"
        "answer = agent.activate()\n"
        "if answer is not True:\n"
        "    raise RuntimeError(answer)\n"
    ) % {"version": tuple(interp.version[:3]), "shown": ".".join(map(str, interp.version)),
         "folder": folder, "module": AGENT_MODULE}


FLUSH_CODE = "import ctypes\nctypes.CDLL(None).fflush(None)\n"
