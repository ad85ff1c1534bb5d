"""The image tokenizer of visual thoughts (MVoT): a small VQ-VAE from renderings to discrete codes
and back, as a Hugging Face model (``save_pretrained`` / ``from_pretrained``, safetensors).

One code per ``downsample`` x ``downsample`` patch, read row-major: downsample 8 turns a 64 px
image into 8 x 8 = 64 tokens. The spatial tasks draw cells that cover whole 8 px patches
(`vrm.tasks.spatial.render`), so each patch holds a piece of one cell and a grid is a small
vocabulary of patches (~580 over the three tasks). The networks follow that:

- encoder: a patch convolution (kernel = stride = downsample), a residual block of 1x1
  convolutions, a 1x1 to ``code_dim``. A code sees its own patch only, so equal patches get equal
  latents; overlapping stride-2 stages with 3x3 residual blocks, tried first, mixed neighbours into
  every latent, spread one kind of patch over several codes and learned 3-5x slower on this CPU.
- codebook: ``nn.Embedding(codebook_size, code_dim)``; codes and latents l2-normalised, nearest code
  by cosine (LlamaGen, Janus). The decoder reads ``q + z - sg(z)``: the value of the code, gradients
  straight through to the latent and also to the code, so each code learns what it must draw.
- decoder: the mirror, 1x1 from the code (scaled to unit variance), a 1x1 residual block and a
  transposed patch convolution to pixels in [-1, 1].

transformers' JanusVQVAE was 1.3 s/step here and passes no gradient to its encoder, hence this one.
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
DISTANCES = ("mse", "euclidean")


class ImageTokenizerConfig(PretrainedConfig):
    """Sizes of the image tokenizer.

    Args:
        image_size: side of the (square, RGB) images, in pixels.
        downsample: side of the patch one code stands for (4, 8 or 16 pixels).
        codebook_size: number of codes K.
        code_dim: dimension D of a code.
        channels: width of the encoder and decoder.
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
    """x + W2 gelu(W1 gelu(x)), with 1x1 convolutions: an MLP applied to each patch alone."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class ImageTokenizer(PreTrainedModel):
    """VQ-VAE: images (B, 3, H, W) in [-1, 1] <-> codes (B, T), T = `ImageTokenizerConfig.tokens_per_image`."""

    config_class = ImageTokenizerConfig
    main_input_name = "pixel_values"
    base_model_prefix = "image_tokenizer"

    def __init__(self, config: ImageTokenizerConfig):
        super().__init__(config)
        c, d = config.channels, config.downsample
        self.encoder = nn.Sequential(nn.Conv2d(3, c, d, stride=d), nn.GELU(), ResBlock(c), nn.GELU(),
                                     nn.Conv2d(c, config.code_dim, 1))
        self.codebook = nn.Embedding(config.codebook_size, config.code_dim)
        self.decoder = nn.Sequential(nn.Conv2d(config.code_dim, c, 1), ResBlock(c), nn.GELU(),
                                     nn.ConvTranspose2d(c, 3, d, stride=d), nn.Tanh())
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # He initialisation (fan-in) keeps activations at unit scale without norm layers (HF's
        # N(0, 0.02) starves them); the last layer starts small so tanh starts in its linear range.
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            k = module.kernel_size[0] * module.kernel_size[1]
            transposed = isinstance(module, nn.ConvTranspose2d)
            fan_in = module.in_channels * k // (module.stride[0] * module.stride[1] if transposed else 1)
            gain = 0.1 if module is self.decoder[-2] else 2.0
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

        Returns the codes' vectors (B, D, h, w) with gradients to both the codes and z (straight
        through), the VQ loss (codebook + beta * commitment) and the codes (B, h * w), row-major.
        """
        b, d, h, w = z.shape
        codebook = self.codebook_vectors()
        codes = (z.permute(0, 2, 3, 1).reshape(-1, d) @ codebook.T).argmax(dim=1)
        q = codebook[codes].view(b, h, w, d).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + self.config.beta * F.mse_loss(z, q.detach())
        return q + (z - z.detach()), loss, codes.view(b, h * w)

    def draw(self, q: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] of unit code vectors (B, D, h, w); scaled by sqrt(D) first,
        so the decoder's inputs have unit variance (it learns several times faster)."""
        return self.decoder(q * math.sqrt(self.config.code_dim))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction (B, 3, H, W) in [-1, 1], VQ loss, codes (B, T)).

        The reconstruction loss is the trainer's to choose and add.
        """
        q, vq_loss, codes = self.quantize(self.latents(pixel_values))
        return self.draw(q), vq_loss, codes

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images as a batch (B, 3, S, S) in [-1, 1], converted to RGB and resized to S = image_size."""
        size = self.config.image_size
        rgb = [im.convert("RGB") for im in images]
        arrays = [np.asarray(im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR)) for im in rgb]
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
        x = self.draw(q.view(-1, g, g, self.config.code_dim).permute(0, 3, 1, 2))
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
        model, info = ImageTokenizer.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise VrmError(f"{path}: cannot load the image tokenizer ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if info["missing_keys"] or info["unexpected_keys"] or info.get("mismatched_keys"):
        # An older layout of the networks: loading would silently leave random weights.
        raise VrmError(f"{path}: weights do not fit this version's image tokenizer (retrain with vrm train vq)")
    return model.eval()
