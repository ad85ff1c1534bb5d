"""Training batches: a seeded stream of samples from a task mixture, encoded with loss on the
answer tokens only.

The samples of step ``s`` are a pure function of (seed, s), so a resumed run sees exactly the
batches an uninterrupted one would: no repeated or lost data.
"""

from __future__ import annotations

import random
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Sequence

import torch

from vrm.infer.generate import prompt_text, user_messages
from vrm.tasks import TEST_SEED_BASE, Sample, Task, is_dataset

IGNORE = -100
TOKEN_ROWS = ("mm_token_type_ids",)  # processor outputs with one entry per token


def step_samples(tasks: Sequence[Task], weights: Sequence[float], step: int, batch_size: int,
                 seed: int, one_task: bool = False) -> list[tuple[Task, Sample]]:
    """The samples of one optimiser step, drawn from training seeds (< `TEST_SEED_BASE`).

    ``one_task``: the whole batch comes from one task (drawn by weight), so a task with long
    questions pads only its own batches."""
    out = []
    batch_task = random.Random(f"task-{seed}-{step}").choices(tasks, weights=weights)[0] if one_task else None
    for i in range(batch_size):
        rng = random.Random(f"batch-{seed}-{step}-{i}")
        task = batch_task if one_task else rng.choices(tasks, weights=weights)[0]
        s = rng.randrange(len(task)) if is_dataset(task) else rng.randrange(TEST_SEED_BASE)
        out.append((task, task.get(s) if is_dataset(task) else task.sample(s)))
    return out


def target_text(processor, prompt: str, question: str, answer: str) -> str:
    """What the assistant turn adds after ``prompt`` (the generation prompt of ``question``):
    the answer and its end token."""
    full = processor.apply_chat_template(
        user_messages(question) + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}])
    if not full.startswith(prompt):
        raise ValueError("chat template renders the prompt differently with an answer; cannot mask it")
    return full[len(prompt):].rstrip()


def encode(processor, sample: Sample, question: str, answer: str) -> dict[str, torch.Tensor]:
    """One example: prompt (image expanded to its tokens) + target; labels only on the target."""
    prompt = prompt_text(processor, question)
    return encode_text(processor, sample.image, prompt, target_text(processor, prompt, question, answer))


def encode_text(processor, image, prompt: str, target: str) -> dict[str, torch.Tensor]:
    """One example from its two texts: ``prompt`` (with the image placeholder; no loss) then
    ``target`` (loss on every token)."""
    enc = processor(images=[image], text=[prompt], return_tensors="pt")
    target = processor.tokenizer(target, add_special_tokens=False, return_tensors="pt")["input_ids"]
    prompt_ids = enc.pop("input_ids")
    enc.pop("attention_mask", None)
    input_ids = torch.cat([prompt_ids, target], dim=1)[0]
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE), target], dim=1)[0]
    out = {"input_ids": input_ids, "labels": labels}
    for key in TOKEN_ROWS:  # per-token rows (Qwen2-VL's M-RoPE types): the target is text, 0
        if key in enc:
            out[key] = torch.cat([enc.pop(key), torch.zeros_like(target)], dim=1)[0]
    return {**out, **enc}


class Prefetcher:
    """Makes the next batch (``make(draw)``: sample, render, tokenize) in a background thread while
    the current one trains; torch's kernels release the GIL, so the two overlap. Batches are pure
    functions of their draw, so what each step gets is unchanged. Call `settle` before anything
    else uses the processor (evaluation): tokenizers are not safe to share across threads.
    ``background=False`` makes each batch when it is asked for (for comparison)."""

    def __init__(self, make: Callable[[int], list], background: bool = True):
        self._make = make
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vrm-batches") if background else None
        self._pending: dict[int, Future] = {}

    def get(self, draw: int, next_draw: int | None = None) -> list:
        """The batch of ``draw`` (its error, if making it failed), then start on ``next_draw``."""
        if self._pool is None:
            return self._make(draw)
        future = self._pending.pop(draw, None) or self._pool.submit(self._make, draw)
        batch = future.result()
        if next_draw is not None and next_draw not in self._pending:
            self._pending[next_draw] = self._pool.submit(self._make, next_draw)
        return batch

    def settle(self) -> None:
        """Wait until no batch is being made (errors stay for `get` to raise)."""
        wait(list(self._pending.values()))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


def length_groups(lengths: Sequence[int], max_groups: int, overhead: int = 64) -> list[list[int]]:
    """Split a batch into at most ``max_groups`` micro-batches of similar length: indices into
    ``lengths``, shortest first. Each group pads to its own longest row, so a batch whose rows run
    from 60 to 300 tokens stops padding all of them to 300. The split minimises the padded tokens
    plus ``overhead`` per group (what one more forward call costs, in tokens), exactly, by dynamic
    programming over the sorted lengths.

    >>> length_groups([300, 50, 60, 290, 55], 2)  # 5 x 300 = 1500 padded; 3 x 60 + 2 x 300 = 780
    [[1, 4, 2], [3, 0]]
    >>> length_groups([50, 60, 55], 3, overhead=64)  # a group more saves 15 tokens, costs 64
    [[0, 2, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    # best[g][j]: least cost of the first j rows in g groups; cut[g][j]: where the last group starts
    best = [[0.0] + [float("inf")] * n]
    cut = [[0] * (n + 1)]
    for g in range(1, max(1, max_groups) + 1):
        row, cuts = [float("inf")] * (n + 1), [0] * (n + 1)
        row[0] = 0.0
        for j in range(1, n + 1):
            for i in range(j):
                cost = best[g - 1][i] + (j - i) * sizes[j - 1] + overhead
                if cost < row[j]:
                    row[j], cuts[j] = cost, i
        best.append(row)
        cut.append(cuts)
    g = min(range(1, len(best)), key=lambda k: best[k][n])
    groups, j = [], n
    while j > 0:
        i = cut[g][j]
        groups.append(order[i:j])
        j, g = i, g - 1
    return groups[::-1]


def collate(examples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token rows; concatenate image tensors (pixel_values, image_grid_thw, ...).

    Shapes: input_ids/labels/attention_mask (B, T); image tensors as the processor made them.
    """
    width = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), width), pad_id, dtype=torch.long),
        "labels": torch.full((len(examples), width), IGNORE, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
    }
    for key in TOKEN_ROWS:
        if key in examples[0]:
            batch[key] = torch.zeros((len(examples), width), dtype=examples[0][key].dtype)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        batch["input_ids"][i, :n] = e["input_ids"]
        batch["labels"][i, :n] = e["labels"]
        batch["attention_mask"][i, :n] = 1
        for key in TOKEN_ROWS:
            if key in e:
                batch[key][i, :n] = e[key]
    for key in examples[0]:
        if key not in batch:
            batch[key] = torch.cat([e[key] for e in examples], dim=0)
    return batch
