"""Stage 0 for a from-scratch tower: teach the vision tower to see, by classifying caption words.

LLaVA starts from a vision encoder that already sees (CLIP). The tiny model has none, and its
tower barely learns through the LM: in the shipped recipe it never learned easy-VQA's shape (a
linear probe on its features: 60%), while a probe trained directly reaches 99.6%
(`benchmarks/vision_probe.py`). This stage is that direct signal, in the manner of SuperClass
(Huang et al., 2024, "Classification Done Right for Vision-Language Pre-Training"): the image's
caption (the one the tasks derive from their traces) is tokenized, and the image must predict
which tokens it holds, softmax cross-entropy against the normalised multi-hot of those tokens.

No new weights: the image features go through the LLaVA projector, are mean-pooled over the image
tokens, and are scored against the LM's (frozen, tied) token embeddings by cosine similarity
times ``logit_scale``. So the projector learns to point each image at the embeddings of the
words that describe it, a warm start for the align stage that follows. ``targets: random`` scores
against a fixed random table instead, so the image features do not look like words; measured, it
changes nothing that matters (README: the LM misreads the question either way).

    vrm train vision --recipe recipes/tiny.yaml          # then align, then sft (`vrm train all`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vrm import VrmError
from vrm.train.data import IGNORE
from vrm.train.loop import Stage, TrainConfig, train

TARGETS = ("tied", "random")  # what the image features are scored against (see target_table)


@dataclass
class VisionConfig(TrainConfig):
    formats: dict[str, float] = field(default_factory=lambda: {"caption": 1.0})
    eval_format: str = "caption"
    trainable: list[str] = field(default_factory=lambda: ["vision", "projector"])
    lr: float = 1e-3
    logit_scale: float = 10.0  # cosine similarities x this are the token logits
    targets: str = "tied"  # tied: the LM's token embeddings; random: a fixed random table (not word-like)
    out_dir: str = "runs/vision"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets not in TARGETS:
            raise VrmError(f"vision targets must be one of {TARGETS}, got {self.targets!r}")


def caption_targets(labels: torch.Tensor, vocab: int, ignore: set[int]) -> torch.Tensor:
    """(B, T) label ids (IGNORE off the caption) -> (B, vocab) normalised multi-hot of the
    caption's distinct tokens, ``ignore`` (special tokens) left out. Rows sum to 1 (or 0)."""
    hot = torch.zeros(labels.shape[0], vocab)
    for row, ids in zip(hot, labels):
        kept = [i for i in set(ids.tolist()) if i != IGNORE and i not in ignore]
        row[kept] = 1.0
    return hot / hot.sum(1, keepdim=True).clamp(min=1.0)


def token_logits(model, pixel_values: torch.Tensor, scale: float, table: torch.Tensor | None = None) -> torch.Tensor:
    """(B, vocab): cosine of each image's mean projected feature with every row of ``table`` (by
    default the LM's token embeddings), x scale."""
    feats = model.model.get_image_features(pixel_values=pixel_values).pooler_output
    pooled = torch.stack([f.mean(0) for f in feats])
    table = model.get_input_embeddings().weight if table is None else table.to(pooled.device)
    return scale * F.normalize(pooled, dim=-1) @ F.normalize(table, dim=-1).T


def target_table(model, cfg: VisionConfig) -> torch.Tensor | None:
    """What the image features are scored against: None for the LM's own (tied) token embeddings;
    for ``random``, a fixed Gaussian table of the same shape, seeded by ``cfg.seed`` and never
    saved, so the projector learns to classify without its features looking like words."""
    if cfg.targets == "tied":
        return None
    vocab, hidden = model.get_input_embeddings().weight.shape
    return torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(cfg.seed))


class VisionStage(Stage):
    def __init__(self, cfg: VisionConfig):
        super().__init__(cfg)
        self.ignore: set[int] = set()  # special tokens (<image>, end-of-turn, ...): not caption words
        self.table: torch.Tensor | None = None  # see target_table

    def prepare(self, model, processor):
        if model.config.model_type != "llava":
            raise VrmError(f"the vision stage trains a LLaVA-layout tower (a from-scratch tiny model), "
                           f"not a {model.config.model_type!r} model: start align/sft from it directly")
        self.table = target_table(model, self.cfg)
        return model, processor

    def examples(self, processor, pairs, draw: int) -> list[dict]:
        self.ignore = set(processor.tokenizer.all_special_ids)
        return super().examples(processor, pairs, draw)

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        unwrapped = getattr(model, "module", model)
        logits = token_logits(unwrapped, batch["pixel_values"], self.cfg.logit_scale, self.table)
        target = caption_targets(batch["labels"].cpu(), logits.shape[1], self.ignore).to(logits.device)
        return -(target * logits.log_softmax(-1)).sum(-1).mean(), {}

    @torch.no_grad()
    def evaluate(self, model, processor, pairs) -> dict:
        """Recall of the caption's tokens among the image's top-k predictions (k = their number),
        per task; ``accuracy`` is the mean over samples."""
        per_task: dict[str, list[float]] = {}
        for task, sample in pairs:
            example = self.examples(processor, [(task, sample)], 0)[0]
            target = caption_targets(example["labels"][None], model.get_input_embeddings().weight.shape[0],
                                     self.ignore)[0]
            wanted = set(target.nonzero().flatten().tolist())
            if not wanted:
                continue
            logits = token_logits(model, example["pixel_values"].to(model.device), self.cfg.logit_scale, self.table)[0]
            top = set(logits.topk(len(wanted)).indices.tolist())
            per_task.setdefault(task.name, []).append(len(top & wanted) / len(wanted))
        scores = [s for v in per_task.values() for s in v]
        return {"accuracy": sum(scores) / max(len(scores), 1), "n": len(scores),
                "per_task": {k: sum(v) / len(v) for k, v in per_task.items()}}


def run(cfg: VisionConfig) -> Path:
    return train(cfg, VisionStage(cfg))
