"""The clevr consistency reward: every target holds throughout, and each kind of slip costs it."""

import re

import pytest

from clevr_data import needs_data
from vrm.formats import get_format
from vrm.infer.scorers import get_scorer
from vrm.tasks.clevr import ClevrTask
from vrm.tasks.clevr.consistency import consistency

STAGES = get_format("stages")


@needs_data
@pytest.mark.parametrize("params", [{}, {"reasoning": "checks"}, {"reasoning": "checks", "place": "xy"},
                                    {"reasoning": "merge_checks", "place": "xy"}])
def test_every_target_is_consistent(params):
    task = ClevrTask(**params)
    for seed in range(150):
        s = task.sample(seed)
        assert consistency(None, STAGES.target(s, task)) == 1.0, (s.family, STAGES.target(s, task))


def slips(target: str) -> dict[str, str]:
    """One slip of each kind a model makes, where the target has room for it."""
    out = {}
    if m := re.search(r"(Checking for [a-z]+: [^.]*?) yes", target):  # a filter's decision flipped
        out["decision"] = target[:m.start()] + m.group(1) + " no" + target[m.end():]
    if m := re.search(r"at x (\d+) (yes|no)", target):  # a coordinate misread in a relation's check
        out["coordinate"] = target[:m.start()] + f"at x {int(m.group(1)) + 2} " + target[m.end() - 3:].lstrip()
    if m := re.search(r"(ones: )([^.,]+), ", target):  # an object dropped from a listing
        out["listing"] = target[:m.start()] + m.group(1) + target[m.end():]
    if m := re.search(r"Count: (\d+)\.", target):
        out["count"] = target[:m.start()] + f"Count: {int(m.group(1)) + 7}." + target[m.end():]
    answer = re.search(r"<CONCLUSION>(.*)</CONCLUSION>", target).group(1)
    out["conclusion"] = target.replace(f"<CONCLUSION>{answer}<", "<CONCLUSION>maybe<")
    return out


@needs_data
def test_each_kind_of_slip_lowers_it():
    task, seen = ClevrTask(reasoning="checks", place="xy"), set()
    for seed in range(60):
        s = task.sample(seed)
        for kind, text in slips(STAGES.target(s, task)).items():
            assert consistency(None, text) < 1.0, (kind, text)
            seen.add(kind)
    assert seen == {"decision", "coordinate", "listing", "count", "conclusion"}


@needs_data
def test_a_coordinate_one_pixel_off_holds_and_two_do_not():
    task, seen = ClevrTask(reasoning="checks", place="xy", families=("one_hop", "two_hop")), 0
    for seed in range(40):
        target = STAGES.target(s := task.sample(seed), task)
        start = re.search(r"Checking for things (left|right) of the [a-z ]+ at x (\d+): ", target)
        m = start and re.search(r"at x (\d+) (yes|no)", target[start.end():])
        if not m:
            continue
        a, b = int(start.group(2)), int(m.group(1))
        if abs(b - a) < 4:  # a nudge could cross the start's coordinate and flip the decision too
            continue
        away = 1 if b > a else -1  # moved away from the start: the decision stays right
        at = start.end() + m.start(1)
        nudged = [target[:at] + str(b + d * away) + target[at + len(m.group(1)):] for d in (1, 2)]
        assert consistency(None, nudged[0]) == 1.0, (s.family, nudged[0])
        assert consistency(None, nudged[1]) < 1.0, (s.family, nudged[1])
        seen += 1
    assert seen >= 10


@needs_data
def test_a_slip_in_a_merge_check_lowers_it():
    task, seen = ClevrTask(reasoning="merge_checks", place="xy", families=("single_or", "single_and")), 0
    for seed in range(30):
        s = task.sample(seed)
        target = STAGES.target(s, task)
        for what in ("either", "both"):
            if m := re.search(rf"(Checking for {what}: [^.]*?) (yes|no)", target):
                flipped = target[:m.start()] + m.group(1) + (" no" if m.group(2) == "yes" else " yes") + target[m.end():]
                assert consistency(None, flipped) < 1.0, flipped
                seen += 1
    assert seen >= 20


def test_it_loads_as_a_search_scorer():
    scorer = get_scorer("reward:vrm.tasks.clevr.consistency:consistency")
    assert scorer.fn is consistency


@needs_data
def test_the_benchmark_splits_accuracy_by_consistency():
    from bench_loader import load_benchmark

    task = ClevrTask(reasoning="checks", place="xy")
    records = []
    for seed in range(4):
        s = task.sample(seed)
        target = STAGES.target(s, task)
        records.append({"family": s.family, "output": target, "correct": 1.0})
        records.append({"family": s.family, "output": slips(target)["conclusion"], "correct": 0.0})
    c = load_benchmark("consistency").tally(records)["all"]
    assert (c["answers"], c["right"], c["consistent"], c["right_consistent"]) == (8, 4, 4, 4)


