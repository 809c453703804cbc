"""The package's shape, as the README's "How it is built" draws it:

    record/ -> perf/ <- analyze/ -> renderers/, and cli/ on top of all of them
    (model.py, markers.py and store.py below them all)

- no import cycle between mixedstack's modules;
- perf/ imports neither side; analyze/ and renderers/ never import record/ or cli/;
  record/ never imports analyze/;
- nothing the analysis path imports needs click or pyelftools (perf's embedded
  Python runs it through perf_scripts/mixedstack-fold.py): checked statically and
  by folding a perf script text with both made unimportable.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

from conftest import ROOT, TESTS

PACKAGE = ROOT / "mixedstack"
ANALYSIS = ("mixedstack.analyze", "mixedstack.perf", "mixedstack.renderers", "mixedstack.model",
            "mixedstack.errors", "mixedstack.store", "mixedstack.markers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")
            if "agent" not in path.relative_to(PACKAGE).parts[:2] or path.name == "__init__.py"}


def imports(path: Path, top_level_only: bool) -> Set[str]:
    """The modules a file imports (`from P import name` counts P.name where that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    known = modules()
    found: Set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(node.module + "." + alias.name for alias in node.names
                         if node.module + "." + alias.name in known)
    return found


def inside(name: str, roots) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def test_no_import_cycles():
    known = modules()
    graph = {name: {other for other in imports(path, top_level_only=True) if other in known and other != name}
             for name, path in known.items()}
    # a package imports its submodules' names; a submodule importing its own package's
    # __init__ for shared helpers is the usual direction, not a cycle of logic
    graph = {name: {other for other in deps if not name.startswith(other + ".")} for name, deps in graph.items()}
    done: Set[str] = set()

    def visit(name: str, path: List[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_each_side_imports_only_what_is_below_it():
    rules = {  # a module under KEY never imports a module under any of these
        "mixedstack.perf": ("mixedstack.analyze", "mixedstack.record", "mixedstack.cli", "mixedstack.renderers"),
        "mixedstack.analyze": ("mixedstack.record", "mixedstack.cli", "mixedstack.renderers"),
        "mixedstack.renderers": ("mixedstack.record", "mixedstack.cli", "mixedstack.perf"),
        # the recording side unwinds what it records (store.py, perf/parse.py), and never
        # needs the analysis side for it
        "mixedstack.record": ("mixedstack.cli", "mixedstack.renderers", "mixedstack.analyze"),
    }
    wrong = []
    for name, path in modules().items():
        for side, forbidden in rules.items():
            if inside(name, (side,)):
                wrong += ["%s imports %s" % (name, other) for other in sorted(imports(path, top_level_only=False))
                          if inside(other, forbidden)]
    assert not wrong, wrong


def test_the_analysis_side_needs_neither_click_nor_pyelftools():
    known = modules()
    wrong = []
    for name, path in known.items():
        if inside(name, ANALYSIS):
            wrong += ["%s imports %s" % (name, other) for other in sorted(imports(path, top_level_only=False))
                      if inside(other, ("click", "elftools"))]
    assert not wrong, wrong


def test_fold_runs_without_click_and_pyelftools():
    script = (
        "import sys\n"
        "sys.modules['click'] = None\n"
        "sys.modules['elftools'] = None\n"
        "import mixedstack\n"
        "stacks = mixedstack.load(sys.argv[1])\n"
        "sys.stdout.write(stacks.to_folded())\n"
    )
    text = TESTS / "data" / "python" / "perf-jit-3.13.txt"
    done = subprocess.run([sys.executable, "-c", script, str(text)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "<module> (app.py);main (app.py)" in done.stdout and done.stdout.count("\n") >= 5
