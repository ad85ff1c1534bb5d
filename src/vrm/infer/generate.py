"""Batched generation with HF `generate` for any image-text-to-text model vrm loads."""

from __future__ import annotations

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


@torch.inference_mode()
def generate(
    model,
    processor,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
) -> list[str]:
    """Answer each (image, question) pair; returns the decoded completions, stop token removed.

    Prompts are left-padded into one batch; special tokens the formats use (``<think>``...) are
    kept in the text, only padding and the stop token are dropped.
    """
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        prompts = [prompt_text(processor, q) for q in questions]
        inputs = processor(images=list(images), text=prompts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    inputs = inputs.to(model.device)
    stops = stop_ids(model, processor)
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=None,
        top_k=None,
        num_return_sequences=num_return_sequences,
        eos_token_id=stops,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stops[0],
    )
    new = out[:, inputs["input_ids"].shape[1]:].tolist()
    texts = []
    for ids in new:
        cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        ids = [t for t in ids[:cut] if t != tok.pad_token_id]
        texts.append(tok.decode(ids, skip_special_tokens=False).strip())
    return texts
