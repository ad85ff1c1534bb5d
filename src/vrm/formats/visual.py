"""`visual`: MVoT's interleaved reasoning. Each step is an action in words followed by an image of
the state after it (a *visual thought*, as image-code tokens between ``<boi>`` and ``<eoi>``); the
last step is the answer::

    <boi><img_3>...<img_9><eoi> Step 1: Go down. <boi>...<eoi> Step 2: Go right. <boi>...<eoi> The answer is B.

The first image is the question's own image, encoded by the image tokenizer and put in the context by
vrm (the model never draws it). Following MVoT, the model learns one step at a time with only the
question's image (through the vision tower) and the latest image (as codes) in its context:
`step_examples` cuts a trajectory into (context, target) pairs, and interleaved decoding
(`vrm.infer.interleaved`) builds the same contexts at inference, so training and decoding agree.
"""

from __future__ import annotations

import re
from typing import Sequence

from vrm.formats.direct import DirectFormat, Parsed
from vrm.tasks.base import Sample, Task
from vrm.tasks.spatial.choices import MOVES, action_phrase

BOI, EOI = "<boi>", "<eoi>"
VISUAL_PROMPT = "Draw the state after each action, then answer."
_CODE = re.compile(r"<img_(\d+)>")
_IMAGE = re.compile(re.escape(BOI) + r"(.*?)(?:" + re.escape(EOI) + r"|$)", re.DOTALL)
_ANSWER = re.compile(r"(?:the\s+)?answer\s+is\b.*", re.IGNORECASE | re.DOTALL)


def code_token(code: int) -> str:
    """The token of image code ``code``.

    >>> code_token(7)
    '<img_7>'
    """
    return f"<img_{code}>"


def image_text(codes: Sequence[int]) -> str:
    """An image as text: its codes between the image markers.

    >>> image_text([3, 0])
    '<boi><img_3><img_0><eoi>'
    """
    return BOI + "".join(code_token(int(c)) for c in codes) + EOI


def read_images(text: str) -> list[list[int]]:
    """The codes of every image in ``text``, in order (an image cut short keeps the codes it has).

    >>> read_images("<boi><img_1><img_2><eoi> Step 1: Go up. <boi><img_5>")
    [[1, 2], [5]]
    """
    return [[int(c) for c in _CODE.findall(body)] for body in _IMAGE.findall(text)]


def strip_images(text: str) -> str:
    """``text`` with every image replaced by ``[image]``.

    >>> strip_images("<boi><img_1><eoi> Step 1: Go up. <boi><img_5><img_6><eoi> The answer is A.")
    '[image] Step 1: Go up. [image] The answer is A.'
    """
    return _IMAGE.sub("[image]", text)


MAX_STEPS = 40  # step numbers that get a token of their own (`step_words`)
STEP_ACTIONS = ("left", "down", "right", "up", "pickup", "drop", "toggle")  # the spatial tasks' actions
PLAN, DONE = "Remaining:", "Done."  # a step's plan: the actions still to take (`plan_text`)
NEXT = "Next:"  # marks the plan's next action, with ``mark_next`` (`plan_text`)
PLAN_SLOTS = 14  # a plan's fixed length: walks of up to 14 actions (6x6 questions have up to 13)


def step_words() -> list[str]:
    """The pieces of every step line, each to become one token of a visual-thought model
    (`vrm.model.image_codes.add_image_codes`): "Step 1:" ... "Step 40:", each action's phrase and
    the plan's two words (`plan_text`). With them every step line is 3 tokens ("Step 3:", " ",
    "Go down."), so an image and the next one sit a fixed distance apart whichever action lies
    between them and a code is redrawn from the code a fixed number of tokens back; a byte-level
    tokenizer that never saw these words spends 10 to 13 tokens on a line, varying with the action.

    >>> words = step_words()
    >>> words[0], words[MAX_STEPS - 1], words[MAX_STEPS:MAX_STEPS + 2], words[-10:-7], words[-1]
    ('Step 1:', 'Step 40:', ['Go left.', 'Go down.'], ['Toggle.', 'Remaining:', 'Done.'], 'Next: Toggle.')
    """
    return ([step_label(k) for k in range(1, MAX_STEPS + 1)] + [step_phrase(a) for a in STEP_ACTIONS]
            + [PLAN, DONE] + [next_phrase(a) for a in STEP_ACTIONS])


def step_label(k: int) -> str:
    """Step k's label as a step line writes it, one token in a visual-thought model.

    >>> step_label(3)
    'Step 3:'
    """
    return f"Step {k}:"


def step_phrase(action) -> str:
    """An action as a step line and a plan slot write it, one token in a visual-thought model.

    >>> step_phrase(1), step_phrase("toggle")
    ('Go down.', 'Toggle.')
    """
    return f"{action_phrase(action)}."


