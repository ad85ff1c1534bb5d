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
    python benchmarks/captions.py --model runs/clevr/xy/final --tasks clevr --format stages place=xy

Per task it prints: the share of captions with the right object count; items right whole
(attributes and place); attribute words right as a set (an object seen, wherever placed); and per
attribute slot, over the true objects whose place the caption also names (paired in caption order),
the share whose slot matches; the share of captions right whole; and, inside an answer, how often
the answer is right where its caption is right whole and where it is not (what the reasoning adds
to what the model saw). Where the caption places objects by pixel coordinates (clevr ``place=xy``:
"at x 12 y 40"), an item is right within `TOLERANCE` pixels on each axis, each true object is paired
with the nearest item of the caption, and it also prints the mean coordinate error and, over pairs of
true objects, how often the caption's coordinates order them as the truth does (left/right by x,
behind/front by y: the relations the reasoning reads off them). The README records what it printed.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

import torch

from vrm.config import parse_overrides
from vrm.eval.run import evaluate
from vrm.model import load_model
from vrm.tasks import eval_samples, get_task

PLACE_WORDS = ("in", "on", "at")
TOLERANCE = 2  # pixels, per axis: clevr centres lie >= 4.5 pixels apart on both axes at 64 pixels
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


def xy(place: str) -> tuple[int, int] | None:
    """``"at x 12 y 40"`` -> (12, 40); a place in words -> None.

    >>> xy("at x 12 y 40"), xy("at the top left")
    ((12, 40), None)
    """
    m = re.fullmatch(r"at x (\d+) y (\d+)", place)
    return (int(m.group(1)), int(m.group(2))) if m else None


def compare_xy(true_items: list, got_items: list, slots: int, c: Counter) -> Counter:
    """`compare` for coordinate places: each true object, in caption order, against the nearest item of
    the caption not yet paired."""
    got = [(attrs, p) for attrs, place in got_items if (p := xy(place))]
    paired = []
    for attrs, place in true_items:
        t = xy(place)
        if not got:
            break
        g_attrs, g = nearest = min(got, key=lambda item: max(abs(item[1][0] - t[0]), abs(item[1][1] - t[1])))
        got.remove(nearest)
        error = (abs(g[0] - t[0]), abs(g[1] - t[1]))
        c["x_error"], c["y_error"] = c["x_error"] + error[0], c["y_error"] + error[1]
        c["placed"] += max(error) <= TOLERANCE
        c["whole_right"] += max(error) <= TOLERANCE and g_attrs == attrs
        for k in range(slots):
            c[f"slot{k}"] += int(max(error) <= TOLERANCE and len(g_attrs) == len(attrs) and g_attrs[k] == attrs[k])
        paired.append((t, g))
    c["paired"] = len(paired)
    for i, (ti, gi) in enumerate(paired):
        for tj, gj in paired[i + 1:]:
            c["pairs"] += 1
            c["x_order"] += (ti[0] < tj[0]) == (gi[0] < gj[0]) and gi[0] != gj[0]
            c["y_order"] += (ti[1] < tj[1]) == (gi[1] < gj[1]) and gi[1] != gj[1]
    return c


def compare(truth: str, caption: str, slots: int) -> Counter:
    """Counts for one caption against the truth (see the module docstring).

    >>> c = compare("2 objects: a small red metal cube at x 10 y 5; a large blue rubber sphere at x 30 y 20.",
    ...             "2 objects: a small red metal cube at x 12 y 6; a large red rubber sphere at x 8 y 21.", 4)
    >>> c["whole_right"], c["placed"], c["slot1"], c["x_order"], c["y_order"], c["x_error"]
    (1, 1, 1, 0, 1, 24)
    """
    n_true, true_items = read_caption(truth)
    n_got, got_items = read_caption(caption)
    c = Counter(captions=1, count_right=int(n_true == n_got), objects=len(true_items))
    if true_items and xy(true_items[0][1]):
        return compare_xy(true_items, got_items, slots, c)
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
    ap.add_argument("params", nargs="*", help="task parameters as key=value, for every task (e.g. place=xy)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    for name in args.tasks.split(","):
        task = get_task(name, **parse_overrides(args.params))
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
        if total["paired"]:
            print(f"  coordinate error          x {total['x_error'] / total['paired']:.2f}, "
                  f"y {total['y_error'] / total['paired']:.2f} pixels (mean, nearest item)")
            print(f"  pairs ordered right       x {100 * total['x_order'] / max(total['pairs'], 1):5.1f}%, "
                  f"y {100 * total['y_order'] / max(total['pairs'], 1):5.1f}% of {total['pairs']} object pairs")
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
