"""Pictures and other formats without perf: flame graph SVG, diff, speedscope, pprof,
folded input, and the one-line errors of flamegraph and diff.

The recording text is tests/data/python/perf-jit-3.13.txt (a trimmed real CPython
3.13 recording, two threads); the browser test (test_flamegraph_browser.py)
checks the same SVG drawn from a fresh recording in Chromium.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import ROOT, Folded, mixedstack, skip_or_fail
from conftest import one_line_error

from mixedstack.analyze.processors import layers
from mixedstack.model import PyFrame, Stacks
from mixedstack.renderers import flamegraph_svg
from mixedstack.renderers import pprof
from mixedstack.renderers import speedscope
from mixedstack.analyze.sources import folded_unit
from mixedstack.analyze.sources import split_folded

RECORDING_TEXT = ROOT / "tests" / "data" / "python" / "perf-jit-3.13.txt"
SVG = "{http://www.w3.org/2000/svg}"
SPEEDSCOPE_VERSION = "1.25.0"  # the npm package that ships file-format-schema.json


def frames_of(svg_text: str) -> List[Dict[str, object]]:
    """Each drawn frame: name, tooltip numbers, layer, x, width, y, fill."""
    root = ET.fromstring(svg_text.encode("utf-8"))
    found = []
    for group in root.find(SVG + "g[@id='frames']"):
        rect = group.find(SVG + "rect")
        name, _, numbers = group.find(SVG + "title").text.partition("\n")
        found.append({"name": name, "numbers": numbers, "layer": group.get("data-l"),
                      "x": float(rect.get("x")), "w": float(rect.get("width")),
                      "y": float(rect.get("y")), "fill": rect.get("fill")})
    return found


def by_name(frames: List[Dict[str, object]]) -> Dict[str, Dict[str, object]]:
    return {frame["name"]: frame for frame in frames}


def svg_of(*args: str) -> str:
    done = mixedstack("flamegraph", *args, "-o", "-")
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- layers -------------------------------------------------------------------


def test_layers_come_from_dsos_for_a_recording():
    frames = by_name(frames_of(svg_of(str(RECORDING_TEXT))))
    assert frames["main (app.py)"]["layer"] == layers.PYTHON
    # list_sort is a static function of libpython: only its DSO says "interpreter"
    assert frames["list_sort"]["layer"] == layers.INTERPRETER
    assert frames["_PyLong_Multiply"]["layer"] == layers.INTERPRETER
    assert frames["__GI___libc_write"]["layer"] == layers.LIBRARY
    assert frames["_dl_start"]["layer"] == layers.LIBRARY  # the dynamic loader
    assert frames["do_syscall_64"]["layer"] == layers.KERNEL
    assert frames["asm_exc_page_fault"]["layer"] == layers.KERNEL
    assert frames["python3.13"]["layer"] == layers.PROCESS


def test_layers_of_folded_text_follow_the_documented_heuristic(tmp_path):
    folded = tmp_path / "app.folded"
    assert mixedstack("fold", "--kernel", str(RECORDING_TEXT), "-o", str(folded)).returncode == 0
    frames = by_name(frames_of(svg_of(str(folded))))
    assert frames["main (app.py)"]["layer"] == layers.PYTHON
    assert frames["_PyLong_Multiply"]["layer"] == layers.INTERPRETER  # a CPython API prefix
    assert frames["list_sort"]["layer"] == layers.LIBRARY  # not visible from its name
    assert frames["do_syscall_64_[k]"]["layer"] == layers.KERNEL
    assert frames["__GI___libc_write"]["layer"] == layers.LIBRARY


@pytest.mark.parametrize("name, layer", [
    ("<module> (app.py)", layers.PYTHON),
    ("handler (pkg/web/views.py:120)", layers.PYTHON),
    ("_find_and_load (<frozen importlib._bootstrap>)", layers.PYTHON),
    ("outer.<locals>.inner (a.py)", layers.PYTHON),
    ("py::main:/srv/app.py", layers.PYTHON),
    ("[python frames before activation]", layers.PYTHON),
    ("PyObject_GetAttr", layers.INTERPRETER),
    ("_PyEval_EvalFrameDefault", layers.INTERPRETER),
    ("take_gil", layers.INTERPRETER),
    ("builtin_sorted", layers.INTERPRETER),
    ("vfs_read_[k]", layers.KERNEL),
    ("deflate", layers.LIBRARY),
    ("(anonymous namespace)::Foo::bar", layers.LIBRARY),
    ("[libz.so.1.2.13]", layers.LIBRARY),
    ("PyInit_thing_[i]", layers.INTERPRETER),
    ("[off-cpu: sleep]", layers.OFF_CPU),
    ("[off-cpu: io]", layers.OFF_CPU),
    ("[off-cpu: GIL]", layers.GIL),
])
def test_layer_of_a_folded_name(name, layer):
    (stack,) = Stacks.from_folded({"app;" + name: 1}).weights  # a folded file's frames, as read
    assert layers.of_stack(stack)[1] == layer


# --- folded input ---------------------------------------------------------------


def test_no_perf_script_text_of_the_corpora_looks_folded():
    texts = sorted((ROOT / "tests" / "data").glob("*/*.txt"))
    assert len(texts) > 20
    for path in texts:
        with open(path, encoding="latin-1", newline="\n") as f:
            assert not split_folded(f)[0], path


def test_folded_output_reads_back_as_folded(tmp_path):
    folded = tmp_path / "app.folded"
    assert mixedstack("fold", str(RECORDING_TEXT), "-o", str(folded)).returncode == 0
    with open(folded, encoding="latin-1", newline="\n") as f:
        is_folded, lines = split_folded(f)
        assert is_folded and "".join(lines) == folded.read_text()
    again = mixedstack("fold", str(folded))  # fold reads it as it is
    assert again.returncode == 0 and again.stdout == folded.read_text()


def test_folded_unit():
    assert folded_unit({"a;b": 1001001, "a;c": 2002002}) == "nanoseconds"
    assert folded_unit({"a;b": 3, "a;c": 12}) == "samples"


# --- the flame graph SVG --------------------------------------------------------


def test_svg_is_self_contained_and_frames_nest():
    text = svg_of(str(RECORDING_TEXT))
    root = ET.fromstring(text.encode("utf-8"))  # well-formed XML
    assert root.find(SVG + "script") is not None and root.find(SVG + "style") is not None
    # nothing is fetched: no external script, style sheet, image or font
    assert "href" not in text and "src=" not in text and "@import" not in text and "url(" not in text
    frames = frames_of(text)
    widest = max(frames, key=lambda frame: frame["w"])
    assert widest["name"] == "all" and abs(widest["w"] - (flamegraph_svg.WIDTH - 2 * flamegraph_svg.PAD)) < 0.01
    # each row's frames lie within the row below (their parents) and never overlap
    rows: Dict[float, List[Tuple[float, float]]] = {}
    for frame in frames:
        rows.setdefault(frame["y"], []).append((frame["x"], frame["x"] + frame["w"]))
    ys = sorted(rows)
    for upper, lower in zip(ys, ys[1:]):
        spans = sorted(rows[upper])
        assert all(a[1] <= b[0] + 0.002 for a, b in zip(spans, spans[1:]))
        for start, end in spans:
            assert any(s - 0.002 <= start and end <= e + 0.002 for s, e in rows[lower]), (start, end)


def test_tooltips_give_samples_share_and_time():
    frames = by_name(frames_of(svg_of(str(RECORDING_TEXT))))
    # 5 samples of 1001001 ns; main is on 3 of them
    assert frames["main (app.py)"]["numbers"] == "Python, 3 samples, 60.00%, 3.00 ms"
    assert frames["all"]["numbers"].startswith("process, 5 samples, 100.00%")


def test_narrow_frames_are_merged_so_a_large_profile_stays_light():
    # one wide function and 20,000 distinct narrow ones (each 1/40,000 of the total)
    weights = {"app;main;hot": 20000 * 1000}
    weights.update({"app;main;cold%05d;leaf" % i: 1000 for i in range(20000)})
    out = io.StringIO()
    flamegraph_svg.render(Stacks.from_folded(weights, "samples"), out)
    frames = frames_of(out.getvalue())
    names = [frame["name"] for frame in frames]
    assert "[20000 narrow frames]" in names and "hot" in names
    assert not any(name.startswith("cold") for name in names)
    assert len(out.getvalue()) < 40_000, len(out.getvalue())
    merged = by_name(frames)["[20000 narrow frames]"]
    assert abs(merged["w"] - by_name(frames)["hot"]["w"]) < 0.01  # the merged frame keeps its width


def test_off_cpu_and_gil_frames_have_their_own_colours(tmp_path):
    folded = tmp_path / "wall.folded"
    folded.write_text("app;main (app.py);work (app.py) 4000000\n"
                      "app;main (app.py);time.sleep;[off-cpu: sleep] 3000000\n"
                      "app;main (app.py);lock;[off-cpu: GIL] 2000000\n")
    frames = by_name(frames_of(svg_of(str(folded))))
    assert frames["[off-cpu: sleep]"]["layer"] == layers.OFF_CPU
    assert frames["[off-cpu: GIL]"]["layer"] == layers.GIL
    fills = {frames[name]["fill"] for name in ("work (app.py)", "[off-cpu: sleep]", "[off-cpu: GIL]")}
    assert len(fills) == 3
    legend = ET.fromstring(svg_of(str(folded)).encode("utf-8")).find(SVG + "g[@id='legend']")
    assert [t.text for t in legend.iter(SVG + "text")] == ["Python", "C in extensions and libraries",
                                                           "off-CPU", "GIL wait"]


def test_what_selects_stacks_of_a_folded_file(tmp_path):
    folded = tmp_path / "wall.folded"
    folded.write_text("app;main (app.py);work (app.py) 4000000\n"
                      "app;main (app.py);time.sleep;[off-cpu: sleep] 3000000\n")
    names = lambda *args: {f["name"] for f in frames_of(svg_of(str(folded), *args))}  # noqa: E731
    assert "work (app.py)" in names("--what", "cpu") and "[off-cpu: sleep]" not in names("--what", "cpu")
    assert "work (app.py)" not in names("--what", "off") and "[off-cpu: sleep]" in names("--what", "off")
    assert {"work (app.py)", "[off-cpu: sleep]"} <= names("--what", "wall") == names()


def test_names_keep_utf8_and_markup_safe(tmp_path):
    folded = tmp_path / "odd.folded"
    folded.write_bytes("app;caf\u00e9 (m\u00fcnchen.py);<tag> & \"q\" 5000000\n".encode("utf-8"))
    names = {frame["name"] for frame in frames_of(svg_of(str(folded)))}
    assert "caf\u00e9 (m\u00fcnchen.py)" in names and '<tag> & "q"' in names


# --- differential flame graph -------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_diff_colours_growth_red_and_shrinkage_blue(tmp_path):
    before = write(tmp_path / "before.folded", "app;main;grows 1000\napp;main;shrinks 3000\n")
    # after has 10x the samples: normalised, grows goes 25% -> 75%, shrinks 75% -> 25%
    after = write(tmp_path / "after.folded", "app;main;grows 30000\napp;main;shrinks 10000\napp;main;new 0\n")
    out = tmp_path / "diff.svg"
    done = mixedstack("diff", before, after, "-o", str(out))
    assert done.returncode == 0, done.stderr
    frames = by_name(frames_of(out.read_text()))
    red = lambda fill: int(fill[1:3], 16) - int(fill[5:7], 16)  # noqa: E731
    assert red(frames["grows"]["fill"]) > 100 and red(frames["shrinks"]["fill"]) < -100
    assert frames["grows"]["numbers"] == "before 25.00%, after 75.00%, change +50.00 points (x3.00)"
    assert frames["shrinks"]["numbers"] == "before 75.00%, after 25.00%, change -50.00 points (x0.33)"
    assert "change +0.00 points" in frames["main"]["numbers"]
    assert abs(frames["grows"]["w"] - frames["shrinks"]["w"]) < 0.01  # width: mean share, 50% each


def test_diff_is_normalised_by_totals(tmp_path):
    before = write(tmp_path / "a.folded", "app;main;x 1000\napp;main;y 3000\n")
    after = write(tmp_path / "b.folded", "app;main;x 7000\napp;main;y 21000\n")  # same shares
    out = tmp_path / "same.svg"
    assert mixedstack("diff", before, after, "-o", str(out)).returncode == 0
    frames = frames_of(out.read_text())
    assert all("change +0.00 points" in frame["numbers"] for frame in frames)
    assert len({frame["fill"] for frame in frames}) == 1


def test_diff_across_interpreters_and_launchers_draws_one_tree(tmp_path):
    # the same program on 3.11 (python3.11), 3.13 (python3.13) and a venv's `python`
    before = write(tmp_path / "a.folded", "python3.11;<module> (app.py);main (app.py);slow (app.py) 1000\n"
                                          "python3.11;<module> (app.py);main (app.py);fast (app.py) 3000\n")
    after = write(tmp_path / "b.folded", "python;<module> (app.py);main (app.py);slow (app.py) 2000\n"
                                         "python3.13;<module> (app.py);main (app.py);fast (app.py) 2000\n")
    out = tmp_path / "d.svg"
    done = mixedstack("diff", before, after, "-o", str(out))
    assert done.returncode == 0, done.stderr
    frames = by_name(frames_of(out.read_text()))
    assert set(frames) >= {"python", "main (app.py)", "slow (app.py)"} and not {"python3.11", "python3.13"} & set(frames)
    assert "change +0.00 points" in frames["main (app.py)"]["numbers"]
    assert frames["slow (app.py)"]["numbers"] == "before 25.00%, after 50.00%, change +25.00 points (x2.00)"
    exact = tmp_path / "e.svg"
    assert mixedstack("diff", "--exact-roots", before, after, "-o", str(exact)).returncode == 0
    assert {"python3.11", "python3.13", "python"} <= set(by_name(frames_of(exact.read_text())))


def test_diff_of_a_recording_and_a_folded_file(tmp_path):
    folded = tmp_path / "app.folded"
    assert mixedstack("fold", str(RECORDING_TEXT), "-o", str(folded)).returncode == 0
    out = tmp_path / "d.svg"
    done = mixedstack("diff", str(RECORDING_TEXT), str(folded), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert all("change +0.00 points" in frame["numbers"] for frame in frames_of(out.read_text()))


# --- speedscope -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def speedscope_schema() -> dict:
    """speedscope's published file-format-schema.json, from its npm package (cached)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixedstack"
    schema = cache / ("speedscope-%s-file-format-schema.json" % SPEEDSCOPE_VERSION)
    if not schema.exists():
        npm = shutil.which("npm")
        if npm is None:
            skip_or_fail("npm is not installed: it fetches speedscope's schema")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                subprocess.run([npm, "pack", "--silent", "speedscope@" + SPEEDSCOPE_VERSION, "--pack-destination", tmp],
                               check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180, cwd=tmp)
            except (subprocess.SubprocessError, OSError) as error:
                skip_or_fail("npm pack speedscope failed: %s" % error)
            with tarfile.open(os.path.join(tmp, "speedscope-%s.tgz" % SPEEDSCOPE_VERSION)) as tar:
                data = tar.extractfile("package/dist/release/file-format-schema.json").read()
        cache.mkdir(parents=True, exist_ok=True)
        partial = schema.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, schema)
    return json.loads(schema.read_text())


