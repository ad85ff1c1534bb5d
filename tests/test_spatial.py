import json
from collections import Counter

import numpy as np
import pytest

from vrm.tasks.spatial import FrozenLakeTask, MazeTask, MiniBehaviorTask, MvotTask
from vrm.tasks.spatial.choices import choice_letter
from vrm.tasks.spatial.frozenlake import OPTIONS as LAKE_OPTIONS, run_episode
from vrm.tasks.spatial.maze import MazeEnv, walk
from vrm.tasks.spatial.minibehavior import ACTIONS, outcome
from vrm.tasks.spatial.render import cell_box, layout

TASKS = {"frozenlake": FrozenLakeTask, "maze": MazeTask, "minibehavior": MiniBehaviorTask}
LETTERS = {"frozenlake": "ABC", "maze": "ABCD", "minibehavior": "ABCD"}


@pytest.fixture(scope="module")
def samples():
    """300 samples of each task (shared by the balance, trace and rendering tests)."""
    return {name: [task().sample(seed) for seed in range(300)] for name, task in TASKS.items()}


@pytest.fixture(scope="module")
def mvot():
    return MvotTask()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_sample(name):
    task = TASKS[name]()
    for seed in (0, 5, 9_000_001):
        a, b = task.sample(seed), task.sample(seed)
        assert (a.id, a.question, a.answer, a.family, a.trace) == (b.id, b.question, b.answer, b.family, b.trace)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.family in task.families and a.answer in a.choices
        assert task.score(a, a.answer) == 1.0 and task.caption(a)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_are_balanced_and_seeds_differ(name, samples):
    got = samples[name]
    counts = Counter(s.answer for s in got)
    share = 1 / len(LETTERS[name])
    assert set(counts) == set(LETTERS[name])
    assert all(abs(c / len(got) - share) < 0.09 for c in counts.values()), counts
    assert len({(s.question, np.asarray(s.image).tobytes()) for s in got}) > 250
    assert {s.family for s in got} == set(TASKS[name]().families)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_trace_is_plain_json_and_explained_step_by_step(name, samples):
    task = TASKS[name]()
    for s in samples[name][:60]:
        assert json.loads(json.dumps(s.trace)) == s.trace
        e = task.explain(s)
        assert e.summary and e.caption == task.caption(s)
        assert e.steps[-1].endswith(f"The answer is {s.answer}.")
        taken = len(s.trace["states"]) - 1 if name == "frozenlake" else len(s.trace["actions"])
        assert len(e.steps) == taken + 1


def test_frozenlake_labels_are_gymnasiums(samples):
    for s in samples["frozenlake"]:
        t = s.trace
        states, result = run_episode(t["map"], t["actions"])
        assert states == t["states"] and result == t["outcome"]
        assert s.answer == "ABC"[("success", "hole", "safe").index(result)]
        assert len(t["actions"]) <= 2 * t["size"] + 1 and all(a in range(4) for a in t["actions"])
        assert sorted("".join(t["map"]).replace("F", "").replace("H", "")) == ["G", "S"]


def test_frozenlake_hand_checked_episodes():
    lake = ["SFH", "FFF", "HFG"]
    assert run_episode(lake, [2, 2]) == ([[0, 0], [0, 1], [0, 2]], "hole")  # right, right: into the hole
    assert run_episode(lake, [1, 1, 2, 2]) == ([[0, 0], [1, 0], [2, 0]], "hole")  # the fall ends it
    assert run_episode(lake, [2, 1, 1, 2]) == ([[0, 0], [0, 1], [1, 1], [2, 1], [2, 2]], "success")
    assert run_episode(lake, [2, 1]) == ([[0, 0], [0, 1], [1, 1]], "safe")
    assert run_episode(lake, [0, 3]) == ([[0, 0], [0, 0], [0, 0]], "safe")  # the edge holds the agent


def test_maze_walks_follow_passages(samples):
    for s in samples["maze"]:
        t = s.trace
        states, bumps = walk(t["maze"], t["start"], t["actions"])
        assert states == t["states"] and bumps == 0
        assert t["candidates"][("ABCD").index(s.answer)] == states[-1]
        assert len({tuple(c) for c in t["candidates"]}) == 4 and t["start"] not in t["candidates"]


