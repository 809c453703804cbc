"""An interactive flame graph: one self-contained SVG (its script and style inlined).

Root at the bottom, one rectangle per frame, as wide as its share of the total;
siblings sorted by name. Colour says the layer (Python, interpreter C, library C,
kernel, off-CPU, GIL), varied a little by name so that neighbours stay apart. In
a browser: click a frame to zoom into it (click a dimmed parent, the root or
"Reset zoom" to go back), search with a regular expression, hover for details.
Siblings narrower than MIN_WIDTH pixels are merged into one frame, so a profile
with a hundred thousand distinct stacks stays a light SVG.

`render_diff` draws two profiles in one graph, each normalised by its total: a
frame is as wide as its mean share of the two and coloured by the change of its
share, red where it grew, blue where it shrank.
"""
from __future__ import annotations

import bisect
import colorsys
import html
import itertools
import os
import re
import zlib
from typing import IO, Callable, Dict, Iterator, List, Optional, Tuple

from mixedstack.analyze.processors import layers
from mixedstack.model import Stack, StackFrame, Stacks, frame_text
from mixedstack.renderers import readable

WIDTH = 1200  # px, the whole image
PAD = 10  # px left and right of the frames
FRAME_HEIGHT = 16
FONT_SIZE = 12
CHAR_WIDTH = FONT_SIZE * 0.6  # the monospace font's advance: labels are cut to fit
HEADER = 52  # title and subtitle
FOOTER = 78  # legend and search box, zoom and match state, the details line
LEGEND_CHAR_WIDTH = 6.5  # sans-serif, roughly
MIN_WIDTH = 0.1  # px: narrower siblings are merged into one frame
HIGHLIGHT = "#e600e6"  # search matches

# (hue, saturation, lightness) per layer; each frame's colour varies around it.
PALETTE: Dict[str, Tuple[float, float, float]] = {
    layers.PYTHON: (120, 0.45, 0.55),
    layers.COMPILED: (165, 0.45, 0.50),
    layers.INTERPRETER: (48, 0.80, 0.55),
    layers.LIBRARY: (16, 0.80, 0.60),
    layers.KERNEL: (200, 0.60, 0.62),
    layers.OFF_CPU: (230, 0.30, 0.72),
    layers.GIL: (275, 0.45, 0.55),
    layers.PROCESS: (0, 0.0, 0.72),
}
# Characters XML 1.0 cannot hold at all (folded text is read byte for byte).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


EXTENSION = ".svg"
ENCODING = "utf-8"


class Node:
    """One frame to draw, with its totals over the stacks that pass through it."""

    __slots__ = ("name", "layer", "value", "count", "before", "weight")

    def __init__(self, name: str, layer: str, value: int = 0, count: int = 0, before: int = 0,
                 weight: float = 0.0):
        self.name = name
        self.layer = layer
        self.value = value  # weight in the profile (in the second one, in a diff)
        self.count = count  # samples, where known
        self.before = before  # weight in the first profile of a diff
        self.weight = weight  # what sets the width


