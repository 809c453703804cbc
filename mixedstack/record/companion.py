"""record's companion sampler: the line each Python frame of a CPython 3.14+ process is
on, read from another process by CPython's own `_remote_debugging` (what its sampling
profiler uses: process_vm_readv, the target is not stopped), or on 3.14 by Frames314
below, which reads the same structures past the frames 3.14's reader stops at.

Run by the target's own interpreter (`_remote_debugging` reads only its own version's
structures), as a script (or its text, with -c, in a target's container), standard
library only:

    python3.14 companion.py PID[,PID...] HZ > OUTPUT

OUTPUT gets one JSON line a thread a snapshot, `[ns, tid, [[function, file, line],
...]]` (innermost first; ns: time.monotonic_ns(), perf's clock under `-k 1`), HZ
snapshots a second, until every PID has ended, its stdin is closed (how record stops
it, through nsenter too) or SIGTERM/SIGINT. Its last line is `["end",
snapshots, failed, cpu_seconds]`. Exit status 3: it could read none of the PIDs (the
first line of OUTPUT then says why). In a container, PID and the threads' ids are the
container's own (record/lines.py maps them to ours).
"""
import bisect
import json
import os
import select
import signal
import struct
import sys
import time

STARTUP_SECONDS = 5.0  # the target's runtime may not be up yet when we start


