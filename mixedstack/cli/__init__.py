"""The `mixedstack` command line.

    mixedstack record [-o perf.data] [-F HZ] [--call-graph auto|fp|dwarf] [--off-cpu] [--user USER] -- CMD ARGS...
    mixedstack record --pid PID [-d SECONDS] [--activate|--no-activate] [-o perf.data]
    mixedstack doctor [-- CMD ARGS...]
    mixedstack fold [INPUT] [-o FILE] [--format folded|speedscope|pprof] [--pid] [--tid] [--kernel]
                    [--jit] [--all] [--addrs] [--event-filter EV] [--keep-interpreter] [--inline]
                    [--what cpu|off|wall]
    mixedstack flamegraph [INPUT] [-o FILE.svg] [--title T] [--what cpu|off|wall]
    mixedstack diff BEFORE AFTER [-o diff.svg] [--title T] [--what cpu|off|wall]

Exit status: record passes the target's through (128+N when a signal N ended it,
or when record itself was stopped by signal N: SIGINT, SIGTERM, SIGHUP);
1 when mixedstack could not do its job (perf failed, unreadable input); 2 for bad
usage (click's convention); 130 after Ctrl-C during fold.
"""
from mixedstack.cli import analyze, record, top  # noqa: F401  (their commands join main)
from mixedstack.cli.group import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":  # pragma: no cover
    run()
