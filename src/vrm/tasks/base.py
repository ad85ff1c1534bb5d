"""The two core objects: a `Sample` (one question about one image, with its ground truth)
and the `Task` protocol that makes samples from seeds and scores answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image


@dataclass
class Sample:
    """One visual question with everything needed to check it.

    Attributes:
        id: stable identifier, e.g. ``"shapes-9000001"``.
        image: the RGB image the question is about.
        question: the question text.
        answer: the ground-truth answer, as text.
        task: the registered name of the task that made it.
        family: the question family (``count_all``, ``query_colour`` ...), for per-family metrics.
        choices: the options of a multiple-choice question, if any.
        trace: the ground truth behind the answer, in plain JSON (scene, program steps, states).
            Formats turn it into reasoning targets; `vrm data export` writes it as ``meta``.
    """

    id: str
    image: Image.Image
    question: str
    answer: str
    task: str
    family: str = "all"
    choices: list[str] | None = None
    trace: dict[str, Any] = field(default_factory=dict)


@dataclass
class Explanation:
    """The ground truth behind an answer, in words, for reasoning formats.

    Attributes:
        summary: what the question asks and how it will be answered (LLaVA-CoT's SUMMARY).
        caption: what the image shows that the question needs (CAPTION).
        steps: the reasoning, one sentence per step of the trace's program (REASONING).
        plan_first: the think format opens with the summary too (before the caption), so the
            reasoning restates what the question asks next to where it is used.
    """

    summary: str
    caption: str
    steps: list[str] = field(default_factory=list)
    plan_first: bool = False


class Task(Protocol):
    """A source of samples with a verifier.

    ``sample(seed)`` must be a pure function of the seed (and the task's parameters): the same seed
    gives an identical sample, on any machine.
    """

    name: str
    families: tuple[str, ...]

    def sample(self, seed: int) -> Sample: ...

    def score(self, sample: Sample, answer: str) -> float: ...

    def caption(self, sample: Sample) -> str: ...

    def explain(self, sample: Sample) -> Explanation: ...


def object_words(task, sample: Sample) -> list[tuple[float, float, str]] | None:
    """Where each object of a sample's image is and what it is: ``(x, y, words)``, the centre as
    fractions of the image's width and height (0-1, y down) and the caption's words for it
    ("red square"). None for tasks that do not know where their objects are."""
    if hasattr(task, "object_words"):
        return task.object_words(sample)
    return None


def explain(task, sample: Sample) -> Explanation:
    """The task's explanation of a sample; tasks without one (plain JSONL rows) get a minimal one."""
    if hasattr(task, "explain"):
        return task.explain(sample)
    return Explanation("I will look at the image and answer the question.", "", [])
