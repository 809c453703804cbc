"""`make bench`: mixedstack side by side with its contenders, in one run.

Builds its own recordings (a small and a large one of tests/workloads/phases.py on
the newest CPython 3.13+ found), runs each contender in turn (median of REPEAT
runs), prints a table of absolute figures and ratios, and writes it to
bench/results.md. FLAMEGRAPH_DIR may name a FlameGraph checkout for the
stackcollapse-perf.pl comparison ("n/a" otherwise).
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import pyenv_interpreters  # noqa: E402  (interpreter discovery, shared with the tests)

REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
MIXEDSTACK = [sys.executable, "-m", "mixedstack"]
SCRIPT_FIELDS = ["-F", "comm,pid,tid,time,period,event,ip,sym,dso", "--max-stack", "4096", "--no-inline"]


def run(command: List[str], stdout=subprocess.DEVNULL, **kwargs) -> Tuple[float, int, str]:
    """(wall seconds, peak RSS in KB of the command and its children, stdout text)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE if stdout is None else stdout,
                               stderr=subprocess.DEVNULL, **kwargs)
    out = process.stdout.read().decode() if stdout is None else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit("bench: %s failed (wait status %d)" % (" ".join(command[:4]), status))
    return seconds, usage.ru_maxrss, out


def median(measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(REPEAT))


def record(tmp: Path, name: str, python: str, seconds: float) -> Path:
    data = tmp / name
    run(MIXEDSTACK + ["record", "-f", "-o", str(data), "--", python,
                      str(ROOT / "tests" / "workloads" / "phases.py"), str(tmp / "t.json"), str(seconds)])
    return data


def script_command(data: Path) -> List[str]:
    return ["perf", "--buildid-dir", str(data) + ".d/buildid", "script", "-i", str(data)] + SCRIPT_FIELDS


def fold_figures(data: Path, tmp: Path, flamegraph: Optional[Path]) -> List[Tuple[str, str, str]]:
    rows = []
    perf_alone = median(lambda: run(script_command(data))[0])
    fold = median(lambda: run(MIXEDSTACK + ["fold", str(data)])[0])
    rows.append(("fold end-to-end vs perf script alone", "%.2f s vs %.2f s" % (fold, perf_alone),
                 "%.2fx" % (fold / perf_alone)))
    text = tmp / (data.name + ".txt")
    with open(text, "wb") as out:
        subprocess.run(script_command(data), stdout=out, stderr=subprocess.DEVNULL, check=True)
    on_text = median(lambda: run(MIXEDSTACK + ["fold", str(text)])[0])
    if flamegraph:
        perl = median(lambda: run(["perl", str(flamegraph / "stackcollapse-perf.pl"), str(text)])[0])
        rows.append(("fold on text vs stackcollapse-perf.pl (%d MB)" % (text.stat().st_size >> 20),
                     "%.2f s vs %.2f s" % (on_text, perl), "%.2fx" % (on_text / perl)))
    else:
        rows.append(("fold on text vs stackcollapse-perf.pl", "%.2f s vs n/a" % on_text, "n/a"))
    script = ROOT / "perf_scripts" / "mixedstack-fold.py"
    via_perf = median(lambda: run(script_command(data) + ["-s", str(script)])[0])
    rows.append(("perf_scripts path vs fold end-to-end", "%.2f s vs %.2f s" % (via_perf, fold),
                 "%.2fx" % (via_perf / fold)))
    peak = max(run(MIXEDSTACK + ["fold", str(data)])[1] for _ in range(2))
    rows.append(("fold peak memory (fold and perf script)", "%d MB" % (peak >> 10), ""))
    return rows