class Frames314:
    """The frames of a CPython 3.14 process, every one of them, with their lines.

    3.14's `_remote_debugging` ends its walk at the first frame that is not a Python
    function's: the entry frame each call from C pushes. Under a perf trampoline every
    Python call is one (the interpreter calls the trampoline, which calls the eval
    loop), so it gives the innermost Python frame only (3.15 walks on past them). This
    walks the same chain the same way and on: it reads the _Py_DebugOffsets CPython
    publishes for such readers at the start of its .PyRuntime section (their layout is
    fixed within a minor version; the values come from the target), each thread's
    data stack chunks in one read each (frames consistent with each other), other
    frames (entry frames on the C stack, generators') by the block, code objects once
    per code object generation.
    Free-threaded 3.14 (thread-local bytecode, other object headers) is left to
    `_remote_debugging`."""

    OFFSETS = 760  # sizeof(_Py_DebugOffsets) in 3.14, and the byte offsets within it:
    (VERSION, FREE_THREADED, INTERPRETERS_HEAD, THREADS_HEAD, CODE_GENERATION, TSTATE_NEXT,
     CURRENT_FRAME, NATIVE_TID, DATASTACK_CHUNK, FRAME_SIZE, FRAME_PREVIOUS, FRAME_EXECUTABLE,
     INSTR_PTR, OWNER, CODE_SIZE, CO_FILENAME, CO_QUALNAME, CO_LINETABLE, CO_FIRSTLINENO,
     CO_CODE_ADAPTIVE, OB_TYPE, TP_NAME, BYTES_SIZE, BYTES_SVAL, STR_STATE, STR_LENGTH,
     STR_ASCII_SIZE) = (8, 16, 40, 72, 160, 192, 208, 224, 232, 248, 256, 264, 272, 288, 312, 320,
                        336, 344, 352, 384, 408, 424, 600, 608, 624, 632, 640)
    FIRST_NOT_PYTHON = 3  # owner: FRAME_OWNED_BY_INTERPRETER (entry frames), CSTACK
    CHUNK_DATA = 24  # _PyStackChunk: previous, size, top, then the frames
    BLOCK = 1 << 14  # other frames' memory is read in blocks of this (region())

    def __init__(self, pid):
        self.mem = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
        try:
            self.runtime = runtime_address(pid)
            raw = self.read(self.runtime, self.OFFSETS)
            if raw[:8] != b"xdebugpy":
                raise RuntimeError("no _Py_DebugOffsets at .PyRuntime")
            self.offsets = {at: struct.unpack_from("<Q", raw, at)[0] for at in range(8, self.OFFSETS, 8)}
            if self.offsets[self.VERSION] >> 16 != 0x030E or self.offsets[self.FREE_THREADED]:
                raise RuntimeError("not a default build of 3.14")
            self.interp = self.pointer(self.runtime + self.offsets[self.INTERPRETERS_HEAD])
            if not self.interp:
                raise RuntimeError("no interpreter yet")
        except Exception:
            os.close(self.mem)
            self.mem = None
            raise
        # previous, executable, instr_ptr: one unpack (their order in the frame, and back)
        at = [self.offsets[field] for field in (self.FRAME_PREVIOUS, self.FRAME_EXECUTABLE, self.INSTR_PTR)]
        placed, layout, end = sorted(range(3), key=lambda i: at[i]), "<", 0
        for i in placed:
            layout += "%dxQ" % (at[i] - end)
            end = at[i] + 8
        self.frame_fields = struct.Struct(layout).unpack_from, [placed.index(i) for i in range(3)]
        self.codes = {}  # code object address -> (qualname, file, line starts, lines)
        self.code_types = set()  # type addresses seen to be `code`
        self.generation = None

    def __del__(self):
        if self.mem is not None:
            os.close(self.mem)

    def read(self, address, size):
        data = os.pread(self.mem, size, address)
        if len(data) != size:
            raise OSError("short read at %#x" % address)
        return data

    def pointer(self, address):
        return struct.unpack("<Q", self.read(address, 8))[0]

    def get_stack_trace(self):
        """[(tid, [(function, file, line), ...]), ...], innermost frame first."""
        o = self.offsets
        generation = self.pointer(self.interp + o[self.CODE_GENERATION])
        if generation != self.generation:  # code objects freed: their addresses reused
            self.codes.clear()
            self.generation = generation
        found = []
        tstate = self.pointer(self.interp + o[self.THREADS_HEAD])
        seen = set()
        while tstate and tstate not in seen:
            seen.add(tstate)
            state = self.read(tstate, max(o[self.TSTATE_NEXT], o[self.CURRENT_FRAME], o[self.NATIVE_TID],
                                          o[self.DATASTACK_CHUNK]) + 8)
            field = lambda at: struct.unpack_from("<Q", state, o[at])[0]
            for _ in range(2):  # a frame read while it changed (an entry frame on the C stack): again
                try:
                    found.append((field(self.NATIVE_TID), self.walk(field(self.CURRENT_FRAME),
                                                                    field(self.DATASTACK_CHUNK))))
                    break
                except OSError:
                    state = self.read(tstate, len(state))
            tstate = field(self.TSTATE_NEXT)
        return found

    def chunks(self, chunk):
        """The thread's data stack chunks: [(address, bytes)], each read at once."""
        copies = []
        while chunk and len(copies) < 64:
            previous, size = struct.unpack("<QQ", self.read(chunk, 16))
            if not 16 <= size <= 1 << 28:
                raise OSError("not a stack chunk at %#x" % chunk)  # read while it was freed
            copies.append((chunk, self.read(chunk, size)))
            chunk = previous
        return copies

    def walk(self, frame, chunk):
        """A thread's frames from `frame` on, with their lines (innermost first)."""
        o = self.offsets
        size, owner_at, adaptive = o[self.FRAME_SIZE], o[self.OWNER], o[self.CO_CODE_ADAPTIVE]
        fields, order = self.frame_fields
        # memory read for this walk: (first, end, where its data starts, data)
        regions = [(start + self.CHUNK_DATA, start + len(data), start, data) for start, data in self.chunks(chunk)]
        region = other = (0, 0, 0, b"")
        codes, frames = self.codes, []
        for _ in range(4096):
            if not frame:
                break
            if not region[0] <= frame <= region[1] - size:
                region, other = other, region  # under a trampoline frames alternate: chunk, C stack
                if not region[0] <= frame <= region[1] - size:
                    region = next((known for known in regions if known[0] <= frame <= known[1] - size), None)
                    if region is None:
                        region = self.region(frame, size)
                        regions.append(region)
            data, at = region[3], frame - region[2]
            values = fields(data, at)
            previous, executable, instr_ptr = (values[i] for i in order)
            if data[at + owner_at] < self.FIRST_NOT_PYTHON and executable:
                code = executable & ~7  # a _PyStackRef: its low bits are tags
                known = codes.get(code) or self.code(code)
                if known is not None:
                    qualname, path, starts, lines = known
                    at_line = bisect.bisect_right(starts, (instr_ptr - code - adaptive) >> 1) - 1  # code units
                    frames.append((qualname, path, lines[at_line] if at_line >= 0 else 0))
            frame = previous
        return frames

    def region(self, frame, size):
        """The block of memory around a frame outside the data stack (an entry frame on
        the C stack, a generator's): under a perf trampoline each call's entry frame is a
        few hundred bytes below its caller's, so one read serves many."""
        block = frame & ~(self.BLOCK - 1)
        if frame + size <= block + self.BLOCK:
            try:
                return block, block + self.BLOCK, block, self.read(block, self.BLOCK)
            except OSError:  # the block's end is not mapped
                pass
        return frame, frame + size, frame, self.read(frame, size)

    def code(self, address):
        """A code object's names and line table (None: not a code object)."""
        o = self.offsets
        raw = self.read(address, o[self.CODE_SIZE])
        word = lambda at: struct.unpack_from("<Q", raw, o[at])[0]
        kind = word(self.OB_TYPE) if o[self.OB_TYPE] + 8 <= len(raw) else 0
        if kind not in self.code_types:
            if not kind or self.read(self.pointer(kind + o[self.TP_NAME]), 5) != b"code\0":
                return None
            self.code_types.add(kind)
        table = self.bytes(word(self.CO_LINETABLE))
        first = struct.unpack_from("<i", raw, o[self.CO_FIRSTLINENO])[0]
        known = (self.text(word(self.CO_QUALNAME)), self.text(word(self.CO_FILENAME))) + line_ranges(table, first)
        self.codes[address] = known
        return known

    def bytes(self, address):
        o = self.offsets
        size = struct.unpack("<q", self.read(address + o[self.BYTES_SIZE], 8))[0]
        return self.read(address + o[self.BYTES_SVAL], min(max(size, 0), 1 << 20))

    def text(self, address):
        """A str object's text: compact ASCII, or compact with 1, 2 or 4 bytes a character."""
        o = self.offsets
        header = self.read(address, o[self.STR_ASCII_SIZE])
        length = min(max(struct.unpack_from("<q", header, o[self.STR_LENGTH])[0], 0), 4096)
        state = struct.unpack_from("<I", header, o[self.STR_STATE])[0]
        kind, ascii = (state >> 2) & 7, (state >> 6) & 1  # interned:2, kind:3, compact:1, ascii:1
        if ascii:
            return self.read(address + o[self.STR_ASCII_SIZE], length).decode("ascii", "replace")
        width = kind if kind in (1, 2, 4) else 1
        data = self.read(address + o[self.STR_ASCII_SIZE] + 16, length * width)  # after utf8_length, utf8
        return data.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[width], "replace")


