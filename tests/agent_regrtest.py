"""CPython's own regression tests with the mixedstack agent active (`make test-agent`).

    python tests/agent_regrtest.py [--versions 3.8,3.12] [--tests test_sys,...] [-j 2]

For each pyenv CPython 3.8-3.12 found: build the agent for it, run a selection of
its regression tests (`python -m test ...`) with the agent on PYTHONPATH (so every
worker process runs hooked), then run whatever failed again without the agent to
tell failures the agent causes from ones the interpreter has anyway; on 3.12, also
under CPython's own PEP 523 hook (-X perf), to tell what any such hook causes. Exit
status 1 when any test fails only with the agent.

The agent logs the pid of each process that wrote /tmp files (MIXEDSTACK_AGENT_PIDS):
their count proves the workers ran hooked; the files are removed.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Dict, List, Optional, Set, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mixedstack.record.agent import AgentError  # noqa: E402
from mixedstack.record.agent import agent_path
from mixedstack.record.agent import remove_tmp_files

# Exercise what the hook touches: frame evaluation of generators, coroutines,
# exceptions, tracing, recursion limits, threads, fork.
DEFAULT_TESTS = ["test_generators", "test_coroutines", "test_exceptions", "test_threading",
                 "test_sys", "test_sys_settrace", "test_sys_setprofile", "test_fork1",
                 "test_asyncio"]
VERSIONS = [(3, 8), (3, 9), (3, 10), (3, 11), (3, 12)]


def pyenv_pythons() -> Dict[Tuple[int, int], str]:
    try:
        root = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3.*"))):
        match = re.search(r"python3\.(\d+)$", path)
        if match:
            found.setdefault((3, int(match.group(1))), os.path.realpath(path))
    return found


def installed_tests(python: str, wanted: List[str]) -> List[str]:
    """The wanted tests this interpreter ships (pyenv installs Lib/test)."""
    code = "import os, test; print(os.path.dirname(test.__file__))"
    folder = subprocess.run([python, "-c", code], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.strip()
    return [t for t in wanted if os.path.exists(os.path.join(folder, t + ".py"))
            or os.path.isdir(os.path.join(folder, t))]


def regrtest(python: str, tests: List[str], path: Optional[str], jobs: int, log: str,
             **extra: str) -> Tuple[Set[str], float, str]:
    """Run `python -m test` with PYTHONPATH=path; failed tests, seconds, verdict."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if path:
        env["PYTHONPATH"] = path
    env.update(extra)
    command = [python, "-m", "test", "-j%d" % jobs, "--timeout", "900"] + tests
    started = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                              universal_newlines=True)
    with open(log) as f:
        text = f.read()
    failed = set()
    # "2 tests failed:\n    test_a test_b\n" (also "failed again", "altered the
    # execution environment" is not a failure).
    for match in re.finditer(r"^\d+ tests? (?:failed|crashed|failed again):\n((?:    .*\n)+)",
                             text, re.M):
        failed.update(match.group(1).split())
    verdict = re.findall(r"Tests result: ([A-Z_ ,]+)", text)
    if done.returncode != 0 and not failed:
        failed.add("<regrtest exit %d>" % done.returncode)
    return failed, time.monotonic() - started, verdict[-1].strip() if verdict else "?"


# For the reference run under CPython 3.12's own PEP 523 hook (-X perf): log the
# pid of every process, forked ones included, so that their perf maps can go.
_REFERENCE_SITE = """import os
def _log():
    with open(os.environ["MIXEDSTACK_AGENT_PIDS"], "a") as f:
        f.write("%d\\n" % os.getpid())
_log()
os.register_at_fork(after_in_child=_log)
"""


def reference_failures(python: str, tests: List[str], jobs: int, logs: str, name: str) -> Set[str]:
    """Failures under CPython's own perf trampoline (3.12+): what any hook causes."""
    site = os.path.join(logs, "reference-site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write(_REFERENCE_SITE)
    pids = os.path.join(logs, "%s-reference.pids" % name)
    failed, _, _ = regrtest(python, tests, site, jobs, os.path.join(logs, "%s-reference.log" % name),
                            PYTHONPERFSUPPORT="1", MIXEDSTACK_AGENT_PIDS=pids)
    remove_tmp_files(pids)
    return failed


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", help="e.g. 3.8,3.12 (default: every pyenv 3.8-3.12)")
    parser.add_argument("--tests", help="comma-separated (default: %s)" % ",".join(DEFAULT_TESTS))
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--logs", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                       "mixedstack-regrtest"))
    args = parser.parse_args(argv)
    wanted = args.tests.split(",") if args.tests else DEFAULT_TESTS
    versions = ([tuple(int(x) for x in v.split(".")) for v in args.versions.split(",")]
                if args.versions else VERSIONS)
    pythons = pyenv_pythons()
    os.makedirs(args.logs, exist_ok=True)
    rows, agent_only = [], []
    for version in versions:
        name = "%d.%d" % version
        python = pythons.get(version)
        if python is None:
            rows.append((name, "skipped: no pyenv CPython %s" % name))
            continue
        try:
            started = time.monotonic()
            folder = agent_path(SimpleNamespace(executable=python))
            built = time.monotonic() - started
        except AgentError as error:
            rows.append((name, "agent does not build: %s" % error))
            agent_only.append(name)
            continue
        tests = installed_tests(python, wanted)
        log = os.path.join(args.logs, "%s-agent.log" % name)
        pids = os.path.join(args.logs, "%s-agent.pids" % name)
        print("== CPython %s (%s): agent %s (%.1f s); %s" % (name, python, folder, built,
                                                               " ".join(tests)), flush=True)
        failed, seconds, verdict = regrtest(python, tests, folder, args.jobs, log,
                                            MIXEDSTACK_AGENT_PIDS=pids)
        hooked = remove_tmp_files(pids)
        line = "%s with the agent in %.0f s, %d processes hooked" % (verdict, seconds, hooked)
        if hooked == 0:
            agent_only.append(name)
            line += " (NOT HOOKED: the agent never activated)"
        if failed:
            # Again without the agent: the interpreter's own failures are not ours.
            again = sorted(t for t in failed if t.startswith("test"))
            plain, _, _ = regrtest(python, again, None, args.jobs,
                                   os.path.join(args.logs, "%s-plain.log" % name))
            ours = failed - plain
            line += "; failed: %s; also without the agent: %s" % (
                " ".join(sorted(failed)), " ".join(sorted(failed & plain)) or "none")
            if ours and version >= (3, 12):
                # 3.12 has a PEP 523 hook of its own to compare with.
                any_hook = reference_failures(python, sorted(ours), args.jobs, args.logs, name)
                if ours & any_hook:
                    line += "; also under CPython's own -X perf hook: %s" % " ".join(
                        sorted(ours & any_hook))
                ours -= any_hook
            if ours:
                agent_only.append(name)
                line += "; AGENT-ONLY FAILURES: %s (log: %s)" % (" ".join(sorted(ours)), log)
        rows.append((name, line))
        print("   " + line, flush=True)
    print("\nagent regrtest summary (%s):" % ", ".join(wanted))
    for name, line in rows:
        print("  %-5s %s" % (name, line))
    return 1 if agent_only else 0


if __name__ == "__main__":
    sys.exit(main())
