"""Load and save any HF image-text-to-text model (local folder or hub id) the same way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vrm import VrmError
from vrm.model.build import hold_free_units_at_zero

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_model"


def load_model(path: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """Load (model, processor) from a checkpoint folder or a hub id; the embedded model by default.

    Hub ids are fetched only when the user names one and ``HF_HUB_OFFLINE`` is not set; a missing
    folder, an offline hub id or an incompatible checkpoint raise a one-line `VrmError`.
    """
    path = str(path or DEFAULT_MODEL_DIR)
    local = Path(path)
    looks_local = local.exists() or path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_local and not (local / "config.json").is_file():
        if (local / "DONE").is_file() and (local.parent.parent / "base" / "config.json").is_file():
            return load_training_checkpoint(local, dtype)
        raise VrmError(f"{path}: no model checkpoint here (config.json missing)")
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    except OSError as e:
        where = "folder" if looks_local else "hub id (offline, or not found)"
        raise VrmError(f"cannot load model {path!r} as a {where}: {str(e).splitlines()[0]}") from None
    except (ValueError, KeyError, RuntimeError) as e:
        raise VrmError(f"{path}: incompatible checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if getattr(model.config, "word_units_only", False):
        hold_free_units_at_zero(model)
    model.eval()
    return model, processor


def load_training_checkpoint(step_dir: Path, dtype: torch.dtype = torch.float32):
    """A training run's checkpoint (``RUN/checkpoints/step_N``, accelerate state): the run's base
    model (``RUN/base``) with that step's weights, so a run stopped early can be evaluated or shipped."""
    from safetensors.torch import load_file

    weights = step_dir / "model.safetensors"
    if not weights.is_file():
        raise VrmError(f"{step_dir}: no model.safetensors in this training checkpoint")
    model, processor = load_model(step_dir.parent.parent / "base", dtype)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight") and model.config.tie_word_embeddings}
    if unexpected or set(missing) - tied:
        raise VrmError(f"{step_dir}: weights do not fit the run's base model "
                       f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.tie_weights()
    model.eval()
    return model, processor


def drop_levit_stage_ends(config) -> None:
    """transformers' LevitEncoder appends ``[""]`` (the last stage's "no subsampling") to its config's
    ``down_ops`` each time it builds a model, so every load-and-save wrote one more: drop them before a
    save (the next build appends its own; nothing reads ``down_ops`` after building)."""
    vision = getattr(config, "vision_config", None)
    if getattr(vision, "model_type", None) == "levit":
        vision.down_ops = [op for op in vision.down_ops if op != [""]]


def save_model(model, processor, out_dir: str | Path, extras: dict | None = None) -> Path:
    """Save a standard HF checkpoint atomically: write beside, then swap folders.

    ``extras`` maps a subfolder name to another HF model saved inside the checkpoint (e.g. the image
    tokenizer of a model that draws visual thoughts)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    drop_levit_stage_ends(model.config)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    for name, extra in (extras or {}).items():
        extra.save_pretrained(tmp / name)
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir
