"""vrm's own top-down 2-D renderer for CLEVR scenes (PIL; no Blender).

The ground plane is seen from above: +x is right, +y ("behind") is up. A cube is drawn as a
square, a sphere as a disc and a cylinder as a triangle (seen from above a cylinder is also a
disc, so it gets a glyph of its own that a small model can tell apart). A large object is twice
the size of a small one (CLEVR's radii). Metal is shiny: a bright specular spot on the body;
rubber is flat. Shapes are drawn at twice the resolution and averaged down, for smooth edges.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from vrm import VrmError

BACKGROUND = (224, 224, 224)
CLEVR_VIEW = 3.75  # CLEVR samples centres in [-3, 3]; a large object reaches 0.7 beyond
SUPERSAMPLE = 2
HIGHLIGHT = {"cube": (-0.3, -0.3), "sphere": (-0.3, -0.3), "cylinder": (-0.12, 0.05)}  # spot centre / radius


def to_pixel(coords: list[float], size: int, view: float) -> tuple[float, float]:
    """Image position (x right, y down, in pixels) of a ground-plane point; ``view`` is the half-width
    of the square of the plane the image shows."""
    scale = size / (2 * view)
    return (coords[0] + view) * scale, (view - coords[1]) * scale


def from_pixel(x: float, y: float, size: int, view: float) -> list[float]:
    """The ground-plane point (``3d_coords``, z 0) that `to_pixel` places at image position (x, y)."""
    scale = size / (2 * view)
    return [x / scale - view, view - y / scale, 0.0]


def _shade(rgb: tuple[int, int, int], toward: int, t: float) -> tuple[int, int, int]:
    return tuple(round(c + (toward - c) * t) for c in rgb)


def _glyph(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, outline,
           width: int) -> None:
    if shape == "cube":
        h = 0.8 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill, outline=outline, width=width)
    elif shape == "sphere":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    elif shape == "cylinder":
        points = [(cx, cy - 1.1 * r), (cx + 0.95 * r, cy + 0.65 * r), (cx - 0.95 * r, cy + 0.65 * r)]
        draw.polygon(points, fill=fill, outline=outline, width=width)
    else:
        raise VrmError(f"cannot draw shape {shape!r}; CLEVR shapes are cube, sphere, cylinder")


def render_scene(scene: dict, colors: dict[str, tuple[int, int, int]], sizes: dict[str, float],
                 size: int = 64, view: float = CLEVR_VIEW) -> Image.Image:
    """Draw a CLEVR-format scene as a ``size x size`` RGB image.

    Args:
        scene: a dict with ``objects`` (``shape``, ``color``, ``size``, ``material``, ``3d_coords``).
        colors: colour name -> RGB (CLEVR's ``properties.json``).
        sizes: size name -> radius in scene units (CLEVR's ``properties.json``).
        size: image side in pixels.
        view: half-width, in scene units, of the square of the ground plane shown.
    """
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    scale = big / (2 * view)
    width = max(1, round(big / 64))
    for i, obj in enumerate(scene["objects"]):
        try:
            rgb = tuple(colors[obj["color"]])
            r = sizes[obj["size"]] * scale
            cx, cy = to_pixel(obj["3d_coords"], big, view)
            shape, material = obj["shape"], obj["material"]
        except (KeyError, IndexError, TypeError) as e:
            raise VrmError(f"object {i}: missing or unknown {e} (colours {sorted(colors)}, "
                           f"sizes {sorted(sizes)}; objects need 3d_coords, shape, material)") from None
        _glyph(draw, shape, cx, cy, r, rgb, _shade(rgb, 0, 0.45), width)
        if material == "metal":
            dx, dy = HIGHLIGHT.get(shape, (-0.3, -0.3))
            hx, hy, hr = cx + dx * r, cy + dy * r, 0.32 * r
            draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=_shade(rgb, 255, 0.8))
        elif material != "rubber":
            raise VrmError(f"object {i}: unknown material {material!r}; CLEVR has rubber and metal")
    return image.reduce(SUPERSAMPLE)
