"""Profiles phases.py (Python, interpreter C, library C, kernel) on CPython 3.13 and
opens its flame graph in headless Chromium, as a person would: the picture has
the layer colours, a click zooms, typing a search highlights.

Needs Debian's chromium (`make browser` installs it) and the playwright package
(test extras; it drives the installed Chromium and downloads no browser). Skipped
with a reason where either is missing, required under CI=true.
"""
from __future__ import annotations

import collections
import io
import re
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import WORKLOADS, Folded, interpreter, mixedstack, perf_problem, record_and_fold, skip_or_fail

pytestmark = pytest.mark.perf

# Chromium as the lead's brief asks: headless (playwright adds --headless and a
# fresh temporary --user-data-dir itself), nothing fetched, exact sRGB pixels.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--force-color-profile=srgb"]
ON_CPU_LAYERS = {"python", "interpreter", "library", "kernel"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A fresh recording of phases.py, its flame graph and diff SVGs, and its folded stacks."""
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("browser")
    recording, folded = record_and_fold(  # folded as the flame graph names frames
        tmp, [interpreter((3, 13)), str(WORKLOADS / "phases.py"), str(tmp / "timings.json"), "0.6"])
    assert recording.returncode == 0, recording.stderr
    svg = tmp / "phases.svg"
    done = mixedstack("flamegraph", str(tmp / "perf.data"), "-o", str(svg))
    assert done.returncode == 0, done.stderr
    # the diff: c_heavy's stacks at half weight after, so it shrinks
    for name, halve in (("before.folded", False), ("after.folded", True)):
        (tmp / name).write_text("".join("%s %d\n" % (";".join(frames), count // 2 if halve and
                                                      "c_heavy (phases.py)" in frames else count)
                                        for frames, count in folded.stacks.items()))
    diff = tmp / "diff.svg"
    done = mixedstack("diff", str(tmp / "before.folded"), str(tmp / "after.folded"), "-o", str(diff))
    assert done.returncode == 0, done.stderr
    return svg, folded, diff


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        skip_or_fail("Debian's chromium is not installed (make browser installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is missing (make test installs the test extras)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Page:
    """One browser tab on an SVG, recording page errors and every request made."""

    def __init__(self, browser, svg: Path):
        height = int(re.search(r'height="(\d+)"', svg.read_text()[:2000]).group(1))
        self.page = browser.new_page(viewport={"width": 1200, "height": height})
        self.errors: List[str] = []
        self.requests: List[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(svg.as_uri())

    def pixels(self) -> collections.Counter:
        from PIL import Image

        data = Image.open(io.BytesIO(self.page.screenshot())).convert("RGB").tobytes()
        return collections.Counter(zip(data[0::3], data[1::3], data[2::3]))

    def frames(self) -> List[Dict]:
        return self.page.evaluate("""() => Array.from(document.querySelectorAll('#frames > g')).map(g => {
            const r = g.querySelector('rect'), box = r.getBoundingClientRect();
            return {name: g.querySelector('title').textContent.split('\\n')[0], layer: g.getAttribute('data-l'),
                    fill: r.getAttribute('fill'), width: +r.getAttribute('width'), cls: g.getAttribute('class') || '',
                    shown: box.width > 0 && getComputedStyle(g).display !== 'none',
                    x: box.x, y: box.y, w: box.width, h: box.height};
        })""")

    def frame(self, name: str) -> Dict:
        return next(frame for frame in self.frames() if frame["name"] == name)

    def close(self) -> None:
        assert self.errors == [], self.errors
        assert all(url.startswith(("file:", "data:")) for url in self.requests), self.requests
        self.page.close()


def rgb(fill: str):
    return tuple(int(fill[i:i + 2], 16) for i in (1, 3, 5))


def near(pixel, colour, tolerance=2) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def row_share(page: Page, frame: Dict) -> float:
    """How much of the frames' width, on `frame`'s row, is drawn in its colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(page.page.screenshot())).convert("RGB")
    y = int(frame["y"] + frame["h"] / 2 - 4)  # above the label's glyphs
    colour = rgb(frame["fill"])
    xs = range(12, 1188)
    return sum(near(image.getpixel((x, y)), colour) for x in xs) / len(xs)


