import argparse
import json
import random

import numpy as np
import pytest
from PIL import Image

from clevr_data import DATA, needs_data
from vrm import VrmError
from vrm.tasks.clevr import FAMILIES, ClevrTask, execute
from vrm.tasks.clevr.cli import add_clevr_commands
from vrm.tasks.clevr.data import ENV_VAR, load_data
from vrm.tasks.clevr.explain import explain_program
from vrm.tasks.clevr.generate import instantiate
from vrm.tasks.clevr.scene import relationships, sample_scene

GOLDEN = ("clevr_questions.json", "clevr_math_questions.json")


def obj(x, y, color="red", shape="cube", size="large", material="rubber"):
    return {"color": color, "shape": shape, "size": size, "material": material, "3d_coords": [x, y, 0.0]}


def node(fn, inputs=(), *values):
    return {"type": fn, "inputs": list(inputs), "value_inputs": list(values)}


def clevr_cli(*argv):
    p = argparse.ArgumentParser(prog="vrm")
    add_clevr_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["clevr", *argv])
    args.func(args)


# -- executor ------------------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("name", GOLDEN)
def test_executor_reproduces_every_golden_answer_and_node_output(name):
    scenes = {s["image_index"]: s for s in json.loads((DATA / "golden_dev" / "scenes.json").read_text())["scenes"]}
    questions = json.loads((DATA / "golden_dev" / name).read_text())["questions"]
    assert len(questions) > 380
    wrong = []
    for i, q in enumerate(questions):
        outputs = execute(q["program"], scenes[q["image_index"]])
        expected = [n["_output"] for n in q["program"]]
        # JSON text compares types too: True is not 1 and [] is not 0
        if json.dumps(outputs) != json.dumps(expected) or json.dumps(outputs[-1]) != json.dumps(q["answer"]):
            wrong.append((i, q["question"], outputs, expected))
    assert not wrong, f"{len(wrong)}/{len(questions)} differ, first: {wrong[0]}"


@needs_data
def test_cli_execute_round_trip(tmp_path):
    out = tmp_path / "sub" / "answers.json"
    clevr_cli("execute", "--scenes", str(DATA / "golden_dev" / "scenes.json"),
              "--questions", str(DATA / "golden_dev" / "clevr_questions.json"), "--out", str(out))
    got = json.loads(out.read_text())["questions"]
    ref = json.loads((DATA / "golden_dev" / "clevr_questions.json").read_text())["questions"]
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert json.dumps(g["answer"]) == json.dumps(r["answer"])
        assert json.dumps(g["node_outputs"]) == json.dumps([n["_output"] for n in r["program"]])
    assert [p.name for p in out.parent.iterdir()] == ["answers.json"]  # no temporary file left


def test_cli_execute_names_a_missing_scene(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"scenes": [{"image_index": 0, "objects": []}]}))
    (tmp_path / "q.json").write_text(json.dumps({"questions": [{"image_index": 3, "program": []}]}))
    with pytest.raises(VrmError, match="question 0 names image 3"):
        clevr_cli("execute", "--scenes", str(tmp_path / "s.json"), "--questions", str(tmp_path / "q.json"),
                  "--out", str(tmp_path / "a.json"))
    assert not (tmp_path / "a.json").exists()


def test_relationship_rule_on_a_hand_made_scene():
    objects = [obj(0, 0), obj(0.3, 0), obj(0.1, -0.5), obj(-0.15, 2.0), obj(-1, 0.2)]
    rel = relationships(objects)
    # right of 0: dx > 0.2 -> only object 1 (object 2 is 0.1 to the right: too close to call)
    assert rel["right"][0] == [1]
    assert rel["left"][0] == [4]  # object 3 is only 0.15 to the left
    assert rel["front"][0] == [2]  # dy = -0.5
    assert rel["behind"][0] == [3]  # object 4 is only 0.2 behind: not > 0.2
    assert rel["left"][1] == [0, 3, 4]  # object 2 is 0.2 to the left of 1: not > 0.2
    assert rel["right"][4] == [0, 1, 2, 3]
    for r in rel.values():  # nothing relates to itself
        assert all(i not in js for i, js in enumerate(r))


