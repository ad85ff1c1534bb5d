"""Search at inference time: spend more compute on a question to answer it better.

Strategies, by name (`get_strategy`):

- ``greedy``: one completion, the most likely token each step.
- ``sample`` (or ``sample:T``): one completion sampled at temperature T.
- ``best_of:N``: N sampled completions; the scorer picks one.
- ``sentence_beam:N``: N candidate next sentences (up to ``.``, ``!``, ``?``, a newline or a
  closing tag); the scorer's pick is appended and the next sentence searched, until the end.
- ``stage_beam:N`` (LLaVA-CoT): for each stage of the ``stages`` format, the stage's opening tag is
  forced, N candidates are sampled, each stopped at the stage's closing tag, and the scorer's pick
  becomes the prefix of the next stage.
- ``...:N+greedy`` (any of the three above): the first of the N candidates is the greedy one, so
  the search can keep what greedy decoding would write.

All of them run on `vrm.infer.decode`: the prefix of a step (image, prompt and everything chosen
so far) is encoded once per question, its KV cache is forked for the N candidates, the candidates
of all questions are sampled as one batch, and the winner's tokens are appended to the prefix in
one forward. Sampling is seeded per question (``seed`` and the sample id, or the prompt), so a
question's candidates do not depend on the batch it is in (up to floating-point ties).

`run_search` answers a batch of queries and returns the completions with the work done (`Stats`).
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from vrm import VrmError
from vrm.formats import get_format
from vrm.formats.structured import STAGES
from vrm.infer.decode import Candidate, Prefix, Stats, decode, extend, prefill, single_token
from vrm.infer.generate import stop_ids
from vrm.infer.scorers import Choice, Query, Scorer, get_scorer

DEFAULT_TEMPERATURE = 0.7


@dataclass
class Search:
    """What a strategy needs while it runs: model, processor, scorer, format, budget, work counters."""

    model: object
    processor: object
    scorer: Scorer
    format: str
    max_new_tokens: int
    stats: Stats = field(default_factory=Stats)

    def seeds(self, queries: Sequence[Query], seed: int, step: int, n: int,
              greedy_first: bool = False) -> list[int | None]:
        """n sampling seeds per query for search step ``step``, a function of the query alone; with
        ``greedy_first`` each query's first is None (`decode` decodes that row greedily)."""
        out = []
        for q in queries:
            key = q.sample.id if q.sample is not None else q.prompt
            rng = random.Random(f"{seed}|{key}|{step}")
            seeds = [rng.getrandbits(63) for _ in range(n)]
            out += [None] + seeds[1:] if greedy_first else seeds
        return out

    def pick(self, choices: list[Choice]) -> list[int]:
        """The scorer's winners; a single candidate wins without asking the scorer."""
        self.stats.repeats += sum(len(c.candidates) - len({x.text for x in c.candidates}) for c in choices)
        if all(len(c.candidates) == 1 for c in choices):
            return [0] * len(choices)
        return self.scorer.pick(self.model, self.processor, choices, self.stats)

    def prefill(self, queries: Sequence[Query], forced: str = "") -> Prefix:
        return prefill(self.model, self.processor, [q.image for q in queries], [q.prompt for q in queries],
                       [forced] * len(queries), self.stats)

    def decode(self, prefix: Prefix, max_new_tokens: int, stops=(), temperature: float = 0.0,
               seeds: Sequence[int] | None = None, distinct: float = 0.0, group: int = 1) -> list[Candidate]:
        return decode(self.model, self.processor, prefix, max_new_tokens, stops, temperature, seeds, self.stats,
                      distinct=distinct, group=group)

    def extend(self, prefix: Prefix, ids: Sequence[Sequence[int]]) -> Prefix:
        pad = self.processor.tokenizer.pad_token_id
        return extend(self.model, prefix, ids, 0 if pad is None else pad, self.stats)

    def encode(self, text: str) -> list[int]:
        return self.processor.tokenizer.encode(text, add_special_tokens=False)


@dataclass
class Greedy:
    """One completion, argmax at every step (the same tokens as HF ``generate`` greedy)."""

    name: str = "greedy"

    def run(self, s: Search, queries: Sequence[Query]) -> list[str]:
        return [c.text.strip() for c in s.decode(s.prefill(queries), s.max_new_tokens)]


@dataclass
class Sampling:
    """One completion sampled at ``temperature``."""

    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    name: str = "sample"

    def run(self, s: Search, queries: Sequence[Query]) -> list[str]:
        seeds = s.seeds(queries, self.seed, 0, 1)
        return [c.text.strip() for c in s.decode(s.prefill(queries), s.max_new_tokens, (), self.temperature, seeds)]


