"""`mixedstack record`: perf record with the right flags for the target interpreter.

Steps: find the interpreter and pick a mode (target.py; with --pid: attach/, which may turn
the running process's trampoline on) -> start the target with the mode's environment and
attach `perf record` to it (launch.py), while each piece perf closes is taken into
perf.data (collect.py, perf/pieces.py) -> move what the run left in /tmp beside the
recording -> `perf inject --jit` for the jitted code's maps where the mode needs it ->
one summary line. The target's exit status is passed through.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import shlex
import shutil
import signal
import time
from typing import Callable, List, Optional

from mixedstack.record import debuginfo
from mixedstack.perf import command as perf
from mixedstack.record import tmpfiles
from mixedstack.record.attach.pid import attach_tree
from mixedstack.record.system import capabilities
from mixedstack.record.agent import readable_copy
from mixedstack.record.launch import Account
from mixedstack.record.launch import attach_to
from mixedstack.record.launch import run_attached
from mixedstack import store
from mixedstack.record.collect import Collector
from mixedstack.record.unwind import Unwinder
from mixedstack.perf.data import KERNEL_NOT_SAMPLED
from mixedstack.perf.data import inherited_maps
from mixedstack.perf.data import kernel_excluded
from mixedstack.perf.data import time_quantiles
from mixedstack.markers import TRUNCATED
from mixedstack.record.keep import RecordingFolder
from mixedstack.record.target import TargetError
from mixedstack.record.target import find_interpreter
from mixedstack.perf import syscalls
from mixedstack.record import lines
from mixedstack.record.target import perf_mode


@dataclasses.dataclass
class RecordOptions:
    command: List[str]  # what to run, or [] with `pid`
    output: str = "perf.data"
    frequency: int = perf.DEFAULT_FREQUENCY
    call_graph: str = "auto"  # auto | fp | dwarf
    stack_size: int = perf.DEFAULT_STACK_SIZE
    agent: str = "auto"  # auto | always | never: our trampoline agent (agent/)
    pids: List[int] = dataclasses.field(default_factory=list)  # attach to these running processes instead
    children: bool = True  # with pids: and every process descending from them
    everything: bool = False  # attach to every process on the machine (perf record -a)
    duration: Optional[float] = None  # stop recording after this many seconds
    stop_target: bool = True  # when duration runs out, stop a launched target too (else it runs on)
    off_cpu: bool = False  # also record every context switch, with its stack (offcpu.py)
    activate: Optional[bool] = None  # with pid: may gdb run code in it (None: ask, if `ask`)
    user: Optional[str] = None  # run the command as this user (perf keeps our privileges)
    drop_stacks: bool = False  # perf.data without the stack copies once unwound (unwind.py)
    syscalls: bool = False  # every system call's entry and exit, and a sample of them with stacks (perf/syscalls.py)
    lines: Optional[bool] = None  # the companion sampler for line numbers (lines.py); None: where it works
    # a live view (cli/top.py): told of the samples of each batch unwound, every `unwind_every` s
    on_samples: Optional[Callable] = None
    unwind_every: Optional[float] = None
    target_output: Optional[str] = None  # the command's stdout and stderr to this file; the terminal stays ours
    progress: Optional[Callable] = None  # called with collect.Status every 0.2 s, then with None

    @property
    def attaching(self) -> bool:
        """Recording processes that run already (--pid, -a), not a command of ours."""
        return bool(self.pids) or self.everything


@dataclasses.dataclass
class RecordResult:
    status: int  # the target's exit status, shell style (128+N for signal N)
    samples: int
    lost: int
    seconds: float
    mode: str
    summary: str


def target_environment(mode) -> dict:
    """The target's environment: the mode's variables travel to every child."""
    env = dict(os.environ)
    env.update(mode.env)
    return env


def deep_stacks_note(tidied, stack_size: int) -> Optional[str]:
    """One line when stacks went on above the bytes perf copied: they fold as [truncated]."""
    share = tidied.full / max(1, tidied.samples)
    if share < 0.001:
        return None
    what = "%.1f%% of samples had stacks deeper than the %s bytes copied; they fold with a %s root" % (
        100 * share, format(stack_size, ","), TRUNCATED)
    if stack_size < perf.MAX_STACK_SIZE:
        return what + ": record with --stack-size %d (perf's maximum)" % perf.MAX_STACK_SIZE
    return what + " (perf copies at most that: about 110 nested Python calls on 3.13, 60 on 3.14 and 3.15)"


def resumed_note(tidied) -> Optional[str]:
    """One line when samples stopped in code without unwind information (BLAS kernels)."""
    stopped = tidied.resumed + tidied.stuck
    if not stopped:
        return None
    return "%.1f%% of samples were in code without unwind information; %s of them resumed at their " \
        "return address%s" % (100 * stopped / max(1, tidied.samples), format(tidied.resumed, ","),
                              ", %s not (their stacks end there)" % format(tidied.stuck, ",") if tidied.stuck else "")


FULL_DISK = 32 << 20  # bytes: perf's ring buffers hold up to 16 MB a CPU, which it writes at once


def early_stop_note(ended, failed: Optional[OSError], disk_full: bool, stop_target: bool) -> Optional[str]:
    """One line when the recording stopped before the target did."""
    if failed is not None or disk_full:
        why = "the disk filled up" if failed is None or failed.errno == errno.ENOSPC else \
            "writing the recording failed (%s)" % (failed.strerror or failed)
        return "%s: the recording stopped %s in and keeps what it had until then; " \
               "record to a file system with more room (-o)" % (why, _when(ended))
    if ended.early == "perf":
        return "perf record ended %s in (exit status %d), before the target: the recording keeps " \
               "what it had until then" % (_when(ended), shell_status(ended.perf_status))
    if ended.early == "duration":
        return "recording stopped after %s (-d); %s" % (
            _when(ended), "the target was stopped as Ctrl-C would" if stop_target else "the target ran on to its end")
    return None


def _when(ended) -> str:
    return "%.1f s" % ended.seconds if ended.seconds is not None else "part-way"


def interpreter_symbols_note(interp, mapped) -> Optional[str]:
    """One line when the interpreter's code is stripped and no debug file was found."""
    if interp is None:
        return None
    binary = interp.libpython or interp.executable
    build = next((build for build, path in mapped if path == binary), None)
    return debuginfo.missing_note(binary, build, interp.version)