def test_unique_fails_unless_exactly_one_object_matches():
    scene = {"objects": [obj(0, 0, "red"), obj(1, 1, "red"), obj(2, 2, "blue")]}
    program = lambda colour: [node("scene"), node("filter_color", [0], colour), node("unique", [1]),
                              node("query_shape", [2]), node("same_size", [2])]
    assert execute(program("blue"), scene) == [[0, 1, 2], [2], 2, "cube", [0, 1]]
    assert execute(program("red"), scene) == [[0, 1, 2], [0, 1], None, None, None]
    assert execute(program("green"), scene) == [[0, 1, 2], [], None, None, None]
    # a node that does not read the failed one still runs
    both = program("red") + [node("count", [0])]
    assert execute(both, scene)[-1] == 3


def test_same_attribute_excludes_the_object_itself():
    scene = {"objects": [obj(0, 0, "red", "cube"), obj(1, 1, "red", "sphere"), obj(2, 2, "blue", "cube")]}
    outs = lambda i: execute([node("scene"), node("filter_color", [0], ["red", "red", "blue"][i]),
                              node("filter_shape", [1], ["cube", "sphere", "cube"][i]), node("unique", [2]),
                              node("same_color", [3]), node("same_shape", [3]), node("same_size", [3]),
                              node("same_material", [3])], scene)[4:]
    assert outs(0) == [[1], [2], [1, 2], [1, 2]]
    assert outs(1) == [[0], [], [0, 2], [0, 2]]
    assert outs(2) == [[], [0], [0, 1], [0, 1]]


def test_hand_checked_programs():
    # large red metal cube at the left, small blue sphere at the right, large green cylinder behind
    # the middle: "How many things are right of the large red metal cube?" -> sphere and cylinder: 2
    scene = {"objects": [obj(-1, 0, "red", "cube", "large", "metal"), obj(1, 0, "blue", "sphere", "small"),
                         obj(0, 1.5, "green", "cylinder")]}
    right_of_cube = [node("scene"), node("filter_size", [0], "large"), node("filter_color", [1], "red"),
                     node("filter_material", [2], "metal"), node("filter_shape", [3], "cube"), node("unique", [4]),
                     node("relate", [5], "right"), node("count", [6])]
    assert execute(right_of_cube, scene)[-1] == 2
    # "Is the green thing behind the blue sphere?" -> yes; "...in front of" -> no
    behind = lambda rel: [node("scene"), node("filter_color", [0], "blue"), node("unique", [1]),
                          node("relate", [2], rel), node("filter_color", [3], "green"), node("exist", [4])]
    assert execute(behind("behind"), scene)[-1] is True and execute(behind("front"), scene)[-1] is False
    # CLEVR-Math: "Subtract all cubes. Add 2 spheres. How many objects?" 3 - 1 + 2 = 4
    math = [node("scene"), node("filter_shape", [0], "cube"), node("count", [0]), node("count", [1]),
            node("subtraction", [2, 3]), node("choose", [0], "2"), node("addition", [4, 5])]
    assert execute(math, scene) == [[0, 1, 2], [0], 3, 1, 2, 2, 4]
    with pytest.raises(VrmError, match="unknown program function 'paint'"):
        execute([node("scene"), node("paint", [0])], scene)


# -- scenes, rendering ---------------------------------------------------------------------------

@needs_data
def test_sampled_scenes_keep_objects_apart():
    data = load_data()
    rng = random.Random(0)
    for _ in range(50):
        scene = sample_scene(rng, 6, list(data.colors), data.sizes, extent=2.0)
        objs = scene["objects"]
        assert scene["relationships"] == relationships(objs)
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                dx, dy = a["3d_coords"][0] - b["3d_coords"][0], a["3d_coords"][1] - b["3d_coords"][1]
                assert np.hypot(dx, dy) - data.sizes[a["size"]] - data.sizes[b["size"]] >= 0.25
                assert abs(dx) >= 0.4 and abs(dy) >= 0.4


@needs_data
def test_cli_render_writes_images_of_the_right_size(tmp_path):
    scenes = json.loads((DATA / "golden_dev" / "scenes.json").read_text())["scenes"][:3]
    (tmp_path / "scenes.json").write_text(json.dumps({"scenes": scenes}))
    clevr_cli("render", "--scenes", str(tmp_path / "scenes.json"), "--out", str(tmp_path / "img"), "--size", "48")
    for s in scenes:
        with Image.open(tmp_path / "img" / s["image_filename"]) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
            assert len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 5  # objects were drawn


