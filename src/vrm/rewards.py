"""Rewards for RL with verifiable answers: plain functions over a batch of completions.

Every reward has one signature, ``fn(samples, completions, tasks, fmt) -> RewardResult``: the
samples (one per completion, so a prompt sampled G times appears G times), the completion texts,
the task of each sample, and the format the completions were asked in (a name or a format object).

- `correctness`: 1 when the format's parsed answer is right by the task's own scorer
  (`vrm.answers.answers_match`: math_verify with the gold answer first). A missing or empty
  answer scores 0, never a substring match.
- `format_reward`: how closely the completion follows the format's tagged layout; half the credit
  for the tags present in order, half for the exact layout (see `format_reward`).
- `combined`: the weighted sum a recipe sets, e.g. ``{"correctness": 1.0, "format": 0.5}``.

A gold answer that cannot be checked (empty once normalised, or numeric and unreadable by
math_verify) earns no correctness point: the sample is reported in ``data_errors`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from math_verify import parse as math_parse

from vrm import VrmError
from vrm.answers import normalize_answer
from vrm.formats import get_format
from vrm.formats.structured import STAGES
from vrm.tasks import Sample, Task

_NUMERIC = re.compile(r"-?\d+(\.\d+)?")
LAYOUTS: dict[str, tuple[str, ...]] = {"think": ("think", "answer"), "stages": STAGES}


@dataclass
class RewardResult:
    """Rewards of a batch: ``total`` per completion, each named part per completion, and the
    samples whose gold answer could not be checked (``"<sample id>: <why>"``, once per sample)."""

    total: list[float]
    parts: dict[str, list[float]] = field(default_factory=dict)
    data_errors: list[str] = field(default_factory=list)


RewardFn = Callable[[Sequence[Sample], Sequence[str], Sequence[Task], object], RewardResult]


def _fmt(fmt):
    return get_format(fmt) if isinstance(fmt, str) else fmt


def gold_problem(gold: str) -> str | None:
    """Why a gold answer cannot be checked, or None when it can.

    >>> gold_problem("3"), gold_problem("red cube"), gold_problem("?!")
    (None, None, 'gold answer is empty once normalised')
    """
    ref = normalize_answer(gold)
    if not ref:
        return "gold answer is empty once normalised"
    if _NUMERIC.fullmatch(ref) and not math_parse(ref):
        return f"numeric gold answer {gold!r} cannot be parsed by math_verify"
    return None


def correctness(samples: Sequence[Sample], completions: Sequence[str], tasks: Sequence[Task], fmt) -> RewardResult:
    """1.0 when the answer parsed from the completion is right by the sample's task, else 0.0.

    >>> from vrm.tasks import get_task
    >>> task = get_task("shapes")
    >>> s = Sample("x", None, "How many?", "3", "shapes")
    >>> correctness([s] * 3, ["<think>1+2</think><answer>three</answer>", "<think>3</think><answer></answer>", "3"],
    ...             [task] * 3, "think").total
    [1.0, 0.0, 0.0]
    """
    fmt = _fmt(fmt)
    values: list[float] = []
    errors: dict[str, str] = {}
    for sample, completion, task in zip(samples, completions, tasks, strict=True):
        problem = gold_problem(sample.answer)
        parsed = fmt.parse(completion)
        if problem is None and parsed.ok:
            try:
                values.append(float(task.score(sample, parsed.answer)))
                continue
            except ValueError as e:  # a scorer refusing the gold answer: a data error, not a point
                problem = str(e)
        if problem is not None:
            errors.setdefault(sample.id, f"{sample.id}: {problem}")
        values.append(0.0)
    return RewardResult(values, {"correctness": values}, list(errors.values()))


def layout_score(completion: str, sections: Sequence[str]) -> float:
    """How closely ``completion`` is ``<s1>..</s1><s2>..</s2>...`` for ``sections``, in [0, 1].

    Half the credit: the share of the opening and closing tags found in order (a greedy left-to-right
    scan). The other half: the whole completion is exactly the layout (whitespace allowed between
    sections, across lines), every section non-empty and free of stray layout tags.

    >>> layout_score("<think>two\\nred</think>\\n<answer>2</answer>", ("think", "answer"))
    1.0
    >>> layout_score("<think>two</think>2", ("think", "answer")), layout_score("2", ("think", "answer"))
    (0.25, 0.0)
    >>> layout_score("<think>two</think><answer></answer>", ("think", "answer"))
    0.5
    """
    tags = [t for s in sections for t in (f"<{s}>", f"</{s}>")]
    found, pos = 0, 0
    for tag in tags:
        i = completion.find(tag, pos)
        if i >= 0:
            found, pos = found + 1, i + len(tag)
    pattern = r"\s*".join(f"<{s}>(.*?)</{s}>" for s in sections)
    m = re.fullmatch(rf"\s*{pattern}\s*", completion, flags=re.DOTALL)
    exact = bool(m) and all(g.strip() and not any(t in g for t in tags) for g in m.groups())
    return 0.5 * found / len(tags) + 0.5 * exact


def format_reward(samples: Sequence[Sample], completions: Sequence[str], tasks: Sequence[Task], fmt) -> RewardResult:
    """`layout_score` of each completion under a tagged format (`think`, `stages`); under a format
    without tags (`direct`), 1.0 when the completion parses to a non-empty answer.

    >>> format_reward([None] * 2, ["<think>a</think><answer>b</answer>", "b"], [None] * 2, "think").total
    [1.0, 0.0]
    """
    fmt = _fmt(fmt)
    sections = LAYOUTS.get(fmt.name)
    if sections is None:
        values = [float(fmt.parse(c).ok) for c in completions]
    else:
        values = [layout_score(c, sections) for c in completions]
    return RewardResult(values, {"format": values})


REWARDS: dict[str, RewardFn] = {"correctness": correctness, "format": format_reward}


def check_weights(weights: dict[str, float]) -> None:
    """Raise `VrmError` for unknown reward names or no reward at all."""
    unknown = set(weights) - set(REWARDS)
    if unknown or not weights:
        raise VrmError(f"rewards must name some of {sorted(REWARDS)}, got {sorted(weights) or 'none'}")


def combined(weights: dict[str, float], samples: Sequence[Sample], completions: Sequence[str],
             tasks: Sequence[Task], fmt) -> RewardResult:
    """The weighted sum of the named rewards, with every part kept (unweighted) for logging.

    >>> r = combined({"correctness": 1.0, "format": 0.5}, [Sample("x", None, "?", "2", "t")],
    ...              ["<think>1+1</think><answer>2</answer>"], [type("T", (), {"score": lambda self, s, a: 1.0})()],
    ...              "think")
    >>> r.total, r.parts
    ([1.5], {'correctness': [1.0], 'format': [1.0]})
    """
    check_weights(weights)
    parts, errors = {}, []
    for name in weights:
        result = REWARDS[name](samples, completions, tasks, fmt)
        parts[name] = result.total
        errors += result.data_errors
    total = [sum(weights[name] * parts[name][i] for name in parts) for i in range(len(completions))]
    return RewardResult(total, parts, errors)