@pytest.mark.parametrize("name", ["frozenlake", "maze"])
def test_min_actions_gives_long_walks_still_balanced(name):
    """A walk-length floor: every walk has min..max moves, labels still the environment's, answers balanced."""
    task = TASKS[name](sizes="4,5", min_actions=9, max_actions=13)
    got = [task.sample(seed) for seed in range(200)]
    assert all(9 <= len(s.trace["actions"]) <= 13 for s in got)
    for s in got:
        t = s.trace
        if name == "frozenlake":
            assert run_episode(t["map"], t["actions"]) == (t["states"], t["outcome"])
        else:
            assert walk(t["maze"], t["start"], t["actions"]) == (t["states"], 0)
    counts = Counter(s.answer for s in got)
    assert all(abs(c / len(got) - 1 / len(LETTERS[name])) < 0.1 for c in counts.values()), counts
    before = {"frozenlake": [[2, 0], [0, 2, 0, 2, 0, 0, 0, 1]], "maze": [["down", "down"], ["left", "up", "right"]]}
    assert [TASKS[name]().sample(seed).trace["actions"] for seed in (7, 8)] == before[name]  # as before min_actions
    with pytest.raises(ValueError, match="min_actions must be in 1..6"):
        TASKS[name](sizes="3,4", min_actions=7)


def test_maze_env_hand_checked():
    rows = ["+-+-+-+",
            "|     |",
            "+-+-+ +",
            "|     |",
            "+ +-+-+",
            "|     |",
            "+-+-+-+"]
    env = MazeEnv(rows, (0, 0))
    assert env.reset() == (0, {"cell": [0, 0]})
    assert env.step(1)[4] == {"cell": [0, 0], "blocked": True}  # down: a wall
    assert walk(rows, (0, 0), ["right", "right", "down", "left", "left", "down", "right"])[0][-1] == [2, 1]
    obs, reward, terminated, truncated, info = env.step(2)
    assert (obs, reward, terminated, truncated) == (1, 0.0, False, False)


def test_minibehavior_labels_are_minigrids(samples):
    from vrm.tasks.spatial.printer_env import PrinterRoomEnv

    for s in samples["minibehavior"][:100]:
        t = s.trace
        first = t["states"][0]
        env = PrinterRoomEnv(size=t["room"])
        env.reset(options={"layout": {"agent": first["agent"], "heading": first["heading"],
                                      "printer": first["printer"], "table": t["table"]}})
        states = [env.step(ACTIONS.index(a))[4]["state"] for a in t["actions"]]
        assert states == t["states"][1:] and outcome(states[-1]) == s.answer


def test_minibehavior_hand_checked_episode():
    from vrm.tasks.spatial.printer_env import PrinterRoomEnv

    env = PrinterRoomEnv(size=4)
    env.reset(options={"layout": {"agent": [1, 0], "heading": "up", "printer": [1, 2], "table": [[3, 0], [3, 1]]}})
    expect = [
        ("right", {"agent": [1, 1], "heading": "right", "carrying": False, "printer": [1, 2]}),
        ("right", {"agent": [1, 1], "heading": "right"}),  # blocked by the printer
        ("pickup", {"carrying": True, "printer": None}),
        ("down", {"agent": [2, 1], "heading": "down"}),
        ("down", {"agent": [2, 1]}),  # blocked by the table
        ("toggle", {"printer_on": False}),  # nothing to toggle: the printer is carried
        ("drop", {"carrying": False, "printer": [3, 1], "on_table": True}),
        ("toggle", {"printer_on": True}),
    ]
    for action, want in expect:
        _, reward, terminated, _, info = env.step(ACTIONS.index(action))
        assert {k: info["state"][k] for k in want} == want, action
    assert reward == 1.0 and not terminated and outcome(info["state"]) == "A"
    env.step(ACTIONS.index("pickup"))
    assert outcome(env.state()) == "C"


def test_printer_env_random_layout_is_seeded():
    from vrm.tasks.spatial.printer_env import PrinterRoomEnv

    a, b = PrinterRoomEnv(size=5), PrinterRoomEnv(size=5)
    a.reset(seed=3)
    b.reset(seed=3)
    assert a.state() == b.state() and a.state()["printer"] is not None


def test_mvot_samples_agree_with_vrm(mvot):
    lakes = [s for s in mvot._samples if s.family == "frozenlake"]
    mazes = [s for s in mvot._samples if s.family == "maze"]
    assert (len(lakes), len(mazes), len(mvot)) == (12, 6, 18)
    for s in lakes:
        t = s.trace
        states, result = run_episode(t["map"], t["actions"])
        assert states == t["states"], s.id
        assert "ABC"[("success", "hole", "safe").index(result)] == s.answer, s.id
    assert Counter(s.answer for s in lakes) == {"A": 5, "B": 4, "C": 3}
    assert any(len(s.trace["actions"]) > len(s.trace["states"]) - 1 for s in lakes)  # moves listed after a fall
    for s in mazes:
        t = s.trace
        states, bumps = walk(t["maze"], t["start"], t["actions"])
        assert states == t["states"] and bumps == 0, s.id
        assert t["candidates"][("ABCD").index(s.answer)] == states[-1], s.id
    assert mvot.score(lakes[0], "The answer is A.") == 1.0
    assert "elf character" in lakes[0].question and lakes[0].image.size == (192, 192)


