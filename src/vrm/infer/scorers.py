"""Scorers: how a search picks the best of N candidate continuations.

A scorer has ``pick(model, processor, choices, stats) -> list[int]``: for each `Choice` (the
candidates of one question at one step) the index of the winner. By name (`get_scorer`):

- ``judge``: the model itself compares two candidates with a stage-specific judging prompt and
  the next-token probabilities of "1" and "2" (LLaVA-CoT's self-judge, read from the logits rather
  than sampled); a knockout over N-1 comparisons, each round of all questions in one forward.
- ``likelihood``: the candidate's mean token log-probability under the model.
- ``reward:<pkg.module:function>`` (or ``reward:path/file.py:function``, or a Python callable):
  any ``f(sample_or_None, completion) -> float``, completion being the answer so far with the
  candidate in it.
- ``consensus``: minimum-Bayes-risk selection: the candidate that agrees most with the others of
  its choice (mean agreement; a stage or sentence by word-overlap F1, a conclusion or whole answer
  by its parsed answer, so over whole answers it is self-consistency's majority vote, Wang et al. 2022).
- ``verifier``: an oracle for research, never a default: scores a candidate against the sample's
  ground truth (token-overlap F1 with the true stage, exact answer match for the conclusion).
- ``lookahead:<scorer>``: each unfinished candidate completed greedily to the end of the answer,
  the inner scorer's pick among those (`vrm.infer.lookahead`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from PIL import Image

from vrm import VrmError
from vrm.answers import answers_match
from vrm.formats import get_format
from vrm.formats.structured import STAGES, StagesFormat
from vrm.infer.decode import Candidate, Stats, extend, prefill_texts, single_token
from vrm.infer.generate import prompt_text
from vrm.tasks.base import Sample, Task


@dataclass
class Query:
    """One question to answer: the image, the question prompt (as the format asks it) and, when
    known, the sample and its task (for the reward and verifier scorers)."""

    image: Image.Image
    prompt: str
    sample: Sample | None = None
    task: Task | None = None


@dataclass
class Choice:
    """The candidates of one query at one search step.

    Attributes:
        query: the query being answered.
        kind: a stage name (``SUMMARY`` ... ``CONCLUSION``), ``sentence`` or ``answer`` (whole completions).
        prefix: the answer text before the candidates (stage tags included).
        candidates: the candidates; ``candidates[i].text`` is the new text of candidate i.
        close: text that follows every candidate (a stage's closing tag).
        format: the name of the format the answer is written in.
    """

    query: Query
    kind: str
    prefix: str
    candidates: list[Candidate]
    close: str = ""
    format: str = "direct"

    def completion(self, i: int) -> str:
        """The answer so far with candidate i in it."""
        return self.prefix + self.candidates[i].text + self.close


class Scorer(Protocol):
    name: str

    def pick(self, model, processor, choices: Sequence[Choice], stats: Stats) -> list[int]: ...


class PointwiseScorer:
    """A scorer that gives each candidate a number; the first highest wins."""

    name = "pointwise"

    def score(self, choice: Choice, i: int) -> float:
        raise NotImplementedError

    def pick(self, model, processor, choices: Sequence[Choice], stats: Stats) -> list[int]:
        picks = []
        for c in choices:
            scores = [self.score(c, i) for i in range(len(c.candidates))]
            picks.append(max(range(len(scores)), key=scores.__getitem__))
        return picks


class LikelihoodScorer(PointwiseScorer):
    """Mean log-probability of the candidate's tokens (its stop token included), temperature 1."""

    name = "likelihood"

    def score(self, choice: Choice, i: int) -> float:
        lps = choice.candidates[i].logprobs
        return sum(lps) / len(lps) if lps else float("-inf")


class RewardScorer(PointwiseScorer):
    """Any reward function ``f(sample_or_None, completion) -> float``."""

    name = "reward"

    def __init__(self, fn: Callable[[Sample | None, str], float]):
        self.fn = fn

    def score(self, choice: Choice, i: int) -> float:
        return float(self.fn(choice.query.sample, choice.completion(i)))


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(prediction: str, truth: str) -> float:
    """F1 of the word overlap of two texts (SQuAD-style, case-insensitive).

    >>> token_f1("a red cube", "a red cube"), token_f1("a red cube", "a blue cube"), token_f1("", "x")
    (1.0, 0.6666666666666666, 0.0)
    """
    p, t = words(prediction), words(truth)
    if not p or not t:
        return float(p == t)
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def token_precision(prediction: str, truth: str) -> float:
    """Share of the prediction's words that the truth has (a partial answer is not penalised for being partial)."""
    p, t = words(prediction), words(truth)
    return sum((Counter(p) & Counter(t)).values()) / len(p) if p else 0.0


def parsed_answer(choice: Choice, i: int) -> str | None:
    """The answer candidate i's completion gives in the choice's format (None when it cannot be read)."""
    fmt = StagesFormat() if choice.kind in STAGES else get_format(choice.format)
    parsed = fmt.parse(choice.completion(i))
    return parsed.answer if parsed.ok else None


class VerifierScorer(PointwiseScorer):
    """An oracle: checks a candidate against the sample's ground truth (needs samples with traces).

    A stage: token F1 with the true stage (`StagesFormat.stage_target`); the CONCLUSION: 1.0 when
    the answer is right by the task's verifier. A sentence: the share of its words found in the
    format's target. A whole answer: 1.0 when right, plus 0.1 x token F1 with the target.
    """

    name = "verifier"

    def score(self, choice: Choice, i: int) -> float:
        q = choice.query
        if q.sample is None or q.task is None:
            raise VrmError("the verifier scorer needs samples with their ground truth (use it in eval, not on bare questions)")
        text = choice.candidates[i].text
        if choice.kind == "CONCLUSION":
            answer = parsed_answer(choice, i)
            return float(answer is not None and q.task.score(q.sample, answer) >= 1.0)
        if choice.kind in STAGES:
            return token_f1(text, StagesFormat().stage_target(q.sample, q.task, choice.kind))
        fmt = get_format(choice.format)
        target = fmt.target(q.sample, q.task)
        if choice.kind == "sentence":
            return token_precision(text, target)
        parsed = fmt.parse(choice.completion(i))
        right = float(parsed.ok and fmt.score(q.sample, q.task, parsed.answer) >= 1.0)
        return right + 0.1 * token_f1(choice.completion(i), target)


class ConsensusScorer:
    """Minimum Bayes risk: each candidate's mean agreement with the other candidates of its choice.

    A CONCLUSION or a whole answer agrees with another when both parse to matching answers
    (`vrm.answers.answers_match`; an unreadable one agrees with nothing), with word-overlap F1 of
    the texts breaking ties between answers equally common; any other stage or a sentence agrees by
    word-overlap F1. The candidate closest to all the others wins: sampling's idiosyncratic slips
    are outvoted, needing neither a judge nor the ground truth.
    """

    name = "consensus"

    def pick(self, model, processor, choices: Sequence[Choice], stats: Stats) -> list[int]:
        return [self.medoid(c) for c in choices]

    @staticmethod
    def medoid(choice: Choice) -> int:
        texts = [c.text for c in choice.candidates]
        n = len(texts)
        if n == 1:
            return 0
        by_answer = choice.kind in ("CONCLUSION", "answer")
        answers = [parsed_answer(choice, i) for i in range(n)] if by_answer else [None] * n

        def agree(i: int, j: int) -> float:
            f1 = token_f1(texts[i], texts[j])
            if not by_answer:
                return f1
            same = answers[i] is not None and answers[j] is not None and answers_match(answers[i], answers[j])
            return float(same) + 0.01 * f1

        scores = [sum(agree(i, j) for j in range(n) if j != i) / (n - 1) for i in range(n)]
        return max(range(n), key=scores.__getitem__)


def knockout(sizes: Sequence[int], prefer: Callable[[list[tuple[int, int, int]]], list[float]]) -> list[int]:
    """Single-elimination tournaments, one per choice, run round by round for all choices at once.

    Each round pairs the survivors in order (0 vs 1, 2 vs 3, ...; an odd one out waits);
    ``prefer(pairs)`` gets every comparison ``(choice, i, j)`` of the round and returns, for each,
    the probability that candidate i beats candidate j (i wins at >= 0.5). N candidates take N-1
    comparisons in ceil(log2 N) rounds. Returns the winner of each choice.

    >>> knockout([4], lambda pairs: [float(i > j) for _, i, j in pairs])  # the highest index wins
    [3]
    """
    alive = [list(range(n)) for n in sizes]
    while any(len(a) > 1 for a in alive):
        pairs = [(c, a[k], a[k + 1]) for c, a in enumerate(alive) for k in range(0, len(a) - 1, 2)]
        probs = prefer(pairs)
        wins: dict[tuple[int, int], int] = {}
        for (c, i, j), p in zip(pairs, probs):
            wins[(c, i)] = i if p >= 0.5 else j
        alive = [[wins[(c, a[k])] for k in range(0, len(a) - 1, 2)] + (a[-1:] if len(a) % 2 else [])
                 for c, a in enumerate(alive)]
    return [a[0] for a in alive]


JUDGE_ASKS = {
    "SUMMARY": "Which summary better outlines how to solve the question, without solving it yet?",
    "CAPTION": "Which caption describes what matters in the image for the question more completely and correctly?",
    "REASONING": "Which reasoning is more correct and leads step by step to the answer?",
    "CONCLUSION": "Which conclusion answers the question better and follows from the reasoning?",
    "sentence": "Which is the better next sentence of the answer?",
    "answer": "Which response answers the question better?",
}


def judge_head(choice: Choice) -> str:
    """The part of the judging prompt that all comparisons of a choice share: what to judge, the
    question and the earlier stages (or sentences) as context."""
    q = choice.query
    question = q.sample.question if q.sample is not None else q.prompt
    if choice.kind in STAGES:
        earlier = StagesFormat().parse(choice.prefix).stages
        hint = " ".join(f"{k.lower()}: {v}" for k, v in earlier.items() if k != choice.kind and v)
    else:
        hint = choice.prefix.strip() if choice.kind == "sentence" else ""
    context = f"\nEarlier: {hint}" if hint else ""
    return f"You are a judge. {JUDGE_ASKS.get(choice.kind, JUDGE_ASKS['answer'])}\nQuestion: {question}{context}"


def judge_tail(choice: Choice, i: int, j: int) -> str:
    """The rest of the judging prompt: candidate i as response 1, candidate j as response 2."""
    if choice.kind in STAGES or choice.kind == "sentence":
        a, b = choice.candidates[i].text.strip(), choice.candidates[j].text.strip()
    else:
        a, b = choice.completion(i).strip(), choice.completion(j).strip()
    return f"\nResponse 1: {a}\nResponse 2: {b}\nAnswer 1 or 2."


def judge_prompt(choice: Choice, i: int, j: int) -> str:
    """The whole judging prompt (a user turn, with the image) comparing candidates i and j."""
    return judge_head(choice) + judge_tail(choice, i, j)


class JudgeScorer:
    """The model judges pairs of candidates (LLaVA-CoT): P(i beats j) = softmax over the next-token
    logits of "1" and "2" after `judge_prompt`, in a `knockout`.

    Per `pick`, the shared head of every choice's judging prompt (image included) is encoded once
    for all questions; each knockout round then forks it for its comparisons and appends their
    tails in one forward.
    """

    name = "judge"
    MARK = "\ue000"  # stands for the tail while the chat template is applied to the head

    @torch.inference_mode()
    def preferences(self, model, processor, choices: Sequence[Choice], stats: Stats):
        """A function ``prefer(pairs) -> [P(i beats j)]`` over comparisons ``(choice, i, j)``, for `knockout`."""
        one, two = single_token(processor, "1"), single_token(processor, "2")
        if one is None or two is None:
            raise VrmError("the judge scorer needs '1' and '2' to be single tokens in the model's tokenizer")
        tok = processor.tokenizer
        heads, ends = [], []
        for c in choices:
            head, end = prompt_text(processor, judge_head(c) + self.MARK).split(self.MARK)
            heads.append(head)
            ends.append(end)
        image_token = getattr(processor, "image_token", "<image>")
        if any(image_token not in head for head in heads):
            # The chat template puts the image after the text (vrm's tiny models do): no shared head
            # holds it, so each round encodes its whole judging prompts, still as one batch.
            @torch.inference_mode()
            def prefer_whole(pairs: list[tuple[int, int, int]]) -> list[float]:
                texts = [prompt_text(processor, judge_prompt(choices[c], i, j)) for c, i, j in pairs]
                logits = prefill_texts(model, processor, [choices[c].query.image for c, _, _ in pairs], texts, stats).logits
                stats.comparisons += len(pairs)
                return torch.sigmoid(logits[:, one] - logits[:, two]).tolist()

            return prefer_whole
        cached = prefill_texts(model, processor, [c.query.image for c in choices], heads, stats)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0

        @torch.inference_mode()
        def prefer(pairs: list[tuple[int, int, int]]) -> list[float]:
            rows = cached.select([c for c, _, _ in pairs])
            tails = [tok.encode(judge_tail(choices[c], i, j) + ends[c], add_special_tokens=False) for c, i, j in pairs]
            logits = extend(model, rows, tails, pad, stats).logits
            stats.comparisons += len(pairs)
            return torch.sigmoid(logits[:, one] - logits[:, two]).tolist()

        return prefer

    def pick(self, model, processor, choices: Sequence[Choice], stats: Stats) -> list[int]:
        return knockout([len(c.candidates) for c in choices], self.preferences(model, processor, choices, stats))


def load_function(spec: str) -> Callable:
    """``pkg.module:function`` or ``path/to/file.py:function`` -> the function."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise VrmError(f"reward {spec!r}: expected pkg.module:function or path/file.py:function")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise VrmError(f"reward {spec!r}: no file {where}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as e:
        raise VrmError(f"reward {spec!r}: cannot import {where} ({e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise VrmError(f"reward {spec!r}: {where} has no function {name!r}")
    return fn


SCORERS = ("judge", "likelihood", "consensus", "reward:<pkg.module:function>", "verifier", "lookahead:<scorer>")


def get_scorer(spec: str | Callable | Scorer) -> Scorer:
    """A scorer by name (see the module docstring), a scorer object as is, or a callable as a reward."""
    if hasattr(spec, "pick"):
        return spec
    if callable(spec):
        return RewardScorer(spec)
    name, _, arg = str(spec).partition(":")
    if name == "judge" and not arg:
        return JudgeScorer()
    if name == "likelihood" and not arg:
        return LikelihoodScorer()
    if name == "consensus" and not arg:
        return ConsensusScorer()
    if name == "verifier" and not arg:
        return VerifierScorer()
    if name == "lookahead":
        from vrm.infer.lookahead import LookaheadScorer  # it builds on this module's scorers

        if not arg:
            raise VrmError("the lookahead scorer needs a scorer to score the completed answers: lookahead:<scorer>")
        return LookaheadScorer(get_scorer(arg))
    if name == "reward":
        if not arg:
            raise VrmError("the reward scorer needs a function: reward:pkg.module:function")
        return RewardScorer(load_function(arg))
    raise VrmError(f"unknown scorer {spec!r}; known scorers: {', '.join(SCORERS)}")