def test_speedscope_validates_against_the_published_schema(speedscope_schema, tmp_path):
    import jsonschema

    done = mixedstack("fold", "--format", "speedscope", str(RECORDING_TEXT))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, speedscope_schema)
    # from samples with times: one evented profile per thread, its time as folded per thread
    per_thread_text = mixedstack("fold", "--tid", str(RECORDING_TEXT)).stdout
    per_thread = Folded(per_thread_text)
    assert sorted(p["name"] for p in document["profiles"]) == per_thread.processes() == \
        ["python3.13-4242/4242", "python3.13-4242/4244"]
    frames = document["shared"]["frames"]
    assert {"name": "main", "file": "app.py"} in frames
    opened = []
    for profile in document["profiles"]:
        assert profile["type"] == "evented" and profile["unit"] == "nanoseconds"
        depth, since, total = 0, 0, 0
        for event in profile["events"]:
            if event["type"] == "O":
                opened.append(frames[event["frame"]]["name"])
                since = event["at"] if depth == 0 else since
                depth += 1
            else:
                depth -= 1
                total += event["at"] - since if depth == 0 else 0
        # samples a thread's timer put a little closer than their periods overlap: cut
        assert 0.95 * per_thread.for_process(profile["name"]).total() <= total <= \
            per_thread.for_process(profile["name"]).total()
    assert "<module>" in opened and "spin" in opened
    # from folded text (no times): one sampled profile per label, weights as folded
    folded = tmp_path / "tid.folded"
    folded.write_text(per_thread_text)
    document = json.loads(mixedstack("fold", "--format", "speedscope", str(folded)).stdout)
    jsonschema.validate(document, speedscope_schema)
    for profile in document["profiles"]:
        assert profile["type"] == "sampled" and profile["unit"] == "nanoseconds"
        assert sum(profile["weights"]) == profile["endValue"] == per_thread.for_process(profile["name"]).total()
    frames = document["shared"]["frames"]
    names = [[frames[i]["name"] for i in stack] for p in document["profiles"] for stack in p["samples"]]
    assert ["<module>", "main", "spin"] in names  # root first, the process is the profile


