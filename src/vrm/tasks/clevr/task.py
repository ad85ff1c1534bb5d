"""`clevr`: CLEVR and CLEVR-Math questions about small top-down CLEVR scenes, with programs.

Each sample draws a scene (CLEVR's objects and relation rule), renders it with vrm's top-down
renderer, picks a question family uniformly (one per template file: ``zero_hop`` ... ``comparison``,
``math_subtraction`` ...), instantiates one of its templates and answers it with vrm's executor.
The trace holds the scene, the program and every node's output: the ground truth of each step.
The templates are CLEVR's and CLEVR-Math's own (BSD with patent grant, read at run time from the
folder `vrm.tasks.clevr.data.find_data_dir` finds; see that module for the notice).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image

from vrm import VrmError
from vrm.answers import answers_match
from vrm.tasks.base import Explanation, Sample
from vrm.tasks.clevr.explain import explain_program, reading_order
from vrm.tasks.clevr.data import ClevrData, load_data
from vrm.tasks.clevr.executor import answer_token
from vrm.tasks.clevr.generate import generate
from vrm.tasks.clevr.render import render_scene, to_pixel
from vrm.tasks.clevr.scene import sample_scene

FAMILIES = (
    "zero_hop", "one_hop", "two_hop", "three_hop", "single_and", "single_or", "same_relate",
    "compare_integer", "comparison",
    "math_addition", "math_adversarial", "math_subtraction", "math_subtraction_multihop",
)
ROWS = ("top", "middle", "bottom")
COLS = ("left", "middle", "right")
SCENE_TRIES = 50
REASONING = ("listing", "checks", "merge_checks")


def position_words(x: float, y: float, canvas: int) -> str:
    """Where a pixel lies in the image, in words ("top left", "middle", "bottom" ...).

    >>> position_words(5, 5, 64), position_words(32, 32, 64), position_words(32, 60, 64)
    ('top left', 'middle', 'bottom')
    """
    row = ROWS[min(2, int(3 * y / canvas))]
    col = COLS[min(2, int(3 * x / canvas))]
    if row == col == "middle":
        return "middle"
    return col if row == "middle" else row if col == "middle" else f"{row} {col}"


def _at(words: str) -> str:
    if words == "middle":
        return "in the middle"
    return f"on the {words}" if words in COLS else f"at the {words}"


@dataclass
class ClevrTask:
    """CLEVR / CLEVR-Math questions on top-down scenes.

    Args:
        min_objects: fewest objects in a scene.
        max_objects: most objects in a scene.
        canvas: image side in pixels.
        extent: object centres lie in ``[-extent, extent]^2`` scene units (CLEVR: 3); smaller
            values give bigger objects in the picture. Default: just room for ``max_objects``
            (2.0 for 6 objects, 3.2 for 10).
        families: question families to draw from (default: all); a string is split at commas.
        reasoning: how the think/stages reasoning selects objects: ``listing`` names what a step
            keeps; ``checks`` first checks each candidate in turn, its yes/no right after its name
            (`vrm.tasks.clevr.explain.step`; the layout that took shapes from 85 to 99%, README);
            ``merge_checks`` checks too where a union or an intersection merges two listings.
        place: how the caption places an object: ``words`` (nine places: "at the top left") or ``xy``
            (its centre's pixel coordinates: "at x 12 y 40"). Sampled centres lie at least 0.4 units
            apart on both axes, so the coordinates decide every left/right and front/behind relation;
            with ``reasoning="checks"`` a relation's check then names the coordinate it compares.
        data_dir: the CLEVR data folder (default: ``$VRM_CLEVR_DATA``, else ``shared/data/clevr``
            beside the repository).
    """

    min_objects: int = 3
    max_objects: int = 6
    canvas: int = 64
    extent: float | None = None
    families: tuple[str, ...] = FAMILIES
    reasoning: str = "listing"
    place: str = "words"
    data_dir: str | None = None
    name: str = "clevr"
    _data: ClevrData = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.families, str):  # from the command line: "zero_hop,one_hop"
            self.families = tuple(f.strip() for f in self.families.split(",") if f.strip())
        self.families = tuple(self.families)
        if not 1 <= self.min_objects <= self.max_objects <= 10:
            raise ValueError("need 1 <= min_objects <= max_objects <= 10")
        if self.reasoning not in REASONING:
            raise ValueError(f"unknown clevr reasoning {self.reasoning!r}; known: {', '.join(REASONING)}")
        if self.place not in ("words", "xy"):
            raise ValueError(f"unknown clevr place {self.place!r}; known: words, xy")
        if self.canvas < 16:
            raise ValueError("canvas must be at least 16 pixels")
        if self.extent is None:
            self.extent = max(2.0, 0.3 * self.max_objects + 0.2)
        if self.extent < 1.0:
            raise ValueError("extent must be at least 1.0 scene units")
        self._data = load_data(self.data_dir)
        unknown = set(self.families) - set(self._data.templates)
        if unknown or not self.families:
            raise ValueError(f"unknown clevr families {sorted(unknown)}; known: {sorted(self._data.templates)}")

    @property
    def view(self) -> float:
        """Half-width of the scene square the image shows: the extent plus a large object's reach."""
        return self.extent + 0.8

    def render(self, scene: dict) -> Image.Image:
        """Draw a scene as this task's images are drawn."""
        return render_scene(scene, self._data.colors, self._data.sizes, self.canvas, self.view)

    def sample(self, seed: int) -> Sample:
        rng = random.Random(f"{self.name}-{seed}")
        family = rng.choice(self.families)
        yes = rng.random() < 0.5  # the answer of a yes/no question, fixed first so yes and no are equally likely
        colors = list(self._data.colors)
        for _ in range(SCENE_TRIES):
            n = rng.randint(self.min_objects, self.max_objects)
            try:
                scene = sample_scene(rng, n, colors, self._data.sizes, self.extent)
            except ValueError as e:
                raise VrmError(f"clevr: {e}; raise extent") from None
            question = generate(family, scene, self._data, rng, yes)
            if question is not None:
                break
        else:
            raise VrmError(f"clevr: no {family} question fits {SCENE_TRIES} scenes of "
                           f"{self.min_objects}-{self.max_objects} objects; raise max_objects")
        for obj in scene["objects"]:
            x, y = to_pixel(obj["3d_coords"], self.canvas, self.view)
            obj["pixel_coords"] = [round(x), round(y), 0]
            obj["position"] = position_words(x, y, self.canvas)
        program = [{**node, "output": out} for node, out in zip(question.program, question.outputs)]
        t = question.template
        trace = {
            "canvas": self.canvas,
            "scene": {"objects": scene["objects"], "relationships": scene["relationships"]},
            "template": {"family": t.family, "file": t.file, "index": t.index},
            "program": program,
        }
        return Sample(f"{self.name}-{seed}", self.render(scene), question.text, answer_token(question.answer),
                      self.name, family, None, trace)

    def score(self, sample: Sample, answer: str) -> float:
        return float(answers_match(answer, sample.answer))

    def caption(self, sample: Sample) -> str:
        """Every object with size, colour, material, shape and place, top to bottom, left to right."""
        every = sample.trace["scene"]["objects"]
        objects = [every[i] for i in reading_order(every)]
        parts = [f"a {o['size']} {o['color']} {o['material']} {o['shape']} {self._place(o)}" for o in objects]
        count = f"{len(objects)} object" + ("s" if len(objects) != 1 else "")
        return f"{count}: " + "; ".join(parts) + "."

    def _place(self, obj: dict) -> str:
        if self.place == "xy":
            return f"at x {obj['pixel_coords'][0]} y {obj['pixel_coords'][1]}"
        return _at(obj["position"])

    def object_words(self, sample: Sample) -> list[tuple[float, float, str]]:
        """Each object's centre in the image (fractions of its side) and its caption words."""
        return [(o["pixel_coords"][0] / self.canvas, o["pixel_coords"][1] / self.canvas,
                 f"{o['size']} {o['color']} {o['material']} {o['shape']}") for o in sample.trace["scene"]["objects"]]

    @property
    def layout(self) -> dict[str, bool]:
        """How `vrm.tasks.clevr.explain.step` words a step under this task's reasoning and place."""
        return {"checks": self.reasoning != "listing", "coords": self.place == "xy",
                "merges": self.reasoning == "merge_checks"}

    def explain(self, sample: Sample) -> Explanation:
        """The plan, the dense caption and the program's steps in words."""
        return explain_program(sample.trace, self.caption(sample), sample.question, **self.layout)
