"""Build the tiny LLaVA from config: CLIP-style ViT -> Linear-GELU-Linear projector ->
Llama-style LM, with a locally trained tokenizer and a `LlavaProcessor`.

The result is a plain `LlavaForConditionalGeneration` checkpoint: `AutoModelForImageTextToText`
and `AutoProcessor` load it offline from its folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LevitConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from vrm.model.tokenizer import IMAGE_TOKEN, train_tokenizer


VISION_TOWERS = ("clip", "levit")
PROJECTOR_ACTS = ("gelu", "sigmoid")


@dataclass
class TinyVLMConfig:
    """Sizes of the tiny VLM. 16 image tokens for a 64x64 image with ``patch_size=16``: one token per grid cell of `shapes`."""

    image_size: int = 64
    patch_size: int = 16
    vision_tower: str = "levit"  # levit: LeViT's conv stem; clip: a ViT on linear patches (build_vision_config)
    vision_hidden: int = 192
    vision_layers: int = 1  # clip only; deeper from-scratch towers blur which patch is which (see README)
    vision_heads: int = 4
    vision_feature_layer: int = -1  # which ViT hidden state feeds the projector (-2 with 1 layer: patch embeddings)
    lm_hidden: int = 256
    lm_layers: int = 4
    lm_heads: int = 4
    lm_intermediate: int = 768
    vocab_size: int = 1024
    max_positions: int = 512
    tokenizer_corpus: int = 3000  # samples per task whose text trains the tokenizer
    tokenizer_tasks: list[str] = field(default_factory=list)  # more tasks whose text it learns (not trained on)
    layout: str = "text_first"  # the chat template's order of question and image (see model.tokenizer.chat_template)
    projector_act: str = "gelu"  # LLaVA's; sigmoid reads word units as probabilities (vrm.train.vision)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.vision_hidden % self.vision_heads or self.lm_hidden % self.lm_heads:
            raise ValueError("hidden sizes must divide by their head counts")
        if self.vision_tower not in VISION_TOWERS:
            raise ValueError(f"vision_tower must be one of {VISION_TOWERS}, got {self.vision_tower!r}")
        if self.projector_act not in PROJECTOR_ACTS:
            raise ValueError(f"projector_act must be one of {PROJECTOR_ACTS}, got {self.projector_act!r}")
        if self.vision_tower == "levit" and self.patch_size != 16:
            raise ValueError("the levit tower's conv stem has stride 16: patch_size must be 16")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def hold_free_units_at_zero(model) -> None:
    """With ``config.word_units_only``: the projector's hidden units past its word units are zeroed
    and held there in every stage (their gradients are masked), so the LM reads only the detectors."""
    k = len(model.config.word_units)
    projector = model.model.multi_modal_projector
    keep = torch.ones(projector.linear_1.out_features)
    keep[k:] = 0
    with torch.no_grad():
        projector.linear_1.weight[k:] = 0
        projector.linear_2.weight[:, k:] = 0
        if projector.linear_1.bias is not None:
            projector.linear_1.bias[k:] = 0
            projector.linear_1.bias.register_hook(lambda g: g * keep.to(g.device))
    projector.linear_1.weight.register_hook(lambda g: g * keep.to(g.device)[:, None])
    projector.linear_2.weight.register_hook(lambda g: g * keep.to(g.device))


@torch.no_grad()
def init_2d_positions(weight: torch.Tensor, grid: int) -> None:
    """Start the ViT's learned position embeddings at a 2-D sin-cos pattern (row and column).

    Random 0.02-scale positions leave a from-scratch model unable to tell which patch is which
    for hundreds of steps, so "what is in row 2, column 3" stays at chance; with (row, column)
    codes present from step 0 the LM only has to learn to match them. Shapes: weight
    (1 + grid*grid, hidden); row 0 is the CLS position and keeps its random start.
    """
    hidden = weight.shape[1]
    quarter = hidden // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    idx = torch.arange(grid * grid)
    rows, cols = (idx // grid).float()[:, None] * freqs, (idx % grid).float()[:, None] * freqs
    table = torch.cat([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1)
    weight[1:, : table.shape[1]] = table


def build_vision_config(cfg: TinyVLMConfig):
    """The vision tower's config and the LLaVA feature selection that goes with it.

    ``clip``: a CLIP ViT on linear 16x16 patches (+ CLS, dropped by the "default" strategy).
    ``levit``: LeViT's stem of four 3x3 stride-2 convolutions with batch norm; its 16 output
    tokens (the first hidden state) are the image features ("full" strategy, no CLS). From
    scratch a conv stem learns shape fast where a linear patch embedding does not
    (`benchmarks/vision_probe.py`, README). LeViT always ends a stage with a 2x subsampling
    attention; that one unused stage is kept small and frozen (`unused_vision_parameters`).
    Returns (vision_config, vision_feature_layer, select_strategy, extra image tokens).
    """
    if cfg.vision_tower == "levit":
        vision = LevitConfig(image_size=cfg.image_size, patch_size=16, hidden_sizes=[cfg.vision_hidden, 8],
                             num_attention_heads=[cfg.vision_heads], depths=[0], key_dim=[cfg.vision_hidden // 2],
                             mlp_ratio=[2], attention_ratio=[1])
        vision.hidden_size = cfg.vision_hidden  # the LLaVA projector's input width
        vision.output_hidden_states = True  # LeViT returns hidden states only when asked
        # hidden_states = (stem, after the unused stage): -2 is the stem. Not 0: LLaVA passes the
        # layer index on as `output_hidden_states`, and 0 would ask for none.
        return vision, -2, "full", 0
    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=4 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
    )
    return vision, cfg.vision_feature_layer, "default", 1


def unused_vision_parameters(model) -> list[str]:
    """Names of vision-tower parameters that never reach the image features (LeViT's stage after
    the stem): training freezes them (DDP would otherwise wait for their gradients)."""
    if getattr(model.config, "vision_config", None) is None or model.config.vision_config.model_type != "levit":
        return []
    return [n for n, _ in model.named_parameters() if "vision_tower.encoder." in n]


def build_processor(cfg: TinyVLMConfig, corpus: Iterable[str]) -> LlavaProcessor:
    """Tokenizer trained on ``corpus`` + a CLIP image processor that squashes any image to size."""
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, cfg.layout)
    image_processor = CLIPImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size},
        do_center_crop=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    # CLIP: num_additional_image_tokens=1 with the "default" strategy: the CLS feature is dropped,
    # so one <image> becomes exactly (image_size/patch_size)^2 tokens, matching the features.
    _, _, strategy, extra = build_vision_config(cfg)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra,
        chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN,
    )


def build_tiny_vlm(cfg: TinyVLMConfig, corpus: Iterable[str]) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A randomly initialised tiny LLaVA and its processor (tokenizer trained on ``corpus``)."""
    processor = build_processor(cfg, corpus)
    tok = processor.tokenizer
    vision, feature_layer, strategy, _ = build_vision_config(cfg)
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.lm_hidden,
        intermediate_size=cfg.lm_intermediate,
        num_hidden_layers=cfg.lm_layers,
        num_attention_heads=cfg.lm_heads,
        num_key_value_heads=cfg.lm_heads,
        max_position_embeddings=cfg.max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=cfg.image_tokens,
        projector_hidden_act=cfg.projector_act,
        vision_feature_select_strategy=strategy,
        vision_feature_layer=feature_layer,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration(config)
    if cfg.vision_tower == "clip":
        init_2d_positions(model.model.vision_tower.embeddings.position_embedding.weight,
                          cfg.image_size // cfg.patch_size)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor
