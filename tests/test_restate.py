"""benchmarks/restate.py: reading back the filter a structured answer restates."""

import doctest

import pytest
from bench_loader import load_benchmark

from vrm.formats import get_format
from vrm.tasks.shapes import ShapesTask

restate = load_benchmark("restate")


def test_doctests():
    assert doctest.testmod(restate).failed == 0


@pytest.mark.parametrize("fmt", ["stages", "think"])
def test_gold_targets_restate_the_question(fmt):
    task = ShapesTask(families=("count_colour", "count_shape", "exists"))
    for seed in range(200):
        s = task.sample(seed)
        said = restate.restated(get_format(fmt).target(s, task))
        assert restate.verdict(s.trace["program"]["filter"], said, s.trace["objects"]) == "question", (s.question, said)


def test_a_filter_read_from_the_image_is_told_apart():
    s = next(s for s in map(ShapesTask(families=("count_colour",)).sample, range(100))
             if {o["colour"] for o in s.trace["objects"]} - {s.trace["program"]["filter"]["colour"]})
    other = next(o["colour"] for o in s.trace["objects"] if o["colour"] != s.trace["program"]["filter"]["colour"])
    output = f"<SUMMARY>I will find the {other} shapes and count them.</SUMMARY>"
    assert restate.verdict(s.trace["program"]["filter"], restate.restated(output), s.trace["objects"]) == "image"
