"""CLEVR scenes: sampling objects on the ground plane, and the spatial relationships between them.

A scene is a dict in CLEVR's scene format::

    {"objects": [{"shape", "color", "size", "material", "3d_coords", "rotation", "pixel_coords"}],
     "directions": {"left": [-1, 0, 0], ...}, "relationships": {"left": [[j, ...] per object], ...}}

vrm looks at the ground plane from above: +x is right and +y is "behind" (up in the image), so the
direction vectors are the axes themselves. Objects j "<dir>" of object i are those with
``dot(c_j - c_i, dir) > 0.2`` (CLEVR's rule). As in CLEVR, sampling keeps objects apart (a minimum
gap between their bounding circles) and never lets two centres lie closer than ``margin`` along an
axis, so every left/right and front/behind relation is clear in the picture.
"""

from __future__ import annotations

import math
import random

SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
DIRECTIONS = {
    "behind": [0.0, 1.0, 0.0],
    "front": [0.0, -1.0, 0.0],
    "left": [-1.0, 0.0, 0.0],
    "right": [1.0, 0.0, 0.0],
    "above": [0.0, 0.0, 1.0],
    "below": [0.0, 0.0, -1.0],
}
RELATIONS = ("left", "right", "behind", "front")
THRESHOLD = 0.2


def relationships(objects: list[dict], directions: dict | None = None,
                  threshold: float = THRESHOLD) -> dict[str, list[list[int]]]:
    """For each relation and object i, the sorted indices j with ``dot(c_j - c_i, dir) > threshold``.

    >>> objs = [{"3d_coords": [0, 0, 0]}, {"3d_coords": [1, 0.1, 0]}]
    >>> relationships(objs)["right"], relationships(objs)["behind"]
    ([[1], []], [[], []])
    """
    directions = directions or DIRECTIONS
    coords = [o["3d_coords"] for o in objects]
    out = {}
    for name in RELATIONS:
        d = directions[name]
        out[name] = [
            [j for j, cj in enumerate(coords)
             if j != i and sum((cj[k] - ci[k]) * d[k] for k in range(3)) > threshold]
            for i, ci in enumerate(coords)
        ]
    return out


def _fits(x: float, y: float, r: float, placed: list[tuple[float, float, float]],
          min_dist: float, margin: float) -> bool:
    for px, py, pr in placed:
        dx, dy = x - px, y - py
        if math.hypot(dx, dy) - r - pr < min_dist or abs(dx) < margin or abs(dy) < margin:
            return False
    return True


def sample_scene(rng: random.Random, n_objects: int, colors: list[str], sizes: dict[str, float],
                 extent: float = 2.0, min_dist: float = 0.25, margin: float = 0.4,
                 tries: int = 50) -> dict:
    """Draw a scene of ``n_objects`` random objects with centres in ``[-extent, extent]^2``.

    Attributes are uniform over CLEVR's values; each object gets ``tries`` positions before the
    whole scene starts again (CLEVR's scheme). Coordinates are rounded to 3 decimals before the
    relationships are computed, so a scene read back from JSON has the same relations.

    Raises:
        ValueError: the objects cannot fit (``extent`` too small for ``n_objects``).
    """
    for _ in range(100):
        placed: list[tuple[float, float, float]] = []
        objects = []
        for _ in range(n_objects):
            size = rng.choice(sorted(sizes))
            r = sizes[size]
            for _ in range(tries):
                x = round(rng.uniform(-extent, extent), 3)
                y = round(rng.uniform(-extent, extent), 3)
                if _fits(x, y, r, placed, min_dist, margin):
                    break
            else:
                break
            placed.append((x, y, r))
            objects.append({
                "shape": rng.choice(SHAPES),
                "color": rng.choice(colors),
                "size": size,
                "material": rng.choice(MATERIALS),
                "3d_coords": [x, y, r],
                "rotation": 0.0,
            })
        if len(objects) == n_objects:
            directions = {k: list(v) for k, v in DIRECTIONS.items()}
            return {"objects": objects, "directions": directions, "relationships": relationships(objects)}
    raise ValueError(f"cannot place {n_objects} objects apart within extent {extent}")
