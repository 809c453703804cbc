"""`make bench`: mixedstack side by side with its contenders, in one run.

Builds its own recordings (a small and a large one of tests/workloads/phases.py on
the newest CPython 3.13+ found), runs the contenders of each comparison in turn,
REPEAT rounds (each round in a new order, so that the machine's noise falls on
all of them alike), takes medians, prints a table of absolute figures and ratios,
and writes it to bench/results.md. FLAMEGRAPH_DIR may name a FlameGraph checkout
for the stackcollapse-perf.pl comparison ("n/a" otherwise).

Memory is the peak, over the run, of the summed proportional set size (PSS) of
fold and its perf script processes (sampled every 5 ms from /proc/PID/smaps):
pages they share (libraries; perf.data, which each perf script maps whole) count
once. The goal's figure leaves out the recording's own pages: they are the input
file's page cache (clean, dropped first under memory pressure, there whether perf
reads or maps the file) and grow with the file, not with fold. The figure with
them and the plain RSS sum are shown beside it.
"""
from __future__ import annotations

import json
import os
import platform
import random
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from conftest import CURRENT_PYTHON, pyenv_interpreters  # noqa: E402  (interpreter discovery, shared with the tests)
from mixedstack.perf import command as perf  # noqa: E402  (perf script's command line, as fold runs it)

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
SLOWDOWN_REPEAT = max(REPEAT, 9)  # a few percent under the machine's own noise: more rounds
MIXEDSTACK = [sys.executable, "-m", "mixedstack"]
RECORDING_HZ = 999
Row = Tuple[str, str, str]


def run(command: List[str], stdout=subprocess.DEVNULL, **kwargs) -> Tuple[float, str]:
    """(wall seconds, stdout text when asked for) of a command that must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE if stdout is None else stdout,
                          stderr=subprocess.DEVNULL, **kwargs)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit("bench: %s failed (exit status %d)" % (" ".join(command[:4]), done.returncode))
    return seconds, done.stdout.decode() if stdout is None else ""


def medians(contenders: Dict[str, Callable[[], float]], rounds: int = REPEAT) -> Dict[str, float]:
    """Each contender's median over `rounds` rounds, run in a new order each round."""
    return {name: statistics.median(values) for name, values in measured(contenders, rounds).items()}


