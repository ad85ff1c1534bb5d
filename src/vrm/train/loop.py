"""The training loop both LLaVA stages share: config, setup, step, evaluate, checkpoint, resume.

Checkpoints are accelerate states (model, optimiser, scheduler, RNG) written to a temporary folder
and renamed, so a kill at any moment leaves the previous checkpoint whole. Batches are a pure
function of (seed, step): a resumed run continues with exactly the next step's data, and the next
step's batch is made in a background thread while this one trains.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from vrm import VrmError
from vrm.files import write_atomic
from vrm.formats import FORMATS, format_names, get_format
from vrm.model.build import TinyVLMConfig, build_tiny_vlm, unused_vision_parameters
from vrm.model.load import load_model, save_model
from vrm.tasks import eval_samples, get_task
from vrm.train.data import Prefetcher
from vrm.train.stage import Stage

PARTS = ("vision", "projector", "lm")


@dataclass
class TrainConfig:
    """One training stage. Align and SFT differ in defaults only (see align.py, sft.py)."""

    model: str = "scratch"  # "scratch" builds the tiny VLM from `tiny`; "embedded": the shipped model; else a path or hub id
    tiny: TinyVLMConfig = field(default_factory=TinyVLMConfig)
    tasks: dict[str, float] = field(default_factory=lambda: {"shapes": 1.0, "easyvqa": 1.0})
    task_params: dict[str, dict] = field(default_factory=dict)
    formats: dict[str, float] = field(default_factory=lambda: {"direct": 1.0})
    task_formats: dict[str, dict[str, float]] = field(default_factory=dict)  # per task, instead of formats (one_task_per_batch)
    eval_format: str | dict[str, str] = "direct"  # or per task: {shapes: think, default: direct}
    focal_gamma: float = 0.0  # > 0: focal loss, (1 - p)^gamma * cross-entropy per token: rare hard tokens weigh more
    token_weights: dict[str, float] = field(default_factory=dict)  # e.g. {yes: 10, no: 10}: target tokens reading so weigh more
    answer_format: str | dict[str, str] = ""  # recorded in the saved model: what `vrm ask/eval/demo/serve` use
    #   when no --format is given; one name, or per task: {shapes: think, default: direct}
    trainable: list[str] = field(default_factory=lambda: ["projector", "lm"])
    lora_r: int = 0  # > 0: LoRA adapters of this rank on the LM instead of full LM weights
    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    vision_lr: float = 0.0  # the vision tower's learning rate; 0: the same as lr
    warmup_steps: int = 100
    one_task_per_batch: bool = False  # each micro-batch from one task: long-question tasks pad only their own
    length_groups: int = 4  # a batch runs as up to this many forward calls of similar-length rows (same loss, less padding); 1: one call
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # bf16 autocast is ~17x slower on CPUs without AVX512-BF16
    eval_every: int = 200
    eval_n: int = 200
    save_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    out_dir: str = "runs/train"
    seed: int = 0
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        check_model_fields(self)
        every = [*self.formats, *(n for w in self.task_formats.values() for n in w)]
        for name in every + format_names(self.eval_format) + format_names(self.answer_format):
            get_format(name)
        if self.task_formats and not self.one_task_per_batch:
            raise ValueError("task_formats needs one_task_per_batch: true (one format per batch, drawn by its task)")
        if set(self.task_formats) - set(self.tasks):
            raise ValueError(f"task_formats names tasks not in tasks: {sorted(set(self.task_formats) - set(self.tasks))}")
        if any(not w > 0 for w in self.token_weights.values()):
            raise ValueError(f"token_weights must be > 0, got {self.token_weights}")
        if min(self.steps, self.batch_size, self.grad_accum, self.save_every, self.eval_every, self.length_groups) < 1:
            raise ValueError("steps, batch_size, grad_accum, save_every, eval_every and length_groups must be >= 1")


def check_model_fields(cfg) -> None:
    """What every training config (SFT, align, GRPO) checks alike: ``tiny`` given as a dict becomes a
    `TinyVLMConfig`; ``trainable`` is a non-empty subset of `PARTS`; ``mixed_precision`` is known."""
    if isinstance(cfg.tiny, dict):
        cfg.tiny = TinyVLMConfig(**cfg.tiny)
    if set(cfg.trainable) - set(PARTS) or not cfg.trainable:
        raise ValueError(f"trainable must be a non-empty subset of {PARTS}, got {cfg.trainable}")
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError("mixed_precision must be no, bf16 or fp16")


def part_of(param_name: str) -> str:
    """Which of vision / projector / lm a parameter belongs to (LLaVA and Qwen2-VL naming)."""
    if "multi_modal_projector" in param_name or ".merger." in param_name:
        return "projector"
    if "vision_tower" in param_name or ".visual." in param_name or param_name.startswith("visual."):
        return "vision"
    return "lm"


def set_trainable(model, parts: list[str]) -> int:
    """Freeze every parameter outside ``parts`` (and those that never reach the output); returns
    the number of trainable parameters."""
    unused = set(unused_vision_parameters(model))
    for name, p in model.named_parameters():
        p.requires_grad_(part_of(name) in parts and name not in unused)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters as AdamW groups: the vision tower at ``cfg.vision_lr`` (when set),
    the rest at ``cfg.lr``. The schedule scales every group's lr alike."""
    rest, vision = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (vision if cfg.vision_lr and part_of(name) == "vision" else rest).append(p)
    return [g for g in ({"params": rest, "lr": cfg.lr}, {"params": vision, "lr": cfg.vision_lr}) if g["params"]]


