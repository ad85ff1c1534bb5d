"""`direct`: the answer alone. `caption`: a dense description of the image from its trace,
the target of the alignment stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from vrm.tasks.base import Sample, Task

CAPTION_PROMPT = "Describe the image."


@dataclass
class Parsed:
    """A completion read back: the final answer, the stages found, and whether parsing worked."""

    answer: str
    stages: dict[str, str] = field(default_factory=dict)
    ok: bool = True


class DirectFormat:
    name = "direct"
    structured = False  # True: the completion holds reasoning stages around the answer
    text_only = True  # False: targets hold image codes (the visual format), not tokenizer-training text
    max_new_tokens = 32  # enough for any target of the format

    def prompt(self, sample: Sample) -> str:
        return sample.question

    def target(self, sample: Sample, task: Task | None = None) -> str:
        return sample.answer

    def corpus_texts(self, sample: Sample, task: Task) -> list[str]:
        """The text of ``sample`` in this format that a tokenizer should learn to encode."""
        return [self.prompt(sample), self.target(sample, task)]

    def parse(self, completion: str) -> Parsed:
        """The whole completion is the answer.

        >>> DirectFormat().parse("  3 ").answer
        '3'
        """
        answer = completion.strip()
        return Parsed(answer, {}, bool(answer))

    def score(self, sample: Sample, task: Task, answer: str) -> float:
        """1.0 when the parsed answer is right, by the task's own verifier."""
        return task.score(sample, answer)


class CaptionFormat(DirectFormat):
    name = "caption"
    max_new_tokens = 160

    def prompt(self, sample: Sample) -> str:
        return CAPTION_PROMPT

    def target(self, sample: Sample, task: Task | None = None) -> str:
        if task is None:
            raise ValueError("the caption format needs the sample's task to describe its trace")
        return task.caption(sample)

    def score(self, sample: Sample, task: Task, answer: str) -> float:
        """Exact match with the trace's caption (every object, attribute and cell right)."""
        return float(" ".join(answer.split()) == task.caption(sample))
