"""R1-style RL of a VLM with GRPO: sample G completions per image question, reward them with
plain functions (`vrm.rewards`), push up the better-than-group-average ones.

What it does, and what it leaves out:

1. Advantages are group-relative: ``(r - group mean) / (group std + eps)`` (``algorithm: grpo``),
   or Dr. GRPO (``algorithm: dr_grpo``): no std division and no length normalisation (the loss sums
   tokens and divides by a constant, ``max_new_tokens`` per completion).
2. The loss is PPO's clipped importance ratio per token (``epsilon``), with old log-probs computed
   once per rollout batch and reused for ``num_iterations`` optimisation passes over it; with one
   pass they equal the current ones and are not computed at all.
3. KL to a frozen reference (k3 estimator) only when ``beta > 0``; at ``beta: 0`` (the default, as
   TRL) no reference model exists at all.
4. No value model, no reward model, no entropy bonus: rewards are verifiable answers and layout.
5. A group whose completions all score the same has zero advantage and (at ``beta: 0``) zero
   gradient, so it is left out of the update: the same gradient for less compute. Likewise each
   prompt (image tokens included) runs once per group, for sampling and for scoring (`Policy`).

Every step is a pure function of (seed, step, rank): its prompts (`step_samples`) and the sampling
RNG, so a resumed run repeats exactly what an uninterrupted one does. Checkpoints are the SFT
loop's (`vrm.train.loop`): written aside and renamed, newest whole one resumed.

Runs on accelerate (one process per device, DDP; each process samples its own prompts and groups,
gradients are averaged, every rank checks at the end that all hold the same weights)::

    vrm train grpo --recipe recipes/grpo.yaml steps=100
    accelerate launch --multi_gpu --num_processes 2 -m vrm.cli train grpo --recipe recipes/grpo.yaml
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m vrm.cli train grpo ...  # CPU, gloo

(On CPU, ``accelerate launch --cpu`` starts a single process unless MPI is set up; the line above,
or ``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m vrm.cli train grpo ...``, starts two.)

DeepSpeed and FSDP: ``accelerate config`` writes a setup, passed as ``accelerate launch
--config_file F``; TRL ships examples to start from (``trl/accelerate_configs/zero2.yaml``,
``zero3.yaml``, ``fsdp2.yaml``). Neither is tested here (no GPU; the test covers DDP). Keep
DeepSpeed's own gradient accumulation at 1 (``grad_accum`` micro-batches here). ZeRO-3 and FSDP
shard the weights, while HF generation here runs the unwrapped model: use them with
``backend: vllm`` or gather the parameters around generation first. vLLM needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from vrm import VrmError
from vrm.eval.run import evaluate
from vrm.files import write_atomic
from vrm.formats import get_format
from vrm.model.build import TinyVLMConfig
from vrm.model.load import DEFAULT_MODEL_DIR, save_model
from vrm.rewards import check_weights, combined, format_reward
from vrm.tasks import eval_samples
from vrm.train import end_distributed
from vrm.train.data import step_samples
from vrm.train.grpo_loss import group_advantages, policy_loss
from vrm.train.loop import add_lora, check_model_fields, base_model, config_tasks, checkpoints, log, save_checkpoint, set_trainable, truncate_log
from vrm.train.rollout import (Policy, encode_prompts, get_backend, rollout, rollout_metrics, rollout_seed,
                               sharing_error)

ALGORITHMS = ("grpo", "dr_grpo")
COUNTS = ("data_errors",)  # log fields summed, not averaged, over the steps of a log line


@dataclass
class GRPOConfig:
    """One GRPO run. ``batch_size`` counts prompts per step and process; each gets
    ``num_generations`` completions, so a step scores ``batch_size * num_generations`` of them."""

    model: str = "embedded"  # "embedded" (the shipped model), "scratch" (from `tiny`), or a path / hub id
    tiny: TinyVLMConfig = field(default_factory=TinyVLMConfig)
    tasks: dict[str, float] = field(default_factory=lambda: {"shapes": 1.0})
    task_params: dict[str, dict] = field(default_factory=dict)
    format: str = "think"  # how prompts ask and completions are parsed, in training and evaluation
    rewards: dict[str, float] = field(default_factory=lambda: {"correctness": 1.0, "format": 0.5})
    trainable: list[str] = field(default_factory=lambda: ["projector", "lm"])
    lora_r: int = 0
    steps: int = 200  # rollout steps; each makes num_iterations optimiser steps
    batch_size: int = 8
    num_generations: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    algorithm: str = "grpo"  # "grpo" or "dr_grpo"
    epsilon: float = 0.2
    beta: float = 0.0
    num_iterations: int = 1
    grad_accum: int = 1  # micro-batches per pass, split by prompt (batch_size must divide by it)
    share_prompt: bool = True  # run each prompt once per group (verified against the plain forward)
    backend: str = "hf"  # "hf" (transformers generate) or "vllm" (GPU)
    vllm_gpu_memory: float = 0.3
    lr: float = 5e-5  # the tiny model; ~1e-6 for billion-parameter VLMs
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    eval_every: int = 50  # 0: no evaluation
    eval_n: int = 200
    eval_at_start: bool = True
    save_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    out_dir: str = "runs/grpo"
    seed: int = 0
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        check_model_fields(self)
        if not get_format(self.format).text_only:
            raise ValueError(f"GRPO samples text completions; format {self.format!r} draws images")
        check_weights(self.rewards)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: advantages compare completions of one prompt")
        if min(self.steps, self.batch_size, self.max_new_tokens, self.num_iterations, self.grad_accum,
               self.save_every, self.log_every) < 1 or self.eval_every < 0:
            raise ValueError("steps, batch_size, max_new_tokens, num_iterations, grad_accum, save_every and "
                             "log_every must be >= 1, eval_every >= 0")
        if self.batch_size % self.grad_accum:
            raise ValueError("batch_size must be a multiple of grad_accum")
        if self.temperature <= 0 or self.epsilon <= 0 or self.beta < 0:
            raise ValueError("temperature and epsilon must be > 0, beta >= 0")


def weights_digest(model) -> str:
    """sha256 of every parameter's bytes, in order: equal on every rank after a correct DDP step."""
    h = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def mean_entries(entries: list[dict]) -> dict:
    """Average the numeric fields of several per-step entries (for ``log_every > 1``); counts add up.

    >>> mean_entries([{"reward": 1.0, "data_errors": 1}, {"reward": 0.0, "data_errors": 2}])
    {'reward': 0.5, 'data_errors': 3}
    """
    out = {}
    for key in entries[-1]:
        total = sum(e[key] for e in entries)
        out[key] = total if key in COUNTS else total / len(entries)
    return out


