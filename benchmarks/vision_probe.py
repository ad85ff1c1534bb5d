"""Which vision tower learns to SEE shape from scratch, fast? A probe without the LM.

Each tower is built exactly as the tiny VLM builds it (`vrm.model.build.build_vision_config`), its
image features are selected as LLaVA selects them, mean-pooled over the 16 tokens, and a linear
head is trained on easy-VQA's shape label (circle / rectangle / triangle: one shape per 64x64
image, of any size and place, so it spans several 16x16 patches). Batch 32, AdamW lr 1e-3,
held-out accuracy on every test image whose questions reveal its shape, printed at each checkpoint:

    python benchmarks/vision_probe.py                       # clip vs levit, steps 100,300,1200
    python benchmarks/vision_probe.py --towers clip,clip8,levit --steps 100,300 --threads 2

``clip8`` is the CLIP tower with 8x8 patches (64 tokens). The README records what it printed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import AutoModel

from vrm.images import load_image
from vrm.model.build import TinyVLMConfig, build_vision_config
from vrm.tasks.easyvqa import EasyVQATask

SHAPE_NAMES = ("circle", "rectangle", "triangle")
TOWERS = {"clip": dict(vision_tower="clip"), "clip8": dict(vision_tower="clip", patch_size=8),
          "levit": dict(vision_tower="levit")}


def shape_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the split that has a "what shape" question, in [-1, 1], with its label."""
    rows = EasyVQATask(split=split).labelled_images("shape")
    pixels = [np.asarray(load_image(path).convert("RGB").resize((64, 64)), dtype=np.float32) / 127.5 - 1
              for path, _ in rows]
    x = torch.tensor(np.stack(pixels)).permute(0, 3, 1, 2)
    return x, torch.tensor([SHAPE_NAMES.index(shape) for _, shape in rows])


def features(tower, layer: int, strategy: str, pixels: torch.Tensor) -> torch.Tensor:
    hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
    return (hidden[:, 1:] if strategy == "default" else hidden).mean(1)


def probe(name: str, train: tuple, test: tuple, checkpoints: list[int], seed: int = 0) -> list[float]:
    cfg = TinyVLMConfig(**TOWERS[name])
    vision, layer, strategy, _ = build_vision_config(cfg)
    torch.manual_seed(seed)
    tower = AutoModel.from_config(vision)
    head = torch.nn.Linear(cfg.vision_hidden, len(SHAPE_NAMES))
    opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    (xtr, ytr), (xte, yte) = train, test
    accs, t0 = [], time.time()
    for step in range(1, max(checkpoints) + 1):
        tower.train()
        idx = torch.randint(len(xtr), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(head(features(tower, layer, strategy, xtr[idx])), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in checkpoints:
            tower.eval()
            with torch.no_grad():
                acc = (head(features(tower, layer, strategy, xte)).argmax(-1) == yte).float().mean().item()
            accs.append(acc)
            print(f"{name:6s} step {step:5d}  held-out shape accuracy {100 * acc:5.1f}%  "
                  f"({time.time() - t0:.0f}s)", flush=True)
    return accs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--towers", default="clip,levit")
    p.add_argument("--steps", default="100,300,1200")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    checkpoints = sorted(int(s) for s in args.steps.split(","))
    train, test = shape_images("train"), shape_images("test")
    print(f"easy-VQA shape labels: {len(train[1])} train images, {len(test[1])} test images")
    table = {name: probe(name, train, test, checkpoints) for name in args.towers.split(",")}
    print("\n| tower | " + " | ".join(f"step {s}" for s in checkpoints) + " |")
    print("|---|" + "---|" * len(checkpoints))
    for name, accs in table.items():
        print(f"| {name} | " + " | ".join(f"{100 * a:.1f}%" for a in accs) + " |")


if __name__ == "__main__":
    main()
