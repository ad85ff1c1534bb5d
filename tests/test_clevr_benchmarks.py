"""The clevr diagnostics (benchmarks/captions.py, benchmarks/clevr_steps.py) read captions and reasoning right."""

from bench_loader import load_benchmark
from clevr_data import needs_data
from vrm.formats import get_format
from vrm.formats.structured import tagged
from vrm.tasks.clevr import ClevrTask

captions = load_benchmark("captions")
clevr_steps = load_benchmark("clevr_steps")


def test_xy_caption_compare_by_hand():
    truth = "3 objects: a small red metal cube at x 10 y 5; a large blue rubber sphere at x 30 y 20; " \
            "a small gray metal cylinder at x 50 y 40."
    # cube 1 px off (right), sphere 3 px off in x (placed wrong, still ordered right), cylinder read as
    # a sphere at the right place
    got = "3 objects: a small red metal cube at x 11 y 5; a large blue rubber sphere at x 33 y 21; " \
          "a small gray metal sphere at x 50 y 40."
    c = captions.compare(truth, got, 4)
    assert (c["count_right"], c["objects"], c["whole_right"], c["placed"]) == (1, 3, 1, 2)
    assert (c["slot0"], c["slot3"]) == (2, 1)  # size right on both placed, shape on the cube only
    assert (c["pairs"], c["x_order"], c["y_order"]) == (3, 3, 3)
    assert (c["x_error"], c["y_error"]) == (1 + 3 + 0, 0 + 1 + 0)
    swapped = captions.compare(truth, got.replace("x 11 y 5", "x 31 y 5").replace("x 33 y 21", "x 13 y 21"), 4)
    # nearest pairing reads the two items swapped in x as each object misplaced in y: the cube (10, 5) takes
    # (13, 21), the sphere (30, 20) takes (31, 5)
    assert (swapped["x_order"], swapped["y_order"]) == (3, 2)


@needs_data
def test_xy_caption_against_itself_is_right_throughout():
    task = ClevrTask(place="xy")
    for seed in range(5):
        truth = task.caption(task.sample(seed))
        c = captions.compare(truth, truth, 4)
        assert c["whole_right"] == c["placed"] == c["objects"] and c["x_order"] == c["y_order"] == c["pairs"]


@needs_data
def test_clevr_steps_reads_the_targets_reasoning_sentence_by_sentence():
    task, stages = ClevrTask(reasoning="checks", place="xy"), get_format("stages")
    for seed in range(10):
        s = task.sample(seed)
        truth = clevr_steps.target_sentences(s, checks=True, coords=True)
        reasoning = tagged(stages.target(s, task), "REASONING")
        assert " ".join(sentence for sentence, _ in truth) == reasoning
        assert clevr_steps.first_difference(truth, clevr_steps.sentences(reasoning)) is None
        relation = next((k for k, (sentence, kind) in enumerate(truth) if kind.startswith("relate:")), None)
        if relation is not None:  # a coordinate misread in a relation's check is that relation's error
            got = [sentence for sentence, _ in truth]
            got[relation] = got[relation].replace(" at ", " at 1", 1)
            assert clevr_steps.first_difference(truth, got) == truth[relation][1]


def test_clevr_steps_tells_a_right_caption_from_a_misread_one():
    truth = "2 objects: a small red metal cube at x 10 y 5; a large blue rubber sphere at x 30 y 20."
    assert clevr_steps.caption_right(truth, truth)
    assert clevr_steps.caption_right(truth, truth.replace("x 30 y 20", "x 32 y 19"))  # within 2 px
    assert not clevr_steps.caption_right(truth, truth.replace("x 30 y 20", "x 33 y 20"))
    assert not clevr_steps.caption_right(truth, truth.replace("blue", "green"))
    assert not clevr_steps.caption_right(truth, truth.replace("2 objects", "3 objects").replace(
        "20.", "20; a small gray metal cylinder at x 50 y 40."))
    assert not clevr_steps.caption_right(truth, "")