def measured(contenders: Dict[str, Callable[[], float]], rounds: int = REPEAT) -> Dict[str, List[float]]:
    """Each contender's figure of each round (a new order each round)."""
    figures: Dict[str, List[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            figures[name].append(contenders[name]())
    return figures


def paired(figures: Dict[str, List[float]], name: str, base: str) -> float:
    """The median of `name`'s figure over `base`'s, round by round: what a drift of the
    machine between rounds moves less than a ratio of medians."""
    return statistics.median(a / b for a, b in zip(figures[name], figures[base]))


def tree_memory(command: List[str], input_file: str, alone: bool = False) -> Tuple[int, int, int]:
    """Peaks, in KB, of a command and its descendants (sampled every 5 ms; `alone`:
    the command's own process only): (summed PSS without the pages that map
    `input_file`, summed PSS, summed RSS). PSS counts each shared page once; RSS
    counts it in every process that maps it."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks = [0, 0, 0]
    while process.poll() is None:
        pss = of_input = rss = 0
        for pid in [process.pid] + ([] if alone else descendants(process.pid)):
            for path, mapped in mappings(pid):
                pss += mapped.get("Pss", 0)
                rss += mapped.get("Rss", 0)
                if path == input_file:
                    of_input += mapped.get("Pss", 0)
        peaks = [max(peak, now) for peak, now in zip(peaks, (pss - of_input, pss, rss))]
        time.sleep(0.005)
    if process.returncode != 0:
        raise SystemExit("bench: %s failed" % " ".join(command[:4]))
    return peaks[0], peaks[1], peaks[2]


def mappings(pid: int) -> List[Tuple[str, Dict[str, int]]]:
    """(path, {"Pss": KB, "Rss": KB}) for each mapping of /proc/PID/smaps."""
    found: List[Tuple[str, Dict[str, int]]] = []
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                key, _, rest = line.partition(" ")
                if not key.endswith(":"):  # "start-end perms offset dev inode [path]"
                    fields = rest.split(None, 4)
                    found.append((fields[4].strip() if len(fields) > 4 else "", {}))
                elif key in ("Pss:", "Rss:") and found:
                    found[-1][1][key[:-1]] = int(rest.split()[0])
    except OSError:
        pass
    return found


def descendants(pid: int) -> List[int]:
    found, todo = [], [pid]
    while todo:
        try:
            with open("/proc/%d/task/%d/children" % (todo[0], todo[0])) as f:
                children = [int(child) for child in f.read().split()]
        except OSError:
            children = []
        found += children
        todo = todo[1:] + children
    return found


def record(tmp: Path, name: str, python: str, seconds: float) -> Path:
    """phases.py for 3 x `seconds` at 999 Hz: fold's figures are about a recording's
    size (the issue's large one: 22,081 samples), not about record's default rate."""
    data = tmp / name
    run(MIXEDSTACK + ["record", "-f", "-F", str(RECORDING_HZ), "-o", str(data), "--", python,
                      str(ROOT / "tests" / "workloads" / "phases.py"), str(tmp / "t.json"), str(seconds)])
    return data


def script_alone(data: Path, inline: bool = False) -> List[str]:
    """perf script as a user runs it: the recording's build-id cache, fold's fields."""
    return perf.script_command(str(data), str(data) + ".d/buildid", inline=inline)


def ratio(ours: float, theirs: float) -> str:
    return "%.2fx" % (ours / theirs)


def fold_figures(data: Path, tmp: Path, flamegraph: Optional[Path], inline: bool) -> List[Row]:
    text = tmp / (data.name + ".txt")
    with open(text, "wb") as out:
        subprocess.run(script_alone(data), stdout=out, stderr=subprocess.DEVNULL, check=True)
    option = ["--inline"] if inline else []
    contenders = {
        "perf": lambda: run(script_alone(data, inline))[0],
        "fold": lambda: run(MIXEDSTACK + ["fold", *option, str(data)])[0],
        "text": lambda: run(MIXEDSTACK + ["fold", str(text)])[0],
        "perf_scripts": lambda: run(script_alone(data) + ["-s", str(ROOT / "perf_scripts" / "mixedstack-fold.py")])[0],
    }
    if inline:  # the text comparisons do not depend on it: once is enough
        del contenders["text"], contenders["perf_scripts"]
    if flamegraph and not inline:
        contenders["perl"] = lambda: run(["perl", str(flamegraph / "stackcollapse-perf.pl"), str(text)])[0]
    m = medians(contenders)
    setting = "--inline" if inline else "--no-inline"
    rows = [("fold end-to-end vs perf script alone (%s)" % setting,
             "%.2f s vs %.2f s" % (m["fold"], m["perf"]), ratio(m["fold"], m["perf"]))]
    if inline:
        return rows
    size = text.stat().st_size / 1e6
    if "perl" in m:
        rows.append(("fold on text vs stackcollapse-perf.pl (%.0f MB)" % size,
                     "%.2f s (%.0f MB/s) vs %.2f s (%.0f MB/s)" % (m["text"], size / m["text"], m["perl"],
                                                                   size / m["perl"]),
                     "%.2fx the throughput" % (m["perl"] / m["text"])))
    else:
        rows.append(("fold on text vs stackcollapse-perf.pl (%.0f MB)" % size, "%.2f s vs n/a" % m["text"], "n/a"))
    rows.append(("perf_scripts path vs text path (fold end-to-end)",
                 "%.2f s vs %.2f s" % (m["perf_scripts"], m["fold"]), ratio(m["perf_scripts"], m["fold"])))
    runs = [tree_memory(MIXEDSTACK + ["fold", str(data)], str(data)) for _ in range(3)]
    own, pss, rss = (max(peaks) for peaks in zip(*runs))
    rows.append(("fold peak memory (fold + its perf script processes: PSS, without the recording's pages)",
                 "%d MB (with them: %d MB, as perf script maps perf.data whole; RSS summed: %d MB)" % (
                     own >> 10, pss >> 10, rss >> 10), ""))
    return rows


LONG_MINUTES = 10


def long_figures(python: str) -> List[Row]:
    """Two 10-minute recordings (~300,000 samples at 499 Hz each), made once with
    bench/long.py (which measures the disk it used while recording) and cached: one as
    record makes them, one with --drop-stacks. Every command on them reads the samples
    record kept unwound; the first fold of a recording without them (what an older
    recording, or one of plain perf record, takes) runs perf script, as perf script alone."""
    from long import measure  # bench/long.py

    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    made = {}
    for drop in (False, True):
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mixedstack" / "bench" / (
            "long-%dmin-%s-kept%s" % (LONG_MINUTES, version, "-dropped" if drop else ""))
        figures_file = cache / "figures.json"
        if not figures_file.exists():
            print("bench: recording %d minutes once (cached in %s)" % (LONG_MINUTES, cache), file=sys.stderr)
            cache.mkdir(parents=True, exist_ok=True)
            figures_file.write_text(json.dumps(measure(LONG_MINUTES, cache / "perf.data", drop_stacks=drop)))
        made[drop] = (cache / "perf.data", json.loads(figures_file.read_text()))
    data, figures = made[False]
    unwound = figures["unwound"] or {}
    rows = [("long recording: %d min of phases.py at 499 Hz, %s samples, %d MB (made once, cached)" % (
        LONG_MINUTES, format(figures["samples"], ","), figures["bytes"] >> 20), "", ""),
        ("  disk used while recording, at most (sampled every 0.2 s) vs the final size",
         "%d MB vs %d MB" % (figures["peak_disk"] >> 20, figures["final_disk"] >> 20),
         "+%d MB" % (figures["over_final"] >> 20)),
        ("  recording bytes a sample", "%d" % figures["bytes_a_sample"], ""),
        ("  record returned after the target ended", "%.2f s" % figures["record_returned"], ""),
        ("  unwinding while recording: perf script's CPU (niced) over the run, in %d batches" % unwound.get("batches", 0),
         "%.1f s of %d s" % (unwound.get("cpu_s", 0), 60 * LONG_MINUTES),
         "%.1f%% of a core" % (100 * unwound.get("cpu_s", 0) / (60 * LONG_MINUTES)))]
    folder = str(data) + ".d"
    svg = os.path.join(tempfile.gettempdir(), "mixedstack-bench-%d.svg" % os.getpid())
    from mixedstack import store

    # what record kept, before the first reads below replace it with what they keep
    outputs = {"kept": run(MIXEDSTACK + ["fold", str(data)], stdout=None)[1]}

    def first_read() -> float:
        store.clear(folder)  # as a recording without its samples kept: perf script
        seconds, outputs["perf script"] = run(MIXEDSTACK + ["fold", str(data)], stdout=None)
        return seconds
    m = medians({
        "perf": lambda: run(script_alone(data))[0],
        "fold": lambda: run(MIXEDSTACK + ["fold", str(data)])[0],
        "report": lambda: run(MIXEDSTACK + ["report", str(data)])[0],
        "flamegraph": lambda: run(MIXEDSTACK + ["flamegraph", "-o", svg, str(data)])[0],
        "first": first_read,
    }, rounds=3)
    first_read()  # leave it kept
    os.remove(svg)
    rows.append(("  fold's output from the samples record kept vs from perf script (the same bytes?)",
                 "%s stacks, %s" % (format(outputs["kept"].count("\n"), ","),
                                    "the same" if outputs["kept"] == outputs["perf script"] else "DIFFERENT"), ""))
    for command in ("fold", "report", "flamegraph"):
        rows.append(("  %s, the samples kept, vs perf script alone" % command,
                     "%.2f s vs %.1f s" % (m[command], m["perf"]), ratio(m[command], m["perf"])))
    rows.append(("  fold's first read without them (perf script, keeping them) vs perf script alone",
                 "%.1f s vs %.1f s" % (m["first"], m["perf"]), ratio(m["first"], m["perf"])))
    own = tree_memory(MIXEDSTACK + ["fold", str(data)], str(data), alone=True)[0]
    rows.append(("  fold peak memory, the samples kept (PSS)", "%d MB" % (own >> 10), ""))
    dropped, small = made[True]
    m = medians({"fold": lambda: run(MIXEDSTACK + ["fold", str(dropped)])[0]}, rounds=3)
    rows.append(("long recording with --drop-stacks: %s samples, bytes kept a sample (perf.data, samples "
                 "kept) vs the default's" % format(small["samples"], ","),
                 "%d vs %d" % (small["kept_bytes_a_sample"], figures["kept_bytes_a_sample"]),
                 ratio(small["kept_bytes_a_sample"], figures["kept_bytes_a_sample"])))
    rows.append(("  its fold; record returned after the target ended", "%.2f s; %.2f s" % (
        m["fold"], small["record_returned"]), ""))
    return rows


def record_figures(tmp: Path, pythons: Dict[str, Tuple[str, List[str]]]) -> List[Row]:
    m = medians({
        "ours": lambda: run(MIXEDSTACK + ["record", "-f", "-o", str(tmp / "true.data"), "--", "true"])[0],
        "perf": lambda: run(["perf", "record", "-q", "-o", str(tmp / "p.data"), "--", "true"])[0],
    })
    rows = [("record fixed cost (`-- true`) vs perf record -- true", "%.2f s vs %.2f s" % (m["ours"], m["perf"]),
             ratio(m["ours"], m["perf"]))]
    work = str(ROOT / "bench" / "fixed_work.py")
    for label, (python, flags) in pythons.items():
        recorded = tmp / "w.data"
        m = medians({
            "alone": lambda: float(run([python, work, "3"], stdout=None)[1]),
            "under": lambda: float(run(MIXEDSTACK + ["record", "-f", *flags, "-o", str(recorded), "--",
                                                     python, work, "3"], stdout=None)[1]),
        }, rounds=SLOWDOWN_REPEAT)
        meta = json.loads((tmp / "w.data.d" / "meta.json").read_text())
        rows.append(("workload slowdown, %s mode, %s (%d Hz)" % (meta["mode"], label, meta["frequency"]),
                     "%.2f s vs %.2f s alone" % (m["under"], m["alone"]),
                     "%+.1f%%" % (100 * (m["under"] / m["alone"] - 1))))
    return rows


def syscalls_figures(tmp: Path, python: str, calls: int = 100_000) -> List[Row]:
    """What recording every system call costs a program that makes ~100,000 a second
    (bench/syscalls.py: the program's own clock), beside strace -c and perf trace -s."""
    work = [python, str(ROOT / "bench" / "syscalls.py"), str(calls)]
    data = tmp / "sys.data"

    def seconds(*before: str) -> float:
        return float(run([*before, *work], stdout=None)[1].split()[0])
    m = medians({
        "alone": lambda: seconds(),
        "record": lambda: seconds(*MIXEDSTACK, "record", "-f", "-o", str(tmp / "plain.data"), "--"),
        "syscalls": lambda: seconds(*MIXEDSTACK, "record", "-f", "--syscalls", "-o", str(data), "--"),
        "strace": lambda: seconds("strace", "-f", "-c", "-o", str(tmp / "strace.txt")),
        "perf trace": lambda: seconds("perf", "trace", "-s", "-o", str(tmp / "trace.txt")),
    })
    meta = json.loads((tmp / "sys.data.d" / "meta.json").read_text())
    rate = calls / m["alone"]
    rows = [("system calls: bench/syscalls.py, %s stat calls, %.0f,000 a second alone, %s" % (
        format(calls, ","), rate / 1000, os.path.basename(python)), "%.2f s alone" % m["alone"], "")]
    for name, label in (("record", "mixedstack record (no --syscalls)"), ("syscalls", "mixedstack record --syscalls"),
                        ("strace", "strace -f -c"), ("perf trace", "perf trace -s")):
        rows.append(("  program's time under %s vs alone" % label, "%.2f s vs %.2f s" % (m[name], m["alone"]),
                     "%+.0f%%" % (100 * (m[name] / m["alone"] - 1))))
    size = data.stat().st_size + sum(f.stat().st_size for f in (tmp / "sys.data.d").glob("*.bin"))
    rows.append(("  --syscalls: calls recorded, bytes kept a call (perf.data and what record kept)",
                 "%s, %.0f" % (format(meta["syscalls"], ","), size / meta["syscalls"]), ""))
    return rows


def lines_figures(tmp: Path, pythons: Dict[str, str]) -> List[Row]:
    """The companion sampler (3.14+): the target's time with and without it (paired
    rounds of bench/fixed_work.py), its CPU, and on tests/workloads/lines.py the share of
    samples that got a line and of lines that were wrong (the loop the program was in
    at the sample's time, by its own clock, has other lines)."""
    from mixedstack.analyze.load import read
    from mixedstack.model import PyFrame

    rows: List[Row] = []
    work = str(ROOT / "bench" / "fixed_work.py")
    for label, python in pythons.items():
        data = tmp / "lines.data"

        def without() -> float:
            return float(run(MIXEDSTACK + ["record", "-f", "--no-lines", "-o", str(tmp / "nl.data"), "--",
                                           python, work, "3"], stdout=None)[1])
        # "again": a second run without the companion each round, the noise to judge by
        figures = measured({
            "without": without, "again": without,
            "with": lambda: float(run(MIXEDSTACK + ["record", "-f", "-o", str(data), "--", python, work, "3"],
                                      stdout=None)[1]),
        }, rounds=SLOWDOWN_REPEAT)
        m = {name: statistics.median(values) for name, values in figures.items()}
        meta = json.loads((tmp / "lines.data.d" / "meta.json").read_text())
        rows.append(("lines on %s: workload time under record with the companion vs without (paired)" % label,
                     "%.2f s vs %.2f s" % (m["with"], m["without"]),
                     "%+.1f%%" % (100 * (paired(figures, "with", "without") - 1))))
        rows.append(("  the noise: without vs without again, the same rounds (paired)",
                     "%.2f s vs %.2f s" % (m["again"], m["without"]),
                     "%+.1f%%" % (100 * (paired(figures, "again", "without") - 1))))
        rows.append(("  the companion's CPU over the recording (%d snapshots)" % meta["lines"]["snapshots"],
                     "%.2f s of %.1f s" % (meta["lines"]["cpu_s"], meta["seconds"]),
                     "%.1f%% of a core" % (100 * meta["lines"]["cpu_s"] / meta["seconds"])))
        for calls in ([], ["calls"]):  # long_function innermost, then the caller of another
            truth = json.loads(run(MIXEDSTACK + ["record", "-f", "-o", str(data), "--", python,
                                                 str(ROOT / "tests" / "workloads" / "lines.py"), "3"] + calls,
                                   stdout=None)[1].strip().splitlines()[-1])
            loaded = read(str(data), timeline=True, lines=True)
            given = wrong = samples = 0
            for track in loaded.stacks.timeline:
                for span in track.spans:
                    mine = [frame for frame in span.stack
                            if type(frame) is PyFrame and frame.function == "long_function"]
                    if not mine:
                        continue
                    samples += 1
                    when = span.start + span.length
                    loop = next((loop for loop in truth["loops"]
                                 if loop["between_ns"][0] <= when <= loop["between_ns"][1]), None)
                    if mine[-1].line:
                        given += 1
                        wrong += loop is not None and mine[-1].line not in loop["lines"]
            meta = json.loads((tmp / "lines.data.d" / "meta.json").read_text())
            rows.append(("  tests/workloads/lines.py%s: samples in long_function with a line; lines wrong "
                         "(another loop's); the companion's CPU" % (" calls (long_function a caller)" if calls else ""),
                         "%d of %d; %d; %.2f s of %.1f s" % (given, samples, wrong, meta["lines"]["cpu_s"],
                                                             meta["seconds"]),
                         "%.1f%%; %.2f%%; %.1f%% of a core" % (
                             100.0 * given / max(1, samples), 100.0 * wrong / max(1, given),
                             100 * meta["lines"]["cpu_s"] / meta["seconds"])))
            rows.append(("    " + loaded.lines.text(), "", ""))
    return rows


def stack_size_figures(tmp: Path, python: str) -> List[Row]:
    """What the default 65528-byte DWARF copy costs beside the former 32768: the
    target's time and the recording's size (after record's tidy), side by side."""
    work = str(ROOT / "bench" / "fixed_work.py")
    sizes = {}

    def under(size: int) -> float:
        data = tmp / ("s%d.data" % size)
        seconds = float(run(MIXEDSTACK + ["record", "-f", "--stack-size", str(size), "-o", str(data), "--",
                                          python, work, "3"], stdout=None)[1])
        sizes[size] = data.stat().st_size / json.loads((tmp / ("s%d.data.d" % size) / "meta.json").read_text())["samples"]
        return seconds
    m = medians({"65528": lambda: under(65528), "32768": lambda: under(32768)}, rounds=SLOWDOWN_REPEAT)
    return [("--stack-size 65528 vs 32768, workload time under record", "%.2f s vs %.2f s" % (m["65528"], m["32768"]),
             "%+.1f%%" % (100 * (m["65528"] / m["32768"] - 1))),
            ("--stack-size 65528 vs 32768, recording bytes a sample (after tidy)",
             "%.0f vs %.0f" % (sizes[65528], sizes[32768]), ratio(sizes[65528], sizes[32768]))]


def calls_per_second(python: str, pythonpath: str, *flags: str) -> float:
    """One run of bench/calls.py; removes the /tmp files its trampoline (ours or
    CPython's own) wrote, since this runs outside `mixedstack record`."""
    out = run([python, *flags, str(ROOT / "bench" / "calls.py")], stdout=None,
              env=dict(os.environ, PYTHONPATH=pythonpath))[1].split()
    for name in ("/tmp/perf-%s.map" % out[1], "/tmp/jit-%s.dump" % out[1]):
        if os.path.exists(name):
            os.remove(name)
    return float(out[0])


def agent_figures(found: dict) -> List[Row]:
    """Calls/s without and with the agent (and CPython's own trampoline where it has one)."""
    from mixedstack.record.agent import agent_path
    from mixedstack.record.target import find_interpreter

    rows = []
    for version in sorted(v for v in found if (3, 8) <= v <= (3, 12)):
        python = found[version]
        folder = agent_path(find_interpreter([python]))
        contenders = {"plain": lambda: calls_per_second(python, ""),
                      "agent": lambda: calls_per_second(python, folder)}
        if version >= (3, 12):
            contenders["own"] = lambda: calls_per_second(python, "", "-X", "perf")
        m = medians(contenders)
        figures = "%.1f M/s vs %.1f M/s plain" % (m["agent"] / 1e6, m["plain"] / 1e6)
        change = "%+.0f%%" % (100 * (m["agent"] / m["plain"] - 1))
        if "own" in m:
            figures += ", CPython's -X perf %.1f M/s" % (m["own"] / 1e6)
            change += " (own: %+.0f%%)" % (100 * (m["own"] / m["plain"] - 1))
        rows.append(("agent cost, calls/s, CPython %d.%d" % version, figures, change))
    return rows


def top_figures(pythons: Dict[str, str]) -> List[Row]:
    """`mixedstack top` in tmux on tests/workloads/moving.py (4 s a phase): for each
    phase, seconds from its start (the program's own clock) to the first screen that
    shows its function among the 5 hottest Python rows (and to its top row)."""
    from conftest import Terminal  # tests/conftest.py

    if shutil.which("tmux") is None:
        return [("top: seconds from a function's start to its row (no tmux: make terminal)", "n/a", "")]
    rows = []
    for label, python in pythons.items():
        with tempfile.TemporaryDirectory(prefix="mixedstack-bench-top-") as name:
            folder = Path(name)
            data = folder / "top.data"
            terminal = Terminal(folder, "sh -c 'cd %s && PYTHONPATH=%s %s -m mixedstack top --view p -o %s -- %s %s 4 "
                                        "--then-wait; sleep 60'" % (folder, ROOT, sys.executable, data, python,
                                                                     ROOT / "tests" / "workloads" / "moving.py"))
            seen: Dict[str, float] = {}
            first: Dict[str, float] = {}
            try:
                deadline = time.monotonic() + 40
                while len(first) < 3 and time.monotonic() < deadline:
                    table = terminal.screen().splitlines()[2:7]
                    now = time.monotonic()
                    for phase in ("alpha_python", "beta_syscalls", "gamma_zlib"):
                        name = " %s (moving.py)" % phase
                        if phase not in seen and any(name in row for row in table):
                            seen[phase] = now
                        if phase not in first and table and name in table[0]:
                            first[phase] = now
                    time.sleep(0.05)
                terminal.keys("q")
                time.sleep(3)
            finally:
                terminal.close()
            started = {}
            output = Path(str(data) + ".d", "output.txt")
            for line in output.read_text().splitlines() if output.exists() else ():
                words = line.split()
                if len(words) == 4 and words[1] == "starts":
                    started[words[0]] = float(words[3])
        for what, when in (("among its 5 hottest", seen), ("at its top", first)):
            delays = [when[phase] - started[phase] for phase in when if phase in started]
            rows.append(("top on %s: seconds from a function's start to its row %s (each phase of moving.py)"
                         % (label, what), ", ".join("%.1f" % delay for delay in delays) +
                         (" (%d of 3 phases seen)" % len(delays) if len(delays) < 3 else ""),
                         "median %.1f s" % statistics.median(delays) if delays else "n/a"))
    return rows


NOTES = "\n## "  # the first heading under the table starts the notes kept from run to run


def main() -> None:
    if shutil.which("perf") is None:
        raise SystemExit("bench: perf not found")
    found = pyenv_interpreters()
    newest = max((v for v in found if v >= (3, 13)), default=None)
    if newest is None:
        raise SystemExit("bench: needs a CPython 3.13+ (pyenv or PATH)")
    pythons = {"CPython %d.%d" % newest: (found[newest], [])}
    older = max((v for v in found if v < (3, 12)), default=None)
    if older:
        pythons["CPython %d.%d" % older] = (found[older], [])
        pythons["CPython %d.%d, --agent never" % older] = (found[older], ["--agent", "never"])
    flamegraph = Path(os.environ["FLAMEGRAPH_DIR"]) if os.environ.get("FLAMEGRAPH_DIR") else None
    rows: List[Row] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mixedstack-bench-") as name:
        tmp = Path(name)
        for label, seconds in (("small", 0.5), ("large", 7.5)):
            data = record(tmp, label + ".data", found[newest], seconds)
            meta = json.loads(Path(str(data) + ".d", "meta.json").read_text())
            rows.append(("%s recording: %.1f s of phases.py at %d Hz, %s samples, %d MB" % (
                label, 3 * seconds, RECORDING_HZ, format(meta["samples"], ","), data.stat().st_size >> 20), "", ""))
            rows += [("  " + a, b, c) for a, b, c in fold_figures(data, tmp, flamegraph, inline=False)]
            if label == "large":
                rows += [("  " + a, b, c) for a, b, c in fold_figures(data, tmp, flamegraph, inline=True)]
        rows += long_figures(found[newest])
        rows += record_figures(tmp, pythons)
        rows += stack_size_figures(tmp, found[newest])
        rows += syscalls_figures(tmp, found[newest])
        lined = {"Debian's CPython %s" % version: str(CURRENT_PYTHON / version / "bare" / "usr" / "bin" / ("python" + version))
                 for version in ("3.14", "3.15")}
        rows += lines_figures(tmp, {label: path for label, path in lined.items() if os.access(path, os.X_OK)})
        rows += agent_figures(found)
        tops = {"CPython %d.%d" % version: found[version] for version in sorted({newest, older} - {None})}
        debian = CURRENT_PYTHON / "3.15" / "root" / "usr" / "bin" / "python3.15"
        if os.access(str(debian), os.X_OK):
            tops["Debian's CPython 3.15"] = str(debian)
        rows += top_figures(tops)
    table = ["| measure | figures | ratio |", "| --- | --- | --- |"]
    table += ["| %s | %s | %s |" % row for row in rows]
    load = os.getloadavg()
    header = ("mixedstack bench, %s, %d cores, medians of %d rounds (slowdowns: %d), Python %s, %.0f s, "
              "load average %.1f at the end" % (
                  time.strftime("%Y-%m-%d %H:%M"), os.cpu_count() or 1, REPEAT, SLOWDOWN_REPEAT,
                  platform.python_version(), time.time() - started, load[0]))
    text = "%s\n\n%s\n" % (header, "\n".join(table))
    print(text)
    results = ROOT / "bench" / "results.md"
    # what people wrote below the table (how to read it, the figures behind the
    # code's defaults) stays; the table is this run's
    old = results.read_text() if results.exists() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""
    results.write_text(text + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
