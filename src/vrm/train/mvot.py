"""Multimodal Visualization-of-Thought: teach a VLM to draw the state after each action (visual
thoughts, as image-code tokens of a frozen image tokenizer) before it answers.

The model's vocabulary gains one token per code of the image tokenizer (`vrm train vq`); the
examples are MVoT's single steps (`vrm.formats.visual.step_examples`: with only the question's
image and the latest image in the context, produce the next action line and its image, or the
answer), one step drawn at random per episode and batch row. The loss is cross-entropy on the
target's text and image tokens plus the **token discrepancy loss** (`token_discrepancy_loss`),
weight ``discrepancy_weight`` (MVoT: 1); at 0 this is MVoT's "Interleaved" baseline.

Everything else (accelerate, checkpoints, resume, the log, the progress bar) is the shared loop's
(`vrm.train.loop`). The final checkpoint keeps the image tokenizer in ``image_tokenizer/``::

    vrm train vq --recipe recipes/spatial.yaml
    vrm train mvot --recipe recipes/spatial.yaml
    vrm eval --model runs/mvot/final --task frozenlake --format visual style=short
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vrm import VrmError
from vrm.formats import get_format
from vrm.formats.visual import STEP_ACTIONS, code_token, step_example, step_phrase
from vrm.infer.generate import prompt_text
from vrm.model.image_codes import (IMAGE_TOKENIZER_DIR, add_image_codes, add_step_words, code_ids,
                                   load_checkpoint_image_tokenizer)
from vrm.model.load import save_model
from vrm.train.data import IGNORE, encode_text
from vrm.train.loop import TrainConfig, train
from vrm.train.stage import Stage

DISCREPANCIES = ("mse", "euclidean")


def token_discrepancy_loss(code_logits: torch.Tensor, targets: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """MVoT's L_D: the expected codebook distance between the predicted and the true code,
    ``mean over image positions of sum_j S[gt, j] * p_j``, p the softmax over image-code logits only.

    Shapes: code_logits (N, K) (the logits of the K image codes at N image positions), targets (N,)
    code indices, distances (K, K) with S[i, i] = 0. Zero when N = 0.

    >>> S = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    >>> round(token_discrepancy_loss(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 0]), S).item(), 4)
    0.3096
    """
    if code_logits.shape[0] == 0:
        return code_logits.sum() * 0.0
    probs = torch.softmax(code_logits.float(), dim=-1)
    return (distances.to(probs)[targets] * probs).sum(dim=-1).mean()


def changed_codes(input_ids: torch.Tensor, labels: torch.Tensor, first: int, k: int) -> torch.Tensor:
    """Which target tokens (B, T) are image codes that differ from the code at the same place in the
    context's image (the latest state): the cells the action changes. Codes are ids first..first+k-1.

    >>> ids = torch.tensor([[9, 5, 6, 1, 5, 7]])  # context: text 9, image (5, 6); target: text 1, image (5, 7)
    >>> changed_codes(ids, torch.tensor([[-100, -100, -100, 1, 5, 7]]), 5, 4).tolist()
    [[False, False, False, False, False, True]]
    """
    codes = (input_ids >= first) & (input_ids < first + k)
    target = labels != IGNORE
    out = torch.zeros_like(codes)
    for row in range(len(input_ids)):
        drawn = (codes[row] & target[row]).nonzero().flatten()
        seen = (codes[row] & ~target[row]).nonzero().flatten()[:len(drawn)]  # the latest image comes first
        if len(drawn) and len(seen) == len(drawn):
            out[row, drawn] = input_ids[row, drawn] != input_ids[row, seen]
    return out


def first_target(labels: torch.Tensor) -> torch.Tensor:
    """Each row's first target position (labels != IGNORE): where a step decides to draw or answer.

    >>> first_target(torch.tensor([[-100, -100, 4, 5], [-100, 7, 8, 9]])).tolist()
    [2, 1]
    """
    return (labels != IGNORE).int().argmax(dim=1)


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the target tokens (labels != IGNORE), each weighted: sum(w * ce) / sum(w).
    Shapes: logits (B, T, V), labels (B, T), weights (B, T).

    >>> logits = torch.tensor([[[0.0, 0.0], [0.0, 1.0986123], [5.0, 0.0]]])  # ce ln 2, ln 4; the last ignored
    >>> round(weighted_cross_entropy(logits, torch.tensor([[0, 0, -100]]), torch.tensor([[3.0, 1.0, 9.0]])).item(), 4)
    0.8664
    """
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                                           reduction="none")
    w = weights.flatten().to(ce) * (labels.flatten() != IGNORE)
    return (ce * w).sum() / w.sum().clamp(min=1e-8)