def test_speedscope_invalid_document_is_caught(speedscope_schema):
    # the check can fail: a document without weights is refused
    import jsonschema

    out = io.StringIO()
    speedscope.render(Stacks.from_folded({"app;main": 5}, "samples"), out)
    document = json.loads(out.getvalue())
    jsonschema.validate(document, speedscope_schema)
    del document["profiles"][0]["weights"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, speedscope_schema)


# --- pprof ----------------------------------------------------------------------------


def varint(data: bytes, i: int) -> Tuple[int, int]:
    """The base-128 number at data[i:], and where the next field starts."""
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def wire_fields(data: bytes) -> List[Tuple[int, object]]:
    """A protocol buffer's (field number, value) pairs, decoded by hand: a check
    independent of the protobuf library that wrote them."""
    fields, i = [], 0
    while i < len(data):
        key, i = varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = varint(data, i)
            fields.append((number, value))
        elif kind == 2:
            length, i = varint(data, i)
            fields.append((number, data[i:i + length]))
            i += length
        else:
            raise AssertionError("unexpected wire type %d" % kind)
    return fields


def packed(value) -> List[int]:
    if isinstance(value, int):  # unpacked repeated numbers are legal too
        return [value]
    numbers, i = [], 0
    while i < len(value):
        number, i = varint(value, i)
        numbers.append(number)
    return numbers


