"""Interleaved decoding for visual thoughts (MVoT): text steps, each followed by an image the model
draws as image-code tokens, fed back as the context of the next step, until the answer.

Between ``<boi>`` and ``<eoi>`` exactly the image's token count of codes is emitted, and codes
nowhere else (`ImageSpanConstraint`, a logits processor, so greedy, sampling and any HF ``generate``
option keep the rule). Each step is one ``generate`` call whose context is built as training built it
(`vrm.formats.visual.context`: the step lines so far and only the latest image, and the latest
plan when the model writes one), so the model sees at inference what it saw in training. The drawn
codes are decoded to pixels by the image tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from vrm.formats.visual import BOI, context, image_text, read_images
from vrm.infer.generate import generate_completions
from vrm.model.image_codes import code_ids, marker_ids

LINE_TOKENS = 48  # room for one action line and its plan (or the answer) besides the image


class ImageSpanConstraint(LogitsProcessor):
    """Inside an image (after ``<boi>``, fewer than ``tokens_per_image`` codes): codes only; once the
    image is full: ``<eoi>`` only; outside images: anything but codes and ``<eoi>``.

    Works on the whole row (prompt included): a prompt that ends after an image leaves the model
    outside one, so no prompt length is needed and left padding does not matter.
    """

    def __init__(self, first_code: int, n_codes: int, boi: int, eoi: int, tokens_per_image: int):
        self.codes = slice(first_code, first_code + n_codes)
        self.boi, self.eoi, self.size = boi, eoi, tokens_per_image

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        pos = torch.arange(1, length + 1, device=input_ids.device)
        last_boi = ((input_ids == self.boi) * pos).amax(dim=1) - 1  # -1: none
        last_eoi = ((input_ids == self.eoi) * pos).amax(dim=1) - 1
        inside = last_boi > last_eoi
        full = inside & (length - 1 - last_boi >= self.size)
        filling = inside & ~full
        out = torch.full_like(scores, float("-inf"))
        is_code = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
        is_code[self.codes] = True
        out[filling] = torch.where(is_code, scores[filling], float("-inf"))
        out[full, self.eoi] = 0.0
        outside = ~inside
        text_only = scores[outside].masked_fill(is_code, float("-inf"))
        text_only[:, self.eoi] = float("-inf")
        out[outside] = text_only
        return out


@dataclass
class VisualReply:
    """One interleaved reply: the whole text (every image as codes), the codes of each visual thought
    the model drew, those thoughts decoded to pixels, the step line written before each ("Step 1: Go
    down."), and why it ended ("stop": it answered,
    "length": a step ran out of tokens, "steps": ``max_steps`` reached)."""

    text: str
    thoughts: list[list[int]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    finish_reason: str = "stop"


@torch.inference_mode()
def generate_visual(model, processor, image_tokenizer, images: Sequence[Image.Image], questions: Sequence[str],
                    max_steps: int = 16, do_sample: bool = False, temperature: float = 1.0,
                    logits_processor: Sequence[LogitsProcessor] = (), **generate_kwargs) -> list[VisualReply]:
    """Answer each (image, question) pair with visual thoughts; all pairs step together as a batch.

    ``max_steps`` steps, then one more in which to answer: a pair still drawing then ends with "steps". Extra
    ``logits_processor`` entries run before the image constraint, so it always has the last word."""
    tok = processor.tokenizer
    first, n_codes = code_ids(tok)
    boi, eoi = marker_ids(tok)
    size = image_tokenizer.config.tokens_per_image
    constraint = LogitsProcessorList([*logits_processor, ImageSpanConstraint(first, n_codes, boi, eoi, size)])
    start = image_tokenizer.encode(list(images)).tolist()
    lines: list[list[str]] = [[] for _ in images]
    latest = [list(c) for c in start]
    parts = [[image_text(c)] for c in start]
    replies = [VisualReply("") for _ in images]
    active = list(range(len(images)))
    for _ in range(max_steps + 1):
        if not active:
            break
        outs = generate_completions(
            model, processor, [images[i] for i in active], [questions[i] for i in active],
            max_new_tokens=size + LINE_TOKENS, do_sample=do_sample, temperature=temperature,
            prefixes=[context(lines[i], latest[i]) for i in active], extra_stops=[eoi],
            logits_processor=constraint, **generate_kwargs)
        still = []
        for i, out in zip(active, outs):
            text = out.text
            if BOI not in text:  # the answer, or text that ran out of tokens
                parts[i].append(text)
                replies[i].finish_reason = out.finish_reason
                continue
            codes = read_images(text)[0]
            line = text.split(BOI, 1)[0].strip()
            if len(codes) != size:
                parts[i].append(text)
                replies[i].finish_reason = "length"
                continue
            lines[i].append(line)
            latest[i] = codes
            parts[i] += [line, image_text(codes)]
            replies[i].thoughts.append(codes)
            replies[i].lines.append(line)
            still.append(i)
        active = still
    for i in active:
        replies[i].finish_reason = "steps"
    drawn = [(i, k) for i, r in enumerate(replies) for k in range(len(r.thoughts))]
    if drawn:
        pictures = image_tokenizer.decode(torch.tensor([replies[i].thoughts[k] for i, k in drawn]))
        for (i, _), picture in zip(drawn, pictures):
            replies[i].images.append(picture)
    for reply, p in zip(replies, parts):
        reply.text = " ".join(x for x in p if x)
    return replies
