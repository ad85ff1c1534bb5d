import numpy as np
import pytest

from vrm import VrmError
from vrm.tasks import TASKS, TEST_SEED_BASE, eval_samples, get_task
from vrm.tasks.shapes import COLOURS, ShapesTask


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_sample(name):
    task = get_task(name)
    for seed in (0, 7, TEST_SEED_BASE + 3):
        a, b = task.sample(seed), task.sample(seed)
        assert (a.id, a.question, a.answer, a.family, a.trace) == (b.id, b.question, b.answer, b.family, b.trace)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.image.mode == "RGB"
        assert a.family in task.families
        assert task.score(a, a.answer) == 1.0
        assert task.caption(a)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_different_seeds_differ(name):
    task = get_task(name)
    samples = [task.sample(s) for s in range(20)]
    assert len({(s.question, s.answer, np.asarray(s.image).tobytes()) for s in samples}) > 10


def test_shapes_answers_follow_the_trace():
    task = ShapesTask()
    for seed in range(300):
        s = task.sample(seed)
        objs, prog = s.trace["objects"], s.trace["program"]
        hits = [i for i, o in enumerate(objs) if all(
            (k == "cell" and [o["row"], o["col"]] == v) or o.get(k) == v for k, v in prog["filter"].items())]
        assert hits == prog["matches"]
        if s.family.startswith("count"):
            assert s.answer == str(len(hits))
        elif s.family == "exists":
            assert s.answer == ("yes" if hits else "no")
        else:
            attr = "shape" if s.family == "query_shape" else "colour"
            assert s.answer == objs[hits[0]][attr]


def test_shapes_pixels_show_the_objects():
    task = ShapesTask(min_objects=3, max_objects=3)
    s = task.sample(1)
    pixels = np.asarray(s.image)
    cell = task.canvas // task.grid
    for o in s.trace["objects"]:
        y, x = int((o["row"] - 0.5) * cell), int((o["col"] - 0.5) * cell)
        assert tuple(pixels[y + 2, x]) == COLOURS[o["colour"]]
    occupied = {(o["row"], o["col"]) for o in s.trace["objects"]}
    empty = [(r, c) for r in range(1, 5) for c in range(1, 5) if (r, c) not in occupied]
    r, c = empty[0]
    assert tuple(pixels[(r - 1) * cell + cell // 2, (c - 1) * cell + cell // 2]) == (255, 255, 255)


def test_shapes_families_are_all_reached_and_exists_is_balanced():
    task = ShapesTask()
    samples = [task.sample(s) for s in range(600)]
    assert {s.family for s in samples} == set(task.families)
    exists = [s.answer for s in samples if s.family == "exists"]
    assert 0.35 < exists.count("yes") / len(exists) < 0.65


def test_difficulty_knobs():
    task = get_task("shapes", min_objects=9, max_objects=9, grid=3, canvas=48, families=["count_all"])
    s = task.sample(0)
    assert s.image.size == (48, 48) and s.answer == "9"


def test_unknown_task_and_params_are_clear_errors():
    with pytest.raises(VrmError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(VrmError, match="no parameter"):
        get_task("shapes", colour="red")
    with pytest.raises(VrmError, match="unknown shapes families"):
        get_task("shapes", families=["count_all", "dance"])
    with pytest.raises(VrmError, match="min_objects"):
        get_task("shapes", max_objects=99)


def test_easyvqa_yes_no_answers_agree_with_the_shape_and_colour_questions():
    """What a yes/no answer reveals ("is there not a red shape? no": red) is what the image's
    colour and shape questions say, wherever both exist, over the whole test split."""
    from vrm.tasks.easyvqa import asked_word, family_of, yes_no_hit

    task = get_task("easyvqa", split="test")
    named = {(i, family_of(q, a)): a for q, a, i in task._rows if family_of(q, a) != "yes_no"}
    shown = [(i, w) for q, a, i in task._rows if (w := yes_no_hit(q, a))]
    checked = [(i, w) for i, w in shown if (i, "shape" if w in ("circle", "rectangle", "triangle") else "colour") in named]
    assert len(checked) == 976
    assert all(w in (named.get((i, "shape")), named.get((i, "colour"))) for i, w in checked)
    assert asked_word("Is there not a teal shape in the image?") == ("teal", True)
    assert yes_no_hit("Is there not a teal shape?", "no") == "teal" and yes_no_hit("Is there a circle?", "no") is None


def test_easyvqa_splits_match_the_package():
    train, test = get_task("easyvqa", split="train"), get_task("easyvqa", split="test")
    assert (len(train), len(test)) == (38575, 9673)
    s = test.get(0)
    assert s.image.size == (64, 64) and s.answer and s.question[0].isupper()
    assert s.family in ("shape", "colour", "yes_no")
    shapes = test.labelled_images("shape")
    assert len(shapes) == 763 and {v for _, v in shapes} == {"circle", "rectangle", "triangle"}
    # with reasoning=checks, 112 more images are named by a yes/no answer ("is there a circle? yes")
    assert len(get_task("easyvqa", split="test", reasoning="checks").labelled_images("shape")) == 875
    first = next(test.get(i) for i in range(len(test)) if test.get(i).family == "shape")
    assert (test._paths[first.trace["image_id"]], first.answer) in shapes  # the label its question gives
    with pytest.raises(VrmError, match="split"):
        get_task("easyvqa", split="dev")


def test_eval_samples_are_held_out():
    task = ShapesTask()
    ids = [s.id for s in eval_samples(task, n=3, seed=5)]
    assert ids == [f"shapes-{TEST_SEED_BASE + 5 + i}" for i in range(3)]
    rows = list(eval_samples(get_task("easyvqa", split="test"), n=4, seed=0))
    assert len(rows) == 4 and len({r.id for r in rows}) == 4


def test_shapes_family_listed_twice_is_drawn_twice_as_often():
    from vrm.tasks.shapes import ShapesTask

    task = ShapesTask(families=("count_all", "count_all", "exists"))
    drawn = [task.sample(seed).family for seed in range(600)]
    assert set(drawn) == {"count_all", "exists"}
    assert 0.6 < drawn.count("count_all") / len(drawn) < 0.73  # 2/3