def test_pprof_decodes_and_its_totals_equal_the_folded_totals(tmp_path):
    out = tmp_path / "profile.pb.gz"
    done = mixedstack("fold", "--format", "pprof", str(RECORDING_TEXT), "-o", str(out))
    assert done.returncode == 0, done.stderr
    data = gzip.decompress(out.read_bytes())
    folded = Folded(mixedstack("fold", str(RECORDING_TEXT)).stdout)

    profile = wire_fields(data)
    strings = [value.decode() for number, value in profile if number == 6]
    assert strings[0] == ""
    types = [dict(wire_fields(value)) for number, value in profile if number == 1]
    assert [(strings[t.get(1, 0)], strings[t.get(2, 0)]) for t in types] == [("samples", "count"),
                                                                          ("cpu", "nanoseconds")]
    samples = [wire_fields(value) for number, value in profile if number == 2]
    totals = [0, 0]
    for sample in samples:
        values = [v for number, value in sample if number == 2 for v in packed(value)]
        totals = [totals[0] + values[0], totals[1] + values[1]]
    assert totals == [5, folded.total()] == [5, 5 * 1001001]

    # and through protobuf, the stacks themselves
    decoded = pprof.message_classes()["Profile"].FromString(data)
    names = {f.id: decoded.string_table[f.name] for f in decoded.function}
    locations = {loc.id: names[loc.line[0].function_id] for loc in decoded.location}
    stacks = {}
    for sample in decoded.sample:
        label = decoded.string_table[sample.label[0].str]
        frames = [locations[i] for i in reversed(sample.location_id)]  # leaf first in pprof
        stacks[tuple([label] + frames)] = sample.value[1]
    python_names = {name for name in names.values()}
    assert "main" in python_names and "_PyLong_Multiply" in python_names
    files = {decoded.string_table[f.filename] for f in decoded.function if f.filename}
    assert files == {"app.py"}
    # same stacks as folded, with Python frames named by function (file in Function.filename)
    expected = {tuple(f.split(" (")[0] for f in frames): value for frames, value in folded.stacks.items()}
    assert stacks == expected


