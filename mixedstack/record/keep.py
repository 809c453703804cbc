"""What record does to a recording's folder (perf/recording.py has its layout).

    adopt_tmp_files      the run's perf maps and jitdumps, taken out of /tmp
    repair_jitdumps      each adopted jitdump made readable by perf inject
    prune_buildid_cache  only what this run made, the vDSO and the kernel's symbols kept
    lend_debug_file      a binary's debug symbols, linked where perf looks for them
    SystemFiles          the vDSO and the kernel's symbols, cached while the target runs
"""
from __future__ import annotations

import bisect
import contextlib
import glob
import os
import re
import shutil
import subprocess
import threading
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from mixedstack.perf.command import perf_command
from mixedstack.perf.data import PERF_RECORD_MMAP2, build_id_record, jitdump_named_by_pid
from mixedstack.perf.pieces import side_file, side_records
from mixedstack.perf.recording import KERNEL_SYMBOLS, VDSO, Recording
from mixedstack.perf.tmpview import TMP
from mixedstack.record import jitdump, tmpfiles
from mixedstack.record.attach.process import Place
from mixedstack.record.elf import build_id, own_vdso, read_file

MAP_FILE = re.compile(r"^perf-(\d+)\.map$")
DUMP_FILE = re.compile(r"^jit-(\d+)\.dump$")
JITTED_FILE = re.compile(r"^jitted-\d+-\d+\.so$")



