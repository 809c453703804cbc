"""`record --pid`: the mode for a running process, activating its trampoline if asked."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from typing import Callable, Dict, List, Optional, Tuple


from mixedstack.record import jitdump
from mixedstack.record.agent import AgentError
from mixedstack.record.target import Interpreter
from mixedstack.record.target import TargetError
from mixedstack.record.target import Mode
from mixedstack.record.target import native, perf_mode
from mixedstack.record.attach.activation import FLUSH_CODE, agent_code, perf_jit_code, perf_map_code
from mixedstack.record.attach.inject import ActivationError, run_in
from mixedstack.perf.command import PerfError
from mixedstack.record.attach.process import Place, ancestry, forked_at, interpreter_of, place_of, process_tree
from mixedstack.record.attach.process import runs_agent, trampoline_on
from mixedstack.record.tmpfiles import owner_of
from mixedstack.record.attach.inject import REMOTE_EXEC

ACTIVATION_WAIT = 10.0  # seconds for the main thread to run the queued code
FLUSH_WAIT = 5.0
FORK_SLACK = 30_000_000  # ns: /proc's start (a tick early) to a child's first jitdump record
ACTIVATABLE = ((3, 8), (3, 15))  # tested here, inclusive

Ask = Optional[Callable[[str], bool]]
Say = Callable[[str], None]


@dataclasses.dataclass
class Attached:
    pid: int
    interp: Optional[Interpreter]
    mode: Mode
    activated: bool = False  # mixedstack turned the trampoline on
    flush: bool = False  # flush the jitdump's stdio buffer when the recording stops

    def before_inject(self, say: Say) -> None:
        """Flush CPython's jitdump buffer in the still running process."""
        if not self.flush or not os.path.exists("/proc/%d" % self.pid):
            return
        try:
            outcome = run_in(self.pid, FLUSH_CODE, FLUSH_WAIT, remote=self.interp)
        except ActivationError as error:
            outcome = {"error": str(error)}
        if outcome is None:
            outcome = {"error": "its main thread ran no Python code within %gs" % FLUSH_WAIT}
        if not outcome.get("ok"):
            say("mixedstack: could not flush the jitdump of process %d (%s): Python frames of "
                "functions first called in the last moments may show as [unknown]"
                % (self.pid, outcome["error"]))


def attach(pid: int, call_graph: str, agent: str, activate: Optional[bool], say: Say,
           ask: Ask = None) -> Attached:
    """Look at `pid`, turn its trampoline on if allowed and possible; the mode to record in."""
    interp = interpreter_of(pid)
    mode = perf_mode(interp, call_graph)
    if interp is None:
        return Attached(pid, interp, mode)
    version = "CPython %d.%d" % interp.version[:2]
    state = trampoline_on(pid)
    if state is not None:
        agent_on = runs_agent(pid)
        mode = perf_mode(interp, "dwarf", "always" if agent_on else "never") if state == "jit" \
            else perf_mode(interp, "fp")
        if mode.name != "native":
            mode = dataclasses.replace(mode, env={}, reason="process %d already has its trampoline on" % pid)
        if state == "jit" and not agent_on:  # CPython's own perf_jit: a buffered jitdump
            if _consent(pid, activate, ask, "flush %s's jitdump buffer when the recording stops" % version):
                return Attached(pid, interp, mode, flush=True)
            say("mixedstack: CPython 3.13+ writes its jitdump through a 2 MiB buffer: Python frames of "
                "functions process %d first called since it last flushed will be [unknown]; --activate "
                "lets mixedstack flush it when the recording stops" % pid)
        return Attached(pid, interp, mode)

    missing = "Python frames will be missing"
    restart = "(restarted under `mixedstack record -- CMD` it would have them)"
    wanted = perf_mode(interp, call_graph, agent)
    if wanted.name == "native":  # no trampoline for this interpreter at all
        return Attached(pid, interp, native(mode.call_graph, "process %d: %s" % (pid, wanted.reason)))
    if not ACTIVATABLE[0] <= interp.version[:2] <= ACTIVATABLE[1]:
        return Attached(pid, interp, native(mode.call_graph, "process %d (%s) has no perf trampoline on, and mixedstack "
                                             "turns one on in CPython 3.8-3.15 only: %s %s"
                                             % (pid, version, missing, restart)))
    if not _consent(pid, activate, ask, "turn %s's perf trampoline on in it (it stays on)" % version):
        return Attached(pid, interp, native(mode.call_graph, "process %d (%s) has no perf trampoline on: %s; %s" % (
            pid, version, missing, "--no-activate was given" if activate is False else
            "--activate turns it on (%s runs code in the process)" % (
                "sys.remote_exec" if interp.version[:2] >= REMOTE_EXEC else "gdb"))))
    try:
        wanted, body = _activation(pid, interp, wanted, call_graph, agent)
        outcome = run_in(pid, body, ACTIVATION_WAIT, remote=interp)
    except (ActivationError, AgentError) as error:
        return Attached(pid, interp, native(mode.call_graph, "cannot turn the trampoline on in process %d: %s; %s %s"
                                             % (pid, error, missing, restart)))
    if outcome is not None and not outcome.get("ok"):
        return Attached(pid, interp, native(mode.call_graph, "turning the trampoline on in process %d failed (%s): %s %s"
                                             % (pid, outcome["error"], missing, restart)))
    how = {"perf-map": "its perf trampoline (perf map, frame pointers)",
           "perf-jit": "its perf_jit trampoline (DWARF unwinding, perf inject --jit)",
           "agent": "the mixedstack agent (DWARF unwinding, perf inject --jit)"}[wanted.name]
    reason = "turned %s on in process %d (%s); calls already running show under " \
             "[python frames before activation]" % (how, pid, version)
    if outcome is None:
        reason = ("queued %s for process %d, whose main thread ran no Python code within %gs: Python "
                  "frames appear once it does" % (how, pid, ACTIVATION_WAIT))
    return Attached(pid, interp, dataclasses.replace(wanted, env={}, reason=reason),
                    activated=outcome is not None, flush=wanted.name == "perf-jit")