def record_figures(tmp: Path, pythons: dict) -> List[Tuple[str, str, str]]:
    rows = []
    ours = median(lambda: run(MIXEDSTACK + ["record", "-f", "-o", str(tmp / "true.data"), "--", "true"])[0])
    plain = median(lambda: run(["perf", "record", "-q", "-o", str(tmp / "p.data"), "--", "true"])[0])
    rows.append(("record fixed cost (`-- true`) vs perf record -- true", "%.2f s vs %.2f s" % (ours, plain),
                 "%.2fx" % (ours / plain)))
    work = str(ROOT / "bench" / "fixed_work.py")
    for label, python in pythons.items():
        alone = median(lambda: float(run([python, work, "3"], stdout=None)[2]))
        under = median(lambda: float(run(MIXEDSTACK + ["record", "-f", "-o", str(tmp / "w.data"), "--",
                                                       python, work, "3"], stdout=None)[2]))
        rows.append(("workload slowdown, %s (999 Hz)" % label, "%.2f s vs %.2f s alone" % (under, alone),
                     "%+.1f%%" % (100 * (under / alone - 1))))
    return rows


def calls_per_second(python: str, pythonpath: str, *flags: str) -> float:
    """One run of bench/calls.py; removes the /tmp files its trampoline (ours or
    CPython's own) wrote, since this runs outside `mixedstack record`."""
    out = run([python, *flags, str(ROOT / "bench" / "calls.py")], stdout=None,
              env=dict(os.environ, PYTHONPATH=pythonpath))[2].split()
    for name in ("/tmp/perf-%s.map" % out[1], "/tmp/jit-%s.dump" % out[1]):
        if os.path.exists(name):
            os.remove(name)
    return float(out[0])


def agent_figures(found: dict) -> List[Tuple[str, str, str]]:
    """Calls/s without and with the agent (and CPython's own trampoline where it has one)."""
    from mixedstack.agent import agent_path
    from mixedstack.target import find_interpreter

    rows = []
    for version in sorted(v for v in found if (3, 8) <= v <= (3, 12)):
        python = found[version]
        folder = agent_path(find_interpreter([python]))
        plain = median(lambda: calls_per_second(python, ""))
        agent = median(lambda: calls_per_second(python, folder))
        figures = "%.1f M/s vs %.1f M/s plain" % (agent / 1e6, plain / 1e6)
        ratio = "%+.0f%%" % (100 * (agent / plain - 1))
        if version >= (3, 12):
            own = median(lambda: calls_per_second(python, "", "-X", "perf"))
            figures += ", CPython's -X perf %.1f M/s" % (own / 1e6)
            ratio += " (own: %+.0f%%)" % (100 * (own / plain - 1))
        rows.append(("agent cost, calls/s, CPython %d.%d" % version, figures, ratio))
    return rows


def main() -> None:
    if shutil.which("perf") is None:
        raise SystemExit("bench: perf not found")
    found = pyenv_interpreters()
    newest = max((v for v in found if v >= (3, 13)), default=None)
    if newest is None:
        raise SystemExit("bench: needs a CPython 3.13+ (pyenv or PATH)")
    pythons = {"perf-jit mode, CPython %d.%d" % newest: found[newest]}
    older = max((v for v in found if v < (3, 12)), default=None)
    if older:
        pythons["native mode, CPython %d.%d" % older] = found[older]
    flamegraph = Path(os.environ["FLAMEGRAPH_DIR"]) if os.environ.get("FLAMEGRAPH_DIR") else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixedstack-bench-") as name:
        tmp = Path(name)
        for label, seconds in (("small", 0.5), ("large", 4.0)):
            data = record(tmp, label + ".data", found[newest], seconds)
            size = data.stat().st_size >> 20
            rows.append(("%s recording: %.1f s of phases.py, %d MB" % (label, 3 * seconds, size), "", ""))
            rows += [("  " + a, b, c) for a, b, c in fold_figures(data, tmp, flamegraph)]
        rows += record_figures(tmp, pythons)
        rows += agent_figures(found)
    table = ["| measure | figures | ratio |", "| --- | --- | --- |"]
    table += ["| %s | %s | %s |" % row for row in rows]
    header = "mixedstack bench, %s, %d cores, median of %d, %s" % (
        time.strftime("%Y-%m-%d"), os.cpu_count() or 1, REPEAT, platform.python_version())
    text = "%s\n\n%s\n" % (header, "\n".join(table))
    print(text)
    (ROOT / "bench" / "results.md").write_text(text)


if __name__ == "__main__":
    main()