CAP_IPC_LOCK = 14


def may_lock_memory() -> bool:
    """Root or CAP_IPC_LOCK: perf may map more than perf_event_mlock_kb."""
    return os.geteuid() == 0 or bool(capabilities() >> CAP_IPC_LOCK & 1)


def perf_record_command(options: RecordOptions, mode, recording: RecordingFolder) -> List[str]:
    return perf.record_command(recording.raw, recording.buildid_dir, options.frequency, mode.call_graph,
                               options.stack_size, off_cpu=options.off_cpu, monotonic=mode.needs_inject,
                               lock_memory=may_lock_memory(), syscalls=options.syscalls, realtime=os.geteuid() == 0)  # launch adds the target


def with_agent(mode, folder: str):
    """The mode with a folder of ours (the agent's, perf_jit's fork guard) at the front
    of the target's PYTHONPATH."""
    return dataclasses.replace(mode, env=dict(mode.env, PYTHONPATH=os.pathsep.join(
        p for p in (folder, os.environ.get("PYTHONPATH")) if p)))


def unwinding(options: RecordOptions, recording: RecordingFolder, collector: Collector, mode,
              uid: int) -> Optional[Unwinder]:
    """record unwinds while it records (unwind.py) a command it runs: the recording then
    keeps its samples unwound, and no later command runs perf script over them. (Attached
    to running processes, the first fold does: their perf maps and dumps are taken from
    their /tmp, a container's maybe, only once record ends.)"""
    if options.attaching:
        return None
    lent = set()

    def lend_debug_files() -> None:
        """perf script finds a stripped file's debug symbols where record lends them."""
        mapped = [(build, path) for path, build in list(collector.assembly.tidier.build_ids.items())
                  if path.startswith("/") and (build, path) not in lent]
        lent.update(mapped)
        for found in debuginfo.lendable(mapped):
            recording.lend_debug_file(found.path, found.build, found.debug)
    try:
        writer = store.Writer(recording.folder)
    except OSError:
        return None
    return Unwinder(collector.assembly, recording, writer, jitdumps_buffered=mode.name == "perf-jit",
                    inject=recording.inject_jit if mode.needs_inject else None, uid=uid, prepare=lend_debug_files,
                    stripped=options.off_cpu or options.drop_stacks, listener=options.on_samples,
                    # a live view's batches come often, on a core of their own if need be
                    **({"every": options.unwind_every, "share": 1.0, "nice": False} if options.unwind_every else {}))