class RecordingFolder(Recording):
    """A recording as record writes it: its layout, and what record puts in its folder."""

    def adopt_tmp_files(self, pids: set, uid_of: Callable[[int], int], since: float, move: bool = True,
                        warn: Callable[[str], None] = lambda message: None,
                        places: Optional[Dict[int, Place]] = None) -> List[str]:
        """Take the perf maps and jitdumps of `pids` written since `since` out of /tmp,
        into the recording's own folder (CPython never deletes them). Only regular files
        owned by `uid_of(pid)`, the user its process ran as, are taken (tmpfiles.copy_owned);
        `warn` hears of the rest. `move`: remove them from /tmp too. A process in a
        container (`places`) has its files in its own /tmp, named by its pid there: they
        are copied from there and named by its pid here, as perf names the process."""
        taken = []
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        found = [(os.path.join(TMP, name), name) for name in sorted(os.listdir(TMP))]
        places = places or {}
        for place in places.values():
            found += [(place.host(os.path.join(TMP, name % place.nspid)), name % place.pid)
                      for name in ("perf-%d.map", "jit-%d.dump") if os.path.exists(place.host(TMP))]
        for path, name in found:
            match = MAP_FILE.match(name) or DUMP_FILE.match(name)
            if not match or int(match.group(1)) not in pids:
                continue
            uid = uid_of(int(match.group(1)))
            mtime = tmpfiles.owned_mtime(path, uid)
            if mtime is None and not os.path.lexists(path):
                continue
            if mtime is not None and mtime < since:
                continue  # an older process that happened to have the same pid
            try:
                tmpfiles.copy_owned(path, os.path.join(self.tmp_dir, name), uid)
            except tmpfiles.Refused as refused:
                warn("%s: not taken into the recording" % refused)
                continue
            except OSError:
                continue
            if move:
                with contextlib.suppress(OSError):
                    os.remove(path)
            taken.append(name)
        return taken

    def repair_jitdumps(self, contained: Iterable[int] = ()) -> Optional[str]:
        """Make each adopted jitdump readable by perf inject (jitdump.repair), those of
        the `contained` pids (processes in containers) renumbered after them once whole;
        a line saying what was lost, when anything was."""
        lost = []
        for name in sorted(os.listdir(self.tmp_dir)) if os.path.isdir(self.tmp_dir) else ():
            match = DUMP_FILE.match(name)
            if match:
                repaired = jitdump.repair(os.path.join(self.tmp_dir, name), int(match.group(1)))
                if int(match.group(1)) in contained:
                    jitdump.renumber(os.path.join(self.tmp_dir, name), int(match.group(1)))
                if repaired.dropped or repaired.header:
                    lost.append("%s (%s)" % (name, "empty: its process ended before writing it" if repaired.header
                                             else "%s bytes that did not parse" % format(repaired.dropped, ",")))
        if not lost:
            return None
        return ("jitdumps repaired, their other records kept: %s. A process that ends in os._exit "
                "(a fork worker) loses what it had not flushed: its Python frames may be [unknown]"
                % ", ".join(lost))

    def inject_jit(self, head: bytes, features: dict, jitdumps: List[bytes],
                   scratch: bool = False) -> Tuple[bytes, bytes, str]:
        """`perf inject --jit` for the jitdumps' maps (their MMAP records, named ./jit-PID.dump
        by tidy): the jitted code's maps it writes (the recording's first records), the
        build-id records of the files it wrote (each kept in the recording's build-id cache,
        where perf script finds it), and perf's last complaint ("" when it had none).

        inject is given a file of those maps only, not the samples: it writes each jitted
        function's ELF file (and its copy in the build-id cache) when it meets its
        jitdump's map, whatever follows, and a recording of an hour is read once less.

        `scratch`: for a batch unwound while recording (unwind.py), whose perf script
        reads the jitted-*.so files where inject writes them: nothing goes into the
        recording's build-id cache (perf names each such file anew: a cache of every
        batch's would grow by every function at each batch)."""
        side, out = (os.path.abspath(os.path.join(self.tmp_dir, name)) for name in ("maps.data", "maps.out"))
        named = [jitdump_named_by_pid(head, record) for record in jitdumps]
        with open(side, "wb") as f:
            f.write(side_file(head, b"".join(named), features))
        # inject reads the dumps adopted into the recording's folder (./jit-PID.dump) and
        # writes its jitted-*.so there too, never in /tmp. For a process in a container
        # that still runs, perf would enter its mount namespace to open the dump (and not
        # find ours there): inject then runs where it cannot see that process (a pid
        # namespace and /proc of its own), and takes the dumps as any other's.
        private = named != list(jitdumps) and os.geteuid() == 0 and shutil.which("unshare")
        cache = self.scratch_buildid_dir if scratch else self.buildid_dir
        done = subprocess.run((["unshare", "--pid", "--fork", "--mount-proc"] if private else []) +
                              perf_command("inject", cache) + ["--jit", "-i", side, "-o", out],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.tmp_dir,
                              # a batch's, beside the target: on the cores it leaves idle
                              preexec_fn=(lambda: os.nice(19)) if scratch else None)
        if scratch:  # the libraries' copies stay (inject makes them once), the jitted files go
            shutil.rmtree(os.path.join(cache, os.path.abspath(self.tmp_dir).lstrip("/")), ignore_errors=True)
        found = side_records(out, PERF_RECORD_MMAP2) if done.returncode == 0 and os.path.exists(out) else None
        for path in (side, out):
            with contextlib.suppress(OSError):
                os.remove(path)
        if found is None:
            return b"", b"", (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        return found, b"" if scratch else self._cache_jitted_code(), ""

    @property
    def scratch_buildid_dir(self) -> str:
        """perf inject's build-id cache for the batches unwound while recording (removed after)."""
        return os.path.abspath(os.path.join(self.folder, "scratch-buildid"))

    def _cache_jitted_code(self) -> bytes:
        """Each jitted-*.so inject wrote, into the build-id cache as perf would put it
        (under its absolute path); their build-id records, named as their maps name them.
        (inject does this itself only for the files samples hit, and only when the
        recording's maps hold no build ids: record's do, --buildid-mmap.)"""
        table = []
        folder = os.path.abspath(self.tmp_dir).lstrip("/")
        for path in sorted(glob.glob(os.path.join(glob.escape(self.tmp_dir), "jitted-*.so"))):
            content = read_file(path)
            build = build_id(content)
            if build:
                name = os.path.basename(path)
                self.cache(os.path.join(folder, name), build, "elf", content)
                table.append(build_id_record(build, "./" + name))
        return b"".join(table)

    def remove_jitted_code(self) -> None:
        """perf inject writes jitted-*.so beside the dumps it reads, and also into the
        build-id cache, where perf script finds them: the first copies go."""
        for path in glob.glob(os.path.join(glob.escape(self.tmp_dir), "jitted-*.so")):
            with contextlib.suppress(OSError):
                os.remove(path)

    def prune_buildid_cache(self) -> None:
        """Keep only what this run created (jitted code), the vDSO and the kernel's
        symbols (fold hands them to perf script, which otherwise reads /proc/kallsyms
        three times, and which may since have changed).

        perf also copies every DSO with samples (libpython, libc: ~50 MB); those
        exist on the machine, and perf falls back to them. The cache's layout is
        DSO-PATH/BUILD-ID/FILE, where DSO-PATH is the DSO's absolute path.
        """
        if not os.path.isdir(self.buildid_dir):
            return
        for entry in os.listdir(self.buildid_dir):
            if entry in ("[vdso]", ".build-id", KERNEL_SYMBOLS):
                continue
            for folder, _, files in os.walk(os.path.join(self.buildid_dir, entry), topdown=False):
                dso = os.path.basename(os.path.dirname(folder))
                if files and not JITTED_FILE.match(dso):
                    for name in files:
                        os.remove(os.path.join(folder, name))
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # once empty
        links = os.path.join(self.buildid_dir, ".build-id")
        for link in glob.glob(os.path.join(links, "*", "*")):
            if os.path.islink(link) and not os.path.exists(link):
                os.remove(link)

    def cache_system_files(self) -> "SystemFiles":
        """Start putting the vDSO and the kernel's symbols in the build-id cache (see
        SystemFiles); it runs while perf starts and the target runs."""
        files = SystemFiles(self)
        files.start()
        return files

    def cache(self, folder: str, build: str, name: str, content: Optional[bytes]) -> None:
        """perf's layout: FOLDER/BUILD-ID/NAME, and .build-id/BU/ILD-ID -> ../../FOLDER/BUILD-ID."""
        if not content:
            return

        def write(target: str) -> None:
            with open(target, "wb") as f:
                f.write(content)
        self._place(folder, build, name, write)

    def keep_contained_files(self, mapped: Iterable[Tuple[str, str]], places: Iterable[Place]) -> int:
        """Copy into the build-id cache each file that processes in containers mapped, as
        the container holds it (`mapped`: (build id, path as it names it)), where this
        machine has no file of that build id at that path: perf script then reads the
        container's python and libc (a newer glibc than ours), not ours, and not nothing
        once the container is gone. Read while the processes still run; how many kept."""
        kept = 0
        roots = [place.root for place in places]
        for build, path in mapped:
            if not roots or build_id(read_file(path)) == build:
                continue  # ours is the same file
            for root in roots:
                content = read_file(root + path)
                if content is not None and build_id(content) == build:
                    self.cache(path.lstrip("/"), build, "elf", content)
                    kept += 1
                    break
        return kept

    def lend_debug_file(self, binary: str, build: str, debug: str) -> None:
        """Where perf looks for a binary's debug symbols in the cache (DSO-PATH/BUILD-ID/debug):
        a link to the file, which stays where its owner keeps it."""
        self._place(binary.lstrip("/"), build, "debug", lambda target: os.symlink(debug, target))

    def _place(self, folder: str, build: str, name: str, put: Callable[[str], None]) -> None:
        where = os.path.join(self.buildid_dir, folder, build)
        link = os.path.join(self.buildid_dir, ".build-id", build[:2], build[2:])
        try:
            os.makedirs(where, exist_ok=True)
            target = os.path.join(where, name)
            if os.path.lexists(target):
                os.remove(target)
            put(target)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(os.path.join("..", "..", folder, build), link)
        except OSError:
            pass  # perf then goes without: fewer names (debug), or unresolved vDSO frames


class SystemFiles(threading.Thread):
    """What perf record does at exit unless run with -N (record runs it with -N:
    perf then exits sooner, not reading /proc/kallsyms three more times), done
    while the target runs: the vDSO image in the build-id cache, so that perf
    can unwind through it (without it: a time.time() loop had 32% one-frame
    stacks), and the kernel's symbols, which fold hands to perf script.

    Of the kernel's ~120,000 symbols, save() keeps those the recording's kernel
    addresses fall in: perf script parses all of them in each process before it
    prints a sample."""

    def __init__(self, recording: RecordingFolder):
        super().__init__(daemon=True)
        self.recording = recording
        self.kernel: Optional[str] = None  # the kernel's build id
        self.vdso: Optional[str] = None  # the vDSO's
        self.text: Optional[bytes] = None  # /proc/kallsyms
        self.symbols: List[bytes] = []  # its lines, sorted

    def run(self) -> None:
        try:  # idle-time work: perf's start-up and the target come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        image = own_vdso()
        self.vdso = build_id(image) if image else None
        if self.vdso:
            self.recording.cache(VDSO, self.vdso, "vdso", image)
        self.kernel = build_id(read_file("/sys/kernel/notes"), notes_only=True)
        self.text = read_file("/proc/kallsyms") if self.kernel else None
        if self.text:
            self.symbols = self.text.split(b"\n")
            # by address (16 hex digits), as /proc/kallsyms almost is already; a stable sort
            # keeps aliases at one address (memset, __memset, __pi_memset) in the kernel's
            # order, which decides the one perf names a frame by
            self.symbols.sort(key=address_of)

    def build_id_records(self) -> bytes:
        """The build-id table's records for the kernel and the vDSO (perf script looks
        them up in the cache by these; no map record holds theirs)."""
        self.join()
        return b"".join(build_id_record(build, name, kernel=name == KERNEL_SYMBOLS)
                        for build, name in ((self.kernel, KERNEL_SYMBOLS), (self.vdso, VDSO)) if build)

    def save(self, kernel_addresses: Optional[Iterable[int]]) -> None:
        """Wait for run(), then save the kernel's symbols: all of them, or those
        `kernel_addresses` fall in."""
        self.join()
        if not self.kernel or not self.text:
            return
        text = self.text
        if kernel_addresses is not None:
            text = kept_symbols(self.symbols, text, kernel_addresses)
        self.recording.cache(KERNEL_SYMBOLS, self.kernel, "kallsyms", text)


# perf relocates and bounds the kernel's map by these (machine__create_kernel_maps)
REFERENCE_SYMBOLS = (b"_text", b"_stext", b"_etext")


def reference_lines(text: bytes) -> List[bytes]:
    lines = []
    for name in REFERENCE_SYMBOLS:
        at = text.find(b" " + name + b"\n")
        if at > 0:
            lines.append(text[text.rfind(b"\n", 0, at) + 1:at + 1 + len(name)])
    return lines


def address_of(line: bytes) -> bytes:
    return line[:16]


def kept_symbols(symbols: List[bytes], text: bytes, addresses: Iterable[int]) -> bytes:
    """The kallsyms text perf needs for `addresses`, from `symbols` (sorted by
    address_of), its lines in the kernel's own order."""
    lines = set(covering(symbols, addresses)) | set(reference_lines(text))
    order = {line: index for index, line in enumerate(symbols)}
    return b"\n".join(sorted(lines, key=lambda line: order.get(line, len(order)))) + b"\n"


def covering(symbols: List[bytes], addresses: Iterable[int]) -> List[bytes]:
    """The kallsyms lines (sorted by address) that name `addresses`: for each, the symbols at
    the highest address at or below it, and those at the next address (perf ends
    a symbol where the next one begins)."""
    keep = set()
    for address in addresses:
        at = bisect.bisect_right(symbols, b"%016x\xff" % address) - 1
        if at < 0:
            continue
        keep.update(_same_address(symbols, at))
        if at + 1 < len(symbols):
            keep.update(_same_address(symbols, at + 1))
    return [symbols[index] for index in sorted(keep)]


def _same_address(symbols: List[bytes], index: int) -> range:
    address = symbols[index][:16]
    low = index
    while low > 0 and symbols[low - 1][:16] == address:
        low -= 1
    high = index
    while high + 1 < len(symbols) and symbols[high + 1][:16] == address:
        high += 1
    return range(low, high + 1)