@dataclass
class BestOf:
    """N completions sampled from one shared prefix; the scorer picks one."""

    n: int
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    greedy_first: bool = False  # the first candidate is the greedy one (`Search.seeds`)
    distinct: float = 0.0  # > 0: candidates branch apart where the model hesitates (`decode`)
    name: str = "best_of"

    def run(self, s: Search, queries: Sequence[Query]) -> list[str]:
        n = self.n
        cands = s.decode(s.prefill(queries).expand(n), s.max_new_tokens, (), self.temperature,
                         s.seeds(queries, self.seed, 0, n, self.greedy_first), self.distinct, n)
        choices = [Choice(q, "answer", "", cands[b * n:(b + 1) * n], format=s.format) for b, q in enumerate(queries)]
        return [c.completion(w).strip() for c, w in zip(choices, s.pick(choices))]


SENTENCE_ENDS = (".", "!", "?", "\n")
FINAL_TAGS = ("</CONCLUSION>", "</answer>")


@functools.lru_cache(maxsize=4)
def sentence_end_ids(processor) -> frozenset[int]:
    """Tokens that end a sentence: their text ends with . ! ? or a newline, or they are a closing tag."""
    tok = processor.tokenizer
    texts = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=False)
    ends = {i for i, t in enumerate(texts) if t.rstrip(" ").endswith(SENTENCE_ENDS)}
    tags = [f"</{t}>" for t in STAGES] + ["</think>", "</answer>"]
    return frozenset(ends | {i for t in tags if (i := single_token(processor, t)) is not None})


@dataclass
class SentenceBeam:
    """Sentence by sentence: N candidate next sentences, the scorer's pick appended, until the model
    ends the answer (its end token or a final closing tag) or the token budget runs out."""

    n: int
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    greedy_first: bool = False
    distinct: float = 0.0
    sentence_tokens: int = 64
    name: str = "sentence_beam"

    def run(self, s: Search, queries: Sequence[Query]) -> list[str]:
        ends = sentence_end_ids(s.processor)
        eos = set(stop_ids(s.model, s.processor))
        final = {i for t in FINAL_TAGS if (i := single_token(s.processor, t)) is not None}
        texts, used = [""] * len(queries), [0] * len(queries)
        active = list(range(len(queries)))
        prefix, step = s.prefill(queries), 0
        while active:
            budget = min(self.sentence_tokens, min(s.max_new_tokens - used[b] for b in active))
            cands = s.decode(prefix.expand(self.n), budget, ends, self.temperature,
                             s.seeds([queries[b] for b in active], self.seed, step, self.n, self.greedy_first),
                             self.distinct, self.n)
            for c in cands:  # a sentence keeps its end (but not the model's end token)
                if c.stop is not None and c.stop not in eos:
                    c.text += s.processor.tokenizer.decode([c.stop], skip_special_tokens=False)
            choices = [Choice(queries[b], "sentence", texts[b], cands[k * self.n:(k + 1) * self.n], format=s.format)
                       for k, b in enumerate(active)]
            keep, grow = [], []
            for k, (b, c, w) in enumerate(zip(active, choices, s.pick(choices))):
                win = c.candidates[w]
                texts[b] = c.completion(w)
                ids = win.ids + ([win.stop] if win.stop is not None and win.stop not in eos else [])
                used[b] += len(ids)
                if win.stop not in eos | final and used[b] < s.max_new_tokens:
                    keep.append(k)
                grow.append(ids)
            prefix = s.extend(prefix, grow).select(keep) if keep else prefix
            active, step = [active[k] for k in keep], step + 1
        return [t.strip() for t in texts]


@dataclass
class StageBeam:
    """LLaVA-CoT's stage-level beam search over SUMMARY, CAPTION, REASONING, CONCLUSION.

    Each stage may take up to ``stage_tokens`` tokens (default: what is left of the answer's budget).
    """

    n: int
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    greedy_first: bool = False
    distinct: float = 0.0
    stage_tokens: int | None = None
    name: str = "stage_beam"

    def run(self, s: Search, queries: Sequence[Query]) -> list[str]:
        tags = {f"</{st}>": single_token(s.processor, f"</{st}>") for st in STAGES}
        if None in tags.values():
            missing = [t for t, i in tags.items() if i is None]
            raise VrmError(f"stage_beam stops at closing tags that are single tokens; this tokenizer splits {missing}")
        texts = [f"<{STAGES[0]}>"] * len(queries)
        used = [1] * len(queries)
        prefix = s.prefill(queries, texts[0])
        for k, stage in enumerate(STAGES):
            budget = max(1, min(self.stage_tokens or s.max_new_tokens, s.max_new_tokens - max(used)))
            close = f"</{stage}>"
            cands = s.decode(prefix.expand(self.n), budget, [tags[close]], self.temperature,
                             s.seeds(queries, self.seed, k, self.n, self.greedy_first), self.distinct, self.n)
            choices = [Choice(q, stage, texts[b], cands[b * self.n:(b + 1) * self.n], close, s.format)
                       for b, q in enumerate(queries)]
            forced = close + (f"<{STAGES[k + 1]}>" if k + 1 < len(STAGES) else "")
            grow = []
            for b, (c, w) in enumerate(zip(choices, s.pick(choices))):
                texts[b] = c.prefix + c.candidates[w].text + forced
                grow.append(c.candidates[w].ids + s.encode(forced))
                used[b] += len(grow[-1])
            if k + 1 < len(STAGES):
                prefix = s.extend(prefix, grow)
        return [t.strip() for t in texts]


