"""A recording's samples unwound once (store.py): the first fold keeps them, every later
fold, report, flamegraph and diff reads them without perf script, and says the same."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import WORKLOADS, current_python, interpreter, mixedstack
from mixedstack import store
from mixedstack.perf.parse import EventFilter, ProcessLabel
from mixedstack.model import Frame, Sample

K = "[kernel.kallsyms]"


def samples():
    main = [Frame("7f01", "work", "/usr/lib/libx.so"), Frame("7f02", "main", "/usr/bin/app")]
    other = [Frame("ffff1", "schedule", K)] + main
    return [
        Sample("a", 1000, "cpu-clock", main, "app", "10", "10", "5.000001"),
        Sample("a", 2000, "sched:sched_switch", other, "app", "10", "11", "5.000002"),
        Sample("a", 3000, "cpu-clock", main, "app two", "?", "12", ""),
        Sample("a", 1, None, [], "0", "13", "13", "6.100000"),
        Sample("a", 4000, "cpu-clock", other, "app", "10", "10", "7.123456"),
    ]


def kept(tmp_path: Path, given, label=ProcessLabel(), events=None):
    data = tmp_path / "perf.data"
    data.write_bytes(b"PERFILE2 stand-in")
    writer = store.Writer(str(tmp_path))
    for sample in given:
        writer.add(sample)
    writer.finish(str(data))
    index = store.kept(str(tmp_path), str(data))
    assert index is not None
    return list(store.read(str(tmp_path), index, label, (events or EventFilter()).accepts))


def test_kept_samples_come_back_as_they_were_given(tmp_path):
    back = kept(tmp_path, samples(), label=ProcessLabel(include_tid=True), events=EventFilter(also=["x"]))
    # the default filter keeps the first event seen (cpu-clock) and events without one
    expected = [sample._replace(label=ProcessLabel(include_tid=True)(sample.comm, sample.pid, sample.tid))
                for sample in samples() if sample.event in ("cpu-clock", None)]
    assert back == expected
    assert [list(sample.frames) for sample in back] == [sample.frames for sample in expected]


def test_a_label_perl_calls_false_drops_the_sample_as_parse_does(tmp_path):
    back = kept(tmp_path, samples(), events=EventFilter(also=["sched:sched_switch"]))
    assert [sample.comm for sample in back] == ["app", "app", "app two", "app"]  # comm "0": dropped
    assert back[2].label == "app_two"


def test_kept_samples_of_another_perf_data_are_not_read(tmp_path):
    kept(tmp_path, samples())
    data = tmp_path / "perf.data"
    data.write_bytes(b"PERFILE2 recorded again")
    assert store.kept(str(tmp_path), str(data)) is None


def test_a_damaged_file_is_refused_before_any_sample(tmp_path):
    kept(tmp_path, samples())
    path = tmp_path / store.SAMPLES_FILE
    path.write_bytes(path.read_bytes()[:-7])
    index = store.kept(str(tmp_path), str(tmp_path / "perf.data"))
    with pytest.raises(ValueError):
        next(store.read(str(tmp_path), index, ProcessLabel(), EventFilter().accepts))


def test_an_odd_time_is_not_kept(tmp_path):
    writer = store.Writer(str(tmp_path))
    writer.add(samples()[0])
    with pytest.raises(store.Unstorable):
        writer.add(samples()[0]._replace(time="5.0001"))
    writer.abandon()
    assert not (tmp_path / store.SAMPLES_FILE).exists()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """gil_blame.py's threads on 3.11 (the agent), recorded with --off-cpu."""
    folder = tmp_path_factory.mktemp("kept")
    data = folder / "perf.data"
    done = mixedstack("record", "--off-cpu", "-o", str(data), "--", interpreter((3, 11)),
                      str(WORKLOADS / "gil_blame.py"), "1")
    assert done.returncode == 0, done.stderr
    return data


OUTPUTS = [
    ("fold",), ("fold", "--tid", "--kernel"), ("fold", "--what", "wall", "--pid"), ("fold", "--what", "off"),
    ("fold", "--what", "gil-holders"), ("fold", "--format", "speedscope"), ("report", "--format", "json"),
]


def outputs(data: Path, tmp: Path, env=None, fresh: bool = False) -> dict:
    """Each command's output; `fresh`: each read through perf script (what was kept forgotten first)."""
    result = {}
    svg = tmp / "graph.svg"
    for args in OUTPUTS + [("flamegraph", "-o", str(svg))]:
        if fresh:
            store.clear(str(data) + ".d")
        done = mixedstack(*args, str(data), env=env)
        assert done.returncode == 0, (args, done.stderr)
        result[args[0] if args[0] == "flamegraph" else args] = svg.read_text() if args[0] == "flamegraph" else done.stdout
    svg.unlink()
    return result


def test_what_is_kept_folds_reports_and_draws_as_perf_script_does(perf_ok, recorded, tmp_path):
    """Every output from perf script (nothing kept before it), then again from what the
    first read kept, with no perf on PATH: the same bytes."""
    folder = Path(str(recorded) + ".d")
    store.clear(str(folder))
    first = mixedstack("fold", str(recorded))
    assert first.returncode == 0, first.stderr
    index = json.loads((folder / (store.SAMPLES_FILE + ".json")).read_text())
    assert index["samples"] > 100, index
    assert store.kept_text(str(folder), str(recorded), store.SWITCHES_FILE) is None  # cpu needs no switches

    expected = outputs(recorded, tmp_path, fresh=True)
    outputs(recorded, tmp_path)  # keeps the switches' text too
    assert store.kept(str(folder), str(recorded))
    assert store.kept_text(str(folder), str(recorded), store.SWITCHES_FILE)
    no_perf = dict(os.environ, PATH=str(tmp_path / "nothing"))
    assert shutil.which("perf", path=no_perf["PATH"]) is None
    assert outputs(recorded, tmp_path, env=no_perf) == expected


