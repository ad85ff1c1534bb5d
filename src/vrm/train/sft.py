"""Stage 2 of the LLaVA recipe, visual instruction tuning: answer questions about images.

Projector and LM train, the vision tower stays frozen by default; loss is on answer tokens only.
By default it starts from the alignment stage's final checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vrm.train.loop import TrainConfig, train


@dataclass
class SFTConfig(TrainConfig):
    model: str = "runs/align/final"
    trainable: list[str] = field(default_factory=lambda: ["projector", "lm"])
    lr: float = 2e-4
    out_dir: str = "runs/sft"


def run(cfg: SFTConfig) -> Path:
    return train(cfg)
