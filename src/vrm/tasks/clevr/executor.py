"""vrm's executor for CLEVR and CLEVR-Math functional programs.

A program is a list of nodes ``{"type" (or "function"), "inputs": [node indices], "value_inputs"
(or "side_inputs"): [values]}``; each node's output is computed from its inputs' outputs and the
scene. Outputs are object sets (sorted index lists), objects (an index), integers, booleans or
attribute words. ``unique`` fails unless exactly one object matches; a failed node (and every node
that reads it) outputs None, CLEVR's "invalid question". ``same_<attr>`` never includes the object
itself. CLEVR-Math adds ``choose`` (the number written into the question, its value input),
``addition`` and ``subtraction``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from vrm import VrmError
from vrm.files import write_atomic
from vrm.tasks.clevr.scene import relationships

ATTRIBUTES = ("color", "shape", "size", "material")
Handler = Callable[[list, list, dict], Any]


def related(scene: dict) -> dict:
    """The scene's relationships, computed from its coordinates (and kept) if it has none."""
    rel = scene.get("relationships")
    if rel is None:
        rel = scene["relationships"] = relationships(scene["objects"], scene.get("directions"))
    return rel


def _filter(attr: str) -> Handler:
    def run(args, values, scene):
        objects = scene["objects"]
        return [i for i in args[0] if objects[i][attr] == values[0]]
    return run


def _query(attr: str) -> Handler:
    return lambda args, values, scene: scene["objects"][args[0]][attr]


def _same(attr: str) -> Handler:
    def run(args, values, scene):
        objects, i = scene["objects"], args[0]
        return [j for j, o in enumerate(objects) if j != i and o[attr] == objects[i][attr]]
    return run


def _unique(args, values, scene):
    return args[0][0] if len(args[0]) == 1 else None


def _relate(args, values, scene):
    rel = related(scene)
    if values[0] not in rel:
        raise ValueError(f"unknown relation {values[0]!r}")
    return sorted(rel[values[0]][args[0]])


def _equal(args, values, scene):
    return args[0] == args[1]


HANDLERS: dict[str, Handler] = {
    "scene": lambda args, values, scene: list(range(len(scene["objects"]))),
    "unique": _unique,
    "relate": _relate,
    "union": lambda args, values, scene: sorted(set(args[0]) | set(args[1])),
    "intersect": lambda args, values, scene: sorted(set(args[0]) & set(args[1])),
    "count": lambda args, values, scene: len(args[0]),
    "exist": lambda args, values, scene: len(args[0]) > 0,
    "equal_integer": _equal,
    "equal_object": _equal,
    "less_than": lambda args, values, scene: args[0] < args[1],
    "greater_than": lambda args, values, scene: args[0] > args[1],
    "choose": lambda args, values, scene: int(values[0]),
    "addition": lambda args, values, scene: args[0] + args[1],
    "subtraction": lambda args, values, scene: args[0] - args[1],
}
for _attr in ATTRIBUTES:
    HANDLERS[f"filter_{_attr}"] = _filter(_attr)
    HANDLERS[f"query_{_attr}"] = _query(_attr)
    HANDLERS[f"same_{_attr}"] = _same(_attr)
    HANDLERS[f"equal_{_attr}"] = _equal


def node_function(node: dict) -> str:
    return node.get("type") or node.get("function")


def node_values(node: dict) -> list:
    return node.get("value_inputs", node.get("side_inputs")) or []


def run_node(node: dict, outputs: list, scene: dict) -> Any:
    """The output of one node given the outputs of the nodes before it (None if any input failed)."""
    fn = node_function(node)
    handler = HANDLERS.get(fn)
    if handler is None:
        raise VrmError(f"unknown program function {fn!r}")
    try:
        args = [outputs[i] for i in node["inputs"]]
    except (IndexError, TypeError):
        raise VrmError(f"{fn}: inputs {node.get('inputs')} do not name earlier nodes") from None
    if any(a is None for a in args):
        return None
    try:
        return handler(args, node_values(node), scene)
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise VrmError(f"{fn}{node.get('inputs')} {node_values(node)}: cannot run ({type(e).__name__}: {e})") from None


def execute(program: list[dict], scene: dict) -> list:
    """Every node's output, in program order; the answer is the last. Failed nodes give None.

    >>> scene = {"objects": [{"color": "red", "shape": "cube", "size": "large", "material": "metal",
    ...                       "3d_coords": [0, 0, 0]}]}
    >>> execute([{"type": "scene", "inputs": []},
    ...          {"type": "filter_color", "inputs": [0], "value_inputs": ["red"]},
    ...          {"type": "unique", "inputs": [1]}, {"type": "query_shape", "inputs": [2]}], scene)
    [[0], [0], 0, 'cube']
    """
    outputs: list = []
    for i, node in enumerate(program):
        try:
            outputs.append(run_node(node, outputs, scene))
        except VrmError as e:
            raise VrmError(f"program node {i}: {e}") from None
    return outputs


def answer_token(value: Any) -> str:
    """CLEVR's answer word for an output: yes/no, digits, or the attribute word.

    >>> answer_token(True), answer_token(3), answer_token("cube")
    ('yes', '3', 'cube')
    """
    if value is None:
        raise ValueError("an invalid program has no answer")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def read_list(path: str | Path, key: str) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise VrmError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise VrmError(f"{path}: not valid JSON ({e})") from None
    rows = data.get(key) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise VrmError(f"{path}: expected a JSON list or an object with a {key!r} list")
    return rows


def execute_files(scenes_path: str | Path, questions_path: str | Path, out_path: str | Path) -> int:
    """Answer every question of a CLEVR questions file on its scene (matched by ``image_index``,
    else by ``image_filename``); write ``{"questions": [{"answer", "node_outputs"}]}`` in input order.

    Returns the number of questions answered.
    """
    scenes = read_list(scenes_path, "scenes")
    questions = read_list(questions_path, "questions")
    by_index = {s.get("image_index", i): s for i, s in enumerate(scenes)}
    by_file = {s["image_filename"]: s for s in scenes if "image_filename" in s}
    results = []
    for qi, q in enumerate(questions):
        scene = by_index.get(q.get("image_index")) or by_file.get(q.get("image_filename"))
        if scene is None:
            raise VrmError(f"{questions_path}: question {qi} names image {q.get('image_index')} "
                           f"/ {q.get('image_filename')!r}, which is not in {scenes_path}")
        if not isinstance(q.get("program"), list):
            raise VrmError(f"{questions_path}: question {qi} has no program")
        try:
            outputs = execute(q["program"], scene)
        except VrmError as e:
            raise VrmError(f"{questions_path}: question {qi}: {e}") from None
        results.append({"answer": outputs[-1] if outputs else None, "node_outputs": outputs})
    try:
        write_atomic(out_path, json.dumps({"questions": results}))
    except OSError as e:
        raise VrmError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return len(results)
