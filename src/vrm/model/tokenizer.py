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
CHAT_TEMPLATE = (
    "{% macro body(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ body(message['content']) + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ body(message['content']) + '<|end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
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
    fast.chat_template = CHAT_TEMPLATE
    return fast