def line_ranges(table, line):
    """A code object's location table (Objects/locations.md) as (starts, lines): the code
    unit each entry starts at, and its line (0: none)."""
    starts, lines = [], []
    at = address = 0

    def varint():
        nonlocal at
        read = table[at]
        at += 1
        value, shift = read & 63, 0
        while read & 64:
            read = table[at]
            at += 1
            shift += 6
            value |= (read & 63) << shift
        return value

    def signed():
        value = varint()
        return -(value >> 1) if value & 1 else value >> 1

    while at < len(table):
        first = table[at]
        at += 1
        code, length = (first >> 3) & 15, (first & 7) + 1
        known = True
        if code == 15:  # no location
            known = False
        elif code == 14:  # long form: line delta, end line delta, column, end column
            line += signed()
            varint(), varint(), varint()
        elif code == 13:  # no columns
            line += signed()
        elif code >= 10:  # one line: the delta in the code, two column bytes
            line += code - 10
            at += 2
        else:  # short form: same line, one column byte
            at += 1
        starts.append(address)
        lines.append(line if known else 0)
        address += length
    return starts, lines


def runtime_address(pid):
    """Where the target's _PyRuntime (its .PyRuntime section) is: in the python
    executable or the libpython it maps, as CPython's own reader finds it."""
    mapped = {}  # path -> the address its offset-0 mapping starts at
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and int(fields[2], 16) == 0 and "python" in os.path.basename(fields[5].strip()):
                mapped.setdefault(fields[5].strip(), int(fields[0].split("-")[0], 16))
    for path, start in mapped.items():
        try:
            with open(path, "rb") as f:
                found = pyruntime_section(f)
        except OSError:
            continue
        if found is not None:
            section, first_load = found
            return start + section - (first_load & ~0xFFF)
    raise RuntimeError("no .PyRuntime section in the target's python or libpython")


