"""How much of the scene does the model see? Its dense caption against the task's own, item by item.

Every reasoning format starts from the caption ("4 objects: a large purple rubber sphere at the top
left; ..."), so an answer cannot be better than what the caption gets right. This script has the
model caption held-out images (the `caption` format, greedy; or, with ``--format think|stages``,
the caption it writes inside that answer) and compares each caption with the task's own
(`task.caption`), both read the same way: "N things: item; item; ...", each item
"a <attribute words> <place>", the place starting at "in" / "on" / "at".

    python benchmarks/captions.py                                   # the embedded model, clevr + shapes
    python benchmarks/captions.py --model runs/x/final --tasks clevr --n 300
    python benchmarks/captions.py --tasks shapes --format think     # the caption inside its reasoning

Per task it prints: the share of captions with the right object count; items right whole
(attributes and place); attribute words right as a set (an object seen, wherever placed); and per
attribute slot, over the true objects whose place the caption also names (paired in caption order),
the share whose slot matches; the share of captions right whole; and, inside an answer, how often
the answer is right where its caption is right whole and where it is not (what the reasoning adds
to what the model saw). The README records what it printed.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

import torch

from vrm.eval.run import evaluate
from vrm.model import load_model
from vrm.tasks import eval_samples, get_task

PLACE_WORDS = ("in", "on", "at")
SLOTS = {"clevr": ("size", "colour", "material", "shape"), "shapes": ("colour", "shape")}


def read_caption(caption: str) -> tuple[str | None, list[tuple[tuple[str, ...], str]]]:
    """``"2 objects: a small red metal cube on the right; ..."`` -> ("2", [(("small", "red", "metal",
    "cube"), "on the right"), ...]). Text that is not of that form gives (None, []).

    >>> read_caption("2 shapes: a red circle in row 1, column 2; a blue square in row 3, column 1.")
    ('2', [(('red', 'circle'), 'in row 1, column 2'), (('blue', 'square'), 'in row 3, column 1')])
    """
    head, sep, body = caption.strip().partition(": ")
    if not sep:
        return None, []
    items = []
    for part in body.rstrip(".").split("; "):
        words = part.split()
        if not words or words[0] not in ("a", "an"):
            continue
        cut = next((i for i, w in enumerate(words) if w in PLACE_WORDS), len(words))
        items.append((tuple(words[1:cut]), " ".join(words[cut:])))
    return head.split()[0] if head else None, items


def caption_in(output: str) -> str:
    """The caption inside a think / stages answer: from "N things: " to the next full stop.

    >>> caption_in("<think>I will look. 1 shape: a red circle in row 1, column 2. Checking ...")
    '1 shape: a red circle in row 1, column 2.'
    """
    m = re.search(r"\d+ \w+: [^.]*\.", output)
    return m.group(0) if m else ""


def compare(truth: str, caption: str, slots: int) -> Counter:
    """Counts for one caption against the truth (see the module docstring)."""
    n_true, true_items = read_caption(truth)
    n_got, got_items = read_caption(caption)
    c = Counter(captions=1, count_right=int(n_true == n_got), objects=len(true_items))
    c["whole_right"] = sum((Counter(true_items) & Counter(got_items)).values())
    c["attributes_right"] = sum((Counter(a for a, _ in true_items) & Counter(a for a, _ in got_items)).values())
    unused = list(got_items)
    for attrs, place in true_items:
        match = next((g for g in unused if g[1] == place), None)
        if match is None:
            continue
        unused.remove(match)
        c["placed"] += 1
        for k in range(slots):
            c[f"slot{k}"] += int(len(match[0]) == len(attrs) and match[0][k] == attrs[k])
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--tasks", default="clevr,shapes")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--format", default="caption", help="caption, or think / stages: the caption inside that answer")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    for name in args.tasks.split(","):
        task = get_task(name)
        slots = SLOTS.get(name, ())
        pairs = [(task, s) for s in eval_samples(task, n=args.n, seed=0)]
        _, records = evaluate(model, processor, pairs, args.format, progress=False)
        total = Counter()
        for (_, sample), record in zip(pairs, records):
            output = record["output"] if args.format == "caption" else caption_in(record["output"])
            c = compare(task.caption(sample), output, len(slots))
            seen = "seen" if c["count_right"] and c["whole_right"] == c["objects"] else "missed"
            c[f"{seen}_captions"], c[f"{seen}_correct"] = 1, record["correct"]
            total += c
        objects, placed = max(total["objects"], 1), max(total["placed"], 1)
        print(f"\n{name} ({args.format}): {total['captions']} captions, {total['objects']} objects")
        print(f"  object count right        {100 * total['count_right'] / total['captions']:5.1f}% of captions")
        print(f"  items right whole         {100 * total['whole_right'] / objects:5.1f}% of objects")
        print(f"  attribute words right     {100 * total['attributes_right'] / objects:5.1f}% of objects (any place)")
        print(f"  place named in caption    {100 * total['placed'] / objects:5.1f}% of objects")
        for k, slot in enumerate(slots):
            print(f"    {slot:<10} right       {100 * total[f'slot{k}'] / placed:5.1f}% of those")
        print(f"  captions right whole      {100 * total['seen_captions'] / total['captions']:5.1f}% (every object)")
        if args.format != "caption":
            for seen in ("seen", "missed"):
                m = total[f"{seen}_captions"]
                acc = f"{100 * total[f'{seen}_correct'] / m:5.1f}%" if m else "    -"
                print(f"  answers right, caption {'right' if seen == 'seen' else 'wrong'} {acc} of {m}")


if __name__ == "__main__":
    main()
