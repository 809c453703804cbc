"""The report's figures (report.py) as a terminal summary, widest facts first."""
from __future__ import annotations

from typing import IO, List, Optional, Sequence


EXTENSION = ".txt"
ENCODING = "utf-8"


def seconds(value: Optional[float]) -> str:
    return "-" if value is None else "%.3f s" % value


def percent(value: Optional[float]) -> str:
    return "-" if value is None else "%.1f%%" % (100 * value)


def microseconds(value: Optional[float]) -> str:
    return "-" if value is None else "%.1f us" % value if value < 10000 else "%.1f ms" % (value / 1000)


def errors(row: dict) -> str:
    """`10019 (ENOENT 10019)`: the failed calls, by errno."""
    if not row["errors"]:
        return "0"
    return "%s (%s)" % (format(row["errors"], ","), ", ".join(
        "%s %s" % (name, format(n, ",")) for name, n in list(row["errors_by_errno"].items())[:3]))


def table(out: IO[str], header: Sequence[str], rows: List[Sequence[str]], indent: str = "  ") -> None:
    """Columns sized to their content; the first and last columns left-aligned, numbers right."""
    if not rows:
        out.write(indent + "(none)\n")
        return
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        cells = []
        for i, cell in enumerate(row):
            left = i == 0 or i == len(row) - 1
            cells.append(str(cell).ljust(widths[i]) if left else str(cell).rjust(widths[i]))
        out.write((indent + "  ".join(cells)).rstrip() + "\n")


def more(out: IO[str], total: int, shown: int, what: str) -> None:
    if total > shown:
        out.write("  ... %s more %s (--top N to show more)\n" % (format(total - shown, ","), what))