def pyruntime_section(f):
    """(.PyRuntime's address, the first PT_LOAD's address) of a 64-bit ELF, or None.
    (perf/unwindinfo.py reads ELF headers too, but this script runs in the target's
    interpreter, maybe in its container, with the standard library only.)"""
    header = f.read(64)
    if header[:5] != b"\x7fELF\x02":
        return None
    phoff, shoff = struct.unpack_from("<QQ", header, 32)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", header, 54)
    f.seek(phoff)
    programs = f.read(phentsize * phnum)
    loads = [struct.unpack_from("<IIQQ", programs, i * phentsize) for i in range(phnum)]
    first_load = min((vaddr for kind, _, _, vaddr in loads if kind == 1), default=0)
    f.seek(shoff)
    sections = f.read(shentsize * shnum)
    entry = lambda i: struct.unpack_from("<IIQQQQ", sections, i * shentsize)  # name, type, flags, addr, offset, size
    _, _, _, _, names_at, names_size = entry(shstrndx)
    f.seek(names_at)
    names = f.read(names_size)
    for i in range(shnum):
        name, _, _, address, _, _ = entry(i)
        if names[name:names.index(b"\0", name)] == b".PyRuntime":
            return address, first_load
    return None


def snapshot(unwinder):
    """[(tid, [[function, file, line], ...]), ...] of a Frames314, or of
    `_remote_debugging`'s 3.14 list of ThreadInfo or 3.15 list of InterpreterInfo (each
    with its threads)."""
    if isinstance(unwinder, Frames314):
        return unwinder.get_stack_trace()
    found = []
    for item in unwinder.get_stack_trace():
        for thread in getattr(item, "threads", None) or [item]:
            frames = []
            for frame in thread.frame_info or ():
                location = getattr(frame, "location", None)
                line = getattr(location, "lineno", None) if location is not None else getattr(frame, "lineno", None)
                frames.append([frame.funcname, frame.filename, line or 0])
            found.append((thread.thread_id, frames))
    return found


def main():
    pids, rate = [int(pid) for pid in sys.argv[1].split(",")], float(sys.argv[2])
    output = sys.stdout.fileno()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        import _remote_debugging
    except ImportError as error:
        _say(output, "no _remote_debugging in %s: %s" % (sys.version.split()[0], error))
        return 3
    unwinders = {}  # pid -> its reader (a RemoteUnwinder, a Frames314), once it could be read
    pending = list(pids)
    problem = None
    waited = time.monotonic() + STARTUP_SECONDS

    def reach():
        nonlocal problem
        for pid in list(pending):
            try:
                unwinders[pid] = _remote_debugging.RemoteUnwinder(pid, all_threads=True)
                pending.remove(pid)
                if sys.version_info[:2] == (3, 14):  # every frame, where it can (else the innermost)
                    try:
                        unwinders[pid] = Frames314(pid)
                    except Exception:
                        pass
            except Exception as error:  # not a Python process yet, or not readable
                problem = problem or "cannot read process %d: %s: %s" % (pid, type(error).__name__, error)
                if time.monotonic() > waited or not os.path.exists("/proc/%d" % pid):
                    pending.remove(pid)

    def wait(seconds):
        """Sleep, or less: till stdin closes (record's stop)."""
        if select.select([0], [], [], seconds)[0] and not os.read(0, 512):
            stop.append(1)

    while not unwinders and pending and not stop:
        reach()
        if not unwinders:
            wait(0.005)
    if not unwinders:
        _say(output, problem or "stopped before any process could be read")
        return 3
    try:
        # as perf itself under record --syscalls (as root): a sampler that waits behind a
        # busy machine's threads leaves holes of half a second in its snapshots (measured
        # on 2 cores, a prefork service of 4 busy threads and record's unwinding)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        pass  # not root: at the normal priority
    period = 1.0 / rate
    taken = failed = 0
    with open(output, "w", buffering=1 << 16, closefd=False) as out:
        next_at = time.monotonic()
        while not stop and unwinders:
            began = time.monotonic()
            if pending:  # the rest of a tree, or one still starting
                reach()
            for pid, unwinder in list(unwinders.items()):
                now = time.monotonic_ns()
                try:
                    threads = snapshot(unwinder)
                except Exception:  # a stack changing under the reader, or the process gone
                    failed += 1
                    if not os.path.exists("/proc/%d" % pid):
                        del unwinders[pid]
                    threads = ()
                for tid, frames in threads:
                    out.write(json.dumps([now, tid, frames], separators=(",", ":")) + "\n")
            taken += 1
            next_at += period
            now = time.monotonic()
            if next_at < now:
                next_at = now  # behind: no burst to catch up
            # and never more than half of a core, whatever the rate and the processes
            wait(max(next_at - now, now - began))
        times = os.times()
        out.write(json.dumps(["end", taken, failed, round(times.user + times.system, 3)]) + "\n")
    return 0


def _say(output, why):
    with open(output, "w", closefd=False) as out:
        out.write(json.dumps(["error", why]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