@needs_data
def test_render_draws_each_object_in_its_colour_where_the_trace_says():
    task = ClevrTask(canvas=96)
    s = task.sample(3)
    pixels = np.asarray(s.image).astype(int)
    colors = load_data().colors
    for o in s.trace["scene"]["objects"]:
        x, y, _ = o["pixel_coords"]
        if o["shape"] == "cylinder":
            y += 2  # the triangle's centroid sits below its centre
        patch = pixels[y - 1:y + 2, x + 1:x + 3].reshape(-1, 3)  # right of the metal highlight
        assert np.abs(patch - np.array(colors[o["color"]])).sum(axis=1).min() < 30, o


@needs_data
def test_shapes_differ_and_metal_shines():
    from vrm.tasks.clevr.render import BACKGROUND, render_scene

    data = load_data()
    draw = lambda **kw: np.asarray(render_scene({"objects": [obj(0, 0, **kw)]}, data.colors, data.sizes, 64))
    area = {shape: (draw(shape=shape) != BACKGROUND).any(axis=2).sum() for shape in ("cube", "sphere", "cylinder")}
    assert len(set(area.values())) == 3 and min(area.values()) > 60, area
    assert (draw(size="small") != BACKGROUND).any(axis=2).sum() < area["cube"] / 2
    rubber, metal = draw(material="rubber"), draw(material="metal")
    brightest = lambda im: im.sum(axis=2)[(im != BACKGROUND).any(axis=2)].max()
    assert brightest(metal) > brightest(rubber) + 200  # a bright specular spot on the body
    with pytest.raises(VrmError, match="unknown material 'wood'"):
        draw(material="wood")


# -- the task ------------------------------------------------------------------------------------

@needs_data
def test_sample_is_pure_in_the_seed():
    task = ClevrTask()
    for seed in (0, 5, 9_000_001):
        a, b = task.sample(seed), ClevrTask().sample(seed)
        assert (a.id, a.question, a.answer, a.family) == (b.id, b.question, b.answer, b.family)
        assert json.dumps(a.trace) == json.dumps(b.trace)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.image.size == (64, 64) and a.image.mode == "RGB"
    assert len({task.sample(s).question for s in range(20)}) > 15


@needs_data
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_reachable_and_its_trace_proves_the_answer(family):
    task = ClevrTask(families=(family,))
    for seed in range(8):
        s = task.sample(seed)
        assert s.family == family and s.trace["template"]["family"] == family
        program = s.trace["program"]
        scene = s.trace["scene"]
        outputs = execute([{k: n[k] for k in ("type", "inputs", "value_inputs")} for n in program], scene)
        assert outputs == [n["output"] for n in program]
        assert task.score(s, s.answer) == 1.0
        assert s.question.endswith("?") and "<" not in s.question and " X " not in s.question
        template = load_data().templates[family][s.trace["template"]["index"]]
        if any(n["type"] == "relate" for n in template.nodes):  # CLEVR checks these for degeneracy
            assert_not_degenerate(program, scene)


def assert_not_degenerate(program, scene):
    nodes = [{k: n[k] for k in ("type", "inputs", "value_inputs")} for n in program]
    answer = program[-1]["output"]
    for i, n in enumerate(nodes):
        if n["type"] == "relate":
            changed = nodes[:i] + [node("scene")] + nodes[i + 1:]
            assert execute(changed, scene)[-1] != answer, "a relation that changes nothing"


@needs_data
def test_families_are_uniform_and_yes_no_balanced():
    task = ClevrTask()
    samples = [task.sample(s) for s in range(390)]
    counts = {f: sum(s.family == f for s in samples) for f in FAMILIES}
    assert min(counts.values()) >= 15, counts
    yes_no = [s.answer for s in samples if s.answer in ("yes", "no")]
    assert 0.35 < yes_no.count("yes") / len(yes_no) < 0.65