class Profile:
    """The stacks as sorted frame tuples with running totals: the frames under any
    frame are one contiguous range, so a frame's totals are two subtractions and
    subtrees too narrow to draw are never visited (no tree is built)."""

    def __init__(self, after: Stacks, before: Optional[Stacks] = None):
        names: Dict[StackFrame, str] = {}  # one string per distinct frame, not one per occurrence
        kinds: Dict[StackFrame, str] = {}
        rows: Dict[Stack, List] = {}
        for index, stacks in enumerate((after, before) if before is not None else (after,)):
            known = stacks.layers or {}
            counts = stacks.counts or {}
            for stack, value in stacks.weights.items():
                row = rows.get(stack)
                if row is None:
                    path = tuple([names.get(frame) or names.setdefault(frame, frame_text(frame)) for frame in stack])
                    layer = known.get(stack, ())
                    if len(layer) != len(stack):
                        layer = (layers.PROCESS,) + tuple([kinds.get(frame) or kinds.setdefault(
                            frame, layers.of_frame(frame)) for frame in stack[1:]])
                    row = rows[stack] = [path, 0, 0, 0, layer]
                row[1 + index] += value
                if index == 0:
                    row[3] += counts.get(stack, 0)
        ordered = sorted(rows.values(), key=lambda row: row[0])
        self.paths = [row[0] for row in ordered]
        self.known = [row[4] for row in ordered]
        self.values = running([row[1] for row in ordered])
        self.befores = running([row[2] for row in ordered])
        self.counts = running([row[3] for row in ordered])
        total_after, total_before = self.values[-1] or 1, self.befores[-1] or 1
        if before is None:
            self.weights = self.values
        else:  # a diff: the mean of both normalised shares
            self.weights = running([(row[1] / total_after + row[2] / total_before) / 2 for row in ordered])

    def node(self, name: str, layer: str, lo: int, hi: int) -> Node:
        return Node(name, layer, self.values[hi] - self.values[lo], self.counts[hi] - self.counts[lo],
                    self.befores[hi] - self.befores[lo], self.weights[hi] - self.weights[lo])

    def layer(self, index: int, depth: int) -> str:
        """The layer of frame `depth` (0: the process) of stack `index`."""
        return self.known[index][depth]

    def children(self, lo: int, hi: int, depth: int) -> Iterator[Tuple[int, int]]:
        """The ranges of the frames at `depth` under the frame whose stacks are
        lo..hi, in name order (a stack that ends above `depth` sorts first)."""
        paths = self.paths
        while lo < hi and len(paths[lo]) <= depth:
            lo += 1
        while lo < hi:
            end = bisect.bisect_left(paths, paths[lo][:depth + 1] + (LAST,), lo, hi)
            yield lo, end
            lo = end


LAST = "\U0010ffff"  # sorts after every frame name


def running(values: List) -> List:
    """[0, v0, v0+v1, ...]: the total of values[lo:hi] is sums[hi] - sums[lo]."""
    return [0] + list(itertools.accumulate(values))


def layout(profile: Profile) -> Iterator[Tuple[Node, float, int]]:
    """(frame, x offset in weight units, depth) for every frame drawn. Siblings
    narrower than MIN_WIDTH px are merged into one frame and not descended into.
    Iterative: stacks can be thousands of frames deep."""
    everything = len(profile.paths)
    root = profile.node("all", layers.PROCESS, 0, everything)
    smallest = root.weight * MIN_WIDTH / (WIDTH - 2 * PAD)
    todo = [(root, 0.0, 0, 0, everything)]
    while todo:
        node, x, depth, lo, hi = todo.pop()
        yield node, x, depth
        offset, narrow = x, []
        for start, end in profile.children(lo, hi, depth):
            weight = profile.weights[end] - profile.weights[start]
            if weight < smallest:
                narrow.append((start, end))
                continue
            child = profile.node(profile.paths[start][depth], profile.layer(start, depth), start, end)
            todo.append((child, offset, depth + 1, start, end))
            offset += weight
        merged = sum(profile.weights[end] - profile.weights[start] for start, end in narrow)
        if len(narrow) > 1 and merged >= smallest:
            largest = max(narrow, key=lambda span: profile.weights[span[1]] - profile.weights[span[0]])
            node = Node("[%d narrow frames]" % len(narrow), profile.layer(largest[0], depth))
            for start, end in narrow:
                part = profile.node("", "", start, end)
                node.value += part.value
                node.count += part.count
                node.before += part.before
                node.weight += part.weight
            todo.append((node, offset, depth + 1, 0, 0))  # an empty range: nothing above it


def display(name: str) -> str:
    return NOT_XML.sub("\ufffd", readable(name))