def shell_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_as(user: Optional[str], say: Callable[[str], None]) -> Optional[Account]:
    """The account `record --user` names (None: our own), checked before anything runs."""
    if user is None:
        if os.geteuid() == 0 and os.environ.get("SUDO_USER") not in (None, "", "root"):
            say("mixedstack: note: the target runs as root; add --user %s to run it as you "
                "(perf keeps root either way)" % shlex.quote(os.environ["SUDO_USER"]))
        return None
    try:
        account = Account.named(user)
    except KeyError:
        raise TargetError("no user %s on this machine: give --user an existing login name" % user)
    if account.uid != os.geteuid() and os.geteuid() != 0:
        raise TargetError("--user %s needs root: run mixedstack record with sudo" % user)
    return account


def record(options: RecordOptions, say: Callable[[str], None],
           ask: Optional[Callable[[str], bool]] = None) -> RecordResult:
    perf.perf_binary()  # fail first, and only once, when perf is missing
    recording = RecordingFolder(options.output)
    account = run_as(options.user, say) if not options.attaching else None
    agent_folder = attached = None
    if not options.attaching:
        interp = find_interpreter(options.command)
        programs = [shutil.which(options.command[0]) or options.command[0]] + ([interp.executable] if interp else [])
        if account is not None and not all(account.can(program, os.X_OK) for program in programs):
            raise TargetError("%s cannot run %s (no permission on it or a folder above it): "
                              "give a program that user can run" % (account.name, options.command[0]))
        mode = perf_mode(interp, options.call_graph, options.agent)
        if mode.name == "agent":
            from mixedstack.record.agent import agent_path  # builds it for the target on first use

            agent_folder = agent_path(interp)
            mode = with_agent(mode, agent_folder)
        elif mode.name == "perf-jit":
            from mixedstack.record.agent import fork_guard_path

            agent_folder = fork_guard_path()
            mode = with_agent(mode, agent_folder)
    else:
        attached = attach_tree(options.pids or [1], options.children, options.call_graph, options.agent,
                               options.activate, say, ask, everything=options.everything)
        interp, mode = attached.interp, attached.mode
    if mode.name in ("native", "agent") or options.call_graph != "auto" or options.attaching:
        say("mixedstack: %s" % mode.reason)
    # what we write is the owner's only: perf.data holds copies of the target's stack memory
    umask = os.umask(0o077)
    held = None
    try:
        os.mkdir(recording.folder, 0o700)
        held = recording.lock()  # until record returns: another record may not take it for unfinished
        return _record(options, say, recording, interp, mode, account, umask, attached, agent_folder)
    finally:
        if held is not None:
            os.close(held)
        os.umask(umask)


