"""Reasoning formats: `think` (R1: ``<think>...</think><answer>...</answer>``) and `stages`
(LLaVA-CoT: ``<SUMMARY>``, ``<CAPTION>``, ``<REASONING>``, ``<CONCLUSION>``).

Targets are written from the task's `Explanation` of the sample's trace. Parsers tolerate what a
small model writes (missing closing tags, text around the tags) and return ``ok=False`` with an
empty answer when no answer can be found, never an exception.
"""

from __future__ import annotations

import re

from vrm.formats.direct import DirectFormat, Parsed
from vrm.tasks.base import Sample, Task, explain

THINK_PROMPT = "Think step by step inside <think> </think>, then give the answer inside <answer> </answer>."
STAGES_PROMPT = "Answer in four stages: summary, caption, reasoning, conclusion."
STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")


def tagged(text: str, tag: str, until: tuple[str, ...] = ()) -> str | None:
    """The text inside ``<tag>...</tag>``; with the closing tag missing, up to the next known
    opening tag in ``until`` or the end. None when the opening tag is absent.

    >>> tagged("<a> x </a>", "a"), tagged("<a> x <b>y", "a", ("b",)), tagged("none", "a")
    ('x', 'x', None)
    """
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    body = text[start + len(tag) + 2:]
    stops = [i for t in (tag, *until) if (i := body.find(f"</{tag}>" if t == tag else f"<{t}>")) >= 0]
    return body[: min(stops)].strip() if stops else body.strip()


# Enough for any reasoning target: clevr's checks with coordinates run to 792 tokens (median 286,
# 3% past 640, on 400 samples); a model stops at its end token well before it on other tasks.
BUDGET = 800


class ThinkFormat(DirectFormat):
    name = "think"
    structured = True
    max_new_tokens = BUDGET

    def prompt(self, sample: Sample) -> str:
        return f"{sample.question} {THINK_PROMPT}"

    def target(self, sample: Sample, task: Task | None = None) -> str:
        e = explain(task, sample)
        reasoning = " ".join(p for p in (e.summary if e.plan_first else "", e.caption, *e.steps) if p)
        return f"<think>{reasoning}</think><answer>{sample.answer}</answer>"

    def parse(self, completion: str) -> Parsed:
        """The answer inside ``<answer>``; missing or empty means unparsed (never a free point).

        >>> ThinkFormat().parse("<think>two\\nred</think><answer> 2 </answer>")
        Parsed(answer='2', stages={'think': 'two\\nred', 'answer': '2'}, ok=True)
        >>> ThinkFormat().parse("<think>hm</think><answer></answer>").ok
        False
        """
        think = tagged(completion, "think", ("answer",))
        answer = tagged(completion, "answer") or ""
        stages = {k: v for k, v in (("think", think), ("answer", answer)) if v is not None}
        return Parsed(answer, stages, bool(answer))


class StagesFormat(DirectFormat):
    name = "stages"
    structured = True
    max_new_tokens = BUDGET

    def prompt(self, sample: Sample) -> str:
        return f"{sample.question} {STAGES_PROMPT}"

    def target(self, sample: Sample, task: Task | None = None) -> str:
        e = explain(task, sample)
        parts = (e.summary, e.caption, " ".join(e.steps), sample.answer)
        return "".join(f"<{tag}>{text}</{tag}>" for tag, text in zip(STAGES, parts))

    def stage_target(self, sample: Sample, task: Task | None, stage: str) -> str:
        """The ground truth of one stage (for the verifier scorer and stage-level search)."""
        return tagged(self.target(sample, task), stage) or ""

    def parse(self, completion: str) -> Parsed:
        """Each stage found; the answer is the CONCLUSION (unparsed when it is missing or empty).

        >>> p = StagesFormat().parse("<SUMMARY>plan</SUMMARY><CAPTION>a red cube<REASONING>one</REASONING><CONCLUSION>1")
        >>> p.answer, p.stages["CAPTION"], p.ok
        ('1', 'a red cube', True)
        """
        stages = {}
        for i, tag in enumerate(STAGES):
            text = tagged(completion, tag, STAGES[i + 1:])
            if text is not None:
                stages[tag] = text
        answer = stages.get("CONCLUSION", "")
        answer = re.sub(r"^(?:the answer is)\s*", "", answer, flags=re.IGNORECASE).rstrip(".").strip() or answer
        return Parsed(answer, stages, bool(answer))