SCENE = ("<CAPTION>3 objects: a large red rubber sphere at x 10 y 10; a small blue metal cube at x 30 y 30; "
         "a large green rubber cylinder at x 50 y 50.</CAPTION>")


def answer(reasoning: str, conclusion: str) -> str:
    return f"{SCENE}<REASONING>{reasoning}</REASONING><CONCLUSION>{conclusion}</CONCLUSION>"


def test_a_merge_reads_two_listings_no_step_has_read():
    found = ("Checking for large: large red rubber sphere yes; small blue metal cube no; large green rubber cylinder "
             "yes. Large ones: large red rubber sphere, large green rubber cylinder. Checking for sphere: large red "
             "rubber sphere yes; large green rubber cylinder no. Sphere ones: large red rubber sphere. That is the "
             "large red rubber sphere. Checking for things in front of the large red rubber sphere at y 10: small "
             "blue metal cube at y 30 yes; large green rubber cylinder at y 50 yes. Things in front of it: small blue "
             "metal cube, large green rubber cylinder. Checking for rubber: large red rubber sphere yes; small blue "
             "metal cube no; large green rubber cylinder yes. Rubber ones: large red rubber sphere, large green "
             "rubber cylinder. ")
    assert consistency(None, answer(found + "Both: large green rubber cylinder. Count: 1.", "1")) == 1.0
    # large & sphere is the sphere too, but both were read already (by the sphere check and "That is"):
    # 26 statements: caption 1, checks 4 + 3 + 6 (the relation's set, 3 coordinates, 2 decisions) + 4,
    # listings 4, "That is" 1, both, count, conclusion
    slip = answer(found + "Both: large red rubber sphere. Count: 1.", "1")
    assert consistency(None, slip) == pytest.approx(25 / 26)


def test_a_query_reads_the_object_found_for_it():
    found = ("Checking for sphere: large red rubber sphere yes; small blue metal cube no; large green rubber cylinder "
             "no. Sphere ones: large red rubber sphere. That is the large red rubber sphere. Checking for cube: large "
             "red rubber sphere no; small blue metal cube yes; large green rubber cylinder no. Cube ones: small blue "
             "metal cube. That is the small blue metal cube. ")
    assert consistency(None, answer(found + "Its colour is red. Its colour is blue. Are they equal? no.", "no")) == 1.0
    # the sphere said to be blue, like the cube: the first query reads the sphere, found first
    slip = answer(found + "Its colour is blue. Its colour is blue. Are they equal? yes.", "yes")
    assert consistency(None, slip) == pytest.approx(16 / 17)


def test_every_count_is_read_but_a_given_number_may_not_be():
    cubes = ("Checking for cube: large red rubber sphere no; small blue metal cube yes; large green rubber cylinder "
             "no. Cube ones: small blue metal cube. ")
    assert consistency(None, answer(cubes + "Count: 3. Count: 1. 3 - 1 = 2.", "2")) == 1.0
    assert consistency(None, answer(cubes + "Count: 3. Count: 1.", "1")) == pytest.approx(8 / 9)  # no subtraction
    assert consistency(None, answer(cubes + "Take 5. Count: 1.", "1")) == 1.0  # CLEVR-Math's adversarial "Add 5 ..."


def test_a_merge_names_no_object_more_often_than_the_caption_does():
    lists = ("Checking for large: large red rubber sphere yes; small blue metal cube no; large green rubber cylinder yes. "
             "Large ones: large red rubber sphere, large green rubber cylinder. Checking for rubber: large red rubber "
             "sphere yes; small blue metal cube no; large green rubber cylinder yes. Rubber ones: large red rubber "
             "sphere, large green rubber cylinder. ")
    union = "Either: large red rubber sphere, large green rubber cylinder. Count: 2."
    assert consistency(None, answer(lists + union, "2")) == 1.0
    twice = "Either: large red rubber sphere, large red rubber sphere, large green rubber cylinder. Count: 3."
    assert consistency(None, answer(lists + twice, "3")) == pytest.approx(13 / 14)  # the caption has one sphere


def test_any_follows_a_listing_not_the_scene():
    none = ("Checking for purple: large red rubber sphere no; small blue metal cube no; large green rubber cylinder "
            "no. Purple ones: none. ")
    assert consistency(None, answer(none + "Any: no.", "no")) == 1.0
    assert consistency(None, answer(none + "Any: yes.", "yes")) == pytest.approx(7 / 8)  # the scene is not empty
