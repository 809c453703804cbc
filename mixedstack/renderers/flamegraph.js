// mixedstack flame graph: zoom, search and details, inlined into each SVG.
// Frames are <g> elements under #frames, each holding a <title> (name, then its
// numbers), a <rect> and a <text>; the root frame is the widest at the bottom.
// Zooming rescales the rects of the chosen frame's subtree to the full width,
// dims its parents and hides everything else; nothing is recomputed from data.
(function () {
  "use strict";
  var svg = document.documentElement;
  var X0 = parseFloat(svg.getAttribute("data-frames-x"));
  var WIDTH = parseFloat(svg.getAttribute("data-frames-width"));
  var CHAR = parseFloat(svg.getAttribute("data-char-width"));
  var HIGHLIGHT = svg.getAttribute("data-highlight");
  var EPS = 0.002; // coordinates are written with 3 decimals
  var frames = [];
  var root = null; // the bottom frame, "all"
  var zoomed = null;
  var details, matched, unzoom, search;

  function init() {
    details = document.getElementById("details");
    matched = document.getElementById("matched");
    unzoom = document.getElementById("unzoom");
    search = document.getElementById("search");
    var groups = document.getElementById("frames").children;
    for (var i = 0; i < groups.length; i++) {
      var g = groups[i];
      var rect = g.querySelector("rect");
      var lines = g.querySelector("title").textContent.split("\n");
      var frame = {
        g: g, rect: rect, text: g.querySelector("text"), name: lines[0],
        info: lines[0] + "  |  " + lines.slice(1).join("  |  "),
        x: parseFloat(rect.getAttribute("x")), w: parseFloat(rect.getAttribute("width")),
        y: parseFloat(rect.getAttribute("y")), fill: rect.getAttribute("fill")
      };
      g.setAttribute("data-i", String(i));
      frames.push(frame);
    }
    root = frames.reduce(function (a, b) { return b.y > a.y ? b : a; });
    var area = document.getElementById("frames");
    area.addEventListener("click", function (event) {
      var frame = frameOf(event.target);
      if (!frame) return;
      if (frame === root) reset();
      else zoom(frame);
    });
    area.addEventListener("mouseover", function (event) {
      var frame = frameOf(event.target);
      if (frame) details.textContent = frame.info;
    });
    area.addEventListener("mouseout", function () { details.textContent = " "; });
    showRoot();
    unzoom.addEventListener("click", reset);
    search.addEventListener("input", function () { find(search.value); });
    search.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { search.value = ""; find(""); search.blur(); }
    });
    window.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && event.key === "f") {
        event.preventDefault();
        search.focus();
      } else if (event.key === "Escape" && document.activeElement !== search) {
        reset();
      }
    });
  }

  function frameOf(node) {
    while (node && node !== svg) {
      if (node.getAttribute && node.hasAttribute("data-i")) return frames[+node.getAttribute("data-i")];
      node = node.parentNode;
    }
    return null;
  }

  // The label that fits in `width` px (as the renderer writes it).
  function fit(name, width) {
    var room = Math.floor((width - 6) / CHAR);
    if (room < 3) return "";
    return name.length <= room ? name : name.slice(0, room - 2) + "..";
  }

  function place(frame, x, w) {
    frame.rect.setAttribute("x", x.toFixed(3));
    frame.rect.setAttribute("width", w.toFixed(3));
    frame.text.setAttribute("x", (x + 3).toFixed(3));
    frame.text.textContent = fit(frame.name, w);
  }

  function inside(frame, outer) {
    return frame.x >= outer.x - EPS && frame.x + frame.w <= outer.x + outer.w + EPS;
  }

  function zoom(target) {
    zoomed = target;
    var scale = WIDTH / target.w;
    frames.forEach(function (frame) {
      var g = frame.g;
      g.classList.remove("hidden", "ancestor");
      if (frame.y <= target.y && inside(frame, target)) {
        place(frame, X0 + (frame.x - target.x) * scale, frame.w * scale);
      } else if (frame.y > target.y && inside(target, frame)) {
        g.classList.add("ancestor");
        place(frame, X0, WIDTH);
      } else {
        g.classList.add("hidden");
      }
    });
    unzoom.classList.remove("hidden");
    find(search.value);
  }

  function reset() {
    zoomed = null;
    frames.forEach(function (frame) {
      frame.g.classList.remove("hidden", "ancestor");
      place(frame, frame.x, frame.w);
    });
    unzoom.classList.add("hidden");
    find(search.value);
  }

  // Highlight the frames whose name matches; their share counts each stretch of
  // the graph once (a match inside a matching parent adds nothing).
  function find(term) {
    search.classList.remove("invalid");
    frames.forEach(function (frame) {
      frame.g.classList.remove("match");
      frame.rect.setAttribute("fill", frame.fill);
    });
    if (!term) { matched.textContent = ""; return; }
    var pattern;
    try { pattern = new RegExp(term); } catch (error) {
      search.classList.add("invalid");
      matched.textContent = "not a regular expression";
      return;
    }
    var hits = frames.filter(function (frame) { return pattern.test(frame.name); });
    hits.forEach(function (frame) {
      frame.g.classList.add("match");
      frame.rect.setAttribute("fill", HIGHLIGHT);
    });
    var share = function (within) {
      var end = -Infinity, covered = 0;
      hits.filter(function (frame) { return !within || (frame.y <= within.y && inside(frame, within)); })
        .sort(function (a, b) { return a.x - b.x || b.w - a.w; })
        .forEach(function (frame) {
          if (frame.x + frame.w <= end + EPS) return;
          covered += frame.w;
          end = frame.x + frame.w;
        });
      return 100 * covered / (within ? within.w : WIDTH);
    };
    var text = "Matched: " + share(null).toFixed(1) + "% of all";
    if (zoomed) text += ", " + share(zoomed).toFixed(1) + "% of the zoomed frame";
    matched.textContent = hits.length ? text : "Matched: nothing";
  }

  // A tall graph opens at its bottom: the root, the widest frames and the search box.
  function showRoot() {
    if (window.parent === window && svg.scrollHeight > window.innerHeight) {
      window.scrollTo(0, svg.scrollHeight);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