def next_phrase(action) -> str:
    """A plan slot holding the next action to take, with ``mark_next`` (`plan_text`).

    >>> next_phrase(3), next_phrase("toggle")
    ('Next: Go up.', 'Next: Toggle.')
    """
    return f"{NEXT} {step_phrase(action)}"


def question_words() -> list[str]:
    """The moves as a one-line question lists them (" up", " down", ...), to become one token each in a
    visual-thought model, as a whole word only: a byte-level tokenizer that never saw them spends 1 to
    4 tokens on each, so the k-th action of "Actions: up, right, down." sits nowhere fixed, and with
    one token each item k sits 2 tokens after item k-1, which `plan_text` copies at a fixed distance.

    >>> question_words()
    [' left', ' down', ' right', ' up']
    """
    return [f" {move}" for move in MOVES]


def plan_text(actions: Sequence[int | str], done: int, mark_next: bool = False) -> str:
    """What a step writes after its action line when the MVoT run trains with ``plan``: the question's
    actions in ``PLAN_SLOTS`` fixed slots, right-aligned (the last action in the last slot) and the
    first ``done`` crossed off, empty slots and crossed ones alike ``Done.``. Every piece is one
    token, so each slot copies a fixed distance back: at step 1 the question's list (its last item
    sits a fixed distance before the reply, the others 2 tokens apart), later the previous step's
    plan, with one slot changed, the first one not done, which is also the next action; and the walk
    is over when the last slot is done.

    Finding the next action, the first slot not done, is a search over where the done ones end, and
    the slot moves a step left each step. With ``mark_next`` that slot is written as a token of its
    own (`next_phrase`), so the next action is the one slot of its kind, and each slot of a plan
    follows from two slots of the previous one: the same slot and the one before it.

    >>> plan = plan_text(["up", "right", "down"], 1)
    >>> plan.startswith("Remaining: Done. Done."), plan.count("Done."), plan.endswith("Done. Go right. Go down.")
    (True, 12, True)
    >>> plan_text(["up", "right", "down"], 1, mark_next=True).endswith("Done. Next: Go right. Go down.")
    True
    >>> plan_text(["up"], 1) == plan_text(["up"], 1, mark_next=True) == " ".join([PLAN] + [DONE] * PLAN_SLOTS)
    True
    """
    if len(actions) > PLAN_SLOTS:
        raise ValueError(f"a plan holds {PLAN_SLOTS} actions, the walk has {len(actions)}")
    slots = [DONE] * (PLAN_SLOTS - len(actions)) + [
        DONE if i < done else next_phrase(a) if i == done and mark_next else step_phrase(a)
        for i, a in enumerate(actions)]
    return " ".join([PLAN, *slots])


def without_plan(line: str) -> str:
    """A step line without the plan written after it.

    >>> without_plan("Step 1: Go up. Remaining: Done. Go down."), without_plan("Step 1: Go up.")
    ('Step 1: Go up.', 'Step 1: Go up.')
    """
    return line.split(f" {PLAN}", 1)[0]


def step_lines(sample: Sample, plan: bool = False, mark_next: bool = False) -> list[str]:
    """One line per action the trace takes (a FrozenLake walk that falls stops there); with ``plan``
    each followed by what remains of the question's actions (`plan_text`, its next one marked with
    ``mark_next``).

    >>> s = Sample("x", None, "q", "A", "t", trace={"actions": [1, 2, 0], "states": [[0, 0], [1, 0], [1, 1]]})
    >>> step_lines(s)
    ['Step 1: Go down.', 'Step 2: Go right.']
    >>> line = step_lines(s, plan=True)[1]
    >>> line.replace(" Done.", ""), line.count("Done.")
    ('Step 2: Go right. Remaining: Go left.', 13)
    """
    actions = sample.trace["actions"]
    taken = len(sample.trace["states"]) - 1
    lines = [f"{step_label(i + 1)} {step_phrase(a)}" for i, a in enumerate(actions[:taken])]
    return [f"{line} {plan_text(actions, i + 1, mark_next)}" for i, line in enumerate(lines)] if plan else lines


def answer_line(sample: Sample) -> str:
    return f"The answer is {sample.answer}."


def context(lines: Sequence[str], latest: Sequence[int]) -> str:
    """What the assistant has written before a step, as MVoT keeps it: the step lines so far and
    only the latest image; like earlier images, earlier plans are left out (the latest line keeps
    its plan).

    >>> context([], [4]), context(["Step 1: Go up. Remaining: Go up.", "Step 2: Go up. Remaining: Done."], [2])
    ('<boi><img_4><eoi>', 'Step 1: Go up. Step 2: Go up. Remaining: Done. <boi><img_2><eoi>')
    """
    return " ".join([*(without_plan(line) for line in lines[:-1]), *lines[-1:], image_text(latest)])