def test_pprof_of_folded_text_has_the_one_value_it_holds(tmp_path):
    folded = write(tmp_path / "counts.folded", "app;main;work 7\napp;main;idle 3\n")
    out = tmp_path / "p.pb.gz"
    assert mixedstack("fold", "--format", "pprof", folded, "-o", str(out)).returncode == 0
    decoded = pprof.message_classes()["Profile"].FromString(gzip.decompress(out.read_bytes()))
    assert [decoded.string_table[t.type] for t in decoded.sample_type] == ["samples"]
    assert sum(s.value[0] for s in decoded.sample) == 10


def test_pprof_same_stacks_same_bytes():
    stacks = Stacks({("app", "main", "a"): 3000000, ("app", "main", "b"): 1000000}, "nanoseconds",
                    {("app", "main", "a"): 3, ("app", "main", "b"): 1})
    first, second = io.BytesIO(), io.BytesIO()
    pprof.render(stacks, first)
    pprof.render(stacks, second)
    assert first.getvalue() == second.getvalue()


# --- one-line errors ------------------------------------------------------------------


def test_flamegraph_of_something_else(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\nthis is neither a recording nor folded text\n")
    one_line_error(mixedstack("flamegraph", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "x.svg")),
                   1, "holds no samples", "folded")
    assert not (tmp_path / "x.svg").exists()