def render(figures: dict, out: IO[str], source: str = "") -> None:
    health = figures["health"]
    out.write("mixedstack report: %s: %s samples, %s on CPU%s\n" % (
        source, format(health["samples"], ","), seconds(figures["on_cpu_s"]),
        ", %s context switches" % format(health["context_switches"], ",") if figures["off_cpu_recorded"]
        else " (no off-CPU data: record with --off-cpu for blocked time and GIL waits)"))

    out.write("\nWhere on-CPU time went\n")
    kernel_sampled = figures.get("kernel_sampled", True)
    table(out, ("layer", "on-CPU", "share"),
          [(row["layer"], seconds(row["on_cpu_s"]), percent(row["share"])) if kernel_sampled or row["layer"] != "kernel"
           else (row["layer"], "not sampled", "-") for row in figures["layers"]])

    out.write("\nSystem calls, by sampled time\n")
    if not kernel_sampled and not figures["syscalls"]:
        out.write("  (not sampled: the kernel was left out of this recording; see the notes below)\n")
    else:
        table(out, ("syscall", "on-CPU", "blocked", "top Python caller"),
              [(row["syscall"], seconds(row["on_cpu_s"]), seconds(row["blocked_s"]),
                "%s (%s)" % (row["top_python_caller"], percent(row["top_caller_share"])))
               for row in figures["syscalls"]])

    calls = figures.get("syscall_calls")
    if calls is not None:
        out.write("\nSystem calls, every call (record --syscalls): %s calls, %s failed%s\n" % (
            format(calls["calls"], ","), format(calls["errors"], ","),
            "; %s returns of calls made before the recording began" % format(calls["exits_without_entry"], ",")
            if calls["exits_without_entry"] else ""))
        table(out, ("syscall", "calls", "errors", "total", "mean", "p50", "p99", "max", "Python functions (calls, time)"),
              [(row["syscall"], format(row["calls"], ","), errors(row), seconds(row["total_s"]),
                microseconds(row["mean_us"]), microseconds(row["p50_us"]), microseconds(row["p99_us"]),
                microseconds(row["max_us"]),
                "; ".join("%s (%s, %s)" % (f["function"], format(f["calls"], ","), seconds(f["total_s"]))
                          for f in row["functions"]))
               for row in calls["rows"]])
        more(out, calls["syscalls_total"], len(calls["rows"]), "syscalls")
        if calls.get("lost_records"):
            out.write("  perf lost %s records (its buffer overflowed): some calls may be missing; record as root "
                      "(or with CAP_IPC_LOCK) for a larger buffer\n" % format(calls["lost_records"], ","))

    out.write("\nGIL: time waiting to take it (blocked, or on a CPU in take_gil/drop_gil)\n")
    table(out, ("tid", "GIL wait", "of wall", "thread"),
          [(row["tid"], seconds(row["gil_wait_s"]), percent(row["gil_share_of_wall"]), row["name"] or "")
           for row in figures["gil"]["threads"]])
    more(out, figures["gil"]["threads_waiting"], len(figures["gil"]["threads"]), "threads waited")
    if figures["gil"]["top_waiters"]:
        out.write("  Python functions that waited most:\n")
        table(out, ("GIL wait", "share", "function"),
              [(seconds(row["gil_wait_s"]), percent(row["share"]), row["function"])
               for row in figures["gil"]["top_waiters"]], indent="    ")
    if figures["gil"].get("holders"):
        out.write("  Who held the GIL while they waited (blocked waits; share of the waiting thread's):\n")
        table(out, ("waiting", "blamed", "share", "holder", "holder's Python function"),
              [("%s %s" % (row["tid"], row["thread"] or ""), seconds(row["blamed_s"]), percent(row["share"]),
                "%s %s" % (row["holder_tid"], row["holder"] or "") if row["holder_tid"] is not None else "-",
                row["function"]) for row in figures["gil"]["holders"]], indent="    ")

    if figures.get("locks"):
        out.write("\nLock waits (free-threaded CPython: blocked on a PyMutex, a critical section, a stop-the-world)\n")
        table(out, ("blocked", "kind", "thread", "Python function", "released by (share of the woken waits)"),
              [(seconds(row["blocked_s"]), row["kind"], "%s %s" % (row["tid"], row["thread"] or ""), row["function"],
                "%s %s (%s)" % (row["released_by_tid"], row["released_by"] or "", percent(row["released_share"]))
                if row["released_by_tid"] is not None else "-")
               for row in figures["locks"]])

    out.write("\nThreads\n")
    table(out, ("tid", "on-CPU", "blocked", "GIL wait", "wall", "name"),
          [(row["tid"], seconds(row["on_cpu_s"]), seconds(row["blocked_s"]), seconds(row["gil_wait_s"]),
            seconds(row["wall_s"]), "%s [%s]" % (row["name"], row["comm"]) if row["name"] else row["comm"])
           for row in figures["threads"]])
    more(out, figures["threads_total"], len(figures["threads"]), "threads")

    functions = figures["functions"]
    out.write("\nPython functions by on-CPU self time (innermost Python frame)\n")
    table(out, ("on-CPU", "share", "function"),
          [(seconds(row["on_cpu_s"]), percent(row["share"]), row["function"]) for row in functions["by_self"]])
    out.write("\nPython functions by on-CPU total time (anywhere on the stack)\n")
    table(out, ("on-CPU", "share", "function"),
          [(seconds(row["on_cpu_s"]), percent(row["share"]), row["function"]) for row in functions["by_total"]])
    if functions["by_blocked"] is not None:
        out.write("\nPython functions by blocked time\n")
        table(out, ("blocked", "function"),
              [(seconds(row["blocked_s"]), row["function"]) for row in functions["by_blocked"]])

    out.write("\nHealth: %s samples, %s lost; %s with Python frames, %s broken (not rooted at an entry "
              "point), %s with unresolved frames\n" % (
                  format(health["samples"], ","),
                  "?" if health["lost_samples"] is None else format(health["lost_samples"], ","),
                  percent(health["with_python_frames"]), percent(health["broken_stacks"]),
                  percent(health["unresolved_stacks"])))
    if health["broken_stacks"] > 0.01:
        out.write("  broken stacks end in %s: with frame pointers, libraries built without them cut stacks "
                  "short (record with --call-graph dwarf); with DWARF, deep stacks need a larger "
                  "--stack-size\n" % ", ".join(
                      "%s (%s)" % (row["dso"], percent(row["share"])) for row in health["broken_stacks_end_in"]))
    for row in health.get("no_symbols") or ():
        out.write("  %s has no symbols: its frames show as the file (%s of samples; a build with symbols, "
                  "or its debug package, names them)\n" % (row["dso"], percent(row["share"])))
    for note in health.get("notes") or ():
        out.write("  %s\n" % note)
