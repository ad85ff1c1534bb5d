"""Models: the tiny LLaVA built from config, and loading any HF image-text-to-text model."""

from vrm.model.build import TinyVLMConfig, build_tiny_vlm
from vrm.model.load import DEFAULT_MODEL_DIR, load_model, save_model

__all__ = ["TinyVLMConfig", "build_tiny_vlm", "load_model", "save_model", "DEFAULT_MODEL_DIR"]
