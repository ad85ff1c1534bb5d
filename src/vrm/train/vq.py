"""Training the image tokenizer of visual thoughts (`vrm train vq`): a VQ-VAE (`vrm.model.vq`) on
renderings of the spatial tasks' states, the images an MVoT model learns to draw as codes.

Setup, loop (step, evaluate, save), finish, on `loop.py`'s checkpoints and log; batches are a pure
function of (seed, step), so a resumed run repeats nothing. Loss: pixel MSE + the VQ loss. Every
``restart_every`` steps, codes no latent picked since the last restart move onto latents no code
fits (dead-code restart; seeded, usage counts checkpointed). Only misfits count: a patch that owns
a code but is still drawn badly keeps it, else the decoder would start over on it at each restart.
Evaluation round-trips held-out states and scores them cell by cell (`vrm.eval.cells`).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from PIL import Image
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from vrm import VrmError
from vrm.eval.cells import cells_right, grid_size
from vrm.files import write_atomic
from vrm.model.vq import ImageTokenizer, ImageTokenizerConfig
from vrm.tasks import TEST_SEED_BASE, Task, eval_samples
from vrm.train.loop import checkpoints, config_tasks, log, save_checkpoint, truncate_log

RESTART_UNTIL = 0.8  # fraction of the steps after which dead codes are left alone
MIN_MISFIT = 0.01  # cosine distance from the nearest code below which a latent counts as served


@dataclass
class VQConfig:
    """The image tokenizer's sizes (see `ImageTokenizerConfig`) and how to train it. The defaults are
    recipes/spatial.yaml's: about 90 s of two CPU cores."""

    tasks: dict[str, float] = field(default_factory=lambda: {"frozenlake": 1.0, "maze": 1.0, "minibehavior": 1.0})
    task_params: dict[str, dict] = field(default_factory=dict)
    image_size: int = 64
    downsample: int = 8
    codebook_size: int = 1024  # the three tasks draw ~580 kinds of 8 px patch
    code_dim: int = 16
    channels: int = 256  # above 192 = 8 x 8 x 3, so the decoder's last layer can draw any patch exactly
    beta: float = 0.25
    steps: int = 2500
    batch_size: int = 16
    lr: float = 3e-3  # AdamW; at 1e-2 every seed tried collapsed onto the white background of 8 px cells
    warmup_steps: int = 50
    restart_every: int = 50  # 0: no dead-code restarts
    eval_every: int = 500
    eval_n: int = 200  # held-out states per task
    save_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 25
    out_dir: str = "runs/vq"
    seed: int = 0
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        self.tokenizer_config()  # raises for bad sizes
        if min(self.steps, self.batch_size, self.save_every, self.eval_every, self.log_every, self.eval_n) < 1:
            raise ValueError("steps, batch_size, save_every, eval_every, log_every and eval_n must be >= 1")
        if self.restart_every < 0:
            raise ValueError("restart_every must be >= 0 (0: no restarts)")

    def tokenizer_config(self) -> ImageTokenizerConfig:
        return ImageTokenizerConfig(image_size=self.image_size, downsample=self.downsample,
                                    codebook_size=self.codebook_size, code_dim=self.code_dim,
                                    channels=self.channels, beta=self.beta)


def step_images(tasks: list[Task], weights: list[float], step: int, batch_size: int, seed: int) -> list[Image.Image]:
    """The training images of one step: per row a seeded task, training sample and state."""
    images = []
    for row in range(batch_size):
        rng = random.Random(f"vq-{seed}-{step}-{row}")
        task = rng.choices(tasks, weights=weights)[0]
        trace = task.sample(rng.randrange(TEST_SEED_BASE)).trace
        images.append(task.render(trace, rng.randrange(len(trace["states"]))))
    return images


def eval_images(tasks: list[Task], n: int) -> list[tuple[str, Image.Image, int]]:
    """(task name, rendering, grid n) for a random state of each of n held-out samples per task."""
    out = []
    for task in tasks:
        for sample in eval_samples(task, n=n, seed=0):
            k = random.Random(f"vq-eval-{sample.id}").randrange(len(sample.trace["states"]))
            out.append((task.name, task.render(sample.trace, k), grid_size(sample.trace)))
    return out


@torch.no_grad()
def evaluate(model: ImageTokenizer, items: list[tuple[str, Image.Image, int]], batch: int = 100) -> dict:
    """Round-trip the images through the codes: ``per_task`` share of cells right (`vrm.eval.cells`),
    ``accuracy`` (their mean), ``images_right`` (per task, every cell right), ``usage`` (distinct
    codes used / K) and ``mse`` (pixels in [-1, 1])."""
    cells, right, whole, squares, used = defaultdict(int), defaultdict(int), defaultdict(list), [], set()
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        codes = model.encode([truth for _, truth, _ in chunk])
        used.update(codes.unique().tolist())
        for (name, truth, n), image in zip(chunk, model.decode(codes)):
            image = image if image.size == truth.size else image.resize(truth.size, Image.BILINEAR)
            ok = cells_right(image, truth, n)
            cells[name] += ok.size
            right[name] += int(ok.sum())
            whole[name].append(bool(ok.all()))
            diff = (np.asarray(image, np.float32) - np.asarray(truth.convert("RGB"), np.float32)) / 127.5
            squares.append(float((diff ** 2).mean()))
    per_task = {name: right[name] / cells[name] for name in cells}
    return {"accuracy": sum(per_task.values()) / len(per_task), "per_task": per_task,
            "images_right": {name: sum(v) / len(v) for name, v in whole.items()},
            "usage": len(used) / model.config.codebook_size, "mse": sum(squares) / len(squares)}


