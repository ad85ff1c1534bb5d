"""What a training stage plugs into the shared loop (`vrm.train.loop.train`): its examples, its
loss over a batch, its evaluation and what its checkpoints hold. The default `Stage` is the LLaVA
recipe's (align, SFT, reasoning); vision and mvot subclass it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vrm import VrmError
from vrm.eval.run import evaluate_per_task
from vrm.formats import get_format
from vrm.model.load import save_model
from vrm.train.data import IGNORE, collate, encode, length_groups, step_samples
from vrm.train.losses import focal_loss, vocab_weights

if TYPE_CHECKING:
    from vrm.train.loop import TrainConfig


class Stage:
    """What a stage plugs into the shared loop: its examples, its loss, its evaluation and what its
    checkpoints hold. This default is the LLaVA recipe's (align, SFT): one format per micro-batch,
    cross-entropy on the target tokens, accuracy with ``cfg.eval_format``."""

    own_loss = False  # a stage with a loss of its own (vision, mvot) takes no focal_gamma / token_weights

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.fmt_names, self.fmt_weights = list(cfg.formats), list(cfg.formats.values())
        self.vocab_weights = None  # set by `bind` when cfg.token_weights names any

    def bind(self, processor) -> None:
        """What the stage needs from the run's processor before the first step."""
        if self.own_loss and (self.cfg.focal_gamma or self.cfg.token_weights):
            raise VrmError(f"focal_gamma and token_weights apply to align and sft; {type(self).__name__} has its own loss")
        if self.cfg.token_weights:
            self.vocab_weights = vocab_weights(processor.tokenizer, self.cfg.token_weights)

    def prepare(self, model, processor):
        """Change the starting weights once, before they are saved as the run's base."""
        return model, processor

    def batch_examples(self, processor, tasks, draw: int, seed: int) -> list[dict]:
        """The examples of draw ``draw``: its samples from ``tasks`` by ``cfg.tasks``' weights, encoded."""
        pairs = step_samples(tasks, list(self.cfg.tasks.values()), draw, self.cfg.batch_size, seed,
                             self.cfg.one_task_per_batch)
        return self.examples(processor, pairs, draw)

    def examples(self, processor, pairs, draw: int) -> list[dict]:
        # One format per micro-batch: mixing a long caption into a batch of short answers
        # would pad every row to the caption's length. A task with task_formats draws from its own.
        own = self.cfg.task_formats.get(pairs[0][0].name)
        names, weights = (list(own), list(own.values())) if own else (self.fmt_names, self.fmt_weights)
        fmt = get_format(random.Random(f"fmt-{self.cfg.seed}-{draw}").choices(names, weights)[0])
        return [encode(processor, sample, fmt.prompt(sample), fmt.target(sample, task)) for task, sample in pairs]

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        """The loss to minimise and named parts to log."""
        if not self.cfg.focal_gamma and self.vocab_weights is None:
            return model(**batch).loss, {}
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss, ce = focal_loss(logits, batch["labels"], self.cfg.focal_gamma, self.vocab_weights)
        return loss, {"ce": ce.detach()}

    def batch_loss(self, model, examples: list[dict], pad_id: int, device) -> tuple[torch.Tensor, dict]:
        """`loss` over a whole batch, run as `length_groups` forward calls of similar-length rows.
        The token-mean loss of the batch is the groups' losses weighted by their target weight
        (tokens, or their `token_weights`), so the result and its gradient are those of one padded
        call (a trainable batch-norm tower aside: it normalises each group over its own rows). A
        stage with its own loss runs one call."""
        groups = self.groups([len(e["input_ids"]) for e in examples])
        total, weight, tokens, parts = 0.0, 0.0, 0, {}
        for group in groups:
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in group], pad_id).items()}
            loss, named = self.loss(model, batch)
            if len(groups) == 1:
                return loss, named
            targets = batch["labels"][:, 1:]
            targets = targets[targets != IGNORE]
            w = self.vocab_weights.to(targets.device)[targets].sum() if self.vocab_weights is not None else targets.numel()
            total, weight, tokens = total + loss * w, weight + w, tokens + targets.numel()
            for k, v in named.items():
                parts[k] = parts.get(k, 0.0) + v * targets.numel()
        return total / weight, {k: v / tokens for k, v in parts.items()}

    def groups(self, lengths: list[int]) -> list[list[int]]:
        """How `batch_loss` splits rows of these token lengths into forward calls (row indices)."""
        if self.own_loss or self.cfg.length_groups <= 1:
            return [list(range(len(lengths)))]
        return length_groups(lengths, self.cfg.length_groups)

    def evaluate(self, model, processor, pairs) -> dict:
        summary, _ = evaluate_per_task(model, processor, pairs, self.cfg.eval_format, progress=False)
        return summary

    def save(self, model, processor, folder: Path) -> None:
        save_model(model, processor, folder)
