"""GRPO's math as pure tensor functions: group-relative advantages and the clipped surrogate loss
(with the optional KL term), GRPO and Dr. GRPO variants. Tested against hand-computed numbers."""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Each completion's reward relative to its group: ``r - mean``, divided by ``std + eps`` when
    ``scale`` (GRPO; Dr. GRPO does not). The std is the unbiased one, as TRL's. A group whose rewards
    are all equal has advantage exactly 0: it carries no signal.

    Shapes: rewards (N,) with N = groups * group_size, a group's completions contiguous -> (N,).

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0).tolist()
    [1.5, -0.5, -0.5, -0.5]
    >>> group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2, scale=False).tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    r = rewards.float().view(-1, group_size)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    flat = r.max(dim=1, keepdim=True).values == r.min(dim=1, keepdim=True).values
    return adv.masked_fill(flat, 0.0).view(-1)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                epsilon: float = 0.2, beta: float = 0.0, ref_logps: torch.Tensor | None = None,
                length_norm: bool = True, max_tokens: int | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate loss (+ ``beta`` * KL to the reference) and its statistics.

    Per token: ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * kl`` with
    ``ratio = exp(logp - old_logp)`` and the k3 estimate ``kl = exp(ref - logp) - (ref - logp) - 1``.
    ``length_norm`` (GRPO): mean over each completion's tokens, then over completions. Without it
    (Dr. GRPO): the sum over all tokens / (completions * ``max_tokens``).

    Shapes: logps, old_logps, ref_logps, mask (N, C); advantages (N,). Stats (floats):
    ``clip_fraction`` (tokens whose clipped branch is active) and ``kl``, token means under mask.
    """
    mask = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)
    kl = None
    if beta > 0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        delta = ref_logps - logps
        kl = delta.exp() - delta - 1
        per_token = per_token + beta * kl
    if length_norm:
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    else:
        loss = (per_token * mask).sum() / (mask.shape[0] * (max_tokens or mask.shape[1]))
    with torch.no_grad():
        clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
        n = mask.sum().clamp(min=1)
        stats = {"clip_fraction": float((clipped * mask).sum() / n),
                 "kl": float((kl * mask).sum() / n) if kl is not None else 0.0}
    return loss, stats