def layer_colour(layer: str, name: str) -> str:
    hue, saturation, lightness = PALETTE.get(layer, PALETTE[layers.LIBRARY])
    if layer != layers.PROCESS:
        jitter = zlib.crc32(name.encode("utf-8", "surrogatepass")) / 0xFFFFFFFF - 0.5
        hue += 10 * jitter
        lightness += 0.08 * jitter
    return hex_colour(hue, lightness, saturation)


def diff_colour(change: float, largest: float) -> str:
    """Red for a grown share, blue for a shrunk one, paler for smaller changes."""
    strength = min(1.0, abs(change) / largest) if largest > 0 else 0.0
    hue = 0 if change > 0 else 220
    # lightness stays >= 0.6 so that the black labels stay readable
    return hex_colour(hue, 0.94 - 0.34 * strength, 0.15 + 0.75 * strength if change else 0.0)


def hex_colour(hue: float, lightness: float, saturation: float) -> str:
    red, green, blue = colorsys.hls_to_rgb((hue % 360) / 360.0, lightness, saturation)
    return "#%02x%02x%02x" % (round(red * 255), round(green * 255), round(blue * 255))


def fit(name: str, width: float) -> str:
    """The label that fits in `width` px (the script does the same after a zoom)."""
    room = int((width - 6) / CHAR_WIDTH)
    if room < 3:
        return ""
    return name if len(name) <= room else name[:room - 2] + ".."


