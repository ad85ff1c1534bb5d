"""Stage 0 for a from-scratch tower: teach the vision tower to see, by classifying caption words.

LLaVA starts from a vision encoder that already sees (CLIP). The tiny model has none, and its
tower barely learns through the LM: in the shipped recipe it never learned easy-VQA's shape (a
linear probe on its features: 60%), while a probe trained directly reaches 99.6%
(`benchmarks/vision_probe.py`). This stage is that direct signal, in the manner of SuperClass
(Huang et al., 2024, "Classification Done Right for Vision-Language Pre-Training"): the image's
caption (the one the tasks derive from their traces) is tokenized, and the image must predict
which tokens it holds, softmax cross-entropy against the normalised multi-hot of those tokens.

``dense`` (weight; 0 = off) adds the same loss per image token, for tasks that know where their
objects are (`vrm.tasks.base.object_words`: shapes, clevr): each token must name the objects whose
centre lies in its patch, or, with none, the image placeholder token (a word no caption uses). The
pooled loss alone teaches the tower *what* is in the image; measured, the LM could not learn the
binding families (count by colour, exists) on top of those tokens although a linear probe reads
each cell from its token at 100%, while on one-hot per-cell features it learns them (README).
``word_units`` instead trains the projector's first hidden units (before its activation) as
per-token detectors of those words, sigmoid cross-entropy, and starts the projector's second layer
so that unit j writes word j's embedding: near-categorical tokens, which the LM binds on more
readily (README; not yet in the recipe).

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
from vrm.model.build import hold_free_units_at_zero
from vrm.tasks.base import object_words
from vrm.train.data import IGNORE
from vrm.train.loop import TrainConfig, config_tasks, train
from vrm.train.stage import Stage

TARGETS = ("tied", "random")  # what the image features are scored against (see target_table)
OBJ_MAX, WORDS_MAX = 16, 8  # located objects per image, words per object (dense loss)


@dataclass
class VisionConfig(TrainConfig):
    formats: dict[str, float] = field(default_factory=lambda: {"caption": 1.0})
    eval_format: str = "caption"
    trainable: list[str] = field(default_factory=lambda: ["vision", "projector"])
    lr: float = 1e-3
    logit_scale: float = 10.0  # cosine similarities x this are the token logits
    targets: str = "tied"  # tied: the LM's token embeddings; random: a fixed random table (not word-like)
    dense: float = 0.0  # weight of the per-token loss (each token names its patch's objects); 0 = off
    word_units: bool = False  # the dense loss trains the projector's first hidden units as word detectors
    free_units: bool = True  # false: the projector's other hidden units are zeroed and held there (word units only)
    out_dir: str = "runs/vision"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets not in TARGETS:
            raise VrmError(f"vision targets must be one of {TARGETS}, got {self.targets!r}")
        if self.dense < 0:
            raise VrmError(f"vision dense must be >= 0 (a loss weight), got {self.dense}")
        if self.word_units and not self.dense:
            raise VrmError("vision word_units trains through the dense loss: set dense > 0 too")
        if not self.free_units and not self.word_units:
            raise VrmError("vision free_units=false keeps only the word units: set word_units=true too")


def caption_targets(labels: torch.Tensor, vocab: int, ignore: set[int]) -> torch.Tensor:
    """(B, T) label ids (IGNORE off the caption) -> (B, vocab) normalised multi-hot of the
    caption's distinct tokens, ``ignore`` (special tokens) left out. Rows sum to 1 (or 0)."""
    hot = torch.zeros(labels.shape[0], vocab)
    for row, ids in zip(hot, labels):
        kept = [i for i in set(ids.tolist()) if i != IGNORE and i not in ignore]
        row[kept] = 1.0
    return hot / hot.sum(1, keepdim=True).clamp(min=1.0)


def object_word_ids(tokenizer, text: str) -> list[int]:
    """An object's words as token ids, as they read inside a caption (after a space)."""
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


