"""`shapes`: coloured shapes on a grid, with counting, attribute and existence questions.

Objects sit one per cell of a ``grid x grid`` board (cells are 1-indexed, row 1 at the top), so
every question has an exact answer the trace proves. Difficulty knobs: objects per image, grid
and canvas size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from vrm.answers import answers_match
from vrm.tasks.base import Explanation, Sample

COLOURS = {
    "red": (220, 38, 38),
    "green": (22, 163, 74),
    "blue": (37, 99, 235),
    "yellow": (234, 179, 8),
    "purple": (147, 51, 234),
}
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
FAMILIES = ("count_all", "count_colour", "count_shape", "query_shape", "query_colour", "exists")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], rgb) -> None:
    """Draw one filled shape inside ``box`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def where(obj: dict) -> str:
    return f"row {obj['row']}, column {obj['col']}"


@dataclass
class ShapesTask:
    """Coloured circles, squares and triangles on a grid.

    Args:
        min_objects: fewest objects in an image.
        max_objects: most objects in an image (at most ``grid * grid``).
        grid: cells per side.
        canvas: image side in pixels.
        families: question families to draw from (default: all); a family listed twice is
            drawn twice as often.
        reasoning: how the think/stages formats filter: ``listing`` names the matching shapes in
            one step; ``checks`` checks every shape in turn (see `explain`).
    """

    min_objects: int = 1
    max_objects: int = 6
    grid: int = 4
    canvas: int = 64
    families: tuple[str, ...] = FAMILIES
    reasoning: str = "listing"
    name: str = "shapes"

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown shapes families {sorted(unknown)}; known: {list(FAMILIES)}")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid * self.grid:
            raise ValueError("need 1 <= min_objects <= max_objects <= grid*grid")
        if self.reasoning not in ("listing", "checks"):
            raise ValueError(f"unknown shapes reasoning {self.reasoning!r}; known: listing, checks")
        if self.canvas < 4 * self.grid:
            raise ValueError("canvas must give every cell at least 4 pixels")

    def scene(self, rng: random.Random) -> list[dict]:
        n = rng.randint(self.min_objects, self.max_objects)
        cells = sorted(rng.sample(range(self.grid * self.grid), n))
        return [
            {
                "shape": rng.choice(SHAPES),
                "colour": rng.choice(list(COLOURS)),
                "row": c // self.grid + 1,
                "col": c % self.grid + 1,
                "scale": round(rng.uniform(0.7, 0.9), 2),
            }
            for c in cells
        ]

    def render(self, objects: list[dict]) -> Image.Image:
        image = Image.new("RGB", (self.canvas, self.canvas), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        cell = self.canvas / self.grid
        for o in objects:
            cx, cy = (o["col"] - 0.5) * cell, (o["row"] - 0.5) * cell
            half = o["scale"] * cell / 2
            box = (round(cx - half), round(cy - half), round(cx + half) - 1, round(cy + half) - 1)
            draw_shape(draw, o["shape"], box, COLOURS[o["colour"]])
        return image

    def question(self, rng: random.Random, family: str, objects: list[dict]) -> tuple[str, str, dict]:
        """Returns (question, answer, program) where the program names the filter and its result."""
        if family == "count_all":
            return "How many shapes are there?", str(len(objects)), {"filter": {}, "matches": list(range(len(objects)))}
        if family == "count_colour":
            colour = rng.choice(list(COLOURS))
            hits = [i for i, o in enumerate(objects) if o["colour"] == colour]
            return f"How many {colour} shapes are there?", str(len(hits)), {"filter": {"colour": colour}, "matches": hits}
        if family == "count_shape":
            shape = rng.choice(SHAPES)
            hits = [i for i, o in enumerate(objects) if o["shape"] == shape]
            return f"How many {PLURAL[shape]} are there?", str(len(hits)), {"filter": {"shape": shape}, "matches": hits}
        if family in ("query_shape", "query_colour"):
            i = rng.randrange(len(objects))
            attr = "shape" if family == "query_shape" else "colour"
            text = "What shape is in" if attr == "shape" else "What colour is the shape in"
            return f"{text} {where(objects[i])}?", objects[i][attr], {"filter": {"cell": [objects[i]["row"], objects[i]["col"]]}, "matches": [i]}
        if family == "exists":
            present = {(o["colour"], o["shape"]) for o in objects}
            absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
            if rng.random() < 0.5 or not absent:
                colour, shape = rng.choice(sorted(present))
            else:
                colour, shape = rng.choice(absent)
            hits = [i for i, o in enumerate(objects) if (o["colour"], o["shape"]) == (colour, shape)]
            return f"Is there a {colour} {shape}?", "yes" if hits else "no", {"filter": {"colour": colour, "shape": shape}, "matches": hits}
        raise ValueError(f"unknown family {family!r}")

    def sample(self, seed: int) -> Sample:
        rng = random.Random(f"{self.name}-{seed}")
        family = rng.choice(self.families)
        objects = self.scene(rng)
        question, answer, program = self.question(rng, family, objects)
        trace = {"grid": self.grid, "canvas": self.canvas, "objects": objects, "program": program}
        return Sample(f"{self.name}-{seed}", self.render(objects), question, answer, self.name, family, None, trace)

    def score(self, sample: Sample, answer: str) -> float:
        return float(answers_match(answer, sample.answer))

    def caption(self, sample: Sample) -> str:
        """A dense caption from the trace: every object with its colour, shape and cell."""
        objects = sample.trace["objects"]
        parts = [f"a {o['colour']} {o['shape']} in {where(o)}" for o in objects]
        count = f"{len(objects)} shape" + ("s" if len(objects) != 1 else "")
        return f"{count}: " + "; ".join(parts) + "."

    def object_words(self, sample: Sample) -> list[tuple[float, float, str]]:
        """Each object's cell centre (fractions of the image side) and its colour and shape.

        >>> ShapesTask().object_words(Sample("x", None, "", "", "shapes", "count_all", None,
        ...     {"grid": 4, "objects": [{"row": 1, "col": 2, "colour": "red", "shape": "square"}]}))
        [(0.375, 0.125, 'red square')]
        """
        grid = sample.trace["grid"]
        return [((o["col"] - 0.5) / grid, (o["row"] - 0.5) / grid, f"{o['colour']} {o['shape']}")
                for o in sample.trace["objects"]]

    def explain(self, sample: Sample) -> Explanation:
        """Plan, the whole board, then the filter and its result.

        With ``reasoning="checks"`` the filter step checks every shape in turn against the
        asked value, with a running count ("row 1, column 2 red yes, 1"), and the think format
        opens with the plan: each decision is local, where naming the matching shapes in one step
        asks a small model to bind the filter to every object at once, which it fails at (README).

        >>> t = ShapesTask(families=("count_colour",)); s = t.sample(3)
        >>> e = t.explain(s); e.summary, e.steps[-1].endswith(f"is {s.answer}.")
        ('I will find the yellow shapes and count them.', True)
        >>> ShapesTask(families=("count_colour",), reasoning="checks").explain(s).steps
        ['Checking each shape for yellow: row 3, column 2 green no.', 'That is 0.']
        """
        objects, program, family = sample.trace["objects"], sample.trace["program"], sample.family
        wanted = program["filter"]
        hits = [objects[i] for i in program["matches"]]
        places = "; ".join(where(o) for o in hits)
        checks = self.reasoning == "checks"
        if family == "count_all":
            return Explanation("I will count every shape.", self.caption(sample), [f"That is {len(objects)}."], checks)
        if family in ("query_shape", "query_colour"):
            o, attr = hits[0], family.split("_")[1]
            return Explanation(f"I will look at {where(o)} and name its {attr}.", self.caption(sample),
                               [f"{where(o).capitalize()} holds a {o['colour']} {o['shape']}.", f"Its {attr} is {o[attr]}."],
                               checks)
        if family == "exists":
            target = f"a {wanted['colour']} {wanted['shape']}"
            plan = f"I will look for {target}."
            found = f"{target.capitalize()} is in {places}." if hits else f"No shape is {target}."
        else:
            target = f"{wanted['colour']} shapes" if "colour" in wanted else PLURAL[wanted["shape"]]
            plan = f"I will find the {target} and count them."
            found = f"The {target}: {places}." if hits else f"There are no {target}."
        if not checks:
            return Explanation(plan, self.caption(sample), [found] if family == "exists" else [found, f"That is {len(hits)}."])
        attrs = [a for a in ("colour", "shape") if a in wanted]
        marks, count = [], 0
        for o in objects:
            # each decision right after the word it judges: one attention hop to the same word in
            # "Checking each shape for red", none through a comma
            mark = f"{where(o)} " + " ".join(f"{o[a]} {'yes' if o[a] == wanted[a] else 'no'}" for a in attrs)
            if all(o[a] == wanted[a] for a in attrs):
                count += 1
                mark += f", {count}"
            marks.append(mark)
        end = f"That is {len(hits)}."  # exists too: its answer is then "is the count above 0"
        asked = " ".join(wanted[a] for a in attrs)
        return Explanation(plan, self.caption(sample), [f"Checking each shape for {asked}: {'; '.join(marks)}.", end], True)