def test_a_recording_of_plain_perf_record_is_kept_on_first_read(perf_ok, tmp_path):
    """`perf record -g` (no folder beside it): the first fold makes perf.data.d and keeps
    the samples there; the second reads them, without perf, and says the same."""
    data = tmp_path / "perf.data"
    done = subprocess.run(["perf", "record", "-q", "-g", "-F", "499", "-o", str(data), "--", interpreter((3, 11)),
                           "-c", "sum(i * i for i in range(3000000))"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    first = mixedstack("fold", str(data))
    assert first.returncode == 0 and first.stdout, first.stderr
    folder = Path(str(data) + ".d")
    assert store.kept(str(folder), str(data)), sorted(os.listdir(str(folder)))
    again = mixedstack("fold", str(data), env=dict(os.environ, PATH=str(tmp_path / "nothing")))
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr


RECORDED_BY = [
    ("3.11-agent", lambda: interpreter((3, 11))),
    ("3.13-perf-jit", lambda: interpreter((3, 13))),
    ("3.15-debian", lambda: current_python((3, 15), "root")),
]


@pytest.mark.parametrize("label,python", RECORDED_BY, ids=[label for label, _ in RECORDED_BY])
def test_record_keeps_the_samples_it_unwinds_while_it_records(perf_ok, tmp_path, label, python):
    """phases.py (6 s, with children forked and exec'd by a subprocess at the end) and
    --off-cpu: record unwinds batches while the program runs and leaves every sample
    kept; fold, its --what and --tid views and report from them say what perf script
    says of the finished recording."""
    data = tmp_path / "perf.data"
    program = ("import runpy, subprocess, sys\n"
               "sys.argv = sys.argv[1:]\n"
               "runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "subprocess.run([sys.executable, '-c', 'sum(i * i for i in range(2000000))'], check=True)\n")
    done = mixedstack("record", "--off-cpu", "-o", str(data), "--", python(), "-c", program,
                      str(WORKLOADS / "phases.py"), str(tmp_path / "t.json"), "2")
    assert done.returncode == 0, done.stderr
    folder = Path(str(data) + ".d")
    unwound = json.loads((folder / "meta.json").read_text())["unwound_while_recording"]
    assert unwound["kept"] and unwound["batches"] >= 2 and unwound["failed"] is None, unwound
    assert store.kept(str(folder), str(data)), sorted(os.listdir(str(folder)))
    views = [("fold", "--tid"), ("fold", "--what", "wall", "--pid"), ("report", "--format", "json")]
    kept = {}
    for args in views:
        read = mixedstack(*args, str(data), env=dict(os.environ, PATH=str(tmp_path / "nothing")))
        assert read.returncode == 0, read.stderr
        kept[args] = read.stdout
    for args in views:
        store.clear(str(folder))
        fresh = mixedstack(*args, str(data))
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout == kept[args], args
    assert "py_hot (phases.py)" in kept[("fold", "--tid")]


def test_a_recording_that_dropped_its_stack_copies_still_folds_reports_and_draws(perf_ok, tmp_path):
    """record --drop-stacks: perf.data keeps no sample's stack copy, and fold (every
    --what), report and flamegraph read the samples unwound while recording; the phases'
    shares are the workload's own. Without what was kept, fold says why it cannot."""
    from conftest import assert_shares_match, Folded
    from mixedstack.perf.data import PERF_RECORD_SAMPLE, records, sample_layouts, user_stack

    data = tmp_path / "perf.data"
    timings = tmp_path / "t.json"
    done = mixedstack("record", "--drop-stacks", "--off-cpu", "-o", str(data), "--", interpreter((3, 13)),
                      str(WORKLOADS / "phases.py"), str(timings), "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(str(data) + ".d", "meta.json").read_text())["stacks_dropped"] is True
    buf = data.read_bytes()
    layout = sample_layouts(buf)
    offset, size = struct.unpack_from("<QQ", buf, 40)
    samples = [position for position, kind, _, _ in records(buf, offset, offset + size) if kind == PERF_RECORD_SAMPLE]
    assert len(samples) > 1000
    assert not [position for position in samples if layout(position) and user_stack(buf, position, *layout(position))]
    folded = mixedstack("fold", str(data))
    assert folded.returncode == 0, folded.stderr
    assert_shares_match(Folded(folded.stdout), json.loads(timings.read_text()))
    for args in (("fold", "--what", "wall"), ("fold", "--what", "off", "--tid"), ("report",),
                 ("flamegraph", "-o", str(tmp_path / "g.svg"))):
        read = mixedstack(*args, str(data))
        assert read.returncode == 0 and (read.stdout or args[0] == "flamegraph"), (args, read.stderr)
    store.clear(str(data) + ".d")
    refused = mixedstack("fold", str(data))
    assert refused.returncode == 1 and "--drop-stacks" in refused.stderr and "Traceback" not in refused.stderr