def action_ids(tokenizer) -> torch.Tensor:
    """The ids of the step lines' action phrases ("Go left.", ..., "Toggle."): one token each in a
    visual-thought model (`vrm.formats.visual.step_words`)."""
    vocab = tokenizer.get_vocab()
    words = [step_phrase(a) for a in STEP_ACTIONS]
    return torch.tensor([vocab[word] for word in words if word in vocab], dtype=torch.long)


@dataclass
class MVoTConfig(TrainConfig):
    model: str = "embedded"  # the shipped model, or a checkpoint folder (any vrm / HF LLaVA checkpoint)
    vq: str = "runs/vq/final"  # the image tokenizer (`vrm train vq`), frozen
    tasks: dict[str, float] = field(default_factory=lambda: {"frozenlake": 1.0, "maze": 1.0})
    task_params: dict[str, dict] = field(
        default_factory=lambda: {"frozenlake": {"style": "short"}, "maze": {"style": "short"}})
    formats: dict[str, float] = field(default_factory=lambda: {"visual": 1.0})
    eval_format: str = "visual"
    trainable: list[str] = field(default_factory=lambda: ["vision", "projector", "lm"])
    discrepancy_weight: float = 1.0  # 0: cross-entropy only (MVoT's "Interleaved" baseline)
    discrepancy: str = "mse"  # codebook distance S: "mse" (the paper) or "euclidean" (MVoT's public code)
    change_weight: float = 1.0  # cross-entropy weight of the image codes the action changes (1: MVoT's plain CE)
    answer_share: float | None = None  # share of rows that train the answer step (None: uniform over the
    # steps; 1: the answer step alone, a first run that learns to read the answer off the last image)
    answer_weight: float = 1.0  # cross-entropy weight of the answer step's words after its first (1: MVoT's plain CE)
    action_weight: float = 1.0  # cross-entropy weight of a drawing step's action ("Go down."; 1: MVoT's plain CE)
    plan: bool = False  # each step line also writes the actions still to take (`vrm.formats.visual.plan_text`)
    mark_next: bool = False  # the plan writes its next action as a token of its own ("Next: Go up."; needs plan)
    batch_size: int = 16
    lr: float = 5e-4
    steps: int = 1500
    eval_every: int = 500
    eval_n: int = 100
    save_every: int = 100
    out_dir: str = "runs/mvot"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discrepancy not in DISCREPANCIES:
            raise ValueError(f"discrepancy must be one of {DISCREPANCIES}, got {self.discrepancy!r}")
        if self.discrepancy_weight < 0:
            raise ValueError("discrepancy_weight must be >= 0")
        if self.answer_share is not None and not 0 < self.answer_share <= 1:
            raise ValueError("answer_share must be in (0, 1] (None: every step of an episode alike)")
        if min(self.change_weight, self.answer_weight, self.action_weight) <= 0:
            raise ValueError("change_weight, answer_weight and action_weight must be > 0 "
                             "(1: every target token weighs the same)")
        if set(self.formats) != {"visual"} or self.eval_format != "visual":
            raise ValueError("MVoT trains and evaluates the visual format only")
        if self.mark_next and not self.plan:
            raise ValueError("mark_next marks the plan's next action: it needs plan=true")


