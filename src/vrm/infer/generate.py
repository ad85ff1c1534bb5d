"""Batched generation with HF `generate` for any image-text-to-text model vrm loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image


def user_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def prompt_text(processor, question: str) -> str:
    """The chat prompt for one image and one question, ending where the assistant starts."""
    return processor.apply_chat_template(user_messages(question), add_generation_prompt=True)


def stop_ids(model, processor) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    tok = processor.tokenizer
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


def placeholder_ids(model) -> list[int]:
    """Token ids that stand for image (or video) features in a prompt. A completion must never
    hold one: the next forward pass over it would look for features that are not there."""
    cfg = model.config
    ids = {getattr(cfg, k, None) for k in ("image_token_index", "image_token_id", "video_token_id")}
    return sorted(i for i in ids if isinstance(i, int))


@dataclass
class Completion:
    """One generated completion: its text, how many tokens it took, and why it ended."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens or max_time)


@torch.inference_mode()
def generate_completions(
    model,
    processor,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
    prefixes: Sequence[str] | None = None,
    extra_stops: Sequence[int] = (),
    **generate_kwargs,
) -> list[Completion]:
    """Answer each (image, question) pair; ``num_return_sequences`` completions per pair, in order.

    Prompts are left-padded into one batch; special tokens the formats use (``<think>``...) are
    kept in the text, only padding and the stop token are dropped. ``prefixes`` continue each reply
    from text already written (the prefix is not part of the result); ``extra_stops`` are token ids
    that end a completion besides end-of-turn (kept in the text). Extra keyword arguments
    (``streamer``, ``stopping_criteria``, ``max_time``, ``logits_processor`` ...) go to HF ``generate``.
    """
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        prompts = [prompt_text(processor, q) + (prefixes[i] if prefixes else "") for i, q in enumerate(questions)]
        inputs = processor(images=list(images), text=prompts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    inputs = inputs.to(model.device)
    stops = stop_ids(model, processor)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    generate_kwargs.setdefault("suppress_tokens", placeholder_ids(model))
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=None,
        top_k=None,
        num_return_sequences=num_return_sequences,
        eos_token_id=stops + [t for t in extra_stops if t not in stops],
        pad_token_id=pad,
        **generate_kwargs,
    )
    prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
    results = []
    for row, ids in enumerate(out[:, inputs["input_ids"].shape[1]:].tolist()):
        cut = next((i for i, t in enumerate(ids) if t in stops or t in extra_stops), None)
        kept = [t for t in ids[:None if cut is None else cut + (ids[cut] in extra_stops)] if t != tok.pad_token_id]
        results.append(Completion(tok.decode(kept, skip_special_tokens=False).strip(),
                                  int(prompt_lengths[row // num_return_sequences]), len(kept),
                                  "length" if cut is None else "stop"))
    return results


def generate(model, processor, images: Sequence[Image.Image], questions: Sequence[str], **kwargs) -> list[str]:
    """The texts of `generate_completions` (same arguments)."""
    return [c.text for c in generate_completions(model, processor, images, questions, **kwargs)]