def step_example(sample: Sample, k: int, latest: Sequence[int], following: Sequence[int] | None,
                 plan: bool = False, mark_next: bool = False) -> tuple[str, str]:
    """MVoT's one-step example k: the context after k actions (the step lines so far and the image
    of state k, ``latest``) and the target: the next action line and the image of state k+1
    (``following``), or, after the last action (k = number of steps), the answer; with ``plan``
    every step line carries the plan (`plan_text`; ``mark_next`` marks its next action). A target
    that ends the reply ends with the end-of-turn token, added by the trainer."""
    lines = step_lines(sample, plan, mark_next)
    if not 0 <= k <= len(lines):
        raise ValueError(f"{sample.id}: step {k} of {len(lines)}")
    target = f" {lines[k]} {image_text(following)}" if k < len(lines) else f" {answer_line(sample)}"
    return context(lines[:k], latest), target


def step_examples(sample: Sample, codes: Sequence[Sequence[int]], plan: bool = False,
                  mark_next: bool = False) -> list[tuple[str, str]]:
    """A whole trajectory cut into MVoT's one-step examples (`step_example` for every k);
    ``codes[k]`` are the image codes of the state after k actions (``codes[0]``: the question's image).

    >>> step_examples(Sample("x", None, "q", "C", "t", trace={"actions": [3], "states": [[1, 0], [0, 0]]}), [[1], [2]])
    [('<boi><img_1><eoi>', ' Step 1: Go up. <boi><img_2><eoi>'), ('Step 1: Go up. <boi><img_2><eoi>', ' The answer is C.')]
    """
    steps = len(step_lines(sample))
    if len(codes) != steps + 1:
        raise ValueError(f"{sample.id}: {steps} steps need {steps + 1} images, got {len(codes)}")
    return [step_example(sample, k, codes[k], codes[k + 1] if k < steps else None, plan, mark_next)
            for k in range(steps + 1)]


class VisualFormat(DirectFormat):
    """MVoT's interleaved text and image steps. Generation needs interleaved decoding with an image
    tokenizer (`vrm.infer.interleaved`); ``target`` needs the images' codes, so it takes them."""

    name = "visual"
    structured = True
    text_only = False  # its targets hold image codes: not tokenizer-training text
    max_new_tokens = 96  # per step: an action line and one image of up to 64 codes

    def prompt(self, sample: Sample) -> str:
        return f"{sample.question} {VISUAL_PROMPT}"

    def target(self, sample: Sample, task: Task | None = None, codes: Sequence[Sequence[int]] | None = None) -> str:
        """The whole interleaved reply (every image), from the codes of every state."""
        if codes is None:
            raise ValueError("the visual format's target needs the image codes of every state "
                             "(an image tokenizer: vrm train vq)")
        lines = step_lines(sample)
        parts = [image_text(codes[0])]
        for line, image in zip(lines, codes[1:]):
            parts += [line, image_text(image)]
        return " ".join([*parts, answer_line(sample)])

    def corpus_texts(self, sample: Sample, task: Task) -> list[str]:
        """The prompt and the reply's words without its images (image codes are added tokens), for
        samples whose trace walks actions; nothing for the others. A tokenizer that has seen the
        step lines encodes every one in the same number of tokens ("Step 3: Go down." and "Step 3:
        Go up." alike), so an image and the next one sit a fixed distance apart.

        >>> s = Sample("x", None, "q", "C", "t", trace={"actions": [3], "states": [[1, 0], [0, 0]]})
        >>> VisualFormat().corpus_texts(s, None)
        ['q Draw the state after each action, then answer.', 'Step 1: Go up. The answer is C.']
        """
        trace = sample.trace or {}
        if "actions" not in trace or "states" not in trace:
            return []
        return [self.prompt(sample), " ".join([*step_lines(sample), answer_line(sample)])]

    def parse(self, completion: str) -> Parsed:
        """The answer is what follows the last image ("The answer is B."); stages hold the steps in
        words (images as ``[image]``) and the number of images. No answer sentence: unparsed.

        >>> p = VisualFormat().parse("<boi><img_1><eoi> Step 1: Go up. <boi><img_2><eoi> The answer is B.")
        >>> p.answer, p.stages["steps"], p.ok
        ('The answer is B.', '[image] Step 1: Go up. [image] The answer is B.', True)
        >>> VisualFormat().parse("<boi><img_1><eoi> Step 1: Go up. <boi><img_2>").ok
        False
        """
        tail = completion.rsplit(EOI, 1)[-1] if EOI in completion else completion
        if BOI in tail:
            tail = ""
        found = _ANSWER.search(tail)
        answer = found.group(0).strip() if found else ""
        stages = {"steps": strip_images(completion).strip(), "images": str(len(read_images(completion)))}
        return Parsed(answer, stages, bool(answer))
