"""Decoding over a shared KV cache: the engine under every search strategy.

A `Prefix` is a batch of sequences already run through the model (image, prompt and any text
forced or chosen so far): their KV cache, attention mask, next rope positions and next-token
logits. Search encodes a prefix once (`prefill`, the only call that sees ``pixel_values``),
forks it into N candidate rows (`Prefix.expand`, a copy of the cache, no model call), samples
all candidates in one batch (`decode`) and appends the winner's tokens to the prefix (`extend`,
one forward for the whole batch).

Rows may hold *holes*: positions with mask 0 (left padding, a finished row's idle steps, the
padding of an `extend` block). Rope positions count real tokens only, as HF ``generate`` does
for left padding, so a hole changes nothing a row attends to. This assumes 1-D token positions
(LLaVA and Llama-style language models); models with multimodal rope (Qwen2-VL's M-RoPE) are not
supported by this engine.

Sampling uses one seeded ``torch.Generator`` per row and the Gumbel-max trick, so a candidate's
tokens depend on its seed only, not on the batch it was generated in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from vrm.infer.generate import prompt_text, stop_ids


@dataclass
class Stats:
    """Work done by a search, for benchmarks.

    Attributes:
        tokens: tokens sampled, over all candidates (stop tokens included).
        forwards: model forward passes (prefill, extend, decode steps, judge rounds).
        encoded: non-padding tokens run through the model in multi-token forwards (prefill,
            extend, judge prompts): the cost that a shared cache saves.
        images: images run through the vision tower.
        comparisons: pairwise judge comparisons.
        repeats: candidates that repeat an earlier candidate of the same choice word for word
            (samples spent on nothing new).
        seconds: wall time.
    """

    tokens: int = 0
    forwards: int = 0
    encoded: int = 0
    images: int = 0
    comparisons: int = 0
    repeats: int = 0
    seconds: float = 0.0

    def add(self, other: "Stats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Candidate:
    """One sampled continuation.

    Attributes:
        ids: the generated token ids, the stop token excluded.
        logprobs: log p (temperature 1) of each generated token, the stop token's last when there is one.
        stop: the stop token that ended it, or None when it reached its token budget.
        text: ``ids`` decoded, special tokens kept.
    """

    ids: list[int]
    logprobs: list[float]
    stop: int | None
    text: str = ""


@dataclass
class Prefix:
    """A batch of R encoded sequences, ready to be continued.

    Attributes:
        cache: the KV cache (a transformers ``Cache``), batch R.
        mask: (R, T) 1 for a real token, 0 for padding or a hole.
        positions: (R,) rope position of each row's next token.
        logits: (R, V) float32 next-token logits.
    """

    cache: object
    mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    def select(self, index: Sequence[int] | torch.Tensor) -> "Prefix":
        """The rows ``index`` (repeats allowed), as a new prefix; this one is left untouched."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.mask.device)
        cache = _fork(self.cache)
        cache.batch_select_indices(index)
        return Prefix(cache, self.mask[index], self.positions[index], self.logits[index])

    def expand(self, n: int) -> "Prefix":
        """Each row repeated ``n`` times in place (row r becomes rows r*n ... r*n+n-1), as a new prefix."""
        return self.select(torch.arange(self.rows, device=self.mask.device).repeat_interleave(n))


