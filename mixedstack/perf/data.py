"""perf.data read directly: the file format, and what fold and record ask of a recording.

Layout (tools/perf/Documentation/perf.data-file-format.txt): a header whose data
section is a run of records, each `u32 type, u16 misc, u16 size` then a body; the
feature sections follow the data section.

`sample_times`, `event_names` and `has_call_graphs` read what fold needs to know
before it starts `perf script`; `survey` counts samples and losses; `_scan` is the
one pass over the records that `survey` and record's rewrite (rewrite.py) share.
"""
from __future__ import annotations

import mmap
import os
import struct
from array import array
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

PERF_MAGIC = b"PERFILE2"  # first bytes of every perf.data file (file and pipe mode)
PERF_RECORD_MMAP = 1
PERF_RECORD_LOST = 2
PERF_RECORD_COMM = 3
PERF_RECORD_EXIT = 4
PERF_RECORD_FORK = 7
PERF_RECORD_MMAP2 = 10
JITDUMP_FOLDER = b"/tmp/"  # where CPython and the agent write jit-PID.dump
PERF_RECORD_LOST_SAMPLES = 13
PERF_RECORD_THROTTLE, PERF_RECORD_UNTHROTTLE = 5, 6
PERF_RECORD_SWITCH, PERF_RECORD_SWITCH_CPU_WIDE = 14, 15
PERF_RECORD_FINISHED_ROUND = 68
USER_RECORDS = 64  # types from here on are perf's own (no sample_id trailer)
PERF_RECORD_AUXTRACE = 71  # its payload follows the record: never moved
MISC_COMM_EXEC = MISC_MMAP_DATA = 1 << 13  # (the same bit means one or the other by record type)
PROT_EXEC = 4
NO_SUCH_PID = 0x7FFFFFF0  # above any pid_max Linux allows (4194304)
ATTR_SIZE, ATTRS_SECTION, DATA_SECTION = 16, 24, 40  # offsets in the file header
FEATURES, FEATURE_BITS = 72, 256  # the header's bitmap of feature sections after the data
HEADER_BUILD_ID, HEADER_EVENT_DESC, HEADER_AUXTRACE = 2, 12, 18  # feature bits
MISC_BUILD_ID_SIZE = 1 << 15  # a build-id record that says its id's length
MISC_CPUMODE, MISC_KERNEL, MISC_USER = 7, 1, 2
MISC_MMAP_BUILD_ID = 1 << 14  # an MMAP2 record holding its file's build id (perf record --buildid-mmap)
SAMPLE_TIME = 1 << 2
# sample_id_all trailer fields after TIME, each a u64: ID, CPU (u32+pad), STREAM_ID, IDENTIFIER
AFTER_TIME = (1 << 6, 1 << 7, 1 << 9, 1 << 16)


def records(buf, start: int, end: int) -> Iterator[Tuple[int, int, int, int]]:
    """(position, type, misc, size) of each record in buf[start:end]."""
    position = start
    while position + 8 <= end:
        record_type, misc, size = struct.unpack_from("<IHH", buf, position)
        if size < 8:
            return  # corrupt or truncated: stop rather than loop
        yield position, record_type, misc, size
        position += size


