"""The image tokenizer of visual thoughts (MVoT): a small VQ-VAE from 64x64 renderings to discrete
codes and back, as a Hugging Face model (``save_pretrained`` / ``from_pretrained``, safetensors).

Encoder: stride-2 convolutions (log2(downsample) of them) and a residual block, then a 1x1 to
``code_dim``. Codes and latents are l2-normalised and matched by cosine similarity (LlamaGen,
Janus), with a straight-through estimator. The decoder mirrors the encoder back to pixels in
[-1, 1]. Codes are read row-major over the latent grid: downsample 8 gives 8x8 = 64 tokens, one
per 8 px patch, which is one cell of a 5x5 to 8x8 grid (see `vrm.tasks.spatial.render`).
transformers' JanusVQVAE was 1.3 s/step on this CPU and passes no gradient to its encoder, hence
this one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from vrm import VrmError

DOWNSAMPLES = (4, 8, 16)
import os
KS = int(os.environ.get("KS", 4))
RK = int(os.environ.get("RK", 3))
DISTANCES = ("mse", "euclidean")


class ImageTokenizerConfig(PretrainedConfig):
    """Sizes of the image tokenizer.

    Args:
        image_size: side of the (square, RGB) images, in pixels.
        downsample: pixels per code along each side (4, 8 or 16): log2 of it stride-2 stages.
        codebook_size: number of codes K.
        code_dim: dimension D of a code.
        channels: width of the encoder's last stage and the decoder's first (earlier stages halve it).
        beta: weight of the commitment loss.
    """

    model_type = "vrm_image_tokenizer"

    def __init__(self, image_size: int = 64, downsample: int = 8, codebook_size: int = 128, code_dim: int = 16,
                 channels: int = 64, beta: float = 0.25, **kwargs):
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {downsample}")
        if image_size % downsample:
            raise ValueError(f"image_size {image_size} is not a multiple of downsample {downsample}")
        if min(codebook_size, code_dim, channels) < 1:
            raise ValueError("codebook_size, code_dim and channels must be >= 1")
        self.image_size, self.downsample, self.codebook_size = image_size, downsample, codebook_size
        self.code_dim, self.channels, self.beta = code_dim, channels, beta
        super().__init__(**kwargs)

    @property
    def grid(self) -> int:
        """Codes along each side of an image."""
        return self.image_size // self.downsample

    @property
    def tokens_per_image(self) -> int:
        return self.grid ** 2


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, RK, padding=RK // 2)
        self.conv2 = nn.Conv2d(channels, channels, RK, padding=RK // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


def stage_widths(config: ImageTokenizerConfig) -> list[int]:
    """Channels after each stride-2 stage: the last is ``channels``, each earlier one half the next
    (at least 16), so the full-resolution layers stay cheap."""
    stages = int(math.log2(config.downsample))
    if os.environ.get("FLAT"): return [config.channels] * stages
    return [max(16, config.channels >> (stages - 1 - i)) for i in range(stages)]


class ImageTokenizer(PreTrainedModel):
    """VQ-VAE: images (B, 3, H, W) in [-1, 1] <-> codes (B, T), T = `ImageTokenizerConfig.tokens_per_image`."""

    config_class = ImageTokenizerConfig
    main_input_name = "pixel_values"
    base_model_prefix = "image_tokenizer"

    def __init__(self, config: ImageTokenizerConfig):
        super().__init__(config)
        widths = stage_widths(config)
        down = []
        for w_in, w in zip([3] + widths, widths):
            down += [nn.Conv2d(w_in, w, KS, stride=2, padding=(KS - 2) // 2), nn.GELU()]
        self.encoder = nn.Sequential(*down, ResBlock(config.channels), nn.GELU(),
                                     nn.Conv2d(config.channels, config.code_dim, 1))
        self.codebook = nn.Embedding(config.codebook_size, config.code_dim)
        up = [nn.Conv2d(config.code_dim, config.channels, 1), ResBlock(config.channels)]
        for w, w_out in zip(widths[::-1], widths[::-1][1:] + [3]):
            up += [nn.GELU(), nn.ConvTranspose2d(w, w_out, KS, stride=2, padding=(KS - 2) // 2)]
        self.decoder = nn.Sequential(*up, nn.Tanh())
        if os.environ.get("SIMPLE"):
            d, C = config.downsample, config.channels
            if os.environ["SIMPLE"] != "dec": self.encoder = nn.Sequential(nn.Conv2d(3, C, d, d), nn.GELU(), ResBlock(C), nn.GELU(), nn.Conv2d(C, config.code_dim, 1))
            self.decoder = nn.Sequential(nn.Conv2d(config.code_dim, C, 1), ResBlock(C), nn.GELU(), nn.ConvTranspose2d(C, 3, d, d), nn.Tanh())
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # He initialisation (fan-in), so activations keep their scale through a stack without norms;
        # a stride-2 transposed 4x4 conv sums in_channels * 4 inputs per output pixel.
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            k = module.kernel_size[0] * module.kernel_size[1]
            fan_in = module.in_channels * k // (module.stride[0] ** 2 if isinstance(module, nn.ConvTranspose2d) else 1)
            gain = float(os.environ.get("LASTGAIN", 0.1)) if module is self.decoder[-2] else 2.0
            nn.init.normal_(module.weight, std=math.sqrt(gain / fan_in))
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight)

    def codebook_vectors(self) -> torch.Tensor:
        """The l2-normalised codebook (K, D): what codes mean, and what token distances are measured on."""
        return F.normalize(self.codebook.weight, dim=1)

    def latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised encoder outputs (B, D, h, w) for images (B, 3, H, W) in [-1, 1]."""
        return F.normalize(self.encoder(pixel_values), dim=1)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest code (cosine) of each latent in z (B, D, h, w).

        Returns the quantised latents (B, D, h, w) with straight-through gradients to z, the VQ
        loss (codebook + beta * commitment) and the codes (B, h * w), row-major.
        """
        b, d, h, w = z.shape
        codebook = self.codebook_vectors()
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = (flat @ codebook.T).argmax(dim=1)
        q = codebook[codes].view(b, h, w, d).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + self.config.beta * F.mse_loss(z, q.detach())
        out = q + (z - z.detach()) if os.environ.get("QGRAD") else z + (q - z).detach()
        return out, loss, codes.view(b, h * w)

    def pixels_of(self, q: torch.Tensor) -> torch.Tensor:
        """Decode unit-norm latents (B, D, h, w) to images (B, 3, H, W) in [-1, 1]; scaled by sqrt(D)
        first, so the decoder sees inputs of unit variance (it learns several times faster)."""
        return self.decoder(q * float(os.environ.get("QSCALE", math.sqrt(self.config.code_dim))))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction (B, 3, H, W) in [-1, 1], VQ loss, codes (B, T)).

        The reconstruction loss is the trainer's to choose and add.
        """
        q, vq_loss, codes = self.quantize(self.latents(pixel_values))
        return self.pixels_of(q), vq_loss, codes

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images as a batch (B, 3, S, S) in [-1, 1], converted to RGB and resized to S = image_size."""
        size = self.config.image_size
        arrays = [np.asarray(im.convert("RGB") if im.size == (size, size) else
                             im.convert("RGB").resize((size, size), Image.BILINEAR)) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x.to(self.device)

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        """Codes (B, T) of images, row-major over the latent grid."""
        if not images:
            return torch.zeros(0, self.config.tokens_per_image, dtype=torch.long)
        _, _, codes = self.quantize(self.latents(self.pixels(images)))
        return codes.cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> list[Image.Image]:
        """Images of codes (B, T); a wrong T or a code outside [0, K) raises ValueError."""
        t, k, g = self.config.tokens_per_image, self.config.codebook_size, self.config.grid
        codes = torch.as_tensor(codes)
        if codes.dim() != 2 or codes.shape[1] != t:
            raise ValueError(f"expected codes of shape (batch, {t}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"codes must be in [0, {k}), got values in [{codes.min()}, {codes.max()}]")
        q = self.codebook_vectors()[codes.long().to(self.device)]
        x = self.pixels_of(q.view(-1, g, g, self.config.code_dim).permute(0, 3, 1, 2))
        rgb = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in rgb]

    @torch.no_grad()
    def code_distances(self, kind: str = "mse") -> torch.Tensor:
        """S (K, K) between normalised codes: S[i, j] = mean_d (e_i - e_j)^2 ("mse") or ||e_i - e_j||_2
        ("euclidean"). Symmetric, zero diagonal: the S of MVoT's token discrepancy loss L_D."""
        if kind not in DISTANCES:
            raise ValueError(f"unknown distance {kind!r}; known: {list(DISTANCES)}")
        e = self.codebook_vectors()
        squared = (e[:, None, :] - e[None, :, :]).pow(2)
        return squared.mean(-1) if kind == "mse" else squared.sum(-1).sqrt()


def load_image_tokenizer(path: str | Path) -> ImageTokenizer:
    """A trained image tokenizer from a ``save_pretrained`` folder, in eval mode."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise VrmError(f"{path}: no image tokenizer here (config.json missing)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != ImageTokenizerConfig.model_type:
        raise VrmError(f"{path}: not an image tokenizer (model_type {model_type!r})")
    try:
        model = ImageTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise VrmError(f"{path}: cannot load the image tokenizer ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return model.eval()