def test_mvot_samples_render_with_vrm():
    task = MvotTask(images="vrm")
    s = task.get(0)
    assert s.image.size == (64, 64) and "red square" in s.question
    assert np.array_equal(np.asarray(s.image), np.asarray(task.render(s.trace, 0)))
    assert task.explain(task.get(12)).steps[-1].endswith(f"The answer is {task.get(12).answer}.")


def test_choice_letter():
    assert [choice_letter(a, LAKE_OPTIONS) for a in ("B", " b ", "(C)", "C.", "The answer is A.", "answer is: B")] == \
        ["B", "B", "C", "C", "A", "B"]
    assert choice_letter("B. Action Failed: Fall into the Hole.", LAKE_OPTIONS) == "B"
    assert choice_letter("Action Success.", LAKE_OPTIONS) == "A"
    for bad in ("", "D", "A or B", "B. Action Success.", "AB", "hole", "The answer is", "I think C because"):
        assert choice_letter(bad, LAKE_OPTIONS) is None, bad
    task = MazeTask()
    s = task.sample(1)
    cell = s.trace["candidates"]["ABCD".index(s.answer)]
    assert task.score(s, f"row {cell[0] + 1}, column {cell[1] + 1}") == 1.0
    assert task.score(s, f"The answer is {s.answer}.") == 1.0
    assert task.score(s, "ABCD".replace(s.answer, "")[0]) == 0.0


@pytest.mark.parametrize("name", sorted(TASKS))
def test_renders_change_only_the_cells_an_action_touches(name, samples):
    task = TASKS[name]()
    for s in samples[name][:20]:
        t = s.trace
        frames = [np.asarray(task.render(t, i)) for i in range(len(t["states"]))]
        assert all(f.shape == (64, 64, 3) for f in frames)
        assert np.array_equal(frames[0], np.asarray(s.image))
        n = t.get("size", t.get("room"))
        for i in range(1, len(frames)):
            touched = _touched(name, t["states"][i - 1], t["states"][i])
            mask = np.zeros((64, 64), bool)
            for r, c in touched:
                x0, y0, x1, y1 = cell_box(n, 64, r, c)
                mask[y0:y1 + 1, x0:x1 + 1] = True
            assert not (frames[i] != frames[i - 1]).any(axis=2)[~mask].any(), (s.id, i)


def _touched(name, before, after):
    if name != "minibehavior":
        return {tuple(before), tuple(after)}
    return {tuple(c) for c in (before["agent"], after["agent"], before["printer"], after["printer"]) if c is not None}


def test_render_colours_and_sizes():
    task = FrozenLakeTask(sizes=(3,))
    s = task.sample(2)
    pixels = np.asarray(s.image)
    r, c = s.trace["states"][0]
    x0, y0, x1, y1 = cell_box(3, 64, r, c)
    assert tuple(pixels[(y0 + y1) // 2, (x0 + x1) // 2]) == (220, 38, 38)  # the agent
    assert layout(3, 64) == (8, 16) and layout(6, 64) == (8, 8)
    big = FrozenLakeTask(sizes=(8,), canvas=128).sample(0)
    assert big.image.size == (128, 128) and big.family == "8x8"


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="sizes"):
        FrozenLakeTask(sizes=(1,))
    with pytest.raises(ValueError, match="style"):
        MazeTask(style="long")
    with pytest.raises(ValueError, match="canvas"):
        MiniBehaviorTask(sizes=(20,))
    assert MazeTask(sizes="3, 5").families == ("3x3", "5x5")
    assert FrozenLakeTask(sizes=4).families == ("4x4",)
    short = FrozenLakeTask(style="short").sample(0)
    assert short.question.startswith("Actions: ") and short.question.endswith("safe but not at the goal")


def test_steps_style_lists_each_action_as_the_step_line_a_visual_model_writes():
    from vrm.formats.visual import step_lines

    for task in (MazeTask(sizes="4", style="steps"), FrozenLakeTask(sizes="4", style="steps")):
        plain = type(task)(sizes="4", style="short")
        for seed in range(5):
            s, p = task.sample(seed), plain.sample(seed)
            assert (s.answer, s.trace) == (p.answer, p.trace)  # the same episode, only worded apart
            assert s.question.startswith("Actions: Step 1: Go ")
            assert all(line in s.question for line in step_lines(s))
    printer = MiniBehaviorTask(style="steps").sample(0).question
    assert printer.startswith("Actions: Step 1: ") and "Step 2: " in printer
