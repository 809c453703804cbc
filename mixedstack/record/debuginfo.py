"""Debug symbols for stripped binaries, found where users keep them.

Distributions strip their interpreters to `.dynsym`: the static functions on every
Python stack (`take_gil`, `list_sort`, the eval loop's split parts) then have no
name. Their symbols ship apart, as `.build-id/XX/REST.debug` files (Debian's
`python3.X-dbg`, Fedora's `python3-debuginfo`), looked up by the binary's build id:

    /usr/lib/debug/.build-id/XX/REST.debug         the system's (perf looks there itself)
    PREFIX/lib/debug/.build-id/XX/REST.debug       beside an interpreter installed elsewhere:
                                                   PREFIX is any folder above the binary
    $DEBUGINFOD_CACHE_PATH/BUILDID/debuginfo       what debuginfod clients downloaded
    ~/.cache/debuginfod_client/BUILDID/debuginfo

The ones perf would not find are lent to it through the recording's own build-id
cache (Recording.lend_debug_file): nothing on the machine changes, ~/.debug included.
"""
from __future__ import annotations

import os
import re
from typing import Iterator, List, NamedTuple, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

SYSTEM_DEBUG = "/usr/lib/debug"
# Where the symbols of a stripped CPython come from, by distribution
PACKAGE_HINT = "python{v}-dbg on Debian/Ubuntu, python3-debuginfo on Fedora"


class Found(NamedTuple):
    path: str          # the binary
    build: str         # its build id
    debug: Optional[str]  # its debug file, None when none was found
    perf_finds: bool   # perf finds `debug` itself (the system folder): no need to lend it


def build_id_path(root: str, build: str) -> str:
    return os.path.join(root, ".build-id", build[:2], build[2:] + ".debug")


def candidates(path: str, build: str) -> Iterator[Tuple[str, bool]]:
    """(possible debug file, whether perf looks there itself), best first."""
    yield build_id_path(SYSTEM_DEBUG, build), True
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
        for sub in ("lib/debug", "usr/lib/debug"):
            root = os.path.join(folder, sub)
            if root != SYSTEM_DEBUG:
                yield build_id_path(root, build), False
    caches = [os.environ.get("DEBUGINFOD_CACHE_PATH"),
              os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "debuginfod_client")]
    for cache in filter(None, caches):
        yield os.path.join(cache, build, "debuginfo"), False


def find(path: str, build: str) -> Found:
    for debug, perf_finds in candidates(path, build):
        if os.path.isfile(debug):
            return Found(path, build, debug, perf_finds)
    return Found(path, build, None, False)


def is_stripped(path: str) -> bool:
    """No .symtab: only exported functions have names."""
    try:
        with open(path, "rb") as f:
            return ELFFile(f).get_section_by_name(".symtab") is None
    except (OSError, ELFError):
        return False


def lendable(files: List[Tuple[str, str]]) -> List[Found]:
    """The debug files perf would miss for (build id, binary) pairs of a recording."""
    found = []
    for build, path in files:
        hit = find(path, build)
        if hit.debug and not hit.perf_finds:
            found.append(hit)
    return found


def missing_note(binary: str, build: Optional[str], version: Tuple[int, ...]) -> Optional[str]:
    """One line when a stripped interpreter has no debug symbols anywhere we look."""
    if not is_stripped(binary):
        return None
    if build and find(binary, build).debug:
        return None
    name = os.path.basename(binary)
    return ("%s is stripped and no debug symbols for it were found (build id %s): its static "
            "functions (take_gil, list_sort, ...) show as [%s]; install %s, or put its "
            ".build-id folder under %s"
            % (binary, build or "unknown", name, PACKAGE_HINT.format(v="%d.%d" % tuple(version[:2])),
               SYSTEM_DEBUG))


# an installed package's shared object (site-packages/numpy.libs/...), or an extension
# module wherever its package was put (pip --target, PYTHONPATH)
PACKAGE_FILE = re.compile(r"/(?:site|dist)-packages/(.+\.so(?:\.[\d.]+)?)$")
EXTENSION_MODULE = re.compile(r"([^/]+/[^/]+\.(?:cpython-[^/]*|abi3)\.so)$")


def package_file(path: str) -> Optional[str]:
    """`pandas/_libs/index.cpython-313-x86_64-linux-gnu.so` for an installed package's
    shared object, None for any other file (the system's libraries, the interpreter)."""
    match = PACKAGE_FILE.search(path) or EXTENSION_MODULE.search(path)
    return match.group(1) if match else None


def stripped_packages(files: List[Tuple[str, str]]) -> List[str]:
    """Installed packages' shared objects, of those a recording mapped, that have no
    symbols and no debug file: their functions' frames show as the file."""
    stripped = set()
    for build, path in files:
        if package_file(path) and is_stripped(path) and find(path, build).debug is None:
            stripped.add(path)
    return sorted(stripped)


def stripped_packages_note(paths: List[str]) -> Optional[str]:
    """One line naming them (the first few), or None."""
    if not paths:
        return None
    names = [package_file(path) for path in paths]
    return ("%s of installed packages %s no symbols (%s%s): %s frames show as the file, and count as "
            "library C" % (
                "1 extension module or library" if len(names) == 1 else "%d extension modules or libraries" % len(names),
                "has" if len(names) == 1 else "have", ", ".join(names[:3]),
                ", ..." if len(names) > 3 else "", "its" if len(names) == 1 else "their"))