def test_flamegraph_unwritable_output(tmp_path):
    one_line_error(mixedstack("flamegraph", str(RECORDING_TEXT), "-o", str(tmp_path / "no" / "such" / "x.svg")),
                   1, "cannot write", "choose another -o")


def test_flamegraph_never_writes_over_a_recording(tmp_path):
    data = tmp_path / "perf.data"
    data.write_bytes(b"PERFILE2" + b"\0" * 100)
    one_line_error(mixedstack("flamegraph", str(RECORDING_TEXT), "-o", str(data)), 1, "perf recording")
    assert data.read_bytes().startswith(b"PERFILE2")
    one_line_error(mixedstack("diff", str(RECORDING_TEXT), str(RECORDING_TEXT), "-o", str(data)), 1, "perf recording")


def test_flamegraph_never_writes_over_its_input(tmp_path):
    folded = write(tmp_path / "app.folded", "app;main 5\n")
    one_line_error(mixedstack("flamegraph", folded, "-o", folded), 1, "is an input")
    assert Path(folded).read_text() == "app;main 5\n"


def test_default_output_is_beside_the_input(tmp_path):
    folded = write(tmp_path / "app.folded", "app;main 5\n")
    done = mixedstack("flamegraph", folded)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "app.svg").exists() and str(tmp_path / "app.svg") in done.stderr


def test_what_off_needs_off_cpu_stacks(tmp_path):
    folded = write(tmp_path / "cpu.folded", "app;main 5000000\n")
    one_line_error(mixedstack("flamegraph", folded, "--what", "off", "-o", str(tmp_path / "x.svg")),
                   1, "no off-CPU", "--what")


def test_diff_needs_two_inputs(tmp_path):
    done = mixedstack("diff", str(RECORDING_TEXT))
    assert done.returncode == 2 and "Missing argument" in done.stderr


def test_fold_format_choices():
    done = mixedstack("fold", "--format", "png", str(RECORDING_TEXT))
    assert done.returncode == 2 and "folded" in done.stderr and "pprof" in done.stderr


def test_go_tool_pprof_reads_it(tmp_path):
    """pprof's own reader: Debian's golang-go (make consumers installs it; required under CI)."""
    go = shutil.which("go")
    if go is None:
        skip_or_fail("Go is not installed: make consumers installs Debian's golang-go, for go tool pprof")
    out = tmp_path / "profile.pb.gz"
    assert mixedstack("fold", "--format", "pprof", str(RECORDING_TEXT), "-o", str(out)).returncode == 0
    env = dict(os.environ, GOCACHE=str(tmp_path / "gocache"), PPROF_TMPDIR=str(tmp_path), HOME=str(tmp_path))
    totals = {}
    for index in ("samples", "cpu"):
        done = subprocess.run([go, "tool", "pprof", "-sample_index=" + index, "-top", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout
        totals[index] = done.stdout.split(" of ", 1)[1].split(" total", 1)[0]
        assert "main" in done.stdout and "_PyLong_Multiply" in done.stdout
    assert totals == {"samples": "5", "cpu": "5.01ms"}  # 5 x 1,001,001 ns


def test_output_to_a_device_is_written_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    done = mixedstack("flamegraph", str(RECORDING_TEXT), "-o", str(fifo))
    assert done.returncode == 0, done.stderr
    assert reader.communicate(timeout=60)[0].startswith(b"<?xml")
    assert fifo.is_fifo() and not (tmp_path / "pipe.partial").exists()


@pytest.mark.parametrize("name, frame", [
    ("main (app.py)", PyFrame("main", "app.py")),
    ("Outer.<locals>.inner (pkg/app.py:42)", PyFrame("Outer.<locals>.inner", "pkg/app.py", 42)),
    ("<module> (<frozen importlib._bootstrap>)", PyFrame("<module>", "<frozen importlib._bootstrap>")),
    ("(anonymous namespace)::Foo::bar", None), ("deflate", None), ("[python frames before activation]", None),
])
def test_a_python_frame_is_data_until_it_is_written(name, frame):
    assert PyFrame.parse(name) == frame
    if frame is not None:
        assert frame.text() == name
        assert Stacks({("app", frame): 7}).to_folded() == "app;%s 7\n" % name