def _activation(pid: int, interp: Interpreter, wanted: Mode, call_graph: str, agent: str) -> Tuple[Mode, str]:
    if wanted.name == "perf-map":
        return wanted, perf_map_code()
    if wanted.name == "perf-jit" and interp.version[:2] >= REMOTE_EXEC:  # its own switch works there
        return wanted, 'import sys\nif not sys.is_stack_trampoline_active():\n' \
                       '    sys.activate_stack_trampoline("perf_jit")\n'
    if wanted.name == "perf-jit":
        try:
            return wanted, perf_jit_code(pid, interp)
        except ActivationError as error:
            if agent == "never":
                raise ActivationError("%s, and --agent never forbids the mixedstack agent" % error)
        wanted = perf_mode(interp, call_graph, "always")  # the agent serves 3.13 too
    return wanted, agent_code(interp, pid)


def _consent(pid: int, activate: Optional[bool], ask: Ask, action: str) -> bool:
    """--activate, --no-activate, or (neither) the answer to a question on a terminal."""
    if activate is not None or ask is None:
        return bool(activate)
    return ask("mixedstack: may mixedstack run code in process %d (through gdb, or sys.remote_exec on "
               "3.14+) to %s?" % (pid, action))


@dataclasses.dataclass
class Tree:
    """`record --pid A --pid B`: A and B, and (unless --no-children) every process that
    descends from them, each as attach() found it; perf records them all, and perf's
    inherit adds the children they start while recording. One mode serves them all:
    the first that needs perf inject (its DWARF unwinding and -k 1 clock are what
    jitdumps need), else the first Python process's."""

    members: List[Attached]
    parents: Dict[int, Optional[int]]  # {pid: its parent in the tree, None for a root}
    owners: Dict[int, int]  # {pid: uid}, read while they run: their /tmp files' owners
    mode: Mode
    interp: Optional[Interpreter]
    forks: List[Tuple[int, int, int]]  # (child, parent, when it was forked: monotonic ns), parents first
    places: Dict[int, Place]  # {pid: where it lives} of those in containers

    def forks_seen_in(self, folder: str) -> List[Tuple[int, int, int]]:
        """`forks`, each as precise as the child's jitdump allows. /proc gives a start to
        10 ms, and a parent makes the trampolines of the very calls that fork within
        those (its master's loop that forks: measured 4 ms before a worker's first code).
        CPython and the agent begin a child's dump as it comes out of fork: when its
        first record is within FORK_SLACK of the start /proc gives, that record's time
        bounds the fork. (A dump begun later, by an activation, says nothing of it.)"""
        precise = []
        for child, parent, at in self.forks:
            begun = jitdump.started(os.path.join(folder, "jit-%d.dump" % child))
            precise.append((child, parent, begun if begun is not None and at <= begun <= at + FORK_SLACK else at))
        return precise

    @property
    def pids(self) -> List[int]:
        return [member.pid for member in self.members]

    def running(self, interp: Interpreter) -> List[int]:
        """The members that run `interp`'s version of CPython (what record's companion,
        run by `interp`, can read), the first one first."""
        return [member.pid for member in self.members
                if member.interp is not None and member.interp.version[:2] == interp.version[:2]]

    @property
    def activated(self) -> bool:
        return any(member.activated for member in self.members)

    def before_inject(self, say: Say) -> None:
        """Each process's flush at once: each is a gdb or sys.remote_exec of seconds."""
        flushing = [member for member in self.members if member.flush]
        if flushing:
            with concurrent.futures.ThreadPoolExecutor(min(8, len(flushing))) as pool:
                list(pool.map(lambda member: member.before_inject(say), flushing))