def object_rows(tokenizer, task, sample) -> dict[str, torch.Tensor]:
    """A sample's located objects as fixed-size rows a batch can stack: ``object_xy`` (1, OBJ_MAX, 2)
    centres and ``object_ids`` (1, OBJ_MAX, WORDS_MAX) word token ids, -1 where there is none (all
    -1 for a task that does not locate its objects)."""
    xy = torch.full((1, OBJ_MAX, 2), -1.0)
    ids = torch.full((1, OBJ_MAX, WORDS_MAX), -1, dtype=torch.long)
    for k, (x, y, words) in enumerate((object_words(task, sample) or [])[:OBJ_MAX]):
        word_ids = object_word_ids(tokenizer, words)[:WORDS_MAX]
        xy[0, k] = torch.tensor([x, y])
        ids[0, k, :len(word_ids)] = torch.tensor(word_ids)
    return {"object_xy": xy, "object_ids": ids}


def cell_targets(xy: torch.Tensor, ids: torch.Tensor, grid: int, vocab: int, empty: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, OBJ_MAX, 2) centres + (B, OBJ_MAX, WORDS_MAX) word ids -> ((B, grid*grid, vocab) targets,
    (B,) which images locate their objects). Token r*grid + c covers row r, column c of the image;
    its target is the normalised multi-hot of the words of the objects centred in it, or ``empty``.

    >>> xy = torch.tensor([[[0.9, 0.1], [-1.0, -1.0]]]); ids = torch.tensor([[[3, 4], [-1, -1]]])
    >>> t, located = cell_targets(xy, ids, 2, 6, empty=5)
    >>> t[0, 1].tolist(), t[0, 0].tolist(), located.tolist()
    ([0.0, 0.0, 0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [True])
    """
    located = (xy[..., 0] >= 0).any(-1)
    hot = torch.zeros(xy.shape[0], grid * grid, vocab)
    for b, k in (xy[..., 0] >= 0).nonzero().tolist():
        col, row = (min(grid - 1, int(v * grid)) for v in xy[b, k].tolist())
        words = ids[b, k][ids[b, k] >= 0]
        hot[b, row * grid + col, words] = 1.0
    hot[..., empty] = (hot.sum(-1) == 0).float()
    return hot / hot.sum(-1, keepdim=True), located


def image_features(model, pixel_values: torch.Tensor, with_hidden: bool = False):
    """(B, N, H): each image's projected tokens, as the LM receives them; with ``with_hidden``
    also (B, N, P) the projector's hidden layer before its activation."""
    projector = model.model.multi_modal_projector
    hidden = []
    hook = projector.linear_1.register_forward_hook(lambda m, i, o: hidden.append(o)) if with_hidden else None
    try:
        features = torch.stack(list(model.model.get_image_features(pixel_values=pixel_values).pooler_output))
    finally:
        if hook is not None:
            hook.remove()
    if not with_hidden:
        return features
    return features, hidden[0].reshape(*features.shape[:2], -1)


def word_unit_ids(tasks, tokenizer, empty: int, samples: int = 200) -> list[int]:
    """The token ids of every word the tasks' located objects are named by (seen in the first
    ``samples`` samples of each), sorted, then ``empty``: what the projector's word units detect."""
    words: set[int] = set()
    for task in tasks:
        for seed in range(samples):
            for _, _, text in object_words(task, task.sample(seed)) or []:
                words.update(object_word_ids(tokenizer, text))
    return sorted(words) + [empty]


def init_word_units(model, units: list[int], only: bool = False) -> None:
    """Start the projector's second layer so that hidden unit j writes word ``units[j]``'s
    embedding: a firing detector then hands the LM that word, like a text token. ``only``: the
    other hidden units are zeroed and held there from now on, in every stage (saved in the config)."""
    projector = model.model.multi_modal_projector
    if len(units) > projector.linear_1.out_features:
        raise VrmError(f"{len(units)} word units do not fit the projector's {projector.linear_1.out_features} hidden units")
    with torch.no_grad():
        projector.linear_2.weight[:, :len(units)] = model.get_input_embeddings().weight[units].T
    model.config.word_units = list(units)  # saved with the checkpoint: which units are which words
    if only:
        model.config.word_units_only = True
        hold_free_units_at_zero(model)


def word_logits(features: torch.Tensor, table: torch.Tensor, scale: float) -> torch.Tensor:
    """(..., H) -> (..., vocab): cosine with every row of ``table``, x scale."""
    return scale * F.normalize(features, dim=-1) @ F.normalize(table.to(features.device), dim=-1).T


def token_logits(model, pixel_values: torch.Tensor, scale: float, table: torch.Tensor | None = None) -> torch.Tensor:
    """(B, vocab): cosine of each image's mean projected feature with every row of ``table`` (by
    default the LM's token embeddings), x scale."""
    table = model.get_input_embeddings().weight if table is None else table
    return word_logits(image_features(model, pixel_values).mean(1), table, scale)


def target_table(model, cfg: VisionConfig) -> torch.Tensor | None:
    """What the image features are scored against: None for the LM's own (tied) token embeddings;
    for ``random``, a fixed Gaussian table of the same shape, seeded by ``cfg.seed`` and never
    saved, so the projector learns to classify without its features looking like words."""
    if cfg.targets == "tied":
        return None
    vocab, hidden = model.get_input_embeddings().weight.shape
    return torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(cfg.seed))


