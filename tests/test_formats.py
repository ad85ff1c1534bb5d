"""Reasoning formats: targets written from each task's trace parse back to the answer; what a
small model gets wrong (missing tags, extra text, empty answers) parses to "unparsed", not an error."""

import pytest

from vrm.formats import get_format, question_prompt
from vrm.tasks import get_task
from vrm.tasks.base import Sample
from vrm.tasks.shapes import ShapesTask


@pytest.mark.parametrize("task_name", ["shapes", "easyvqa", "clevr"])
@pytest.mark.parametrize("fmt_name", ["direct", "think", "stages"])
def test_targets_parse_back_to_the_answer(task_name, fmt_name):
    task, fmt = get_task(task_name), get_format(fmt_name)
    for seed in range(20):
        sample = task.sample(seed)
        parsed = fmt.parse(fmt.target(sample, task))
        assert parsed.ok and parsed.answer == sample.answer
        assert fmt.score(sample, task, parsed.answer) == 1.0
        if fmt_name == "stages":
            assert list(parsed.stages) == ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]


def test_shapes_explanation_by_hand():
    task = ShapesTask()
    objects = [{"shape": "circle", "colour": "red", "row": 1, "col": 2, "scale": 0.8},
               {"shape": "square", "colour": "red", "row": 3, "col": 1, "scale": 0.8},
               {"shape": "circle", "colour": "blue", "row": 4, "col": 4, "scale": 0.8}]
    sample = Sample("x", task.render(objects), "How many red shapes are there?", "2", "shapes", "count_colour",
                    trace={"objects": objects, "program": {"filter": {"colour": "red"}, "matches": [0, 1]}})
    target = get_format("stages").target(sample, task)
    caption = ("3 shapes: a red circle in row 1, column 2; a red square in row 3, column 1; "
               "a blue circle in row 4, column 4.")
    assert target == ("<SUMMARY>I will find the red shapes and count them.</SUMMARY>"
                      f"<CAPTION>{caption}</CAPTION>"
                      "<REASONING>The red shapes: row 1, column 2; row 3, column 1. That is 2.</REASONING>"
                      "<CONCLUSION>2</CONCLUSION>")
    assert get_format("think").target(sample, task).startswith(f"<think>{caption} The red shapes")
    # reasoning=checks: each shape checked in turn with a running count; think opens with the plan
    checks = ShapesTask(reasoning="checks")
    assert get_format("think").target(sample, checks) == (
        f"<think>I will find the red shapes and count them. {caption} Checking each shape for red: "
        "row 1, column 2 red yes, 1; row 3, column 1 red yes, 2; row 4, column 4 blue no. That is 2.</think>"
        "<answer>2</answer>")
    sample.question, sample.family, sample.answer = "Is there a blue square?", "exists", "no"
    sample.trace["program"] = {"filter": {"colour": "blue", "shape": "square"}, "matches": []}
    assert checks.explain(sample).steps == [
        "Checking each shape for blue square: row 1, column 2 red no circle no; row 3, column 1 red no square yes; "
        "row 4, column 4 blue yes circle no.", "That is 0."]
    with pytest.raises(ValueError, match="reasoning"):
        ShapesTask(reasoning="vibes")


def test_clevr_reasoning_walks_every_program_step():
    task = get_task("clevr")
    for seed in range(30):
        sample = task.sample(seed)
        steps = task.explain(sample).steps
        assert len(steps) == sum(node["type"] != "scene" for node in sample.trace["program"])


@pytest.mark.parametrize("completion, answer, ok", [
    ("<think>a\nb\nc</think><answer>3</answer>", "3", True),          # multi-line reasoning (DOTALL)
    ("some text <think>x</think> more <answer> red </answer> trailing", "red", True),
    ("<think>x</think><answer>4", "4", True),                          # closing tag cut off
    ("<think>x</think><answer></answer>", "", False),                  # empty answer is no answer
    ("<think>only thinking", "", False),
    ("3", "", False),                                                  # no tags at all
])
def test_think_parser_tolerates_small_model_output(completion, answer, ok):
    parsed = get_format("think").parse(completion)
    assert (parsed.answer, parsed.ok) == (answer, ok)


@pytest.mark.parametrize("completion, answer, ok", [
    ("<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r</REASONING><CONCLUSION>The answer is 5.</CONCLUSION>", "5", True),
    ("<SUMMARY>s<CAPTION>c<REASONING>r<CONCLUSION>yes", "yes", True),  # no closing tags
    ("<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION>", "", False),          # stopped before concluding
    ("<CONCLUSION></CONCLUSION>", "", False),
])
def test_stages_parser_tolerates_small_model_output(completion, answer, ok):
    parsed = get_format("stages").parse(completion)
    assert (parsed.answer, parsed.ok) == (answer, ok)


def test_prompts_name_the_format():
    assert question_prompt("direct", "How many?") == "How many?"
    assert "<think>" in question_prompt("think", "How many?")
    assert "stages" in question_prompt("stages", "How many?")