STRATEGIES = ("greedy", "sample[:T]", "best_of:N", "sentence_beam:N", "stage_beam:N")  # N[+greedy][+distinct]
DISTINCT_MASS = 0.1  # `+distinct`: a candidate branches from an earlier one where other tokens hold this much


def get_strategy(spec: str, temperature: float = DEFAULT_TEMPERATURE, seed: int = 0, distinct: float = DISTINCT_MASS):
    """A strategy by name: ``greedy``, ``sample`` / ``sample:T``, ``best_of:N``, ``sentence_beam:N``, ``stage_beam:N``;
    ``temperature`` is what the sampled ones sample at (``sample:T`` names its own). After N, ``+greedy``
    makes the first candidate the greedy one and ``+distinct`` keeps candidates from repeating each
    other where the model gives another token at least ``distinct`` of its probability (`decode`)."""
    if hasattr(spec, "run"):
        return spec
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise VrmError(f"temperature {temperature!r}: it must be a number > 0 (0.7 by default; greedy takes none)")
    name, _, arg = str(spec).partition(":")
    beams = {"best_of": BestOf, "sentence_beam": SentenceBeam, "stage_beam": StageBeam}
    if name == "greedy" and not arg:
        return Greedy()
    if name == "sample":
        try:
            t = float(arg) if arg else temperature
        except ValueError:
            t = -1.0
        if not t > 0:
            raise VrmError(f"strategy {spec!r}: the temperature must be a number > 0, e.g. sample:0.7")
        return Sampling(t, seed)
    if name in beams:
        count, *extras = arg.split("+")
        if not count.isdigit() or int(count) < 1 or not set(extras) <= {"greedy", "distinct"}:
            raise VrmError(f"strategy {spec!r}: give the number of candidates, e.g. {name}:4 "
                           f"(or {name}:4+greedy: the first candidate greedy, the rest sampled; "
                           f"+distinct: no candidate repeats another where the model hesitates)")
        if "distinct" in extras and not 0 < distinct < 1:
            raise VrmError(f"distinct {distinct!r}: the probability at which candidates branch must lie in (0, 1)")
        return beams[name](int(count), temperature, seed, greedy_first="greedy" in extras,
                           distinct=distinct if "distinct" in extras else 0.0)
    raise VrmError(f"unknown search strategy {spec!r}; known strategies: {', '.join(STRATEGIES)}")


@dataclass
class SearchResult:
    """Completions (one per query, in order) and the work it took."""

    completions: list[str]
    stats: Stats


def run_search(model, processor, queries: Sequence[Query], strategy="greedy", scorer: str | Callable | Scorer = "likelihood",
               format: str = "direct", max_new_tokens: int | None = None, max_rows: int = 64) -> SearchResult:
    """Answer ``queries`` with a strategy and a scorer (names or objects, see `get_strategy` / `get_scorer`).

    Queries are processed in chunks of at most ``max_rows`` candidate rows (questions x N).
    """
    strategy, scorer, fmt = get_strategy(strategy), get_scorer(scorer), get_format(format)
    if isinstance(strategy, StageBeam) and fmt.name != "stages":
        raise VrmError(f"stage_beam writes the stages format; use format 'stages', not {fmt.name!r}")
    s = Search(model, processor, scorer, fmt.name, max_new_tokens or fmt.max_new_tokens)
    per_chunk = max(1, max_rows // getattr(strategy, "n", 1))
    t0 = time.perf_counter()
    completions: list[str] = []
    for start in range(0, len(queries), per_chunk):
        completions += strategy.run(s, list(queries[start:start + per_chunk]))
    s.stats.seconds = time.perf_counter() - t0
    return SearchResult(completions, s.stats)
