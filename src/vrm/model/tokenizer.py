"""A byte-level BPE tokenizer trained locally on the task corpus, with the special tokens every
vrm format needs, and the chat template all vrm models share."""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
PAD, BOS, END = "<pad>", "<s>", "<|end|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# Tags of the reasoning formats (R1 think/answer, LLaVA-CoT stages) and of visual thoughts.
FORMAT_TOKENS = [
    "<think>", "</think>", "<answer>", "</answer>",
    "<SUMMARY>", "</SUMMARY>", "<CAPTION>", "</CAPTION>",
    "<REASONING>", "</REASONING>", "<CONCLUSION>", "</CONCLUSION>",
    "<boi>", "<eoi>",
]
SPECIAL_TOKENS = [PAD, BOS, END, IMAGE_TOKEN, *ROLE_TOKENS, *FORMAT_TOKENS]

# One turn per message; `{% generation %}` marks the assistant's tokens for TRL's
# assistant_only_loss. Images are placed where the message puts them.
BODY_IN_ORDER = (
    "{% macro body(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)
# Every text part of a message, in order (the text-first layouts write it once or twice).
TEXT_PARTS = "{% for part in content if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
# The question before the image, whatever the message's order: in a causal LM the image tokens
# can then attend to the question and mark what it asks about (see `chat_template`).
BODY_TEXT_FIRST = (
    "{% macro body(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}" + TEXT_PARTS +
    "{% for part in content if part['type'] == 'image' %}{{ '\\n<image>' }}{% endfor %}{% endif %}"
    "{% endmacro %}"
)
# The question, the image, then the question again: the image tokens can mark what the question
# asks about, and the answer starts right after a fresh copy of the question (see `chat_template`).
BODY_TEXT_AROUND = (
    "{% macro body(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}" + TEXT_PARTS +
    "{% for part in content if part['type'] == 'image' %}{{ '\\n<image>\\n' }}{% endfor %}"
    "{% if content | selectattr('type', 'equalto', 'image') | list %}" + TEXT_PARTS + "{% endif %}{% endif %}"
    "{% endmacro %}"
)
LAYOUTS = {"in_order": BODY_IN_ORDER, "text_first": BODY_TEXT_FIRST, "text_around": BODY_TEXT_AROUND}
TURNS = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ body(message['content']) + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ body(message['content']) + '<|end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
CHAT_TEMPLATE = BODY_IN_ORDER + TURNS


def chat_template(layout: str = "in_order") -> str:
    """The chat template: images where the message puts them (``in_order``), after the text
    (``text_first``), or between two copies of the text (``text_around``).

    With the image first, a from-scratch causal LM must find the object a question names by
    attention from the question back into the image, and a tiny one plateaus there (a 4-layer LM
    on perfect per-cell features: 51% on "what colour is the shape in row r, column c" after 400
    steps); with the question first, each image token sees the question and the same LM reaches
    100% in 400 steps. On a mix of three families (count by colour, exists, query colour) the
    question first reaches 66% in 600 steps and the question on both sides of the image 88%
    (`benchmarks/lm_binding.py ... qfirst|qboth`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown chat layout {layout!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[layout] + TURNS


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, layout: str = "in_order") -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``corpus``; any text still encodes (bytes are the fallback).

    A narrow corpus stops merging before ``vocab_size``: the result may be smaller.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=END, pad_token=PAD,
        additional_special_tokens=[IMAGE_TOKEN, *ROLE_TOKENS, *FORMAT_TOKENS],
    )
    fast.chat_template = chat_template(layout)
    return fast
