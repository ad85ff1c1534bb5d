"""Whether a clevr caption matches its image, by drawing it: each object the caption names is drawn
with the task's own renderer at the caption's pixel coordinates and compared with the picture around
it (analysis by synthesis), and every object in the picture must be one the caption names.

A caption is the model's perception; `vrm.tasks.clevr.consistency` checks every later step against
it, and this module checks the caption itself, so a reward can tell a misread colour, size or shape,
a misplaced or a missing object, from a right one. Only captions with ``place=xy`` coordinates can be
drawn. The caption's coordinates are rounded to the pixel, so each object is compared at the best of
offsets within a pixel and a half (`OFFSETS`); an object holds when its drawing differs from the
picture, in and just around it, by less than `TOLERANCE` on average. On 40 scenes every true
caption holds, with each coordinate moved a pixel or not at random too; every object given the
other size or another shape fails, and at least 36 of 40 given another colour or placed 4 pixels
off (`tests/test_clevr_grounding.py`; similar colours may pass). A wrong material mostly passes (the
shine is a small spot), so material is left to the rest of the reward.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from PIL import Image

from vrm import VrmError
from vrm.tasks.clevr.data import load_data
from vrm.tasks.clevr.render import BACKGROUND, from_pixel, render_scene

TOLERANCE = 40.0  # mean |difference| of the RGB channels summed, over an object and a pixel around it
INK = 30  # a pixel differs from the background by more than this: something is drawn there
UNEXPLAINED = 8  # drawn pixels of the picture beyond 2 pixels of every caption object (the offsets' reach)
# The caption's pixel is the centre rounded, and a model's is often a pixel off either way (as the
# consistency reward's `PIXEL` allows): offsets within 1.5 pixels in quarters (an antialiased small
# object's drawing changes with a quarter pixel), nearest first; the first that fits ends the search.
STEPS = [k / 4 for k in range(-6, 7)]
OFFSETS = sorted(((dx, dy) for dx in STEPS for dy in STEPS), key=lambda d: abs(d[0]) + abs(d[1]))


@lru_cache(maxsize=1)
def default_view() -> float:
    """The half-width, in scene units, of the ground the default clevr task shows (its images' scale)."""
    from vrm.tasks.clevr.task import ClevrTask  # the task module builds on the reward's modules

    return ClevrTask().view


class Drawing:
    """Draws objects given as (size, colour, material, shape, x, y) in a ``canvas``-pixel image."""

    def __init__(self, canvas: int, view: float):
        data = load_data()
        self.colors, self.sizes, self.canvas, self.view = data.colors, data.sizes, canvas, view

    def draw(self, objects: list[tuple[str, str, str, str, float, float]]) -> np.ndarray:
        scene = {"objects": [{"size": s, "color": c, "material": m, "shape": sh,
                              "3d_coords": from_pixel(x, y, self.canvas, self.view)}
                             for s, c, m, sh, x, y in objects]}
        image = render_scene(scene, self.colors, self.sizes, self.canvas, self.view)
        return np.asarray(image, dtype=np.float32)


def ink(pixels: np.ndarray) -> np.ndarray:
    return np.abs(pixels - np.array(BACKGROUND, dtype=np.float32)).sum(-1) > INK


def grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` and every pixel beside it (4-neighbours)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def object_fits(image: Image.Image, objects: list[tuple[str, str, str, str, int, int]],
                view: float | None = None) -> tuple[list[bool], bool]:
    """Whether each object, as the caption names and places it, matches the picture, and whether the
    picture holds nothing the caption leaves out.

    Args:
        image: the picture.
        objects: (size, colour, material, shape, x, y) per caption object, x and y its centre in pixels.
        view: the task's `ClevrTask.view` (default: the default task's).
    """
    picture = np.asarray(image.convert("RGB"), dtype=np.float32)
    drawing = Drawing(picture.shape[1], default_view() if view is None else view)
    try:
        masks = [ink(drawing.draw([o])) for o in objects]
        cover = np.sum(masks, axis=0) if masks else None  # per pixel, how many caption objects cover it
        fits = []
        for (size, color, material, shape, x, y), mask in zip(objects, masks):
            others = cover - mask > 0  # covered by another caption object
            fits.append(any(_differs(drawing.draw([(size, color, material, shape, x + dx, y + dy)]), picture, others)
                            < TOLERANCE for dx, dy in OFFSETS))
        drawn = grow(grow(ink(drawing.draw(objects)))) if objects else np.zeros(picture.shape[:2], dtype=bool)
    except VrmError:  # an unknown colour, size, material or shape: a caption no scene has
        return [False] * len(objects), False
    return fits, int((ink(picture) & ~drawn).sum()) <= UNEXPLAINED


def _differs(alone: np.ndarray, picture: np.ndarray, others: np.ndarray) -> float:
    """Mean difference between one object drawn alone and the picture, over the object and a pixel
    around it, leaving out pixels the caption's other objects cover."""
    region = grow(ink(alone)) & ~others
    if not region.any():
        return float("inf")
    return float(np.abs(alone - picture).sum(-1)[region].mean())


_SEEN: dict[tuple, tuple[tuple[bool, ...], bool]] = {}


def caption_fits(image: Image.Image, objects: list[tuple[str, str, str, str, int, int]],
                 view: float | None = None) -> tuple[tuple[bool, ...], bool]:
    """`object_fits`, remembered per picture and caption: a search scores the same caption again at
    every later stage of an answer."""
    key = (image.size, hashlib.blake2b(image.tobytes(), digest_size=16).digest(), tuple(objects), view)
    if key not in _SEEN:
        if len(_SEEN) >= 20000:
            _SEEN.clear()
        fits, covered = object_fits(image, objects, view)
        _SEEN[key] = (tuple(fits), covered)
    return _SEEN[key]
