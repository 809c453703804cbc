"""FlameGraph's own regression corpus: `fold` must give stackcollapse-perf.pl's output.

The corpus lives outside the repo (../shared/conformance/flamegraph, see its README);
MIXEDSTACK_CONFORMANCE_DIR points elsewhere. Absent, the cases are skipped, except
under CI=true, where a missing corpus is a failure rather than a silent pass.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from folding import OPTIONS, fold, read_text, split_lines

from conftest import ROOT

DEFAULT_DIR = ROOT.parent / "shared" / "conformance" / "flamegraph"
CORPUS = Path(os.environ.get("MIXEDSTACK_CONFORMANCE_DIR") or DEFAULT_DIR)
RESULTS = CORPUS / "results"
SUFFIX = "-collapsed-"


def cases():
    found = sorted(RESULTS.glob("*%s*.txt" % SUFFIX)) if RESULTS.is_dir() else []
    if not found:
        return [pytest.param(None, None, id="corpus-missing")]
    return [
        pytest.param(name, option, id="%s-%s" % (name, option))
        for name, option in (path.stem.rsplit(SUFFIX, 1) for path in found)
    ]


def require_corpus() -> None:
    if RESULTS.is_dir():
        return
    message = "FlameGraph conformance corpus not found at %s (set MIXEDSTACK_CONFORMANCE_DIR)" % CORPUS
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; it is required under CI=true")
    pytest.skip(message)


@pytest.mark.parametrize("name,option", cases())
def test_matches_stackcollapse_perf(name, option):
    require_corpus()
    assert option in OPTIONS
    expected = split_lines(read_text(RESULTS / ("%s%s%s.txt" % (name, SUFFIX, option))))
    assert sorted(fold(CORPUS / (name + ".txt"), option)) == sorted(expected)


def test_corpus_is_complete():
    """Every input has a result for each option, and every result has its input."""
    require_corpus()
    inputs = {p.stem for p in CORPUS.glob("*.txt") if not p.name.startswith("LICENSE")}
    results = {tuple(p.stem.rsplit(SUFFIX, 1)) for p in RESULTS.glob("*%s*.txt" % SUFFIX)}
    assert len(results) >= 78, "the corpus had 13 inputs x 6 options when these tests were written"
    assert results == {(name, option) for name in inputs for option in OPTIONS}
