"""Odd but realistic `perf script` inputs without Python frames.

Each tests/data/odd/NAME.txt was folded by the real stackcollapse-perf.pl (FlameGraph
commit 41fee1f) with no option ("plain") and with each option; its outputs are
committed as expected/NAME-OPT.txt, so these tests need neither perl nor FlameGraph.
tests/data/README.md says how to regenerate them.
"""
from __future__ import annotations


import pytest

from folding import OPTIONS, fold, read_text, split_lines

from conftest import TESTS

ODD = TESTS / "data" / "odd"
EXPECTED = ODD / "expected"
INPUTS = sorted(path.stem for path in ODD.glob("*.txt"))
# --event-filter runs: (input, event) -> expected/INPUT-event-EVENT.txt
EVENT_CASES = [("multi-event", "instructions"), ("multi-event", "instructions:u")]


def expected(name: str, suffix: str):
    return sorted(split_lines(read_text(EXPECTED / ("%s-%s.txt" % (name, suffix)))))


@pytest.mark.parametrize("option", ("",) + OPTIONS, ids=lambda o: o or "plain")
@pytest.mark.parametrize("name", INPUTS)
def test_matches_stackcollapse_perf(name, option):
    assert sorted(fold(ODD / (name + ".txt"), option)) == expected(name, option or "plain")


@pytest.mark.parametrize("name,event", EVENT_CASES)
def test_event_filter_matches_stackcollapse_perf(name, event):
    warnings = []
    assert sorted(fold(ODD / (name + ".txt"), event=event, warnings=warnings)) == expected(
        name, "event-" + event)
    assert warnings == []  # an explicit filter never warns


def test_default_event_filter_keeps_first_event_and_warns_once():
    warnings = []
    assert fold(ODD / "multi-event.txt", warnings=warnings) == ["perf;main;loop 400000"]
    # stackcollapse-perf.pl names the event it skipped, not the one it kept
    assert warnings == ["Filtering for events of type: instructions"]


def test_every_expected_file_belongs_to_a_case():
    cases = {"%s-%s" % (name, o or "plain") for name in INPUTS for o in ("",) + OPTIONS}
    cases |= {"%s-event-%s" % case for case in EVENT_CASES}
    assert len(INPUTS) >= 20
    assert {path.stem for path in EXPECTED.glob("*.txt")} == cases
