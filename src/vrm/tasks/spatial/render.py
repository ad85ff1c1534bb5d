"""Drawing the spatial tasks' grids: where each cell sits on the canvas, a bitmap font for the
candidate letters, and small drawing helpers.

Cells are square and at most 8 px; when exactly 8 px the grid starts on a multiple of 8, so every
cell is one whole 8 px patch (3x3 to 8x8 grids on a 64 px canvas): one image code per cell for an
image tokenizer with 8 px patches, and a move one code along (right) or 8 codes on (down) whatever
the grid's size, which is what lets a small model redraw the state after a move (MVoT). `cell_box` is the
one place that maps a cell to pixels, for drawing and for comparing visual thoughts cell by cell.
Rows and columns are 0-indexed here and in traces; texts say "row 1, column 1" for the top left.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

PATCH = 8
MAX_CELL = 8
BACKGROUND = (255, 255, 255)
GRID_LINE = (170, 180, 195)

Box = tuple[int, int, int, int]

# 5x5 glyphs of the candidate letters: drawn pixel by pixel, identical on every machine and Pillow
# version (PIL's default font is not).
GLYPHS = {
    "A": ("01110", "10001", "11111", "10001", "10001"),
    "B": ("11110", "10001", "11110", "10001", "11110"),
    "C": ("01111", "10000", "10000", "10000", "01111"),
    "D": ("11110", "10001", "10001", "10001", "11110"),
}


def layout(n: int, canvas: int) -> tuple[int, int]:
    """The cell size and the offset of the grid's top-left corner, in pixels, for an n x n grid.

    >>> layout(3, 64), layout(4, 64), layout(5, 64), layout(6, 64), layout(10, 64)
    ((8, 16), (8, 16), (8, 8), (8, 8), (6, 2))
    """
    if n < 1 or canvas < 4 * n:
        raise ValueError(f"a {n}x{n} grid needs a canvas of at least {4 * n} pixels, got {canvas}")
    cell = min(MAX_CELL, canvas // n)
    if cell >= PATCH:
        cell -= cell % PATCH
    offset = (canvas - n * cell) // 2
    if cell >= PATCH:
        offset -= offset % PATCH
    return cell, offset


def cell_box(n: int, canvas: int, row: int, col: int) -> Box:
    """The pixels of cell (row, col): (x0, y0, x1, y1), both corners inclusive."""
    cell, offset = layout(n, canvas)
    x0, y0 = offset + col * cell, offset + row * cell
    return x0, y0, x0 + cell - 1, y0 + cell - 1


def inset(box: Box, k: int) -> Box:
    """A box shrunk by k pixels on every side."""
    x0, y0, x1, y1 = box
    return x0 + k, y0 + k, x1 - k, y1 - k


def blank(canvas: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (canvas, canvas), BACKGROUND)
    return image, ImageDraw.Draw(image)


def fill_cell(draw: ImageDraw.ImageDraw, box: Box, rgb, outline=GRID_LINE) -> None:
    """A cell filled with ``rgb`` inside a one-pixel grid line."""
    draw.rectangle(box, fill=rgb, outline=outline)


def draw_letter(draw: ImageDraw.ImageDraw, box: Box, letter: str, rgb) -> None:
    """Draw a candidate letter (A-D) centred in a cell, as large as fits with a margin."""
    x0, y0, x1, y1 = box
    size = x1 - x0 + 1
    scale = max(1, (size - 2) // 5)
    left = x0 + (size - 5 * scale) // 2
    top = y0 + (size - 5 * scale) // 2
    for i, line in enumerate(GLYPHS[letter]):
        for j, bit in enumerate(line):
            if bit == "1":
                px, py = left + j * scale, top + i * scale
                draw.rectangle((px, py, px + scale - 1, py + scale - 1), fill=rgb)


def draw_arrow(draw: ImageDraw.ImageDraw, box: Box, heading: str, rgb) -> None:
    """A filled triangle pointing ``heading`` ("up", "down", "left", "right"), filling the cell."""
    x0, y0, x1, y1 = inset(box, 1)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    points = {
        "right": [(x0, y0), (x1, ym), (x0, y1)],
        "left": [(x1, y0), (x0, ym), (x1, y1)],
        "down": [(x0, y0), (x1, y0), (xm, y1)],
        "up": [(x0, y1), (x1, y1), (xm, y0)],
    }[heading]
    draw.polygon(points, fill=rgb)
