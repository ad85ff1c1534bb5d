"""Loading images from files and bytes with clear errors, whatever their size or mode."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vrm import VrmError

MAX_PIXELS = 64_000_000


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image of any format PIL reads into RGB (transparency composited on white).

    The size is checked from the header before any pixel is decoded, so a small file that
    claims a huge image costs nothing.

    Raises:
        VrmError: the bytes are not a readable image, or it is empty or absurdly large.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise VrmError(f"{name}: image is {image.width}x{image.height}, over {max_pixels:,} pixels")
            if image.width == 0 or image.height == 0:
                raise VrmError(f"{name}: image has no pixels")
            image.load()
            return _to_rgb(image)
    except VrmError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise VrmError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def load_image(path: str | Path) -> Image.Image:
    """Load an image file as RGB, with a one-line error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise VrmError(f"{path}: image file not found")
    return load_image_bytes(path.read_bytes(), str(path))
