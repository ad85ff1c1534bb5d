"""Comparing an image with a ground-truth rendering cell by cell: how a visual thought (or an image
tokenizer's round trip) is scored on the spatial tasks. Cells are where
`vrm.tasks.spatial.render.cell_box` puts them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vrm.tasks.spatial.render import cell_box

# A cell is right when its mean absolute RGB difference (0-255) is at most TOL. The smallest changes
# that matter, measured on the renderings: between consecutive states of a trace 13.25 (minibehavior,
# the printer put down on a table cell; 16 for it switched on or off), the red agent on a navy hole 20.3
# (frozenlake), one candidate letter drawn for another 7.6 (maze, 8 px cells). TOL sits below all
# of them, so each of these mistakes counts, and above the noise of a good tokenizer's round trip
# (cells drawn right differ by 0.1-3).
TOL = 6.0


def cell_errors(image: Image.Image, truth: Image.Image, n: int) -> np.ndarray:
    """Mean absolute RGB difference (0-255) inside each cell of an n x n grid: (n, n).

    Both images are PIL, of the same size; the canvas is ``truth.width``.

    >>> im = Image.new("RGB", (64, 64), (255, 255, 255))
    >>> cell_errors(im, im, 4).shape, float(cell_errors(im, im, 4).max())
    ((4, 4), 0.0)
    """
    if image.size != truth.size:
        raise ValueError(f"image is {image.size}, truth is {truth.size}: compare images of the same size")
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    b = np.asarray(truth.convert("RGB"), dtype=np.float32)
    diff = np.abs(a - b).mean(axis=2)
    out = np.zeros((n, n), dtype=np.float32)
    for r in range(n):
        for c in range(n):
            x0, y0, x1, y1 = cell_box(n, truth.width, r, c)
            out[r, c] = diff[y0:y1 + 1, x0:x1 + 1].mean()
    return out


def cells_right(image: Image.Image, truth: Image.Image, n: int, tol: float = TOL) -> np.ndarray:
    """Which cells of an n x n grid match the truth within ``tol``: bool (n, n)."""
    return cell_errors(image, truth, n) <= tol


def grid_size(trace: dict) -> int:
    """The n of a spatial task's n x n grid, from its trace (frozenlake ``size``, maze ``maze`` rows,
    minibehavior ``room``).

    >>> grid_size({"room": 5}), grid_size({"maze": ["+-+-+", "|   |", "+-+ +", "| | |", "+-+-+"]})
    (5, 2)
    """
    if "room" in trace:
        return int(trace["room"])
    if "maze" in trace:
        return (len(trace["maze"]) - 1) // 2
    if "size" in trace:
        return int(trace["size"])
    if "map" in trace:
        return len(trace["map"])
    raise ValueError(f"not a spatial task trace (keys: {sorted(trace)})")