def attach_tree(roots: List[int], children: bool, call_graph: str, agent: str, activate: Optional[bool],
                say: Say, ask: Ask = None, everything: bool = False) -> Tree:
    """attach() to each process of the trees under `roots` (only `roots` if not `children`);
    `everything`: to every process of the machine (the tree under pid 1, without
    mixedstack itself and the processes it runs under: code is never run in those)."""
    parents = process_tree(roots) if children else {root: None for root in roots}
    if everything:
        for pid in ancestry(os.getpid()):
            parents.pop(pid, None)
    for root in roots:
        if root not in parents:
            raise PerfError("no process %d to attach to; check the pid with ps" % root)
    answers: Dict[str, bool] = {}
    asking = threading.Lock()

    def ask_once(question: str) -> bool:  # the first process's answer serves the whole tree
        with asking:
            if "" not in answers:
                answers[""] = bool(ask and ask(question))
            return answers[""]

    def attach_one(pid: int) -> Optional[Attached]:
        try:
            return attach(pid, call_graph, agent, activate, say if pid in roots else lambda line: None,
                          ask_once if ask else None)
        except (PerfError, TargetError):
            if pid in roots and not everything:
                raise
            return None  # a descendant that ended meanwhile or cannot be probed; with -a, any such
    # each process is looked at, and activated, on its own (gdb, sys.remote_exec: a second
    # or so each): a tree of 200 workers at 8 at a time
    with concurrent.futures.ThreadPoolExecutor(min(8, len(parents))) as pool:
        found = list(pool.map(attach_one, parents))
    members, owners = [member for member in found if member is not None], {}
    if not members:  # (-a as a user who can read no process, or all ended meanwhile)
        raise PerfError("no process to record could be read: run mixedstack as root, or give --pid")
    for member in members:
        owner = owner_of(member.pid)
        if owner is not None:
            owners[member.pid] = owner
    pythons = [member for member in members if member.interp is not None]
    chosen = next((member for member in pythons if member.mode.needs_inject), pythons[0] if pythons else members[0])
    mode = chosen.mode
    # one unwinder serves every process: DWARF where any of them needs it, and under -a
    # (a machine's C programs and a perf map's interpreter without frame pointers walk
    # nowhere with fp; with DWARF a perf map's frame is named where its stack ends)
    if call_graph == "auto" and (everything or any(member.mode.call_graph == "dwarf" for member in members)):
        mode = dataclasses.replace(mode, call_graph="dwarf")
    if len(members) > 1:
        mode = dataclasses.replace(mode, reason="%d processes (%d of them Python): %s" % (
            len(members), len(pythons), mode.reason))
    kept = {member.pid: parents[member.pid] for member in members}
    forks = [(pid, parent, forked_at(pid)) for pid, parent in kept.items() if parent in kept]
    places = {pid: place for pid, place in ((pid, place_of(pid)) for pid in kept) if place.contained}
    return Tree(members, kept, owners, mode, chosen.interp, [fork for fork in forks if fork[2] is not None], places)