def asset(name: str) -> str:
    """The script or style sheet shipped beside this module (package data)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name), encoding="utf-8") as f:
        return f.read()


def quantity(value: int, unit: str) -> str:
    if unit == "nanoseconds":
        return seconds(value)
    return "%s %s" % (format(value, ","), unit)


def seconds(nanoseconds: float) -> str:
    if nanoseconds >= 1e9:
        return "%.3f s" % (nanoseconds / 1e9)
    return "%.2f ms" % (nanoseconds / 1e6)


def tooltip(node: Node, total: int, unit: str, counted: bool) -> str:
    parts = [layers.NAMES.get(node.layer, node.layer)]
    if counted:
        parts.append("%s samples" % format(node.count, ","))
    parts.append("%.2f%%" % (100.0 * node.value / total if total else 0.0))
    parts.append(quantity(node.value, unit))
    return ", ".join(parts)


def render(stacks: Stacks, out: IO[str], title: str = "Flame graph", subtitle: str = "") -> None:
    """Write the flame graph of `stacks` as SVG."""
    frames = list(layout(Profile(stacks)))
    total = frames[0][0].value
    counted = stacks.counts is not None
    present = sorted({node.layer for node, _, _ in frames} - {layers.PROCESS}, key=list(layers.NAMES).index)
    legend = [(layers.NAMES[kind], layer_colour(kind, "")) for kind in present]
    if not subtitle:
        subtitle = "%s in %s stacks%s" % (
            quantity(total, stacks.unit), format(len(stacks.weights), ","),
            ", %s samples" % format(sum(stacks.counts.values()), ",") if counted else "")

    def frame(node: Node) -> Tuple[str, str]:
        return layer_colour(node.layer, node.name), tooltip(node, total, stacks.unit, counted)

    draw(frames, out, title, subtitle, legend, frame)


def render_diff(before: Stacks, after: Stacks, out: IO[str], title: str = "Differential flame graph",
                subtitle: str = "") -> None:
    """Write the differential flame graph of two profiles as SVG."""
    frames = list(layout(Profile(after, before)))
    root = frames[0][0]
    total_before, total_after = root.before or 1, root.value or 1

    def change(node: Node) -> float:
        return node.value / total_after - node.before / total_before

    largest = max(abs(change(node)) for node, _, _ in frames)
    legend = [("grew", diff_colour(1, 1)), ("shrank", diff_colour(-1, 1)), ("same share", diff_colour(0, 1))]
    if not subtitle:
        subtitle = "before: %s, after: %s; each normalised by its total; width: mean share" % (
            quantity(root.before, before.unit), quantity(root.value, after.unit))

    def frame(node: Node) -> Tuple[str, str]:
        share_before, share_after = node.before / total_before, node.value / total_after
        text = "before %.2f%%, after %.2f%%, change %+.2f points" % (
            100 * share_before, 100 * share_after, 100 * change(node))
        if share_before and share_after:
            text += " (x%.2f)" % (share_after / share_before)
        return diff_colour(change(node), largest), text

    draw(frames, out, title, subtitle, legend, frame, diff=True)


def draw(frames: List[Tuple[Node, float, int]], out: IO[str], title: str, subtitle: str,
         legend: List[Tuple[str, str]], frame: Callable[[Node], Tuple[str, str]], diff: bool = False) -> None:
    """The SVG document of the laid-out frames (the root first); `frame(node)`
    gives a frame's fill and its tooltip's numbers."""
    root = frames[0][0]
    inner = WIDTH - 2 * PAD
    deepest = max(depth for _, _, depth in frames)
    bottom = HEADER + (deepest + 1) * FRAME_HEIGHT  # the root's lower edge
    height = bottom + FOOTER
    scale = inner / root.weight if root.weight else 0.0
    esc = html.escape
    write = out.write
    write('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n')
    write('<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
          'viewBox="0 0 %d %d" data-frames-x="%d" data-frames-width="%d" data-char-width="%g" '
          'data-highlight="%s" data-kind="%s">\n'
          % (WIDTH, height, WIDTH, height, PAD, inner, CHAR_WIDTH, HIGHLIGHT, "diff" if diff else "flame"))
    write("<style>\n%s</style>\n" % asset("flamegraph.css"))
    write('<rect class="background" x="0" y="0" width="100%" height="100%"/>\n')
    write('<text id="title" x="%d" y="22">%s</text>\n' % (WIDTH // 2, esc(display(title))))
    write('<text id="subtitle" x="%d" y="40">%s</text>\n' % (WIDTH // 2, esc(display(subtitle))))
    # Below the root, where a tall graph opens (the script scrolls there): the
    # legend and the search box, then zoom and match state, then hover details.
    x = PAD
    write('<g id="legend">\n')
    for label, colour in legend:
        write('<rect x="%d" y="%d" width="14" height="14" fill="%s"/><text x="%d" y="%d">%s</text>\n'
              % (x, bottom + 10, colour, x + 19, bottom + 21, esc(label)))
        x += 19 + int(len(label) * LEGEND_CHAR_WIDTH) + 22
    write("</g>\n")
    write('<foreignObject x="%d" y="%d" width="260" height="24"><input xmlns="http://www.w3.org/1999/xhtml" '
          'id="search" type="search" placeholder="search: regular expression" spellcheck="false"/>'
          "</foreignObject>\n" % (WIDTH - PAD - 260, bottom + 6))
    write('<text id="unzoom" class="button hidden" x="%d" y="%d">Reset zoom</text>\n' % (PAD, bottom + 46))
    write('<text id="matched" x="%d" y="%d"></text>\n' % (WIDTH - PAD, bottom + 46))
    write('<text id="details" x="%d" y="%d"> </text>\n' % (PAD, bottom + 68))
    write('<g id="frames">\n')
    for node, offset, depth in frames:
        fill, numbers = frame(node)
        left, width = PAD + offset * scale, node.weight * scale
        y = HEADER + (deepest - depth) * FRAME_HEIGHT
        name = display(node.name)
        write('<g data-l="%s"><title>%s\n%s</title><rect x="%.3f" y="%d" width="%.3f" height="%d" fill="%s"/>'
              '<text x="%.3f" y="%d">%s</text></g>\n'
              % (node.layer, esc(name), esc(numbers), left, y, width, FRAME_HEIGHT - 1, fill,
                 left + 3, y + FRAME_HEIGHT - 4, esc(fit(name, width))))
    write("</g>\n")
    write("<script><![CDATA[\n%s]]></script>\n" % asset("flamegraph.js").replace("]]>", "]]]]><![CDATA[>"))
    write("</svg>\n")