@needs_data
def test_constraints_hold_in_generated_programs():
    data = load_data()
    rng = random.Random(1)
    query_shape = next(t for t in data.templates["zero_hop"] if t.nodes[-1]["type"] == "query_shape")
    comparison = data.templates["comparison"][0]  # do <obj1> and <obj2> have the same size? (objects differ)
    for _ in range(20):
        scene = sample_scene(rng, 5, list(data.colors), data.sizes)
        q = instantiate(query_shape, scene, data, rng)
        if q is not None:  # NULL <S>: the object is not described by its shape
            assert not any(n["type"] == "filter_shape" for n in q.program)
            assert q.answer == scene["objects"][q.outputs[-2]]["shape"]
        q = instantiate(comparison, scene, data, rng, yes=True)
        if q is not None:
            a, b = [out for n, out in zip(q.program, q.outputs) if n["type"] == "unique"]
            assert a != b and q.answer is True
            assert not any(n["type"] == "filter_size" for n in q.program)


@needs_data
def test_hand_checked_sample():
    s = ClevrTask().sample(7)
    # checked by eye against the caption and the image (deterministic in the seed on any machine)
    assert s.question == EXPECTED_7[0] and s.answer == EXPECTED_7[1], (s.question, s.answer, ClevrTask().caption(s))


# the small cyan ball is at the bottom right; the only shiny ball behind (above) it is the large blue
# metal sphere on the left; in front of (below) that: the small green rubber cube, the yellow metal
# cylinder and the cyan ball; the rubber one is the cube.
EXPECTED_7 = ("There is a rubber thing in front of the shiny ball that is behind the small cyan ball; what shape is it?",
              "cube")


@needs_data
def test_caption_lists_every_object_in_reading_order():
    task = ClevrTask(min_objects=4, max_objects=4)
    s = task.sample(2)
    caption = task.caption(s)
    assert caption.startswith("4 objects: ") and caption.count(";") == 3
    for o in s.trace["scene"]["objects"]:
        assert f"{o['size']} {o['color']} {o['material']} {o['shape']}" in caption


@needs_data
def test_reasoning_lists_objects_in_the_captions_order():
    # The caption reads the image top to bottom, left to right; a step listing objects must use that
    # order too (the scene's index order is not in the image), so each listing is a subsequence of it.
    task, listings = ClevrTask(), 0
    for seed in range(60):
        s = task.sample(seed)
        caption = [item.split(" ", 1)[1].rsplit(" ", 2)[0] for item in task.caption(s).split(": ", 1)[1].split("; ")]
        caption = [" ".join(words.split()[:4]) for words in caption]  # "small red metal cube"
        for step in task.explain(s).steps:
            head, _, listed = step.partition(": ")
            if not head.endswith(("ones", "it", "Either", "Both")) or listed in ("none.", ""):
                continue
            names, rest = listed.rstrip(".").split(", "), iter(caption)
            assert all(any(n == c for c in rest) for n in names), (step, caption)
            listings += len(names) > 1
    assert listings > 30  # the check bit on listings of two or more objects


def test_checks_reasoning_decides_each_candidate_by_hand():
    objs = [{"size": "large", "color": "blue", "material": "rubber", "shape": "sphere", "pixel_coords": [40, 50, 0]},
            {"size": "small", "color": "red", "material": "metal", "shape": "cube", "pixel_coords": [10, 12, 0]},
            {"size": "small", "color": "red", "material": "rubber", "shape": "cylinder", "pixel_coords": [30, 30, 0]}]
    program = [{"type": "scene", "inputs": [], "output": [0, 1, 2]},
               {"type": "filter_color", "inputs": [0], "value_inputs": ["red"], "output": [1, 2]},
               {"type": "unique", "inputs": [0], "output": 0},  # as if one object were left
               {"type": "relate", "inputs": [2], "side_inputs": ["behind"], "output": [1, 2]},
               {"type": "count", "inputs": [3], "output": 2}]
    steps = explain_program({"scene": {"objects": objs}, "program": program}, "", "q", checks=True).steps
    # reading order: the red cube (y 12), the red cylinder (y 30), the blue sphere (y 50)
    assert steps == [
        "Checking for red: small red metal cube yes; small red rubber cylinder yes; large blue rubber sphere no. "
        "Red ones: small red metal cube, small red rubber cylinder.",
        "That is the large blue rubber sphere.",
        "Checking for things behind the large blue rubber sphere: small red metal cube yes; "
        "small red rubber cylinder yes. "
        "Things behind it: small red metal cube, small red rubber cylinder.",
        "Count: 2."]
    plain = explain_program({"scene": {"objects": objs}, "program": program}, "", "q").steps
    assert plain[0] == "Red ones: small red metal cube, small red rubber cylinder." and plain[3] == "Count: 2."
    with pytest.raises(ValueError, match="unknown clevr reasoning"):
        ClevrTask(reasoning="guess")
    # with coordinates, a relation's check names the one it compares: y for behind (up is smaller y)
    program[3]["side_inputs"], program[3]["output"] = ["left"], [1, 2]
    xy = explain_program({"scene": {"objects": objs}, "program": program}, "", "q", checks=True, coords=True).steps
    assert xy[0] == steps[0] and xy[3] == "Count: 2."
    assert xy[2] == ("Checking for things left of the large blue rubber sphere at x 40: small red metal cube at x 10 yes; "
                     "small red rubber cylinder at x 30 yes. Things left of it: small red metal cube, small red rubber cylinder.")
    program[3]["side_inputs"], program[3]["output"] = ["front"], []
    xy = explain_program({"scene": {"objects": objs}, "program": program}, "", "q", checks=True, coords=True).steps
    assert xy[2].startswith("Checking for things in front of the large blue rubber sphere at y 50: "
                            "small red metal cube at y 12 no; small red rubber cylinder at y 30 no.")


