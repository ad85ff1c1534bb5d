"""Stage 1 of the LLaVA recipe, feature alignment: learn to describe images.

Targets are dense captions the tasks derive from their traces (every object with its attributes
and position), so every image patch gets a learning signal. LLaVA trains only the projector here
(lr 1e-3); the tiny model's recipe first gives its from-scratch tower sight with the vision stage
(`vrm.train.vision`), then trains projector + LM here with the tower frozen (recipes/tiny.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vrm.train.loop import TrainConfig, train


@dataclass
class AlignConfig(TrainConfig):
    formats: dict[str, float] = field(default_factory=lambda: {"caption": 1.0})
    eval_format: str = "caption"
    trainable: list[str] = field(default_factory=lambda: ["projector"])
    lr: float = 1e-3
    out_dir: str = "runs/align"


def run(cfg: AlignConfig) -> Path:
    return train(cfg)
