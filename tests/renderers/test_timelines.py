"""Timelines: speedscope's and the Firefox Profiler's formats show each thread's samples in
time order, read back by the programs that open them.

workloads/alternate.py: thread A runs pure Python for 1 s while B sleeps, then B for 1 s
while A sleeps, recorded with --off-cpu and --syscalls on CPython 3.13. Checked:
- the speedscope file itself (evented profiles: A's phase before B's, their waits after
  and before), and the real speedscope app (`make consumers`) in Debian's Chromium: its
  "Time Order" view, hovered along the timeline of each thread, shows A's function in
  the first half and B's in the second;
- the gecko file against the format as the Firefox Profiler's sources define it (checks
  below, each naming where), and imported by the Firefox Profiler's own code (its
  command-line tool, @firefox-devtools/profiler-cli): threads, samples in order, markers;
- go tool pprof (Debian's golang-go) reads pprof output (in test_renderers.py).

Skipped with a reason where Chromium or the npm packages are missing, required under CI.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

from conftest import WORKLOADS, interpreter, mixedstack, perf_problem, skip_or_fail

pytestmark = pytest.mark.perf

CONSUMERS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixedstack" / "consumers"
SPEEDSCOPE = CONSUMERS / "node_modules" / "speedscope" / "dist" / "release"
PROFILER_CLI = CONSUMERS / "node_modules" / "@firefox-devtools" / "profiler-cli" / "dist" / "profiler-cli.js"
PHASE = 1.0  # seconds each thread runs
JITTER_NS = 30_000_000  # a thread's first sample covers the period before it: a little before its phase


@pytest.fixture(scope="module")
def timelines(tmp_path_factory):
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("timelines")
    data = tmp / "perf.data"
    done = mixedstack("record", "--off-cpu", "--syscalls", "-o", str(data), "--", interpreter((3, 13)),
                      str(WORKLOADS / "alternate.py"), str(PHASE))
    assert done.returncode == 0, done.stderr
    files = {}
    for format_ in ("speedscope", "gecko"):
        files[format_] = tmp / ("alternate." + format_ + ".json")
        done = mixedstack("fold", "--what", "wall", "--format", format_, str(data), "-o", str(files[format_]))
        assert done.returncode == 0, done.stderr
    return files


# --- speedscope -------------------------------------------------------------------------

def intervals(profile: dict, frames: List[dict], name: str) -> List[List[int]]:
    """[open, close] of each time a frame named `name` was open in an evented profile."""
    found, opened = [], {}
    for event in profile["events"]:
        if frames[event["frame"]]["name"] != name:
            continue
        if event["type"] == "O":
            opened[event["frame"]] = event["at"]
        else:
            found.append([opened.pop(event["frame"]), event["at"]])
    return found


def test_speedscope_profiles_are_each_threads_timeline(timelines):
    document = json.loads(timelines["speedscope"].read_text())
    frames = document["shared"]["frames"]
    profiles = document["profiles"]
    assert all(profile["type"] == "evented" for profile in profiles)
    # one time axis: speedscope gives each profile its own from startValue
    assert len({(profile["startValue"], profile["endValue"]) for profile in profiles}) == 1
    for profile in profiles:  # balanced and in time order (speedscope refuses anything else)
        stack, last = [], 0
        for event in profile["events"]:
            assert event["at"] >= last
            last = event["at"]
            if event["type"] == "O":
                stack.append(event["frame"])
            else:
                assert stack.pop() == event["frame"]
        assert not stack
    a = next(p for p in profiles if intervals(p, frames, "phase_a_work"))
    b = next(p for p in profiles if intervals(p, frames, "phase_b_work"))
    assert a is not b
    ran_a, ran_b = intervals(a, frames, "phase_a_work"), intervals(b, frames, "phase_b_work")
    for ran in (ran_a, ran_b):  # each ran about PHASE seconds, on the CPU
        assert 0.8 * PHASE * 1e9 <= sum(end - start for start, end in ran) <= 1.1 * PHASE * 1e9
    assert ran_a[-1][1] <= ran_b[0][0] + JITTER_NS  # A's phase, then B's
    # each waited while the other ran: the wait is on its timeline, with its reason
    waits = {name for name in (frames[e["frame"]]["name"] for e in b["events"]) if name.startswith("[off-cpu")}
    assert "[off-cpu: lock]" in waits, waits
    lock_a = [span for span in intervals(a, frames, "[off-cpu: lock]") if span[0] >= ran_a[-1][1] - JITTER_NS]
    assert sum(end - start for start, end in lock_a) >= 0.8 * PHASE * 1e9


@pytest.fixture(scope="module")
def chromium():
    if shutil.which("chromium") is None:
        skip_or_fail("Debian's chromium is not installed (make browser installs it)")
    if not (SPEEDSCOPE / "index.html").is_file():
        skip_or_fail("the speedscope app is not installed (make consumers installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is missing (make test installs the test extras)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


class Served:
    """The speedscope app and one profile from a local http server (speedscope fetches a
    #profileURL only from a page served over http)."""

    def __init__(self, profile: Path):
        app, name = SPEEDSCOPE, profile.name

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def translate_path(self, path):
                path = urllib.parse.unquote(path.split("?")[0].split("#")[0]).lstrip("/")
                return str(profile if path == "profiles/" + name else app / path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        base = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.url = "%s/index.html#profileURL=%s/profiles/%s&view=time-ordered" % (base, base, name)

    def close(self):
        self.server.shutdown()


# speedscope's class names are minified: its page is read by structure. Canvases: [0] the
# page's WebGL, [1] the minimap, [2] the flame chart, whose first 20 px row is the ruler;
# the hover tip is the positioned child of the chart's root that holds no canvas.
CHART = """() => { const r = document.querySelectorAll('canvas')[2].getBoundingClientRect();
  return {x: r.x, y: r.y, w: r.width, h: r.height}; }"""
TIP = """() => { const root = document.querySelectorAll('canvas')[2].parentElement.parentElement;
  for (const el of root.children) {
    if (el.querySelector('canvas') || !el.style.left) continue;
    const row = el.firstElementChild, span = row.querySelector('span');
    return row.innerText.slice(span ? span.innerText.length : 0).trim().split('\\n')[0]; }
  return null; }"""
ACTIVE = """() => { const tab = [...document.querySelectorAll('div')].find(
    d => d.lastChild && d.lastChild.nodeType === 3 && d.lastChild.textContent === 'Time Order');
  return tab ? tab.parentElement.nextElementSibling.innerText.split('\\n')[0].trim() : null; }"""
PROFILES = "() => [...document.querySelectorAll('tr[title]')].map(t => t.title)"
ROW = 20  # speedscope's frame height, CSS px


class App:
    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1200, "height": 1400})
        self.problems: List[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" or "Failed to load"
                     in m.text else None)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.problems.append("alert: " + dialog.message), dialog.dismiss()))
        self.page.goto(url)
        self.page.wait_for_function("document.body.innerText.includes('Time Order') || "
                                    "document.body.innerText.includes('Something went wrong')", timeout=30000)
        assert "Time Order" in self.page.evaluate("document.body.innerText"), self.problems
        self.page.wait_for_function("document.querySelectorAll('canvas').length >= 3")

    def settle(self, ms: int = 150) -> None:
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        if ms:
            self.page.wait_for_timeout(ms)

    def show(self, index: int, name: str, count: int) -> None:
        """Choose a profile (thread) from the toolbar's list, then the Time Order view."""
        if not self.page.evaluate(ACTIVE).startswith("%s (%d/" % (name, index + 1)):
            self.page.get_by_text("/%d)" % count).hover()
            self.page.locator('tr[title="%s"]' % name).click()
            self.page.wait_for_function("() => (%s)().includes('(%d/')" % (ACTIVE, index + 1), timeout=5000)
        self.page.mouse.move(0, 0)
        self.page.get_by_text("Time Order").click()
        self.settle()

    def column(self, share: float) -> Set[str]:
        """The frame names the chart shows at `share` of its width, hovered row by row."""
        chart = self.page.evaluate(CHART)
        x = chart["x"] + share * chart["w"]
        names, empty = set(), 0
        for depth in range(int(chart["h"] // ROW) - 1):
            y = chart["y"] + ROW * (depth + 1) + ROW / 2
            self.page.mouse.move(x + 1, y)
            self.page.mouse.move(x, y)
            self.settle(0)
            tip = self.page.evaluate(TIP)
            if tip:
                names.add(tip)
                empty = 0
            elif names or depth > 3:
                empty += 1
                if empty >= 2:
                    break
        self.page.mouse.move(0, 0)
        return names


def test_speedscope_app_shows_the_phases_in_time_order(timelines, chromium):
    document = json.loads(timelines["speedscope"].read_text())
    frames = document["shared"]["frames"]
    names = [profile["name"] for profile in document["profiles"]]
    a = next(p["name"] for p in document["profiles"] if intervals(p, frames, "phase_a_work"))
    b = next(p["name"] for p in document["profiles"] if intervals(p, frames, "phase_b_work"))
    served = Served(timelines["speedscope"])
    try:
        app = App(chromium, served.url)
        assert app.page.evaluate(PROFILES) == names  # the threads, by name, in the app's list
        seen: Dict[str, Dict[float, Set[str]]] = {}
        for thread in (a, b):
            app.show(names.index(thread), thread, len(names))
            seen[thread] = {share: app.column(share) for share in (0.3, 0.7)}
        assert not app.problems, app.problems
    finally:
        served.close()
    # the run is ~2 s: A's phase fills the first half of the timeline, B's the second
    assert "phase_a_work" in seen[a][0.3] and "phase_a_work" not in seen[a][0.7], seen[a]
    assert "phase_b_work" in seen[b][0.7] and "phase_b_work" not in seen[b][0.3], seen[b]
    assert "[off-cpu: lock]" in seen[b][0.3] | seen[a][0.7], seen  # each waited on an Event meanwhile


# --- gecko ------------------------------------------------------------------------------

# What the Firefox Profiler's sources require of a gecko profile (firefox-devtools/profiler,
# 2026: src/profile-logic/process-profile.ts, gecko-profile-versioning.ts, marker-data.ts,
# profile-data.ts; src/types/gecko-profile.ts), checked one by one.
CATEGORY_COLORS = {"transparent", "purple", "green", "orange", "yellow", "lightblue", "blue", "brown",
                   "magenta", "red", "lightred", "darkgray", "grey"}


def table(thing: dict, columns: List[str]) -> List[list]:
    """A gecko table ({schema: {column: index}, data: [rows]}) with these columns."""
    schema, data = thing["schema"], thing["data"]
    assert isinstance(schema, dict) and isinstance(data, list)
    assert all(column in schema for column in columns), (columns, schema)
    assert len(set(schema.values())) == len(schema)  # _toStructOfArrays
    assert all(isinstance(row, list) and len(row) > max(schema.values()) for row in data)
    return data


def check_gecko(document: dict) -> None:
    meta = document["meta"]
    assert isinstance(meta["version"], int) and 22 <= meta["version"] <= 36  # gecko-profile-versioning
    assert isinstance(meta["startTime"], (int, float)) and meta["interval"] > 0  # processGeckoProfile
    assert meta.get("presymbolicated") is True  # else the profiler tries to symbolicate
    categories = meta["categories"]
    assert 0 < len(categories) <= 256 and any(category["color"] == "grey" for category in categories)
    for category in categories:
        assert isinstance(category["name"], str) and category["color"] in CATEGORY_COLORS
        assert category["subcategories"] and all(isinstance(s, str) for s in category["subcategories"])
    schemas = {schema["name"]: schema for schema in meta["markerSchema"]}  # processMarkerSchema
    assert len(schemas) == len(meta["markerSchema"])
    for schema in schemas.values():
        assert set(schema["display"]) <= {"marker-chart", "marker-table", "timeline-overview", "timeline-memory",
                                          "timeline-ipc", "timeline-fileio", "stack-chart", "sidebar"}
        for field in schema["data"]:
            assert isinstance(field.get("key"), str) and isinstance(field.get("format"), str) or \
                ("label" in field and "value" in field)
    for key in ("libs", "threads", "processes"):
        assert isinstance(document[key], list)
    assert document["threads"]
    for thread in document["threads"]:  # _processThread
        assert thread["name"] and isinstance(thread["processType"], str)
        assert isinstance(thread["pid"], int) and isinstance(thread["tid"], int)
        assert isinstance(thread["registerTime"], (int, float))
        strings = thread["stringTable"]
        assert all(isinstance(string, str) for string in strings)
        frame_schema = thread["frameTable"]["schema"]
        frames = table(thread["frameTable"], ["location", "category"])
        for frame in frames:
            location = frame[frame_schema["location"]]
            assert 0 <= location < len(strings) and not strings[location].startswith("0x")
            category = frame[frame_schema["category"]]
            assert category is None or 0 <= category < len(categories)
        stack_schema = thread["stackTable"]["schema"]
        stacks = table(thread["stackTable"], ["prefix", "frame"])
        for index, stack in enumerate(stacks):
            prefix = stack[stack_schema["prefix"]]
            assert prefix is None or 0 <= prefix < index  # finishRawStackTableBuilder
            assert 0 <= stack[stack_schema["frame"]] < len(frames)
        sample_schema = thread["samples"]["schema"]
        assert "eventDelay" in sample_schema or "responsiveness" in sample_schema  # _processSamples
        samples = table(thread["samples"], ["stack", "time"])
        times = [sample[sample_schema["time"]] for sample in samples]
        assert times == sorted(times)
        assert all(s[sample_schema["stack"]] is None or 0 <= s[sample_schema["stack"]] < len(stacks) for s in samples)
        assert thread["markers"]["schema"] == {"name": 0, "startTime": 1, "endTime": 2, "phase": 3,
                                               "category": 4, "data": 5}
        for name, start, end, phase, category, data in table(thread["markers"], ["name"]):  # marker-data
            assert 0 <= name < len(strings) and phase == 1 and end and start is not None and end >= start
            assert 0 <= category < len(categories)
            assert data["type"] in schemas


def gecko_frames(thread: dict) -> List[Set[str]]:
    """Each sample's frame names (location strings), with its time."""
    strings, schema = thread["stringTable"], thread["stackTable"]["schema"]
    locations = [strings[frame[0]] for frame in thread["frameTable"]["data"]]
    named = []
    for stack, time, _ in thread["samples"]["data"]:
        names = set()
        while stack is not None:
            row = thread["stackTable"]["data"][stack]
            names.add(locations[row[schema["frame"]]])
            stack = row[schema["prefix"]]
        named.append((time, names))
    return named


def test_gecko_follows_the_firefox_profilers_format_and_keeps_time_order(timelines):
    document = json.loads(timelines["gecko"].read_text())
    check_gecko(document)
    threads = document["threads"]
    ran = {}
    for phase in ("phase_a_work", "phase_b_work"):
        owners = [t for t in threads if any(any(n.startswith(phase + " (") for n in names)
                                            for _, names in gecko_frames(t))]
        assert len(owners) == 1, phase
        times = [time for time, names in gecko_frames(owners[0]) if any(n.startswith(phase + " (") for n in names)]
        ran[phase] = (owners[0], min(times), max(times))
    assert ran["phase_a_work"][2] <= ran["phase_b_work"][1] + JITTER_NS / 1e6  # ms
    assert ran["phase_b_work"][2] - ran["phase_a_work"][1] >= 1.6 * PHASE * 1000
    # the waits and the system calls are markers, with their Python functions
    markers = {thread["tid"]: [(m[2] - m[1], m[5]) for m in thread["markers"]["data"]] for thread in threads}
    b = ran["phase_b_work"][0]
    waits = [(ms, data) for ms, data in markers[b["tid"]] if data["type"] == "OffCPU"]
    # B waited on its Event (threading's Condition.wait) while A ran
    assert any(data["reason"] == "lock" and data["function"] == "Condition.wait (threading.py)"
               and ms >= 0.8 * PHASE * 1000 for ms, data in waits), waits[:5]
    calls = [data for thread in threads for _, data in markers[thread["tid"]] if data["type"] == "Syscall"]
    assert any(data["call"] == "futex" for data in calls) and any(data["error"] for data in calls)


def profiler_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(PROFILER_CLI), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120, env=env)


def test_the_firefox_profilers_importer_reads_the_gecko_file(timelines, tmp_path):
    if shutil.which("node") is None or not PROFILER_CLI.is_file():
        skip_or_fail("node or the Firefox Profiler's command-line tool is missing (make consumers installs them)")
    env = dict(os.environ, PROFILER_CLI_SESSION_DIR=str(tmp_path / "sessions"))
    threads = json.loads(timelines["gecko"].read_text())["threads"]
    try:
        loaded = profiler_cli("load", str(timelines["gecko"]), env=env)
        assert loaded.returncode == 0 and "failed" not in loaded.stdout.lower(), loaded.stdout
        info = profiler_cli("profile", "info", env=env)
        assert info.returncode == 0, info.stdout
        assert "%d threads" % len(threads) in info.stdout, info.stdout
        for index, thread in enumerate(threads):
            samples = profiler_cli("thread", "samples", "--thread", "t-%d" % index, "--json", env=env)
            assert samples.returncode == 0, samples.stdout
            breakdown = json.loads(samples.stdout[samples.stdout.index("{"):])["categoryBreakdown"]
            assert breakdown["totalSamples"] == len(thread["samples"]["data"])
            markers = profiler_cli("thread", "markers", "--thread", "t-%d" % index, "--list", env=env)
            assert markers.returncode == 0, markers.stdout
            assert ("%d markers" % len(thread["markers"]["data"])) in markers.stdout, markers.stdout[:500]
    finally:
        profiler_cli("stop", "--all", env=env)