def test_frames_are_drawn_in_the_layer_colours(recorded, browser):
    svg, _, _ = recorded
    page = Page(browser, svg)
    frames = page.frames()
    assert ON_CPU_LAYERS <= {frame["layer"] for frame in frames}
    fills: Dict[str, set] = collections.defaultdict(set)
    for frame in frames:
        fills[frame["layer"]].add(rgb(frame["fill"]))
    for layer in ON_CPU_LAYERS:  # each layer's colours are its own
        others = set().union(*(colours for other, colours in fills.items() if other != layer))
        assert not fills[layer] & others, layer
    pixels = page.pixels()
    drawn = {layer: sum(count for colour, count in pixels.items() if colour in colours)
             for layer, colours in fills.items()}
    # a layer counts when at least 2,000 pixels (a 16 px row ~125 px wide) show its colours
    seen = {layer for layer, count in drawn.items() if count >= 2000 and layer != "process"}
    print("pixels per layer:", drawn)
    assert len(seen) >= 3, drawn
    assert seen <= ON_CPU_LAYERS, drawn
    page.close()


def test_click_zooms_into_a_frame_and_back_out(recorded, browser):
    svg, _, _ = recorded
    page = Page(browser, svg)
    c_heavy = page.frame("c_heavy (phases.py)")
    before = row_share(page, c_heavy)
    assert before < 0.6 and page.frame("sys_heavy (phases.py)")["shown"]
    deflate_width = page.frame("deflate")["width"]

    page.page.mouse.click(c_heavy["x"] + c_heavy["w"] / 2, c_heavy["y"] + c_heavy["h"] / 2)
    zoomed = page.frame("c_heavy (phases.py)")
    assert abs(zoomed["width"] - 1180) < 0.01
    assert row_share(page, zoomed) > 0.9  # the picture shows it full width
    assert not page.frame("sys_heavy (phases.py)")["shown"]  # outside it: hidden
    assert page.frame("deflate")["width"] == pytest.approx(deflate_width * 1180 / c_heavy["width"], rel=1e-3)
    assert "ancestor" in page.frame("main (phases.py)")["cls"]
    assert page.page.is_visible("#unzoom")

    main = page.frame("main (phases.py)")  # a dimmed parent zooms back out to it
    page.page.mouse.click(main["x"] + 50, main["y"] + main["h"] / 2)
    assert page.frame("c_heavy (phases.py)")["width"] < 1000
    assert page.frame("sys_heavy (phases.py)")["shown"]

    page.page.mouse.click(c_heavy["x"] + c_heavy["w"] / 2, c_heavy["y"] + c_heavy["h"] / 2)
    page.page.keyboard.press("Escape")  # Esc zooms out to the whole graph
    assert page.frame("c_heavy (phases.py)")["width"] == pytest.approx(c_heavy["width"], abs=0.01)

    page.page.mouse.click(c_heavy["x"] + c_heavy["w"] / 2, c_heavy["y"] + c_heavy["h"] / 2)
    page.page.click("#unzoom")  # and so does "Reset zoom"
    assert page.frame("c_heavy (phases.py)")["width"] == pytest.approx(c_heavy["width"], abs=0.01)
    assert all(frame["shown"] for frame in page.frames() if frame["width"] >= 1)
    assert not page.page.is_visible("#unzoom")
    page.close()