def test_merge_checks_decide_each_object_of_a_union_and_an_intersection_by_hand():
    objs = [{"size": "large", "color": "blue", "material": "rubber", "shape": "sphere", "pixel_coords": [40, 50, 0]},
            {"size": "small", "color": "red", "material": "metal", "shape": "cube", "pixel_coords": [10, 12, 0]},
            {"size": "small", "color": "red", "material": "rubber", "shape": "cylinder", "pixel_coords": [30, 30, 0]}]
    program = [{"type": "scene", "inputs": [], "output": [0, 1, 2]},
               {"type": "filter_shape", "inputs": [0], "value_inputs": ["cube"], "output": [1]},
               {"type": "filter_size", "inputs": [0], "value_inputs": ["large"], "output": [0]},
               {"type": "union", "inputs": [1, 2], "output": [0, 1]},
               {"type": "filter_color", "inputs": [0], "value_inputs": ["red"], "output": [1, 2]},
               {"type": "intersect", "inputs": [4, 3], "output": [1]},
               {"type": "count", "inputs": [5], "output": 1}]
    trace = {"scene": {"objects": objs}, "program": program}
    steps = explain_program(trace, "", "q", checks=True, merges=True).steps
    # reading order: the red cube (y 12), the red cylinder (y 30), the blue sphere (y 50)
    assert steps[2] == ("Checking for either: small red metal cube yes; small red rubber cylinder no; "
                        "large blue rubber sphere yes. Either: small red metal cube, large blue rubber sphere.")
    assert steps[4] == ("Checking for both: small red metal cube yes; small red rubber cylinder no. "
                        "Both: small red metal cube.")
    assert explain_program(trace, "", "q", checks=True).steps[2] == \
        "Either: small red metal cube, large blue rubber sphere."  # plain checks: the merge in one step
    with pytest.raises(ValueError, match="known: listing, checks, merge_checks"):
        ClevrTask(reasoning="merges")


@needs_data
def test_xy_caption_places_objects_by_pixel_and_decides_every_relation():
    # Centres lie >= 0.4 units apart on both axes, so the caption's coordinates alone decide each relation.
    task = ClevrTask(place="xy")
    for seed in range(20):
        s = task.sample(seed)
        objects = s.trace["scene"]["objects"]
        caption = task.caption(s)
        for o in objects:
            assert f"{o['size']} {o['color']} {o['material']} {o['shape']} at x {o['pixel_coords'][0]} " \
                   f"y {o['pixel_coords'][1]}" in caption
        rel = s.trace["scene"]["relationships"]
        for i, a in enumerate(objects):
            xa, ya = a["pixel_coords"][:2]
            assert rel["left"][i] == [j for j, b in enumerate(objects) if b["pixel_coords"][0] < xa]
            assert rel["behind"][i] == [j for j, b in enumerate(objects) if b["pixel_coords"][1] < ya]
    with pytest.raises(ValueError, match="unknown clevr place"):
        ClevrTask(place="grid")


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(VrmError, match="CLEVR data not found"):
        ClevrTask()
    (tmp_path / "partial").mkdir()
    with pytest.raises(VrmError, match="lacks"):
        ClevrTask(data_dir=str(tmp_path / "partial"))
