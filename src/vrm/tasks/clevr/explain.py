"""A CLEVR sample's program, step by step in words: the reasoning targets of the think/stages formats.

Each program node becomes one sentence naming its result (the set of objects, the object, the
number or the attribute), so every reasoning step is checkable against the trace. A set of objects
is listed in reading order (top to bottom, then left to right: the caption's order), not in the
scene's index order, which the image does not show.
"""

from __future__ import annotations

from vrm.tasks.base import Explanation
from vrm.tasks.clevr.executor import node_values

DIRECTIONS = {"left": "left of", "right": "right of", "front": "in front of", "behind": "behind"}
ATTRIBUTE = {"color": "colour", "size": "size", "shape": "shape", "material": "material"}


def name(obj: dict) -> str:
    return f"{obj['size']} {obj['color']} {obj['material']} {obj['shape']}"


def reading_order(objects: list[dict]) -> list[int]:
    """Object indices top to bottom, then left to right, by ``pixel_coords`` (index order without them).

    >>> reading_order([{"pixel_coords": [50, 10, 0]}, {"pixel_coords": [5, 40, 0]}, {"pixel_coords": [9, 10, 0]}])
    [2, 0, 1]
    """
    if not all("pixel_coords" in o for o in objects):
        return list(range(len(objects)))
    return sorted(range(len(objects)), key=lambda i: (objects[i]["pixel_coords"][1], objects[i]["pixel_coords"][0]))


def in_reading_order(objects: list[dict], indices) -> list[int]:
    """``indices`` sorted as `reading_order` places their objects."""
    rank = {i: k for k, i in enumerate(reading_order(objects))}
    return sorted(indices, key=rank.__getitem__)


def listing(objects: list[dict], indices) -> str:
    """The named objects in reading order, or "none"."""
    if not indices:
        return "none"
    return ", ".join(name(objects[i]) for i in in_reading_order(objects, indices))


def checked(objects: list[dict], candidates, hits, axis: int | None = None) -> str:
    """Each candidate in reading order, its decision right after its name: "small red metal cube yes; ...";
    with an ``axis`` (0 x, 1 y) each name carries that pixel coordinate ("small red metal cube at x 12 yes")."""
    marks = [f"{name(objects[i])}{at(objects[i], axis)} {'yes' if i in hits else 'no'}"
             for i in in_reading_order(objects, candidates)]
    return "; ".join(marks) if marks else "none"


def at(obj: dict, axis: int | None) -> str:
    """" at x 12" (``axis`` 0) or " at y 40" (1): an object's pixel coordinate; "" without an axis."""
    return "" if axis is None else f" at {'xy'[axis]} {obj['pixel_coords'][axis]}"


def word(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def step(node: dict, outputs: list, objects: list[dict], checks: bool = False, coords: bool = False,
         merges: bool = False) -> str | None:
    """One node in words (None for the scene node, which the caption already covers). With ``checks``
    a node that selects objects first checks each candidate in turn ("Checking for red: small red
    metal cube yes; large blue rubber sphere no."), then lists what it kept. With ``coords`` too, a
    relation's check names the pixel coordinate it compares (x for left/right, y for front/behind)
    of the object it starts from and of each candidate, as a caption with ``place="xy"`` gives them.
    With ``merges`` a union checks every object against its two listings ("Checking for either: ...")
    and an intersection each object of its first listing against the second ("Checking for both: ..."),
    so neither merges two lists in one step."""
    kind, out = node["type"], node["output"]
    args = [outputs[i] for i in node.get("inputs", [])]
    values = node_values(node)
    if merges and out is not None and kind in ("union", "intersect"):
        what, candidates = ("either", range(len(objects))) if kind == "union" else ("both", args[0])
        return f"Checking for {what}: {checked(objects, candidates, set(out))}. {step(node, outputs, objects)}"
    if checks and out is not None and kind.startswith(("filter_", "relate", "same_")):
        plain = step(node, outputs, objects)
        axis = None
        if kind.startswith("filter_"):
            what, candidates = values[0], args[0]
        else:  # relate / same_*: every other object, against the one object it starts from
            if coords and kind == "relate":
                axis = 0 if values[0] in ("left", "right") else 1
            start = objects[args[0]]
            what = plain.split(":")[0].lower().replace(" it", f" the {name(start)}{at(start, axis)}")
            candidates = [i for i in range(len(objects)) if i != args[0]]
        return f"Checking for {what}: {checked(objects, candidates, set(out), axis)}. {plain}"
    if out is None:
        return f"No single object fits ({kind}), so the question has no answer."
    if kind == "scene":
        return None
    if kind.startswith("filter_"):
        return f"{values[0].capitalize()} ones: {listing(objects, out)}."
    if kind == "unique":
        return f"That is the {name(objects[out])}."
    if kind == "relate":
        return f"Things {DIRECTIONS.get(values[0], values[0])} it: {listing(objects, out)}."
    if kind.startswith("same_"):
        return f"Same {ATTRIBUTE.get(kind[5:], kind[5:])} as it: {listing(objects, out)}."
    if kind.startswith("query_"):
        return f"Its {ATTRIBUTE.get(kind[6:], kind[6:])} is {out}."
    if kind == "union":
        return f"Either: {listing(objects, out)}."
    if kind == "intersect":
        return f"Both: {listing(objects, out)}."
    if kind == "count":
        return f"Count: {out}."
    if kind == "exist":
        return f"Any: {word(out)}."
    if kind in ("subtraction", "addition"):
        return f"{args[0]} {'-' if kind == 'subtraction' else '+'} {args[1]} = {out}."
    if kind in ("less_than", "greater_than"):
        return f"Is {args[0]} {'less' if kind == 'less_than' else 'more'} than {args[1]}? {word(out)}."
    if kind.startswith("equal_"):
        return f"Are they equal? {word(out)}."
    if kind == "choose":
        return f"Take {out}."
    return f"{kind}: {word(out)}."


def explain_program(trace: dict, caption: str, question: str, checks: bool = False,
                    coords: bool = False, merges: bool = False) -> Explanation:
    """The plan, the dense caption and one sentence per program step.

    >>> objs = [{"size": "small", "color": "red", "material": "metal", "shape": "cube"},
    ...         {"size": "large", "color": "blue", "material": "rubber", "shape": "sphere"}]
    >>> program = [{"type": "scene", "inputs": [], "output": [0, 1]},
    ...            {"type": "filter_color", "inputs": [0], "value_inputs": ["red"], "output": [0]},
    ...            {"type": "count", "inputs": [1], "output": 1}]
    >>> explain_program({"scene": {"objects": objs}, "program": program}, "", "How many red things?").steps
    ['Red ones: small red metal cube.', 'Count: 1.']
    """
    objects = trace["scene"]["objects"]
    outputs = [node["output"] for node in trace["program"]]
    steps = [s for node in trace["program"] if (s := step(node, outputs, objects, checks, coords, merges))]
    final = trace["program"][-1]["type"] if trace["program"] else ""
    if final == "count" or final in ("subtraction", "addition"):
        plan = "I will find the objects the question names and count them."
    elif final in ("exist",) or final.startswith(("equal_", "less", "greater")):
        plan = "I will find the objects the question names and compare them."
    else:
        plan = "I will find the object the question names and read off its attribute."
    return Explanation(plan, caption, steps)