def train(cfg: GRPOConfig) -> Path:
    """Run GRPO to ``cfg.steps``, resuming from the newest checkpoint in ``cfg.out_dir``.

    Returns the folder of the final HF checkpoint (``out_dir/final``).
    """
    torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and accelerator.num_processes == 1:
        raise VrmError(f"launched as {os.environ['WORLD_SIZE']} processes but accelerate sees one, so each would "
                       "train alone; on CPU set ACCELERATE_USE_CPU=true")
    out, main, G = Path(cfg.out_dir), accelerator.is_main_process, cfg.num_generations
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", json.dumps(asdict(cfg), indent=2, default=str))
    tasks = config_tasks(cfg)
    task_weights = list(cfg.tasks.values())
    fmt = get_format(cfg.format)
    source = str(DEFAULT_MODEL_DIR) if cfg.model == "embedded" else cfg.model
    model, processor = base_model(replace(cfg, model=source), tasks, out, main)
    accelerator.wait_for_everyone()
    reference = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None
    n_train = set_trainable(model, cfg.trainable)
    if cfg.lora_r:
        model = add_lora(model, cfg)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Eval mode throughout (the tiny models have no dropout): the policy's log-probs must match the
    # rollout's, and a batch-norm vision tower (levit) in train mode would use batch statistics.
    model.eval()
    policy = Policy(model, cfg.share_prompt)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps * cfg.num_iterations)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if reference is not None:
        reference = Policy(reference.to(accelerator.device), cfg.share_prompt)
    vllm = {"model_path": str(out / "base"), "gpu_memory_utilization": cfg.vllm_gpu_memory, "seed": cfg.seed}
    backend = get_backend(cfg.backend, share_prompt=cfg.share_prompt, **(vllm if cfg.backend == "vllm" else {}))

    start = 0
    done = checkpoints(out)
    if done:
        accelerator.load_state(str(done[-1]))
        start = json.loads((done[-1] / "DONE").read_text())["step"]
        if main:
            truncate_log(out, start)
    elif main:
        (out / "log.jsonl").unlink(missing_ok=True)
    unwrapped = accelerator.unwrap_model(policy)
    backend.sync(unwrapped.model)
    eval_tasks = config_tasks(cfg, split="test")

    def run_eval() -> dict:
        """Held-out accuracy in the format, and the share of outputs in its exact layout."""
        pairs = [(t, s) for t in eval_tasks for s in eval_samples(t, n=cfg.eval_n, seed=0)]
        with accelerator.autocast():
            summary, records = evaluate(unwrapped.model, processor, pairs, cfg.format,
                                        max_new_tokens=cfg.max_new_tokens, progress=False)
        layout = format_reward([None] * len(records), [r["output"] for r in records], [None] * len(records), fmt)
        summary["format_ok"] = sum(v == 1.0 for v in layout.total) / max(1, len(records))
        return summary

    if cfg.share_prompt:  # same log-probs for less compute, unless the model's positions are not plain counts
        probe = step_samples(tasks, task_weights, start, 2, cfg.seed)
        probe = encode_prompts(processor, [s.image for _, s in probe], [fmt.prompt(s) for _, s in probe])
        diff = sharing_error(unwrapped, {k: v.to(accelerator.device) for k, v in probe.items()}, cfg.temperature)
        if diff > (1e-3 if cfg.mixed_precision == "no" else 5e-2):
            tqdm.write(f"vrm: sharing the prompt changes log-probs by {diff:.2g} for this model; not sharing it")
            for user in (unwrapped, reference, backend):
                if user is not None:
                    user.share_prompt = False
    if start == 0 and cfg.eval_at_start and cfg.eval_every and main:  # other ranks go on, DDP waits for main
        entry = {"step": 0, "elapsed": 0.0, "eval": run_eval()}
        log(out, entry)
        tqdm.write(f"step 0: eval accuracy {100 * entry['eval']['accuracy']:.1f}%, "
                   f"format {100 * entry['eval']['format_ok']:.1f}%")

    per_chunk = cfg.batch_size // cfg.grad_accum
    bar = tqdm(total=cfg.steps, initial=start, desc=out.name, unit="step", disable=not (main and cfg.progress))
    t_start, pending = time.time(), []
    for step in range(start, cfg.steps):
        t0 = time.time()
        pairs = step_samples(tasks, task_weights, step, cfg.batch_size, cfg.seed * 1000 + accelerator.process_index)
        torch.manual_seed(rollout_seed(cfg.seed, step, accelerator.process_index))
        with accelerator.autocast():
            r = rollout(backend, unwrapped.model, processor, [s.image for _, s in pairs],
                        [fmt.prompt(s) for _, s in pairs], G, cfg.max_new_tokens, cfg.temperature)
        rewards = combined(cfg.rewards, [s for _, s in pairs for _ in range(G)], r.texts,
                           [t for t, _ in pairs for _ in range(G)], fmt)
        advantages = group_advantages(torch.tensor(rewards.total), G, scale=cfg.algorithm == "grpo")
        advantages = advantages.to(accelerator.device)
        t_rollout = time.time() - t0

        # Groups with equal rewards have zero advantage and, at beta 0, zero gradient: only the others
        # are scored (one is kept when none has signal, so every rank still takes part in the update).
        live = [g for g in range(cfg.batch_size) if cfg.beta > 0 or advantages[g * G:(g + 1) * G].any()]
        signal = 1.0 if live else 0.0
        live = live or [0]
        chunks = [r.take(live[i:i + per_chunk], accelerator.device) for i in range(0, len(live), per_chunk)]
        old, ref = [None] * len(chunks), [None] * len(chunks)
        with torch.no_grad(), accelerator.autocast():
            for i, (prompts, ids, _, _) in enumerate(chunks):
                if cfg.num_iterations > 1:
                    old[i] = unwrapped(prompts, ids, G, cfg.temperature)[0]
                if reference is not None:
                    ref[i] = reference(prompts, ids, G, cfg.temperature)[0]

        stats = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0, "entropy": 0.0}
        for _ in range(cfg.num_iterations):
            for i, (prompts, ids, mask, rows) in enumerate(chunks):
                share = signal * len(rows) / len(r.texts)  # a chunk's mean loss, as part of the batch's mean
                with accelerator.no_sync(policy) if i < len(chunks) - 1 else nullcontext(), accelerator.autocast():
                    logps, entropy = policy(prompts, ids, G, cfg.temperature)
                    loss, s = policy_loss(logps, logps.detach() if old[i] is None else old[i], advantages[rows], mask,
                                          cfg.epsilon, cfg.beta, ref[i], cfg.algorithm == "grpo", cfg.max_new_tokens)
                    accelerator.backward(loss * share)
                part = len(rows) / (len(live) * G * cfg.num_iterations)  # stats: means over the scored rows
                stats["loss"] += loss.item() * share / cfg.num_iterations
                stats["clip_fraction"] += s["clip_fraction"] * part
                stats["kl"] += s["kl"] * part
                stats["entropy"] += float((entropy * mask).sum() / mask.sum().clamp(min=1)) * part
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        backend.sync(unwrapped.model)
        if not math.isfinite(stats["loss"]):
            raise VrmError(f"loss became {stats['loss']} at step {step + 1}; lower lr or check the rewards")

        local = {**rollout_metrics(r, rewards), **stats, "rollout_s": t_rollout,
                 "update_s": time.time() - t0 - t_rollout}
        values = accelerator.gather(torch.tensor([list(local.values())], device=accelerator.device)).mean(0)
        errors = int(accelerator.gather(torch.tensor([len(rewards.data_errors)], device=accelerator.device)).sum())
        entry = {"step": step + 1, **dict(zip(local, values.tolist())), "data_errors": errors}
        pending.append(entry)
        if rewards.data_errors and main:
            bar.write(f"step {step + 1}: {len(rewards.data_errors)} gold answer(s) cannot be checked, no reward "
                      f"given: {'; '.join(rewards.data_errors[:3])}")
        done_steps = step + 1
        bar.update(1)
        bar.set_postfix(reward=f"{entry['reward']:.3f}", acc=f"{entry.get('accuracy', 0):.2f}")
        to_log = None
        if done_steps % cfg.log_every == 0 or done_steps == cfg.steps:
            to_log = {**mean_entries(pending), "step": done_steps, "lr": scheduler.get_last_lr()[0],
                      "elapsed": round(time.time() - t_start, 1)}
            pending.clear()
        if main and cfg.eval_every and (done_steps % cfg.eval_every == 0 or done_steps == cfg.steps):
            to_log = to_log or {"step": done_steps, "elapsed": round(time.time() - t_start, 1)}
            to_log["eval"] = run_eval()
            bar.write(f"step {done_steps}: eval accuracy {100 * to_log['eval']['accuracy']:.1f}%, "
                      f"format {100 * to_log['eval']['format_ok']:.1f}%")
        if to_log and main:
            log(out, to_log)
        if done_steps % cfg.save_every == 0 or done_steps == cfg.steps:
            save_checkpoint(accelerator, out, done_steps, cfg.keep_checkpoints)
    bar.close()

    replicated = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                                  DistributedType.MULTI_GPU)  # DDP: every rank holds all weights
    digests = gather_object([weights_digest(unwrapped) if replicated else "sharded"])
    if len(set(digests)) != 1:
        raise VrmError(f"the {len(digests)} processes ended with different weights: {digests}")
    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        model_out = unwrapped.model.merge_and_unload() if cfg.lora_r else unwrapped.model
        save_model(model_out, processor, final)
        print(f"trained {n_train / 1e6:.2f}M parameters for {cfg.steps} GRPO steps on {accelerator.num_processes} "
              f"process(es), weights sha256 {digests[0][:16]} on every rank -> {final}")
    return final


def run(cfg: GRPOConfig) -> Path:
    return train(cfg)


def main(argv: list[str] | None = None) -> None:
    """``python -m vrm.train.grpo [--recipe R] [--quiet] key=value ...`` (for ``accelerate launch``)."""
    from vrm.config import load_config

    p = argparse.ArgumentParser(prog="python -m vrm.train.grpo")
    p.add_argument("--recipe")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*")
    args, extra = p.parse_known_args(argv)  # key=value after an option: argparse's nargs="*" stops at options
    if any("=" not in e for e in extra):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides += extra
    cfg = load_config(GRPOConfig, args.recipe, "grpo" if args.recipe else None,
                      args.overrides + (["progress=false"] if args.quiet else []))
    try:
        run(cfg)
    except BaseException:
        end_distributed(ok=False)
        raise
    end_distributed()


if __name__ == "__main__":
    main()
