"""A long recording, measured while it is made:
`python bench/long.py MINUTES [--off-cpu] [--drop-stacks] [-o FILE]`.

Records tests/workloads/phases.py (CPU-bound: Python, C and system calls; with --off-cpu,
tests/workloads/offcpu.py's thread-heavy `gil` mix instead) for MINUTES with
`mixedstack record`, and prints, as JSON:

    peak_disk        the most disk the recording used while recording (its file, its
                     folder and perf's pieces; sampled every 0.2 s)
    final_disk       what it uses once record has returned
    over_final       peak_disk - final_disk
    samples, bytes_a_sample
    record_returned  seconds from the target's end (its last write) to record's return
    unwound          what unwinding while recording took (meta.json's unwound_while_recording:
                     batches, perf script's CPU seconds, seconds at the end)
    kept_bytes_a_sample  perf.data and the samples kept unwound (samples.bin, switches.txt)
                     a sample: what the recording keeps, with --drop-stacks the figure to watch

make bench builds two 10-minute recordings with it, once (cached), for fold's figures:
one as record makes it by default, one with --drop-stacks.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from conftest import pyenv_interpreters  # noqa: E402
from mixedstack.record.collect import disk_used  # noqa: E402  (what the status line shows)

MIXEDSTACK = [sys.executable, "-m", "mixedstack"]


def measure(minutes: float, data: Path, off_cpu: bool = False, drop_stacks: bool = False) -> dict:
    found = pyenv_interpreters()
    python = found[max(v for v in found if v >= (3, 13))]
    seconds = 60 * minutes
    ended = data.with_suffix(".end")
    if off_cpu:
        # offcpu.py's gil mix runs ~2 s: run it again and again for the whole time
        workload = ["-c", "import runpy, sys, time\nend = time.time() + %f\nwhile time.time() < end:\n"
                          "    sys.argv = ['offcpu.py', 'gil', %r]; runpy.run_path(%r, run_name='__main__')\n"
                          "open(%r, 'w').write('done')\n" % (seconds, str(data) + ".truth", str(
                              ROOT / "tests" / "workloads" / "offcpu.py"), str(ended))]
    else:
        # its three phases, a third of the time each; it writes its timings (`ended`) last
        workload = [str(ROOT / "tests" / "workloads" / "phases.py"), str(ended), str(seconds / 3)]
    peak = [0]
    stop = threading.Event()
    folder = Path(str(data) + ".d")

    def watch() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], disk_used([str(data), str(folder)]))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    command = MIXEDSTACK + ["record", "-f", "-o", str(data)] + (["--off-cpu"] if off_cpu else []) + (
        ["--drop-stacks"] if drop_stacks else []) + ["--", python] + workload
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    returned = time.time()
    stop.set()
    watcher.join()
    if done.returncode != 0:
        raise SystemExit("bench: record failed: %s" % done.stderr[-2000:])
    meta = json.loads((folder / "meta.json").read_text())
    final = disk_used([str(data), str(folder)])
    kept = data.stat().st_size + sum(path.stat().st_size for path in folder.glob("*")
                                     if path.name.startswith(("samples.bin", "switches.txt")))
    return {
        "drop_stacks": drop_stacks, "unwound": meta.get("unwound_while_recording"),
        "kept_bytes_a_sample": round(kept / max(1, meta["samples"])),
        "minutes": minutes, "off_cpu": off_cpu,
        "peak_disk": peak[0], "final_disk": final, "over_final": peak[0] - final,
        "samples": meta["samples"], "lost": meta["lost"], "bytes": data.stat().st_size,
        "bytes_a_sample": round(data.stat().st_size / max(1, meta["samples"])),
        "record_returned": round(returned - ended.stat().st_mtime, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("minutes", type=float)
    parser.add_argument("--off-cpu", action="store_true")
    parser.add_argument("--drop-stacks", action="store_true")
    parser.add_argument("-o", "--output", default="long.data")
    arguments = parser.parse_args()
    print(json.dumps(measure(arguments.minutes, Path(arguments.output), arguments.off_cpu, arguments.drop_stacks),
                     indent=2))


if __name__ == "__main__":
    main()
