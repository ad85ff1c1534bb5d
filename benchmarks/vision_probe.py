"""Which vision tower learns to SEE shape from scratch, fast? A probe without the LM.

Each tower is built exactly as the tiny VLM builds it (`vrm.model.build.build_vision_config`), its
image features are selected as LLaVA selects them, mean-pooled over the 16 tokens, and a linear
head is trained on easy-VQA's shape label (circle / rectangle / triangle: one shape per 64x64
image, of any size and place, so it spans several 16x16 patches). Batch 32, AdamW lr 1e-3,
held-out accuracy on every test image whose questions reveal its shape, printed at each checkpoint:

    python benchmarks/vision_probe.py                       # clip vs levit, steps 100,300,1200
    python benchmarks/vision_probe.py --towers clip,clip8,levit --steps 100,300 --threads 2

``clip8`` is the CLIP tower with 8x8 patches (64 tokens). With ``--frozen CKPT`` it instead
probes a trained checkpoint: its frozen tower's and projector's mean-pooled features, a linear head
fitted on the train images (500 full-batch Adam steps on standardised features):

    python benchmarks/vision_probe.py --frozen src/vrm/default_model

The README records what it printed.
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


def image_tokens(tower, layer: int, strategy: str, pixels: torch.Tensor) -> torch.Tensor:
    """(B, tokens, hidden): the tower's features as LLaVA selects them (hidden state, CLS dropped)."""
    hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
    return hidden[:, 1:] if strategy == "default" else hidden


def features(tower, layer: int, strategy: str, pixels: torch.Tensor) -> torch.Tensor:
    return image_tokens(tower, layer, strategy, pixels).mean(1)


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


def frozen_probe(path: str, train: tuple, test: tuple) -> dict[str, float]:
    """Held-out shape accuracy of a linear head on a checkpoint's frozen features (tower, projector)."""
    from vrm.model import load_model

    model, _ = load_model(path)
    model.eval()
    cfg = model.config

    @torch.no_grad()
    def pooled(x: torch.Tensor, where: str) -> torch.Tensor:
        h = image_tokens(model.model.vision_tower, cfg.vision_feature_layer, cfg.vision_feature_select_strategy, x)
        return (model.model.multi_modal_projector(h) if where == "projector" else h).mean(1)

    torch.manual_seed(0)
    out = {}
    for where in ("tower", "projector"):
        ftr, fte = pooled(train[0], where), pooled(test[0], where)
        mu, sd = ftr.mean(0), ftr.std(0) + 1e-5
        ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
        head = torch.nn.Linear(ftr.shape[1], len(SHAPE_NAMES))
        opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
        for _ in range(500):
            loss = torch.nn.functional.cross_entropy(head(ftr), train[1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[where] = (head(fte).argmax(-1) == test[1]).float().mean().item()
        print(f"{path}: {where} features, held-out shape accuracy {100 * out[where]:.1f}%")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--towers", default="clip,levit")
    p.add_argument("--steps", default="100,300,1200")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frozen", help="probe this checkpoint's frozen features instead of training towers")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    checkpoints = sorted(int(s) for s in args.steps.split(","))
    train, test = shape_images("train"), shape_images("test")
    print(f"easy-VQA shape labels: {len(train[1])} train images, {len(test[1])} test images")
    if args.frozen:
        frozen_probe(args.frozen, train, test)
        return
    table = {name: probe(name, train, test, checkpoints) for name in args.towers.split(",")}
    print("\n| tower | " + " | ".join(f"step {s}" for s in checkpoints) + " |")
    print("|---|" + "---|" * len(checkpoints))
    for name, accs in table.items():
        print(f"| {name} | " + " | ".join(f"{100 * a:.1f}%" for a in accs) + " |")


if __name__ == "__main__":
    main()