def test_typing_a_search_highlights_matches_and_shows_their_share(recorded, browser):
    svg, folded, _ = recorded
    page = Page(browser, svg)
    highlight = page.page.evaluate("document.documentElement.getAttribute('data-highlight')")
    assert page.pixels()[rgb(highlight)] == 0

    term = "deflate|SHA256|sha256"
    page.page.keyboard.press("Control+f")  # focuses the search box
    page.page.keyboard.type(term)
    matches = [frame for frame in page.frames() if "match" in frame["cls"].split()]
    assert matches and all(re.search(term, frame["name"]) for frame in matches)
    assert all(frame["fill"] == highlight for frame in matches)
    assert page.pixels()[rgb(highlight)] > 1000  # the highlight is drawn

    text = page.page.text_content("#matched")
    shown = float(re.search(r"Matched: ([\d.]+)% of all", text).group(1))
    pattern = re.compile(term)
    expected = 100.0 * folded.total(lambda frames: any(pattern.search(f) for f in frames)) / folded.total()
    print("search share shown %.1f%%, from the folded stacks %.2f%%" % (shown, expected))
    assert abs(shown - expected) <= 0.5, (text, expected)

    page.page.keyboard.press("Escape")  # clears the search
    assert not any("match" in frame["cls"].split() for frame in page.frames())
    page.close()


def test_diff_opens_and_zooms(recorded, browser):
    _, _, diff = recorded
    page = Page(browser, diff)
    c_heavy = page.frame("c_heavy (phases.py)")
    red, _, blue = rgb(c_heavy["fill"])
    assert blue > red + 50  # c_heavy shrank: blue
    page.page.mouse.click(c_heavy["x"] + c_heavy["w"] / 2, c_heavy["y"] + c_heavy["h"] / 2)
    assert abs(page.frame("c_heavy (phases.py)")["width"] - 1180) < 0.01
    page.close()


@pytest.fixture(scope="module")
def off_cpu_svg(tmp_path_factory):
    """The flame graph of a `record --off-cpu` run of threads contending for the GIL
    and a sleeper: by default it shows wall time, on- and off-CPU together."""
    if perf_problem():
        skip_or_fail(perf_problem())
    tmp = tmp_path_factory.mktemp("offcpu")
    data = tmp / "perf.data"
    done = mixedstack("record", "--off-cpu", "-o", str(data), "--", interpreter((3, 13)),
                      str(WORKLOADS / "offcpu.py"), "gil", str(tmp / "truth.json"))
    assert done.returncode == 0, done.stderr
    svg = tmp / "wall.svg"
    done = mixedstack("flamegraph", str(data), "-o", str(svg))
    assert done.returncode == 0, done.stderr
    return data, svg


def test_off_cpu_and_gil_waits_are_drawn_in_their_own_colours(off_cpu_svg, browser):
    data, svg = off_cpu_svg
    page = Page(browser, svg)
    frames = page.frames()
    layers = {frame["layer"] for frame in frames}
    assert {"gil", "off-cpu", "python"} <= layers, layers
    assert all(frame["layer"] == "gil" for frame in frames if frame["name"] == "[off-cpu: GIL]")
    assert any(frame["name"] == "[off-cpu: sleep]" and frame["layer"] == "off-cpu" for frame in frames)
    legend = page.page.evaluate("Array.from(document.querySelectorAll('#legend text')).map(t => t.textContent)")
    assert "off-CPU" in legend and "GIL wait" in legend
    pixels = page.pixels()
    for layer in ("gil", "off-cpu"):
        colours = {rgb(frame["fill"]) for frame in frames if frame["layer"] == layer}
        assert sum(pixels[colour] for colour in colours) > 200, layer  # drawn, not just listed
    page.close()


def test_what_cpu_leaves_the_waits_out(off_cpu_svg, tmp_path):
    data, _ = off_cpu_svg
    out = tmp_path / "cpu.svg"
    done = mixedstack("flamegraph", str(data), "--what", "cpu", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "[off-cpu" not in out.read_text() and "spinner (offcpu.py)" in out.read_text()
    done = mixedstack("flamegraph", str(data), "--what", "off", "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "[off-cpu: GIL]" in text and "[off-cpu: sleep]" in text
    # the whole graph is the off-CPU time fold --what off counts
    total = sum(Folded(mixedstack("fold", "--what", "off", str(data)).stdout).stacks.values())
    all_frame = re.search(r"<title>all\n([^<]*)</title>", text).group(1)
    assert all_frame.endswith(", %.3f s" % (total / 1e9)), (all_frame, total)
