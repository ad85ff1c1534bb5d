"""Token-level losses for the text stages (align, sft): focal loss and per-word weights over the
target tokens, beside HF's plain cross-entropy."""

from __future__ import annotations

import torch

from vrm import VrmError
from vrm.train.data import IGNORE


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float,
               vocab_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal loss (Lin et al. 2017) over next-token predictions: the mean over target tokens of
    ``(1 - p)^gamma * -log p``, with p the probability of the right token; also the plain
    cross-entropy. Tokens the model already gets right (most of a caption) fade, so a few hard
    decisions ("yes" / "no" in a check) carry more of the gradient.

    ``vocab_weights`` (one per vocabulary entry) makes it a weighted mean: a target token ``t``
    counts ``vocab_weights[t]`` times. gamma 0 without weights is the plain cross-entropy."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE
    targets = labels[keep]
    logp = torch.log_softmax(logits[keep].float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    per_token = -(1 - logp.exp()) ** gamma * logp if gamma else -logp
    w = vocab_weights.to(logp.device)[targets] if vocab_weights is not None else torch.ones_like(logp)
    return (w * per_token).sum() / w.sum(), -logp.mean()


def vocab_weights(tokenizer, token_weights: dict[str, float]) -> torch.Tensor:
    """A loss weight per vocabulary entry: ``token_weights[text]`` for each token that decodes to
    ``text`` (surrounding spaces ignored: " yes" and "yes" alike), 1 for the rest. A text that is
    no single token of this vocabulary is an error (it would silently weigh nothing)."""
    weights = torch.ones(len(tokenizer))
    found = set()
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if text in token_weights:
            weights[token_id] = float(token_weights[text])
            found.add(text)
    missing = sorted(set(token_weights) - found)
    if missing:
        raise VrmError(f"token_weights: {missing} is not a single token of this model's vocabulary")
    return weights
