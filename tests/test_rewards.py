import pytest

import vrm.answers
from vrm import VrmError
from vrm.rewards import REWARDS, check_weights, combined, correctness, format_reward, layout_score
from vrm.tasks import Sample, get_task

SHAPES = get_task("shapes")


def sample(answer: str, sid: str = "s-1") -> Sample:
    return Sample(sid, None, "How many squares?", answer, "shapes")


def score(fn, answer: str, completions: list[str], fmt: str = "think"):
    return fn([sample(answer)] * len(completions), completions, [SHAPES] * len(completions), fmt)


def test_correctness_reads_the_formats_answer_and_the_tasks_scorer():
    r = score(correctness, "3", ["<think>one, two, three</think><answer>three</answer>",
                                 "<think>two</think><answer>2</answer>", "<think>3</think>"])
    assert r.total == [1.0, 0.0, 0.0] and r.parts == {"correctness": r.total} and r.data_errors == []
    stages = "<SUMMARY>count</SUMMARY><CAPTION>3 squares</CAPTION><REASONING>3</REASONING><CONCLUSION>3</CONCLUSION>"
    assert score(correctness, "3", [stages], "stages").total == [1.0]
    assert score(correctness, "yes", ["Yes"], "direct").total == [1.0]


def test_math_verify_compares_gold_first(monkeypatch):
    """math_verify's verify(gold, prediction) is not symmetric: the reward must pass the gold first."""
    calls = []
    real = vrm.answers.verify

    def spy(gold, prediction, *args, **kwargs):
        calls.append((gold, prediction))
        return real(gold, prediction, *args, **kwargs)

    monkeypatch.setattr(vrm.answers, "verify", spy)
    assert score(correctness, "4", ["<think>x</think><answer>4.0</answer>"]).total == [1.0]
    (gold, prediction), = calls
    assert gold == vrm.answers.parse("4") and prediction == vrm.answers.parse("4.0")


@pytest.mark.parametrize("completion", [
    "<think>the count is 2</think><answer></answer>",  # empty answer
    "<think>the count is 2</think><answer>   </answer>",  # blank answer
    "<think>the count is 2</think>",  # no answer tag
    "2 <think></think>",  # the gold as loose text only
])
def test_empty_or_missing_answer_scores_zero(completion):
    assert "2" in completion  # a substring matcher would pay a full point for every one of these
    r = score(correctness, "2", [completion])
    assert r.total == [0.0] and r.data_errors == []


def test_format_regex_spans_lines():
    multi = "<think>I see a red square\nand a blue circle.\n\nThat is 2.</think>\n<answer>2</answer>\n"
    assert score(format_reward, "2", [multi]).total == [1.0]
    stages = "<SUMMARY>a\nb</SUMMARY>\n<CAPTION>c\n</CAPTION><REASONING>\nd</REASONING>\n<CONCLUSION>2</CONCLUSION>"
    assert score(format_reward, "2", [stages], "stages").total == [1.0]


def test_format_partial_credit_per_tag_in_order():
    sections = ("think", "answer")
    assert layout_score("<think>a</think><answer>b</answer>", sections) == 1.0
    assert layout_score("<think>a</think><answer>b</answer> and more", sections) == 0.5  # all tags, not exact
    assert layout_score("<think>a</think><answer>b", sections) == 0.375  # 3 of 4 tags
    assert layout_score("<answer>b</answer><think>a</think>", sections) == 0.25  # out of order: greedy scan
    assert layout_score("<think><think>a</think><answer>b</answer>", sections) == 0.5  # stray tag inside
    assert layout_score("no tags at all", sections) == 0.0
    assert layout_score("<SUMMARY>s</SUMMARY>", ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")) == 0.125
    assert score(format_reward, "2", ["2", ""], "direct").total == [1.0, 0.0]


@pytest.mark.parametrize("gold", ["???", "", "the"])
def test_unparseable_gold_is_a_data_error_not_a_point(gold):
    completions = [f"<think>x</think><answer>{gold}</answer>", "<think>x</think><answer>???</answer>",
                   "<think>x</think><answer>the</answer>"]
    r = score(correctness, gold, completions)
    assert r.total == [0.0, 0.0, 0.0]
    assert len(r.data_errors) == 1 and r.data_errors[0].startswith("s-1: ")  # once per sample, not per completion
    both = combined({"correctness": 1.0, "format": 0.5}, [sample(gold)] * 3, completions, [SHAPES] * 3, "think")
    assert both.parts["correctness"] == [0.0] * 3 and len(both.data_errors) == 1
    assert both.total == [0.5 * f for f in both.parts["format"]]  # layout still counts, the answer does not


def test_numeric_gold_math_verify_cannot_read_is_a_data_error(monkeypatch):
    monkeypatch.setattr(vrm.answers, "parse", lambda text: [])  # the scorer now raises on the gold
    r = score(correctness, "7", ["<think>x</think><answer>seven</answer>", "<think>x</think><answer>7</answer>"])
    assert r.total == [0.0, 0.0] and len(r.data_errors) == 1


def test_combined_weights_and_names():
    completions = ["<think>x</think><answer>3</answer>", "<think>x</think>3", "3"]
    r = combined({"correctness": 1.0, "format": 0.5}, [sample("3")] * 3, completions, [SHAPES] * 3, "think")
    assert r.parts == {"correctness": [1.0, 0.0, 0.0], "format": [1.0, 0.25, 0.0]}
    assert r.total == [1.5, 0.125, 0.0]
    assert set(REWARDS) == {"correctness", "format"}
    with pytest.raises(VrmError, match="rewards must name"):
        check_weights({"corectness": 1.0})
    with pytest.raises(VrmError, match="rewards must name"):
        check_weights({})