def _record(options: RecordOptions, say: Callable[[str], None], recording: RecordingFolder, interp, mode,
            account: Optional[Account], umask: int, attached, agent_folder: Optional[str]) -> RecordResult:
    if account is not None and agent_folder is not None:
        # our cache may sit in a home the target cannot enter: the target loads a copy
        # kept with the recording (perf reads it there later); the recording's folder
        # lets others pass through to it, not list or read anything else
        os.chmod(recording.folder, 0o711)
        agent_folder = readable_copy(agent_folder, recording.agent_dir)
        if not account.can(agent_folder, os.R_OK | os.X_OK):
            recording.remove()
            raise TargetError("%s cannot enter %s, where the agent it loads is kept: record to a folder "
                              "that user can reach (e.g. -o /tmp/NAME.data)" % (account.name, recording.folder))
        mode = with_agent(mode, agent_folder)
    command = perf_record_command(options, mode, recording)
    system_files = recording.cache_system_files()
    collector = Collector(recording.raw, recording.data, recording.folder, options.progress)
    unwinder = unwinding(options, recording, collector, mode, account.uid if account else os.getuid())
    no_lines = lines.why_not(options.lines, interp, options.command, mode.env)
    companion = None if no_lines else lines.Companion(interp.executable, recording.folder, options.frequency)
    started = time.time()

    def perf_started(perf_process) -> None:
        collector.perf = perf_process
        # a piece that cannot be taken (the disk full) ends the recording: perf stops
        collector.on_failure = lambda: perf_process.poll() is None and perf_process.send_signal(signal.SIGINT)
    try:
        collector.start()
        if unwinder is not None:
            unwinder.start()
        if not options.attaching:
            env = target_environment(mode)
            ended = run_attached(command, options.command, account.environment(env) if account else env, umask,
                                 account, options.duration, options.stop_target, perf_started,
                                 output=options.target_output, released=companion.start if companion else lambda pid: None)
        else:
            if companion is not None and not options.everything:
                companion.start(*(attached.running(interp) or attached.pids[:1]))
            ended = attach_to(command, None if options.everything else attached.pids, options.children,
                              options.duration, perf_started)
    except BaseException:
        if companion is not None:
            companion.stop()
        system_files.join()
        if unwinder is not None:
            unwinder.stop()
            unwinder.writer.abandon()
        collector.stop()
        collector.assembly.close()
        if collector.assembly.head is None:
            recording.remove()  # nothing was recorded: leave no empty folder behind
        raise
    if options.attaching:
        owners = attached.owners
        target_uid = owners.get(attached.pids[0], os.getuid())
    else:
        target_uid = account.uid if account else os.getuid()
        owners = {}
    seconds = time.time() - started
    companion_did = companion.stop() if companion is not None else None
    collector.stop()
    assembly = collector.assembly
    if unwinder is not None:
        unwinder.stop()
        unwinder.forget_copies()  # before the real dumps are taken in
        recording.remove_jitted_code()
    system_files.join()
    if options.attaching:
        attached.before_inject(say)

    if assembly.head is None:
        if unwinder is not None:
            unwinder.writer.abandon()
        assembly.close()
        recording.remove()
        raise perf.PerfError(
            "perf record wrote no data (perf's exit status %d): see perf's message above; "
            "`perf record -- true` shows whether perf works here" % shell_status(ended.perf_status)
        )
    tidied = assembly.tidier.tidied()
    # every file mapped executable, as its map records named it
    mapped = [(build, path) for path, build in assembly.tidier.build_ids.items() if path.startswith("/")]
    assembly.add_build_ids(system_files.build_id_records())
    system_files.save(tidied.kernel_addresses)
    pids = tidied.pids | set(options.pids)
    # a process we attached to goes on running: its map and jitdump are copied, not moved
    # (with -a, processes started while recording are in no tree: their owner is read now)
    recording.adopt_tmp_files(pids, lambda pid: owners.get(pid) or tmpfiles.owner_of(pid) or target_uid,
                              since=0 if options.attaching else started - 1, move=not options.attaching,
                              warn=lambda message: say("mixedstack: warning: " + message),
                              places=attached.places if options.attaching else None)
    first = b""
    if mode.needs_inject and assembly.tidier.jitdumps:
        repaired = recording.repair_jitdumps(attached.places if options.attaching else ())
        if repaired:
            say("mixedstack: note: %s" % repaired)
        first, jitted, complaint = recording.inject_jit(assembly.head, assembly.features, assembly.tidier.jitdumps)
        if options.attaching:  # children forked before perf attached run their parents' code too
            first += inherited_maps(assembly.head, first, attached.forks_seen_in(recording.tmp_dir))
        if complaint:
            say("mixedstack: perf inject --jit failed (%s); Python frames will be missing" % complaint)
        assembly.add_build_ids(jitted)
        recording.remove_jitted_code()
    try:
        assembly.finish(first)
    except OSError as error:  # the disk full: the recording stays as it was after its last piece
        collector.failed = collector.failed or error
    assembly.close()
    # perf (run with -q) says nothing when it cannot write: a disk left with less room
    # than perf's buffers hold tells why it stopped
    disk_full = ended.early == "perf" and ended.perf_status != 0 and \
        collector.free_when_perf_ended is not None and collector.free_when_perf_ended < FULL_DISK
    stopped_note = early_stop_note(ended, collector.failed, disk_full, options.stop_target)
    if stopped_note:
        say("mixedstack: warning: " + stopped_note if ended.early == "perf" or collector.failed
            else "mixedstack: " + stopped_note)

    recording.prune_buildid_cache()
    if options.attaching and attached.places:
        recording.keep_contained_files(mapped, attached.places.values())
    for found in debuginfo.lendable(mapped):
        recording.lend_debug_file(found.path, found.build, found.debug)
    unwound = None
    if unwinder is not None:  # what is left: perf.data will not change again
        began = time.monotonic()
        kept = unwinder.finish(len(first), switches=options.off_cpu, drop=options.drop_stacks)
        if options.drop_stacks and not kept:
            say("mixedstack: warning: the samples could not all be unwound while recording (%s): perf.data "
                "keeps its stack copies" % (unwinder.failed or "see above"))
        # for bench/ and whoever wonders what unwinding beside the target cost
        unwound = {"kept": kept, "batches": unwinder.batches, "cpu_s": round(unwinder.cpu, 3),
                   "at_end_s": round(time.monotonic() - began, 3), "failed": unwinder.failed}
        tmpfiles.remove_flush_marks(pids, lambda pid: target_uid)
    calls = kept_syscalls(recording, unwinder, say) if options.syscalls else None
    samples = tidied.samples - (calls.records() if calls is not None else 0)
    if kernel_excluded(recording.data):  # report says it again, from perf.data itself
        say("mixedstack: warning: " + KERNEL_NOT_SAMPLED)
    cut_note = deep_stacks_note(tidied, options.stack_size) if mode.call_graph == "dwarf" else None
    if cut_note:
        say("mixedstack: warning: " + cut_note)
    gaps_note = resumed_note(tidied)
    if gaps_note:
        say("mixedstack: note: " + gaps_note)
    lines_note = lines_note_of(companion_did, no_lines, interp)
    if lines_note:
        say("mixedstack: note: " + lines_note)
    symbols_note = interpreter_symbols_note(interp, mapped)
    if symbols_note:
        say("mixedstack: note: " + symbols_note)
    packages_note = debuginfo.stripped_packages_note(debuginfo.stripped_packages(mapped))
    if packages_note:
        say("mixedstack: note: " + packages_note)
    # Stopped by a signal to record (kill, timeout): exit as the shell expects of that
    # signal (SIGINT 130, SIGTERM 143, SIGHUP 129); else the target's own status.
    exit_status = 128 + ended.received[0] if ended.received else shell_status(ended.status)
    recording.write_meta({
        "command": options.command or (["--all"] if options.everything else
                                        [word for pid in options.pids for word in ("--pid", str(pid))]),
        "mode": mode.name,
        "activated": attached.activated if options.attaching else None,
        "processes": attached.parents if options.attaching else None,
        "reason": mode.reason,
        "interpreter": interp.describe() if interp else None,
        "call_graph": mode.call_graph,
        "frequency": options.frequency,
        "off_cpu": options.off_cpu,
        "syscalls": len(calls) if calls is not None else None,
        # the companion sampler's line numbers (3.14+): what it did, or why it did not run
        "lines": companion_did if companion_did is not None else {"why_not": no_lines},
        "stack_size": options.stack_size if mode.call_graph == "dwarf" else None,
        "deeper_than_copied": tidied.full,
        "resumed": tidied.resumed,
        "unwound_while_recording": unwound,
        # perf.data's samples without their stack copies: only what was kept of them unwinds
        "stacks_dropped": bool(options.drop_stacks and unwound and unwound["kept"]),
        "not_resumed": tidied.stuck,
        # what report says again about this recording
        "notes": [note for note in (stopped_note, cut_note, gaps_note, symbols_note, packages_note) if note],
        "exit_status": exit_status,
        "seconds": round(seconds, 3),
        "samples": samples,
        "lost": tidied.lost,
        # for fold's split of the recording into time slices (and to know it is this file)
        "sample_times": time_quantiles(tidied.times),
        "bytes": os.path.getsize(recording.data),
    })
    summary = "mixedstack: %s samples%s%s in %.1f s, mode %s%s, exit status %d -> %s (+ %s%s); next: mixedstack fold %s" % (
        format(samples, ","),
        " (%s lost)" % format(tidied.lost, ",") if tidied.lost else "",
        ", %s system calls" % format(len(calls), ",") if calls is not None else "",
        seconds,
        mode.name,
        " (%s)" % interp.describe() if interp else "",
        exit_status,
        recording.data,
        recording.folder, os.sep,
        shlex.quote(recording.data),
    )
    return RecordResult(exit_status, samples, tidied.lost, seconds, mode.name, summary)


def lines_note_of(did: Optional[dict], why_not: Optional[str], interp) -> Optional[str]:
    """One line on the line numbers: why there are none, or the companion's trouble."""
    if did is None:
        return "no line numbers: %s" % why_not if interp is not None and why_not != "off (--no-lines)" else None
    if "error" in did:
        return "no line numbers: the companion sampler could not read the target (%s)" % did["error"]
    return None


def kept_syscalls(recording: RecordingFolder, unwinder: Optional[Unwinder], say: Callable[[str], None]):
    """The system calls of a recording made with --syscalls, kept beside it (store.py):
    the unwinder took them out of its batches; else (attached) one pass over perf.data."""
    if unwinder is not None and unwinder.syscalls is not None and unwinder.syscalls.recorded \
            and unwinder.failed is None:
        return unwinder.syscalls.calls
    try:
        calls = syscalls.read_calls(recording.data)
        if calls is not None:
            store.keep_text(recording.folder, recording.data, store.SYSCALLS_FILE, calls.to_bytes())
        return calls
    except (MixedstackError, OSError) as error:
        say("mixedstack: warning: the system calls could not be kept (%s): report reads them from perf.data" % error)
        return None