def train_mode(model):
    """``model.train()``, except for batch norms whose weights are frozen: they keep using and
    keeping their running statistics, so a frozen (LeViT) tower stays frozen."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
    return model


def add_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lm_linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and part_of(n + ".weight") == "lm" and "lm_head" not in n})
    extra = [p for p in ("vision", "projector") if p in cfg.trainable]
    keep = {"projector": ["multi_modal_projector", "merger"], "vision": ["vision_tower"]}
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules=lm_linear,
                      exclude_modules=r".*(vision_tower|visual|multi_modal_projector).*",
                      modules_to_save=[m for p in extra for m in keep[p]] or None)
    return get_peft_model(model, lora)


def config_tasks(cfg, **override) -> list:
    """The tasks ``cfg.tasks`` names, each built with its ``cfg.task_params`` (and ``override``,
    e.g. ``split="test"`` for evaluation). A name may carry a variant after "@" ("maze@long"), so
    that one task joins the mixture twice with different parameters (its own ``task_params`` entry)."""
    return [get_task(name.split("@")[0], **{**cfg.task_params.get(name, {}), **override}) for name in cfg.tasks]


def corpus(tasks, n: int = 3000) -> list[str]:
    """Text to train the tiny tokenizer on: every format's text for ``n`` samples of each task
    (questions, answers, captions, reasoning, the step lines of visual thoughts)."""
    texts = []
    for task in tasks:
        for seed in range(n):
            s = task.sample(seed)
            texts += [text for fmt in FORMATS.values() for text in fmt.corpus_texts(s, task)]
    return texts


def base_model(cfg: TrainConfig, tasks, out: Path, main: bool, stage: Stage | None = None):
    """The starting weights, saved once under ``out/base`` so a resumed run rebuilds the same model.

    ``stage.prepare`` changes them once before that save (e.g. MVoT adds image-code tokens)."""
    base = out / "base"
    if not (base / "config.json").is_file():
        if cfg.model == "scratch":
            named = {t.name for t in tasks}
            extra = [get_task(name) for name in cfg.tiny.tokenizer_tasks if name not in named]
            model, processor = build_tiny_vlm(cfg.tiny, corpus([*tasks, *extra], cfg.tiny.tokenizer_corpus))
        else:
            model, processor = load_model(None if cfg.model == "embedded" else cfg.model)
        if stage is not None:
            model, processor = stage.prepare(model, processor)
        if main:
            (stage.save if stage is not None else save_model)(model, processor, base)
        return model, processor
    return load_model(base)


def checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in (out / "checkpoints").glob("step_*") if (p / "DONE").is_file())


def save_checkpoint(accelerator: Accelerator, out: Path, step: int, keep: int) -> None:
    final = out / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "DONE").write_text(json.dumps({"step": step}))
        os.replace(tmp, final)
        kept = set(checkpoints(out)[-keep:])
        for old in (out / "checkpoints").glob("step_*"):  # older ones, and any a kill left half-deleted
            if old not in kept:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def log(out: Path, entry: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def truncate_log(out: Path, step: int) -> None:
    """Drop log lines past the resumed checkpoint (they will be written again)."""
    path = out / "log.jsonl"
    if path.is_file():
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by the kill
        write_atomic(path, "".join(line + "\n" for line in keep))


def train(cfg: TrainConfig, stage: Stage | None = None) -> Path:
    """Run one stage to ``cfg.steps``, resuming from the newest checkpoint in ``cfg.out_dir``.

    Returns the folder of the final HF checkpoint (``out_dir/final``).
    """
    stage = stage or Stage(cfg)
    torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    out = Path(cfg.out_dir)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", json.dumps(asdict(cfg), indent=2, default=str))
    tasks = config_tasks(cfg)
    model, processor = base_model(cfg, tasks, out, main, stage)
    stage.bind(processor)
    accelerator.wait_for_everyone()
    n_train = set_trainable(model, cfg.trainable)
    if cfg.lora_r:
        model = add_lora(model, cfg)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_mode(model)
    groups = param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    done = checkpoints(out)
    if done:
        accelerator.load_state(str(done[-1]))
        start = json.loads((done[-1] / "DONE").read_text())["step"]
        if main:
            truncate_log(out, start)
    elif main:
        (out / "log.jsonl").unlink(missing_ok=True)

    eval_tasks = config_tasks(cfg, split="test")
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = processor.tokenizer.eos_token_id

    seed = cfg.seed * 1000 + accelerator.process_index
    batches = Prefetcher(lambda draw: stage.batch_examples(processor, tasks, draw, seed))
    last_draw = cfg.steps * cfg.grad_accum - 1

    def run_eval(step: int) -> dict:
        batches.settle()  # the processor is the evaluation's now
        model.eval()
        pairs = [(t, s) for t in eval_tasks for s in eval_samples(t, n=cfg.eval_n, seed=0)]
        with accelerator.autocast():
            summary = stage.evaluate(accelerator.unwrap_model(model), processor, pairs)
        train_mode(model)
        return summary

    bar = tqdm(total=cfg.steps, initial=start, desc=out.name, unit="step", disable=not (main and cfg.progress))
    t0, losses, parts = time.time(), [], {}
    for step in range(start, cfg.steps):
        for micro in range(cfg.grad_accum):
            with accelerator.accumulate(model):
                draw = step * cfg.grad_accum + micro
                examples = batches.get(draw, draw + 1 if draw < last_draw else None)
                loss, named = stage.batch_loss(model, examples, pad_id, accelerator.device)
                for k, v in named.items():
                    parts.setdefault(k, []).append(float(v))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        scheduler.step()
        done_steps = step + 1
        bar.update(1)
        if not math.isfinite(losses[-1]):
            raise VrmError(f"loss became {losses[-1]} at step {done_steps}; lower lr or check the data")
        entry = None
        if done_steps % cfg.log_every == 0 or done_steps == cfg.steps:
            entry = {"step": done_steps, "loss": sum(losses) / len(losses), "lr": scheduler.get_last_lr()[0],
                     **{k: sum(v) / len(v) for k, v in parts.items()}, "elapsed": round(time.time() - t0, 1)}
            losses.clear()
            parts.clear()
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
        if done_steps % cfg.eval_every == 0 or done_steps == cfg.steps:
            entry = entry or {"step": done_steps}
            entry["eval"] = run_eval(done_steps)
            bar.write(f"step {done_steps}: eval accuracy {100 * entry['eval']['accuracy']:.1f}% "
                      + " ".join(f"{k} {100 * v:.1f}%" for k, v in entry["eval"]["per_task"].items()))
        if entry and main:
            log(out, entry)
        if done_steps % cfg.save_every == 0 or done_steps == cfg.steps:
            save_checkpoint(accelerator, out, done_steps, cfg.keep_checkpoints)
    bar.close()
    batches.close()

    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        model_out = accelerator.unwrap_model(model)
        if cfg.lora_r:
            model_out = model_out.merge_and_unload()
        if cfg.answer_format:
            model_out.config.answer_format = cfg.answer_format
        stage.save(model_out, processor, final)
        print(f"trained {n_train / 1e6:.2f}M parameters for {cfg.steps} steps -> {final}")
    return final