def time_reader(buf, data=None) -> Callable[[int, int], int]:
    """When a record happened, from its sample_id trailer; the records are in `buf`,
    or in `data` where `buf` is only a recording's header (its events' layout).

    Records are written per ring buffer, so file order is not time order (a child's
    exec can be written before its parent's fork). Without timestamps, fall back
    to file order."""
    offset, _ = struct.unpack_from("<QQ", buf, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", buf, ATTR_SIZE)[0]
    sample_type = struct.unpack_from("<Q", buf, offset + 24)[0] if attr_size >= 32 else 0
    if not sample_type & SAMPLE_TIME:
        return lambda position, size: position
    back = 8 + 8 * sum(1 for bit in AFTER_TIME if sample_type & bit)
    records_in = buf if data is None else data
    return lambda position, size: struct.unpack_from("<Q", records_in, position + size - back)[0]


PERF_RECORD_SAMPLE = 9
SAMPLE = {name: 1 << bit for bit, name in enumerate(
    "IP TID TIME ADDR READ CALLCHAIN ID CPU PERIOD STREAM_ID RAW BRANCH_STACK "
    "REGS_USER STACK_USER WEIGHT DATA_SRC IDENTIFIER".split())}
SP_REGISTER = 7  # PERF_REG_X86_SP
AT_PAGESZ = 6  # an auxiliary vector entry every process gets
KERNEL_START = 0xFFFF800000000000  # x86-64: kernel addresses are above this
PERF_CONTEXT_MAX = (1 << 64) - 4095  # call chain markers (PERF_CONTEXT_KERNEL...) are above this
ENTRY_TRIES = 8  # main-thread copies looked at, per process, for where its stack began
STACK_REACH = 1 << 23  # how far above a pointer array its strings can be (the stack's usual limit)


Layout = Tuple[int, int]  # (sample_type, sample_regs_user) of one event


def _event_layouts(buf) -> Tuple[List[Optional[Layout]], Dict[int, Optional[Layout]]]:
    """Each event's layout (None: it copies no usable user stack), and by sample id."""
    offset, size = struct.unpack_from("<QQ", buf, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", buf, ATTR_SIZE)[0]
    by_id: Dict[int, Optional[Layout]] = {}
    layouts = []
    for position in range(offset, offset + size, attr_size):
        sample_type = struct.unpack_from("<Q", buf, position + 24)[0]
        regs = struct.unpack_from("<Q", buf, position + 80)[0]
        usable = (not sample_type & (SAMPLE["READ"] | SAMPLE["BRANCH_STACK"])
                  and sample_type & SAMPLE["STACK_USER"] and regs >> SP_REGISTER & 1)
        layout = (sample_type, regs) if usable else None
        layouts.append(layout)
        ids_at, ids_size = struct.unpack_from("<QQ", buf, position + attr_size - 16)
        for at in range(ids_at, ids_at + ids_size, 8):
            by_id[struct.unpack_from("<Q", buf, at)[0]] = layout
    return layouts, by_id


def sample_layouts(buf) -> Optional[Callable[[int], Optional[Layout]]]:
    """A function from a sample record's position to its event's layout, or None
    when no event copies user stacks. With several events (on-CPU samples and
    context switches), each sample names its event by its leading IDENTIFIER."""
    layouts, by_id = _event_layouts(buf)
    if not any(layouts):
        return None
    if len(set(layouts)) == 1:  # one event, or several alike (perf's dummy tracking event)
        return lambda position: layouts[0]
    if not all(layout and layout[0] & SAMPLE["IDENTIFIER"] for layout in layouts if layout):
        return None
    return lambda position: by_id.get(struct.unpack_from("<Q", buf, position + 8)[0])


def strip_stacks(head: bytes, body: bytes) -> bytes:
    """`body`'s records (of the recording whose header is `head`) with every sample's copy
    of the user stack and registers left out: what perf needs to show them, not to
    unwind them again (record --drop-stacks, once they are unwound)."""
    layout_of = sample_layouts(head)
    if layout_of is None:
        return body
    identified = sample_layouts_by_id(head)
    out = bytearray()
    for position, kind, misc, size in records(body, 0, len(body)):
        layout = None
        if kind == PERF_RECORD_SAMPLE:
            layout = identified(body, position) if identified else layout_of(0)
        stack = user_stack(body, position, *layout) if layout else None
        if stack is None:
            out += body[position:position + size]
            continue
        regs_abi = stack.regs_at - 8
        after = stack.size_at + 8 + stack.size + 8  # past the copy and its dyn_size
        kept = body[position:regs_abi] + struct.pack("<QQ", 0, 0) + body[after:position + size]
        out += struct.pack("<IHH", kind, misc, len(kept)) + kept[8:]
    return bytes(out)


def sample_layouts_by_id(head: bytes) -> Optional[Callable[[bytes, int], Optional[Layout]]]:
    """sample_layouts for samples kept apart from their header: a function from (records,
    position) to the layout, or None when every sample has the same one."""
    layouts, by_id = _event_layouts(head)
    if len(set(layouts)) == 1:
        return None
    return lambda buf, position: by_id.get(struct.unpack_from("<Q", buf, position + 8)[0])


class UserStack(NamedTuple):
    pid: int
    sp: int  # the stack pointer when the sample was taken
    size_at: int  # where the copy's u64 size is; the copy follows, then its u64 dyn_size
    size: int  # bytes reserved for the copy (--stack-size)
    dyn_size: int  # bytes the kernel could copy
    regs_at: int = 0  # where the user registers' values begin
    regs: int = 0  # which registers (sample_regs_user)
    chain_at: int = 0  # where the call chain's u64 count is (0: the sample has none)
    tid: int = 0
    time: int = 0  # the sample's time (ns; 0: it has none)


def user_stack(buf, position: int, sample_type: int, regs: int) -> Optional[UserStack]:
    """The user stack copy of one sample record, if it has one."""
    at = position + 8
    pid = None
    tid = when = chain_at = 0
    for name, size in (("IDENTIFIER", 8), ("IP", 8), ("TID", 8), ("TIME", 8), ("ADDR", 8),
                       ("ID", 8), ("STREAM_ID", 8), ("CPU", 8), ("PERIOD", 8)):
        if sample_type & SAMPLE[name]:
            if name == "TID":
                pid, tid = struct.unpack_from("<II", buf, at)
            elif name == "TIME":
                when = struct.unpack_from("<Q", buf, at)[0]
            at += size
    if sample_type & SAMPLE["CALLCHAIN"]:
        chain_at = at
        at += 8 + 8 * struct.unpack_from("<Q", buf, at)[0]
    if sample_type & SAMPLE["RAW"]:  # u32 size, then that many bytes (to a u64 boundary)
        at += 4 + struct.unpack_from("<I", buf, at)[0]
    abi = struct.unpack_from("<Q", buf, at)[0]
    at += 8
    if not abi:
        return None
    regs_at = at
    sp = struct.unpack_from("<Q", buf, register_at(regs_at, regs, SP_REGISTER))[0]
    at += 8 * bin(regs).count("1")
    size = struct.unpack_from("<Q", buf, at)[0]
    if not size or pid is None:
        return None
    return UserStack(pid, sp, at, size, struct.unpack_from("<Q", buf, at + 8 + size)[0], regs_at, regs,
                     chain_at, tid, when)


def register_at(regs_at: int, regs: int, register: int) -> int:
    """Where one register's value is among a sample's user registers."""
    return regs_at + 8 * bin(regs & ((1 << register) - 1)).count("1")


class Tidied(NamedTuple):
    """What tidy() did and saw."""

    samples: int
    lost: int  # samples the kernel could not write (perf's LOST / LOST_SAMPLES records)
    pids: set  # every process with a COMM, FORK or EXIT record
    forgotten: int  # MMAP and FORK records of memory from before an exec
    clipped: int  # stack copies cut at the next mapping
    saved: int  # bytes the compaction removed
    times: Optional[array] = None  # each sample's time (ns, file order), if samples carry it
    kernel_addresses: Optional[set] = None  # every kernel address samples name (None: unknown)
    full: int = 0  # samples whose stack was deeper than the bytes copied (their stacks are cut)
    stepped: int = 0  # samples taken on a `ret`, moved to where it returns (Returns)
    resumed: int = 0  # samples stopped in code without unwind information, resumed at their return (resume.py)
    stuck: int = 0  # such samples whose return address was not found


def survey(path: str) -> Optional[Tidied]:
    """tidy()'s counts for any recording, read only (None: not perf.data)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PERF_MAGIC:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                offset, size = struct.unpack_from("<QQ", buf, DATA_SECTION)
                scan = _scan(buf, offset, min(offset + size, len(buf)))
    except (OSError, ValueError, struct.error):
        return None
    return Tidied(scan.samples, max(scan.lost_records, scan.lost_samples), scan.pids, 0, 0, 0)


class _Scan:
    """Pass 1: what the rewrite needs to know before it starts."""

    def __init__(self) -> None:
        self.samples = self.lost_records = self.lost_samples = 0
        self.pids: set = set()
        self.last_exec: Dict[int, int] = {}  # pid -> when it last exec'd
        self.mmaps: List[Tuple[int, int, int, int, bool]] = []  # position, pid, start, when, is [stack]
        self.code: List[Tuple[int, int, int, int, bytes]] = []  # pid, start, end, file offset, file: executable maps
        self.forks: List[Tuple[int, int, int, int]] = []  # position, pid, ppid, tid
        self.exits: set = set()  # processes that ended
        self.build_ids: Dict[str, str] = {}  # file -> build id (hex), from map records that hold one
        self.movable = True  # every record walked to the end, none with a payload outside it
        self.times = array("Q")  # each sample's time (ns), when samples carry it
        self.addresses: Optional[set] = set()  # sample IPs and call chain entries (None: not all read)


def _scan(buf, offset: int, end: int) -> _Scan:
    scan = _Scan()
    when = time_reader(buf)
    attrs_at, attrs_size = struct.unpack_from("<QQ", buf, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", buf, ATTR_SIZE)[0]
    sample_types = [struct.unpack_from("<Q", buf, at + 24)[0]
                    for at in range(attrs_at, attrs_at + attrs_size, attr_size)] if attr_size else []
    time_at = _time_offset(sample_types)
    chain_at = _chain_offset(sample_types)
    if chain_at is None:
        scan.addresses = None
    addresses = scan.addresses
    reached = offset
    for position, record_type, misc, size in records(buf, offset, end):
        reached = position + size
        if record_type == PERF_RECORD_SAMPLE:
            scan.samples += 1
            if time_at is not None and time_at + 8 <= size:
                scan.times.append(struct.unpack_from("<Q", buf, position + time_at)[0])
            if addresses is not None:
                entries = struct.unpack_from("<Q", buf, position + chain_at)[0] if chain_at + 8 <= size else -1
                if 0 <= entries and chain_at + 8 + 8 * entries <= size:
                    addresses.update(struct.unpack_from("<%dQ" % entries, buf, position + chain_at + 8))
                else:
                    scan.addresses = addresses = None
        elif record_type in (PERF_RECORD_MMAP, PERF_RECORD_MMAP2):
            pid, _, start = struct.unpack_from("<IIQ", buf, position + 8)
            name_at = _mmap_name_at(position, record_type)
            scan.mmaps.append((position, pid, start, when(position, size), buf[name_at:name_at + 6] == b"[stack"))
            length, pgoff = struct.unpack_from("<QQ", buf, position + 24)
            executable = (struct.unpack_from("<I", buf, position + 64)[0] & PROT_EXEC if record_type == PERF_RECORD_MMAP2
                          else not misc & MISC_MMAP_DATA)
            if executable:
                name_end = buf.find(b"\0", name_at, position + size)
                name = bytes(buf[name_at:name_end if name_end >= 0 else name_at])
                scan.code.append((pid, start, start + length, pgoff, name))
                if record_type == PERF_RECORD_MMAP2 and misc & MISC_MMAP_BUILD_ID and 0 < buf[position + 40] <= 20:
                    scan.build_ids[name.decode("utf-8", "replace")] = buf[position + 44:position + 44 + buf[position + 40]].hex()
        elif record_type == PERF_RECORD_COMM:
            pid = struct.unpack_from("<I", buf, position + 8)[0]
            scan.pids.add(pid)
            if misc & MISC_COMM_EXEC:
                scan.last_exec[pid] = max(scan.last_exec.get(pid, 0), when(position, size))
        elif record_type == PERF_RECORD_FORK:
            pid, ppid, tid = struct.unpack_from("<III", buf, position + 8)
            scan.pids.add(pid)
            scan.forks.append((position, pid, ppid, tid))
        elif record_type == PERF_RECORD_EXIT:
            pid, _, tid = struct.unpack_from("<III", buf, position + 8)
            scan.pids.add(pid)
            if pid == tid:
                scan.exits.add(pid)
        elif record_type == PERF_RECORD_LOST:
            scan.lost_records += struct.unpack_from("<Q", buf, position + 16)[0]
        elif record_type == PERF_RECORD_LOST_SAMPLES:
            scan.lost_samples += struct.unpack_from("<Q", buf, position + 8)[0]
        elif record_type == PERF_RECORD_AUXTRACE:
            scan.movable = False
    features = int.from_bytes(buf[FEATURES:FEATURES + FEATURE_BITS // 8], "little")
    if reached != end or features >> HEADER_AUXTRACE & 1:
        scan.movable = False
        scan.addresses = None
    return scan


def jitdump_named_by_pid(head: bytes, record: bytes) -> bytes:
    """A jitdump's MMAP2 record (`./jit-N.dump`, as tidied) named after the pid it belongs
    to, `./jit-PID.dump`: a process in a container names its dump after its pid in there.
    perf inject opens the dump by that name and takes it only when the name's pid is the
    process's (perf/rewrite.py renames /tmp/jit-N.dump in place; this one may grow)."""
    record_type, misc, size = struct.unpack_from("<IHH", record, 0)
    pid = struct.unpack_from("<I", record, 8)[0]
    end = record.index(b"\0", 72)
    wanted = b"./jit-%d.dump" % pid
    if record_type != PERF_RECORD_MMAP2 or record[72:end] == wanted:
        return record
    offset, _ = struct.unpack_from("<QQ", head, ATTRS_SECTION)
    sample_type = struct.unpack_from("<Q", head, offset + 24)[0]
    trailer = 8 * sum(1 for bit in (SAMPLE["TID"], SAMPLE["TIME"], SAMPLE["ID"], SAMPLE["STREAM_ID"],
                                    SAMPLE["CPU"], SAMPLE["IDENTIFIER"]) if sample_type & bit)
    name = wanted + b"\0" * (8 - len(wanted) % 8)
    body = record[8:72] + name + (record[size - trailer:size] if trailer else b"")
    return struct.pack("<IHH", record_type, misc, 8 + len(body)) + body


def inherited_maps(head: bytes, maps: bytes, forks: Iterable[Tuple[int, int, int]]) -> bytes:
    """Copies of MMAP2 records in `maps` for processes that inherited them: for each
    (child, parent, forked_at) (parents before their children), the parent's maps made
    before `forked_at` (ns, the records' clock), as the child's own.

    A child forked before perf attached runs, from its first frames on, code its parent
    made (trampolines of the functions the parent had started); perf knows only the maps
    each process's own jitdump names. Maps the parent made after the fork are never
    copied: the child may hold its own code at those addresses."""
    when = time_reader(head, maps)
    by_pid: Dict[int, List[Tuple[int, bytes]]] = {}
    for position, record_type, _, size in records(maps, 0, len(maps)):
        if record_type == PERF_RECORD_MMAP2:
            pid = struct.unpack_from("<I", maps, position + 8)[0]
            by_pid.setdefault(pid, []).append((when(position, size), maps[position:position + size]))
    copies = []
    for child, parent, forked_at in forks:
        for at, record in by_pid.get(parent, ()):
            if at < forked_at:
                copy = bytearray(record)
                struct.pack_into("<II", copy, 8, child, child)
                by_pid.setdefault(child, []).append((at, bytes(copy)))
                copies.append(bytes(copy))
    return b"".join(copies)


def _mmap_name_at(position: int, record_type: int) -> int:
    """Where an MMAP or MMAP2 record's file name begins."""
    return position + (40 if record_type == PERF_RECORD_MMAP else 72)


def _read_attrs(f) -> Optional[Tuple[bytes, List[bytes]]]:
    """(file header, each event's perf_event_attr with its ids section) of an open
    perf.data, or None when it is not readable as one."""
    header = f.read(104)
    if len(header) < 104 or not header.startswith(PERF_MAGIC):
        return None
    attr_size, offset, size = struct.unpack_from("<QQQ", header, ATTR_SIZE)
    if attr_size < 32 or size % attr_size:
        return None
    f.seek(offset)
    attrs = f.read(size)
    if len(attrs) < size:
        return None  # truncated: let perf say what it can
    return header, [attrs[at:at + attr_size] for at in range(0, size, attr_size)]


def has_call_graphs(path: str) -> Optional[bool]:
    """Whether any event of a recording carries call chains or user stacks
    (None when the file cannot be read as perf.data)."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
    except OSError:
        return None
    if read is None:
        return None
    wanted = SAMPLE["CALLCHAIN"] | SAMPLE["STACK_USER"]
    return any(struct.unpack_from("<Q", attr, 24)[0] & wanted for attr in read[1])


EXCLUDE_KERNEL = 1 << 5  # perf_event_attr's flags (at byte 40): exclude_kernel


def kernel_excluded(path: str) -> bool:
    """Whether every event of a recording left the kernel out: what perf falls back to,
    with one line of warning, for a user without CAP_PERFMON at perf_event_paranoid 2."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
    except OSError:
        return False
    if read is None or not read[1] or len(read[1][0]) < 48:
        return False
    return all(struct.unpack_from("<Q", attr, 40)[0] & EXCLUDE_KERNEL for attr in read[1])


KERNEL_NOT_SAMPLED = (
    "kernel time was not sampled (perf ran without the right to: not root, no CAP_PERFMON, "
    "kernel.perf_event_paranoid at 2 or more): time in system calls and page faults counts under "
    "the user-space function that entered the kernel, and the kernel's layer and system calls read "
    "nothing; `sudo sysctl kernel.perf_event_paranoid=1` (or recording as root) samples it")


HEADER_CMDLINE = 11


def made_by_record(path: str) -> bool:
    """Whether `mixedstack record` made this perf.data (its perf wrote the pieces to
    RECORDING.d/raw.data, as perf's command line in the header says)."""
    cmdline = _feature(path, HEADER_CMDLINE)
    return bool(cmdline) and b".d/raw.data\0" in cmdline


def _feature(path: str, bit: int) -> Optional[bytes]:
    """The content of one feature section of a recording (None when absent or unreadable)."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
            if read is None:
                return None
            header = read[0]
            features = int.from_bytes(header[FEATURES:FEATURES + FEATURE_BITS // 8], "little")
            if not features >> bit & 1:
                return None
            offset, size = struct.unpack_from("<QQ", header, DATA_SECTION)
            f.seek(offset + size + 16 * bin(features & ((1 << bit) - 1)).count("1"))
            at, length = struct.unpack("<QQ", f.read(16))
            f.seek(at)
            return f.read(length)
    except (OSError, struct.error):
        return None


def build_id_record(build: str, name: str, kernel: bool = False) -> bytes:
    """One record of the BUILD_ID feature section: `name`'s build id (hex), for any process."""
    identity = bytes.fromhex(build)[:20]
    name_bytes = name.encode() + b"\0"
    name_bytes += b"\0" * (-len(name_bytes) % 64)  # perf aligns names to 64 bytes
    misc = (MISC_KERNEL if kernel else MISC_USER) | MISC_BUILD_ID_SIZE
    return struct.pack("<IHHi", 0, misc, 36 + len(name_bytes), -1) + identity.ljust(20, b"\0") + \
        struct.pack("<B3x", len(identity)) + name_bytes


def event_names(path: str) -> Optional[List[str]]:
    """The recording's event names as perf evlist prints them (from the EVENT_DESC
    feature section), or None when the file does not say."""
    desc = _feature(path, HEADER_EVENT_DESC)
    described = None if desc is None else events_described(desc)
    return None if described is None else [name for name, _ in described]


def events_described(desc: bytes) -> Optional[List[Tuple[str, List[int]]]]:
    """An EVENT_DESC feature section -> each event's (name, sample ids), in attr order."""
    events = []
    try:
        count, attr_size = struct.unpack_from("<II", desc, 0)
        at = 8
        for _ in range(count):
            ids = struct.unpack_from("<I", desc, at + attr_size)[0]
            length = struct.unpack_from("<I", desc, at + attr_size + 4)[0]
            name_at = at + attr_size + 8
            name = desc[name_at:name_at + length].split(b"\0", 1)[0].decode("latin-1")
            events.append((name, list(struct.unpack_from("<%dQ" % ids, desc, name_at + length))))
            at = name_at + length + 8 * ids
    except struct.error:
        return None
    return events


def time_quantiles(times: Optional[Iterable[int]], steps: int = 64) -> List[int]:
    """steps+1 sample times of evenly spaced rank (first, ..., median, ..., last)."""
    ranked = sorted(times or ())
    if not ranked:
        return []
    return [ranked[round((len(ranked) - 1) * step / steps)] for step in range(steps + 1)]


def _chain_offset(sample_types: Iterable[int]) -> Optional[int]:
    """Where a sample record holds its call chain (u64 count, then addresses; the
    sample's own IP is its first entry), if every event has one at the same place."""
    before = (SAMPLE["IDENTIFIER"] | SAMPLE["IP"] | SAMPLE["TID"] | SAMPLE["TIME"] | SAMPLE["ADDR"]
              | SAMPLE["ID"] | SAMPLE["STREAM_ID"] | SAMPLE["CPU"] | SAMPLE["PERIOD"])
    leading = {sample_type & (before | SAMPLE["READ"] | SAMPLE["CALLCHAIN"]) for sample_type in sample_types}
    if len(leading) != 1:
        return None
    sample_type = leading.pop()
    if not sample_type & SAMPLE["CALLCHAIN"] or sample_type & SAMPLE["READ"]:
        return None
    return 8 + 8 * bin(sample_type & before).count("1")


def _time_offset(sample_types: Iterable[int]) -> Optional[int]:
    """Where a sample record holds its time, if every event puts it at the same place."""
    leading = {sample_type & (SAMPLE["IDENTIFIER"] | SAMPLE["IP"] | SAMPLE["TID"] | SAMPLE["TIME"])
               for sample_type in sample_types}
    if len(leading) != 1:
        return None
    sample_type = leading.pop()
    if not sample_type & SAMPLE["TIME"]:
        return None
    return 8 + 8 * bin(sample_type & ~SAMPLE["TIME"]).count("1")  # IDENTIFIER, IP, TID come first


def pid_and_time(head) -> Optional[Callable[[bytes, int], Tuple[int, int]]]:
    """A function from (records, a sample's position) to its (pid, time), for a recording
    whose header is `head`; None when its events do not all put them at the same place."""
    offset, size = struct.unpack_from("<QQ", head, ATTRS_SECTION)
    attr_size = struct.unpack_from("<Q", head, ATTR_SIZE)[0]
    sample_types = [struct.unpack_from("<Q", head, at + 24)[0] for at in range(offset, offset + size, attr_size)]
    time_at = _time_offset(sample_types)
    if time_at is None or not all(sample_type & SAMPLE["TID"] for sample_type in sample_types):
        return None
    pid_at = 8 + 8 * bin(sample_types[0] & (SAMPLE["IDENTIFIER"] | SAMPLE["IP"])).count("1")
    return lambda buf, position: (struct.unpack_from("<I", buf, position + pid_at)[0],
                                  struct.unpack_from("<Q", buf, position + time_at)[0])


def sample_times(path: str) -> Optional[List[int]]:
    """Every sample's timestamp (ns, in file order), read with small buffered
    reads; None when the recording's samples carry no time or differ in layout."""
    try:
        with open(path, "rb") as f:
            read = _read_attrs(f)
            if read is None:
                return None
            header, attrs = read
            time_at = _time_offset(struct.unpack_from("<Q", attr, 24)[0] for attr in attrs)
            if time_at is None:
                return None
            offset, size = struct.unpack_from("<QQ", header, DATA_SECTION)
            return _times(f, offset, offset + size, time_at)
    except OSError:
        return None


def _times(f, start: int, end: int, time_at: int) -> List[int]:
    times = []
    window, window_at = b"", start
    position = start
    chunk = 1 << 20
    while position + 8 <= end:
        if position + time_at + 8 > window_at + len(window):  # a record's head is past the window
            f.seek(position)
            window, window_at = f.read(min(chunk, end - position)), position
            if len(window) < 8:
                break
        at = position - window_at
        record_type, _, size = struct.unpack_from("<IHH", window, at)
        if size < 8:
            break
        if record_type == PERF_RECORD_SAMPLE and at + time_at + 8 <= len(window):
            times.append(struct.unpack_from("<Q", window, at + time_at)[0])
        position += size
    return times


def truncation(path: str) -> Optional[str]:
    """"N of M bytes" when the file is shorter than its header says, else None."""
    try:
        with open(path, "rb") as f:
            header = f.read(56)
            actual = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(header) < 56:
        return "%d of at least 56 bytes" % actual
    offset, size = struct.unpack_from("<QQ", header, DATA_SECTION)
    return "%d of %d bytes" % (actual, offset + size) if actual < offset + size else None


def is_perf_data(head: bytes) -> bool:
    """Whether a file's first bytes are perf.data's."""
    return head.startswith(PERF_MAGIC)


def is_recording(path: str) -> bool:
    """Whether PATH is a perf.data file (False when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return is_perf_data(f.read(8))
    except OSError:
        return False
