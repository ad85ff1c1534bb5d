"""Lookahead: score an unfinished answer by what it leads to.

A reward written for whole answers cannot tell two captions apart (`vrm.tasks.clevr.consistency`
checks the steps against the caption, and a caption alone has no steps), so a stage beam with it
keeps the first caption (the greedy one with ``+greedy``) and searches only the steps after it.
``lookahead:<scorer>`` completes each candidate greedily to the end of the answer (one batch for
all candidates of all questions:
the image, the prompt and the answer so far with the candidate encoded in one forward, then
decoded) and lets the inner scorer score that completed answer, the way tree searches estimate
a partial solution by a rollout (e.g. Math-Shepherd's completions of each step, Wang et al. 2024).

Candidates that already end the answer (a ``CONCLUSION``, a whole answer) are scored as they are.
The inner scorer must give each candidate a number (``reward:...``, ``likelihood``, ``verifier``).
The cost shows in the search's counters: the rollouts' tokens, forwards and image passes.
"""

from __future__ import annotations

from typing import Sequence

from vrm import VrmError
from vrm.formats import get_format
from vrm.formats.structured import STAGES
from vrm.infer.decode import Candidate, Stats, decode, prefill
from vrm.infer.scorers import Choice, PointwiseScorer


def finished(choice: Choice) -> bool:
    """Whether the candidates of ``choice`` end the answer (nothing is left to roll out)."""
    return choice.kind in ("answer", STAGES[-1])


class LookaheadScorer:
    """The inner scorer's pick among candidates each completed greedily to the end of the answer."""

    def __init__(self, inner: PointwiseScorer, max_new_tokens: int | None = None):
        if not isinstance(inner, PointwiseScorer):
            raise VrmError(f"lookahead needs a scorer that scores each candidate (reward:..., likelihood, "
                           f"verifier), not {getattr(inner, 'name', inner)!r}")
        self.inner, self.max_new_tokens = inner, max_new_tokens
        self.name = f"lookahead:{inner.name}"

    def rollouts(self, model, processor, choices: Sequence[Choice], stats: Stats) -> list[Choice]:
        """Per choice, a choice of whole answers: candidate i becomes the answer so far, the candidate,
        and its greedy continuation."""
        rows = [(k, i) for k, c in enumerate(choices) if not finished(c) for i in range(len(c.candidates))]
        texts = [choices[k].completion(i) for k, i in rows]
        tail: dict[tuple[int, int], Candidate] = {}
        if rows:
            tok = processor.tokenizer
            used = max(len(tok.encode(t, add_special_tokens=False)) for t in texts)
            budget = self.max_new_tokens or max(get_format(choices[k].format).max_new_tokens for k, _ in rows)
            prefix = prefill(model, processor, [choices[k].query.image for k, _ in rows],
                             [choices[k].query.prompt for k, _ in rows], texts, stats)
            tail = dict(zip(rows, decode(model, processor, prefix, max(1, budget - used), stats=stats)))
        out = []
        for k, c in enumerate(choices):
            whole = []
            for i, cand in enumerate(c.candidates):
                rest = tail.get((k, i))
                text = c.completion(i) + (rest.text if rest else "")
                ids, lps = cand.ids + (rest.ids if rest else []), cand.logprobs + (rest.logprobs if rest else [])
                whole.append(Candidate(ids, lps, rest.stop if rest else cand.stop, text))
            out.append(Choice(c.query, "answer", "", whole, format=c.format))
        return out

    def pick(self, model, processor, choices: Sequence[Choice], stats: Stats) -> list[int]:
        return self.inner.pick(model, processor, self.rollouts(model, processor, choices, stats), stats)
