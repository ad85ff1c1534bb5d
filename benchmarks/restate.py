"""Does the model read the question, or the image, when it restates what a question asks for?

The structured formats make the model restate the filter of a shapes question before it answers:
``<SUMMARY>I will find the red shapes and count them.</SUMMARY>`` (count by colour or shape),
``I will look for a blue square.`` (exists). This script asks held-out count_colour, count_shape
and exists questions in the ``stages`` format, reads the restated colour / shape from the summary
and sorts each answer into: the question's own attribute (read right), another one that IS in the
image (the image's words won), one that is not in the image either, or no summary at all.

    python benchmarks/restate.py                                   # the embedded model, 300 questions
    python benchmarks/restate.py --model runs/tiny/sft/final --n 600 --format think
    python benchmarks/restate.py --blank      # a plain white image instead of each picture

With ``think`` it reads the first "The <colour> shapes" / "The <plural>" / "A <colour> <shape>" of
the reasoning instead. The README records what it printed.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import replace

import torch
from PIL import Image

from vrm.eval.run import evaluate
from vrm.model import load_model
from vrm.tasks import TEST_SEED_BASE
from vrm.tasks.shapes import PLURAL, ShapesTask

SINGULAR = {plural: shape for shape, plural in PLURAL.items()}
WORD = r"(\w+)"
RESTATED = [  # (regex, what its groups name): summary first, then the think format's reasoning
    (rf"find the {WORD} shapes", ("colour",)),
    (rf"find the ({'|'.join(SINGULAR)})\b", ("shape",)),
    (rf"look for an? {WORD} {WORD}", ("colour", "shape")),
    (rf"(?:The|no) {WORD} shapes", ("colour",)),
    (rf"(?:The|no) ({'|'.join(SINGULAR)})\b", ("shape",)),
    (rf"(?:A|a) {WORD} {WORD} is in", ("colour", "shape")),
    (rf"No shape is an? {WORD} {WORD}", ("colour", "shape")),
]


def restated(output: str) -> dict[str, str] | None:
    """The filter the output restates, e.g. {"colour": "red"}; None if it restates none.

    >>> restated("<SUMMARY>I will find the squares and count them.</SUMMARY>")
    {'shape': 'square'}
    >>> restated("<think>2 shapes: a blue circle in row 1, column 2. No shape is a red circle.</think>")
    {'colour': 'red', 'shape': 'circle'}
    >>> restated("<think>2 shapes: a blue circle in row 1, column 2.</think>") is None
    True
    """
    for pattern, names in RESTATED:
        m = re.search(pattern, output)
        if m:
            return {name: SINGULAR.get(value, value) for name, value in zip(names, m.groups())}
    return None


def verdict(asked: dict, said: dict | None, objects: list[dict]) -> str:
    """Which of four cases an answer's restated filter falls in (see the module docstring).

    >>> objs = [{"colour": "blue", "shape": "square"}]
    >>> [verdict({"colour": "red"}, s, objs) for s in ({"colour": "red"}, {"colour": "blue"}, {"colour": "green"}, None)]
    ['question', 'image', 'neither', 'none']
    """
    if said is None:
        return "none"
    if said == asked:
        return "question"
    in_image = any(all(o.get(k) == v for k, v in said.items()) for o in objects)
    return "image" if in_image else "neither"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--format", default="stages", choices=["stages", "think"])
    ap.add_argument("--blank", action="store_true", help="show a plain white image instead of each picture")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    task = ShapesTask(families=("count_colour", "count_shape", "exists"))
    samples = [task.sample(TEST_SEED_BASE + i) for i in range(args.n)]
    if args.blank:
        samples = [replace(s, image=Image.new("RGB", s.image.size, "white")) for s in samples]
    _, records = evaluate(model, processor, [(task, s) for s in samples], format=args.format, total=args.n)
    by_family: dict[str, Counter] = {}
    for s, r in zip(samples, records):
        case = verdict(s.trace["program"]["filter"], restated(r["output"]), s.trace["objects"])
        by_family.setdefault(s.family, Counter())[case] += 1
        by_family.setdefault("all", Counter())[case] += 1
    cases = ("question", "image", "neither", "none")
    print(f"restated filter ({args.format}{', blank images' if args.blank else ''}), % of questions: " + " / ".join(cases))
    for family, counts in sorted(by_family.items()):
        total = sum(counts.values())
        print(f"  {family:<14} n={total:<4} " + "  ".join(f"{100 * counts[c] / total:5.1f}" for c in cases))


if __name__ == "__main__":
    main()