def _fork(cache):
    """A copy of a dynamic cache that shares its tensors; safe because cache layers replace their
    tensors on update (``torch.cat``) and on batch selection instead of writing into them."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    return new


def _forward(model, prefix_cache, mask: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor,
             feed: torch.Tensor, stats: Stats, **inputs):
    """Run ``ids`` (R, L) with mask ``feed`` (R, L) after the cached tokens; returns
    (cache, full mask, next positions, last-position logits)."""
    full = torch.cat([mask, feed], dim=1) if mask is not None else feed
    pos = positions[:, None] + feed.long().cumsum(1) - 1
    pos = pos.clamp(min=0)
    out = model(input_ids=ids, attention_mask=full, position_ids=pos, past_key_values=prefix_cache,
                use_cache=True, logits_to_keep=1, **inputs)
    stats.forwards += 1
    if ids.shape[1] > 1:
        stats.encoded += int(feed.sum())
    return out.past_key_values, full, positions + feed.long().sum(1), out.logits[:, -1].float()


@torch.inference_mode()
def prefill(model, processor, images: Sequence[Image.Image], prompts: Sequence[str],
            assistant_prefixes: Sequence[str] | None = None, stats: Stats | None = None) -> Prefix:
    """Encode (image, question prompt, start of the answer) for each row, left-padded, in one forward.

    ``assistant_prefixes`` is text the answer is forced to start with (e.g. ``"<SUMMARY>"``).
    """
    texts = [prompt_text(processor, q) + (a or "") for q, a in zip(prompts, assistant_prefixes or [""] * len(prompts))]
    return prefill_texts(model, processor, images, texts, stats)


@torch.inference_mode()
def prefill_texts(model, processor, images: Sequence[Image.Image], texts: Sequence[str],
                  stats: Stats | None = None) -> Prefix:
    """`prefill` of raw texts, chat template already applied (one image placeholder each)."""
    stats = stats if stats is not None else Stats()
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        inputs = processor(images=list(images), text=texts, padding=True, return_tensors="pt").to(model.device)
    finally:
        tok.padding_side = side
    ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    zero = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    cache, mask, positions, logits = _forward(model, None, None, zero, ids, mask, stats, **inputs)
    stats.images += len(images)
    return Prefix(cache, mask, positions, logits)


@torch.inference_mode()
def extend(model, prefix: Prefix, ids: Sequence[Sequence[int]], pad_id: int = 0, stats: Stats | None = None) -> Prefix:
    """Append ``ids[r]`` to row r (rows may get different lengths, or none) in one forward.

    The block is left-padded with holes, so every row's last position is real; rows given no
    tokens keep their logits. Mutates and returns ``prefix``.
    """
    stats = stats if stats is not None else Stats()
    width = max((len(x) for x in ids), default=0)
    if width == 0:
        return prefix
    device = prefix.mask.device
    block = torch.full((prefix.rows, width), pad_id, dtype=torch.long, device=device)
    feed = torch.zeros((prefix.rows, width), dtype=prefix.mask.dtype, device=device)
    for r, x in enumerate(ids):
        if x:
            block[r, width - len(x):] = torch.tensor(list(x), device=device)
            feed[r, width - len(x):] = 1
    cache, mask, positions, logits = _forward(model, prefix.cache, prefix.mask, prefix.positions, block, feed, stats)
    fed = feed.sum(1) > 0
    prefix.cache, prefix.mask, prefix.positions = cache, mask, positions
    prefix.logits = torch.where(fed[:, None], logits, prefix.logits)
    return prefix


def _scores(logits: torch.Tensor, temperature: float,
            generators: Sequence[torch.Generator | None] | None) -> torch.Tensor:
    """Next-token scores (R, V) whose argmax is the choice: the logits at temperature 0, else logits / T
    plus Gumbel noise drawn from ``generators[r]`` (a sample of softmax(logits / T)), or the logits
    as they are for a row whose generator is None (its argmax is greedy). Excluding tokens from a
    choice is masking them here."""
    if temperature <= 0:
        return logits
    vocab = logits.shape[-1]
    u = torch.stack([torch.rand(vocab, generator=g) if g is not None else torch.full((vocab,), 0.5)
                     for g in generators]).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(min=1e-20, max=1 - 1e-7)))
    greedy = torch.tensor([g is None for g in generators], device=logits.device)
    return torch.where(greedy[:, None], logits, logits / temperature + gumbel)


def branch(scores: torch.Tensor, logprobs: torch.Tensor, tokens: torch.Tensor, rows: Sequence[int],
           twins: list[int], sampled: Sequence[bool], mass: float) -> torch.Tensor:
    """Distinct candidates: a sampled row that has so far written the same tokens as an earlier row
    (``twins[row]``, the same id for rows written alike) takes none of the tokens those rows take at
    this step, when the model gives the other tokens at least ``mass`` of its probability; it then
    writes something no earlier row wrote. Otherwise it keeps its sample (the rows stay twins where
    the model is sure). Updates ``twins`` for the next step; returns the tokens."""
    taken: dict[int, list[int]] = {}
    ids: dict[tuple[int, int], int] = {}
    tokens = tokens.clone()
    for b, row in enumerate(rows):
        before = taken.setdefault(twins[row], [])
        if sampled[b] and before and int(tokens[b]) in before:
            others = 1.0 - float(logprobs[b, before].exp().sum())
            if others >= mass:
                masked = scores[b].clone()
                masked[before] = float("-inf")
                tokens[b] = masked.argmax()
        before.append(int(tokens[b]))
        twins[row] = ids.setdefault((twins[row], int(tokens[b])), len(ids))
    return tokens


@torch.inference_mode()
def decode(model, processor, prefix: Prefix, max_new_tokens: int, stops: Sequence[int] = (),
           temperature: float = 0.0, seeds: Sequence[int | None] | None = None, stats: Stats | None = None,
           compact: bool = True, distinct: float = 0.0, group: int = 1) -> list[Candidate]:
    """Continue every row of ``prefix`` until a token of ``stops`` (the model's end tokens are always
    stops) or ``max_new_tokens``; one candidate per row. Sampling takes one seed per row; a row
    whose seed is None is decoded greedily among the sampled ones.

    With ``distinct`` > 0 the rows come in groups of ``group`` forked from one prefix (rows
    g*group ... g*group+group-1, as `Prefix.expand` makes them), and a sampled row does not repeat
    an earlier row of its group where the model gives another token at least ``distinct`` of its
    probability (`branch`): the first place the model hesitates, each candidate takes a path no
    earlier one took, instead of resampling the same text.

    The prefix is consumed (its cache grows). Rows that finish become holes; with ``compact``,
    once half of the live rows have finished they are dropped from the batch.
    """
    stats = stats if stats is not None else Stats()
    tok = processor.tokenizer
    stop_set = set(stops) | set(stop_ids(model, processor))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    if temperature > 0 and (seeds is None or len(seeds) != prefix.rows):
        raise ValueError("sampling needs one seed per row")
    generators = ([None if s is None else torch.Generator().manual_seed(int(s)) for s in seeds]
                  if temperature > 0 else None)
    out = [Candidate([], [], None) for _ in range(prefix.rows)]
    live = list(range(prefix.rows))  # original row of each batch row
    done = [False] * prefix.rows
    twins = [row // group for row in range(prefix.rows)]
    cache, mask, positions, logits = prefix.cache, prefix.mask, prefix.positions, prefix.logits
    for step in range(max_new_tokens):
        scores, logprobs = _scores(logits, temperature, generators), torch.log_softmax(logits, -1)
        tokens = scores.argmax(-1)
        if distinct > 0 and temperature > 0:
            sampled = [g is not None and not done[row] for g, row in zip(generators, live)]
            tokens = branch(scores, logprobs, tokens, live, twins, sampled, distinct)
        logp = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
        feed = torch.ones(len(live), dtype=mask.dtype, device=mask.device)
        for b, (row, t, lp) in enumerate(zip(live, tokens.tolist(), logp)):
            if done[row]:
                feed[b] = 0
                continue
            stats.tokens += 1
            out[row].logprobs.append(lp)
            if t in stop_set:
                out[row].stop, done[row] = t, True
                feed[b] = 0
            else:
                out[row].ids.append(t)
        alive = [b for b, row in enumerate(live) if not done[row]]
        if not alive or step == max_new_tokens - 1:
            break
        if compact and len(alive) <= len(live) // 2:
            index = torch.tensor(alive, device=mask.device)
            cache = _fork(cache)
            cache.batch_select_indices(index)
            mask, positions, tokens, feed = mask[index], positions[index], tokens[index], feed[index]
            live = [live[b] for b in alive]
            if generators is not None:
                generators = [generators[b] for b in alive]
        tokens = torch.where(feed.bool(), tokens, torch.full_like(tokens, pad))
        cache, mask, positions, logits = _forward(model, cache, mask, positions, tokens[:, None], feed[:, None], stats)
    for c in out:
        c.text = tok.decode(c.ids, skip_special_tokens=False)
    return out


def single_token(processor, text: str) -> int | None:
    """The id of ``text`` when the tokenizer encodes it as exactly one token, else None."""
    ids = processor.tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None