class MVoTStage(Stage):
    """The shared loop's hooks for MVoT: image-code tokens, one-step examples, CE + L_D, visual eval."""

    own_loss = True

    def __init__(self, cfg: MVoTConfig):
        from vrm.model.vq import load_image_tokenizer

        super().__init__(cfg)
        self.vq = load_image_tokenizer(cfg.vq)
        self.distances = self.vq.code_distances(cfg.discrepancy)
        self.fmt = get_format("visual")
        self.codes: tuple[int, int] | None = None
        self.actions: torch.Tensor | None = None  # the ids of the action phrases' tokens ("Go down.")

    def prepare(self, model, processor):
        """Add the image-code tokens; a model that has them (an MVoT checkpoint, trained on) keeps its own,
        if they match the image tokenizer's codebook, and the image tokenizer must be the one the
        checkpoint learned its codes with (the one saved beside it), or every code would mean another
        picture."""
        if code_token(0) in processor.tokenizer.get_vocab():
            _, n = code_ids(processor.tokenizer)
            if n != self.vq.config.codebook_size:
                raise VrmError(f"the model has {n} image codes, the image tokenizer {self.vq.config.codebook_size}")
            own = Path(self.cfg.model) / IMAGE_TOKENIZER_DIR
            if own.is_dir() and not torch.equal(load_checkpoint_image_tokenizer(self.cfg.model).codebook.weight,
                                                self.vq.codebook.weight):
                raise VrmError(f"{self.cfg.model} learned its image codes with the tokenizer in {own}, not with "
                               f"vq={self.cfg.vq}; train it on with vq={own}")
            return add_step_words(model, processor)
        return add_image_codes(model, processor, self.vq.config.codebook_size)

    def examples(self, processor, pairs, draw: int) -> list[dict]:
        """One random step per episode (the answer step with probability ``answer_share``, if set);
        only the two images it needs are rendered and encoded."""
        if self.actions is None:  # the tokenizer is the base checkpoint's: known from the first batch on
            self.codes = code_ids(processor.tokenizer)
            self.actions = action_ids(processor.tokenizer)
        rng = random.Random(f"mvot-{self.cfg.seed}-{draw}")
        chosen = []
        for task, sample in pairs:
            last = len(sample.trace["states"]) - 1  # k = steps taken; k = last: the answer step
            if self.cfg.answer_share is None:
                k = rng.randrange(last + 1)
            else:
                k = last if rng.random() < self.cfg.answer_share else rng.randrange(last)
            shown = [k, k + 1] if k < last else [k]
            chosen.append((task, sample, k, [task.render(sample.trace, j) for j in shown]))
        flat = self.vq.encode([im for *_, images in chosen for im in images]).tolist()
        out, at = [], 0
        end = processor.tokenizer.eos_token
        for task, sample, k, images in chosen:
            codes, at = flat[at:at + len(images)], at + len(images)
            ctx, target = step_example(sample, k, codes[0], codes[1] if len(codes) > 1 else None, self.cfg.plan,
                                       self.cfg.mark_next)
            if len(codes) == 1:
                target += end
            prompt = prompt_text(processor, self.fmt.prompt(sample)) + ctx
            out.append(encode_text(processor, sample.image, prompt, target))
        return out

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        """Cross-entropy on target tokens (the codes the action changes weighted ``change_weight``, a
        drawing step's action ``action_weight``, the answer step's tokens after its first
        ``answer_weight``: the first, " The" where a drawing step has " " before "Step k:", is the
        decision to stop, and weighting it would teach the model to answer before the walk is over)
        + ``discrepancy_weight`` * L_D on the target's image codes."""
        first, k = self.codes
        out = model(**batch)
        labels = batch["labels"][:, 1:]
        at = (labels >= first) & (labels < first + k)
        code_logits = out.logits[:, :-1][at][:, first:first + k]
        l_d = token_discrepancy_loss(code_logits, labels[at] - first, self.distances)
        ce = out.loss
        if self.cfg.change_weight != 1 or self.cfg.answer_weight != 1 or self.cfg.action_weight != 1:
            weights = 1 + (self.cfg.change_weight - 1) * changed_codes(batch["input_ids"], batch["labels"], first, k)
            weights[torch.isin(batch["labels"], self.actions)] = self.cfg.action_weight
            answering = ~at.any(dim=1)  # rows whose target draws no image: the answer step
            weights[answering] = self.cfg.answer_weight
            rows = answering.nonzero().flatten()
            weights[rows, first_target(batch["labels"])[rows]] = 1  # the stop decision weighs as going on
            ce = weighted_cross_entropy(out.logits[:, :-1], labels, weights[:, 1:])
        weight = self.cfg.discrepancy_weight
        loss = ce + weight * l_d if weight else ce
        return loss, {"ce": out.loss.item(), "l_d": l_d.item()}

    def evaluate(self, model, processor, pairs) -> dict:
        from vrm.eval.visual import evaluate_visual

        summary, _ = evaluate_visual(model, processor, self.vq, pairs, progress=False)
        return summary

    def save(self, model, processor, folder: Path) -> None:
        save_model(model, processor, folder, extras={IMAGE_TOKENIZER_DIR: self.vq})


def run(cfg: MVoTConfig) -> Path:
    return train(cfg, MVoTStage(cfg))