class VisionStage(Stage):
    own_loss = True

    def __init__(self, cfg: VisionConfig):
        super().__init__(cfg)
        self.ignore: set[int] = set()  # special tokens (<image>, end-of-turn, ...): not caption words
        self.table: torch.Tensor | None = None  # see target_table
        self.empty: int | None = None  # the dense target of a patch with no object: the image placeholder token

    def prepare(self, model, processor):
        if model.config.model_type != "llava":
            raise VrmError(f"the vision stage trains a LLaVA-layout tower (a from-scratch tiny model), "
                           f"not a {model.config.model_type!r} model: start align/sft from it directly")
        if self.cfg.word_units:
            init_word_units(model, word_unit_ids(config_tasks(self.cfg), processor.tokenizer, model.config.image_token_id),
                            only=not self.cfg.free_units)
        return model, processor

    def scoring(self, model) -> torch.Tensor:
        """The table the features are scored against. Set from the model at first use, not in
        `prepare`, which a resumed run skips (it reloads the saved base): both score alike."""
        if self.empty is None:
            self.table = target_table(model, self.cfg)
            self.empty = model.config.image_token_id
        return model.get_input_embeddings().weight if self.table is None else self.table

    def examples(self, processor, pairs, draw: int) -> list[dict]:
        self.ignore = set(processor.tokenizer.all_special_ids)
        examples = super().examples(processor, pairs, draw)
        if self.cfg.dense:
            examples = [{**e, **object_rows(processor.tokenizer, task, sample)} for e, (task, sample) in zip(examples, pairs)]
        return examples

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        unwrapped = getattr(model, "module", model)
        table = self.scoring(unwrapped)
        if self.cfg.word_units:
            features, hidden = image_features(unwrapped, batch["pixel_values"], with_hidden=True)
        else:
            features = image_features(unwrapped, batch["pixel_values"])
        logits = word_logits(features.mean(1), table, self.cfg.logit_scale)
        target = caption_targets(batch["labels"].cpu(), logits.shape[1], self.ignore).to(logits.device)
        loss = -(target * logits.log_softmax(-1)).sum(-1).mean()
        if not self.cfg.dense:
            return loss, {}
        grid = int(features.shape[1] ** 0.5)
        cells, located = cell_targets(batch["object_xy"].cpu(), batch["object_ids"].cpu(), grid, logits.shape[1], self.empty)
        if not located.any():
            return loss, {"dense": 0.0}
        cells, on_device = cells[located].to(features.device), located.to(features.device)
        if self.cfg.word_units:  # each unit: does its word name an object in this patch (or, last, none)?
            units = unwrapped.config.word_units
            wanted = (cells[..., units] > 0).float()
            dense = F.binary_cross_entropy_with_logits(hidden[on_device][..., :len(units)], wanted)
        else:
            cell_logits = word_logits(features[on_device], table, self.cfg.logit_scale)
            dense = -(cells * cell_logits.log_softmax(-1)).sum(-1).mean()
        return loss + self.cfg.dense * dense, {"dense": dense.item()}

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
            logits = token_logits(model, example["pixel_values"].to(model.device), self.cfg.logit_scale, self.scoring(model))[0]
            top = set(logits.topk(len(wanted)).indices.tolist())
            per_task.setdefault(task.name, []).append(len(top & wanted) / len(wanted))
        scores = [s for v in per_task.values() for s in v]
        return {"accuracy": sum(scores) / max(len(scores), 1), "n": len(scores),
                "per_task": {k: sum(v) / len(v) for k, v in per_task.items()}}


def run(cfg: VisionConfig) -> Path:
    return train(cfg, VisionStage(cfg))