@torch.no_grad()
def restart_dead_codes(model: ImageTokenizer, counts: torch.Tensor, latents: torch.Tensor,
                       generator: torch.Generator) -> int:
    """Move codes with ``counts == 0`` (K,) onto latents of the batch (B, D, h, w) that sit further
    than `MIN_MISFIT` (cosine distance) from every code: patches sharing a code with another kind
    of patch. Equal patches have equal latents and count once (weighted by how often they occur
    times how badly they fit), so no two codes land on one point. Returns how many codes moved."""
    dead = (counts == 0).nonzero().squeeze(1)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    points, which = torch.unique((flat * 1e4).round(), dim=0, return_inverse=True)
    points = F.normalize(points, dim=1)
    misfit = 1 - (points @ model.codebook_vectors().T).max(dim=1).values
    weights = torch.bincount(which, minlength=len(points)).float() * misfit * (misfit > MIN_MISFIT)
    n = min(len(dead), int((weights > 0).sum()))
    if n == 0:
        return 0
    pick = torch.multinomial(weights, n, replacement=False, generator=generator)
    model.codebook.weight[dead[:n]] = points[pick]
    return n


def save_final(model: ImageTokenizer, final: Path, report: dict) -> Path:
    """``save_pretrained`` plus report.json beside, then swap folders (as `vrm.model.load.save_model`)."""
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    for folder in (tmp, old):
        shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def run(cfg: VQConfig) -> Path:
    """Train to ``cfg.steps``, resuming from the newest checkpoint in ``cfg.out_dir``; returns the
    final model's folder (``out_dir/final``, with ``report.json``)."""
    torch.set_num_threads(cfg.threads)
    accelerator = Accelerator()
    out, main = Path(cfg.out_dir), accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", json.dumps(asdict(cfg), indent=2, default=str))
    tasks, weights = config_tasks(cfg), list(cfg.tasks.values())
    torch.manual_seed(cfg.seed)
    model = ImageTokenizer(cfg.tokenizer_config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    usage = torch.nn.Module()  # picks per code since the last restart, in the checkpoints
    usage.register_buffer("counts", torch.zeros(cfg.codebook_size, dtype=torch.long))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(usage)
    core = accelerator.unwrap_model(model)

    start = 0
    done = checkpoints(out)
    if done:
        accelerator.load_state(str(done[-1]))
        start = json.loads((done[-1] / "DONE").read_text())["step"]
        if main:
            truncate_log(out, start)
    elif main:
        (out / "log.jsonl").unlink(missing_ok=True)
    held_out = eval_images(tasks, cfg.eval_n)
    bar = tqdm(total=cfg.steps, initial=start, desc=out.name, unit="step", disable=not (main and cfg.progress))
    t0, eval_seconds, sums, report = time.time(), 0.0, defaultdict(float), {}
    for step in range(start, cfg.steps):
        x = core.pixels(step_images(tasks, weights, step, cfg.batch_size, cfg.seed * 1000 + accelerator.process_index))
        recon, vq_loss, codes = model(x)
        mse = F.mse_loss(recon, x)
        loss = mse + vq_loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        usage.counts += torch.bincount(codes.flatten().cpu(), minlength=cfg.codebook_size)
        done_steps = step + 1
        if not math.isfinite(loss.item()):
            raise VrmError(f"loss became {loss.item()} at step {done_steps}; lower lr")
        for key, value in (("loss", loss.item()), ("mse", mse.item()), ("vq", vq_loss.item()), ("n", 1)):
            sums[key] += value
        if cfg.restart_every and done_steps % cfg.restart_every == 0:
            if done_steps <= RESTART_UNTIL * cfg.steps:
                generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + done_steps)
                with torch.no_grad():
                    sums["restarted"] += restart_dead_codes(core, usage.counts, core.latents(x), generator)
            usage.counts.zero_()
        bar.update(1)
        entry = None
        if done_steps % cfg.log_every == 0 or done_steps == cfg.steps:
            n, restarted = sums.pop("n"), int(sums.pop("restarted", 0))
            entry = {"step": done_steps, **{k: v / n for k, v in sums.items()}, "restarted": restarted,
                     "lr": scheduler.get_last_lr()[0], "elapsed": round(time.time() - t0, 1)}
            sums.clear()
            bar.set_postfix(mse=f"{entry['mse']:.4f}")
        if done_steps % cfg.eval_every == 0 or done_steps == cfg.steps:
            t = time.time()
            model.eval()
            entry = {**(entry or {"step": done_steps}), "eval": (report := evaluate(core, held_out))}
            model.train()
            eval_seconds += time.time() - t
            bar.write(f"step {done_steps}: cells right {100 * report['accuracy']:.2f}% "
                      + " ".join(f"{k} {100 * v:.2f}%" for k, v in report["per_task"].items())
                      + f", codebook usage {100 * report['usage']:.0f}%, mse {report['mse']:.5f}")
        if entry and main:
            log(out, entry)
        if done_steps % cfg.save_every == 0 or done_steps == cfg.steps:
            save_checkpoint(accelerator, out, done_steps, cfg.keep_checkpoints)
    bar.close()

    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        seconds = (time.time() - t0 - eval_seconds) / max(1, cfg.steps - start)  # training only
        report = {**(report or evaluate(core.eval(), held_out)), "steps": cfg.steps, "seconds_per_step": seconds}
        save_final(core, final, report)
        print(f"trained {sum(p.numel() for p in core.parameters()) / 1e6:.2f}M parameters for {cfg.steps} steps "
              f"({seconds:.2f} s/step) -> {final}")
    return final
