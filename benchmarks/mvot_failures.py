"""Where an MVoT model's wrong episodes go wrong first, by task, grid size and walk length.

    python benchmarks/mvot_failures.py runs/spatial/mvot_long/final --sizes 5,6 --n 64 --show 3

Each held-out question is answered with visual thoughts (`vrm.infer.interleaved`) and each wrong
one is put in the first of: *action* (a step line names another action than the question's, at
or before the first wrong image), *image* (a drawn thought is wrong, `vrm.eval.visual`), *stop*
(it drew more or fewer thoughts than the walk has steps) or *answer* (all of that right, the letter
wrong). Then accuracy by walk length. ``--show K`` prints K wrong-action episodes per row: the
question, the actions written, and the first wrong step line after the one before it (with their
plans, in plan models).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mvot import questions  # noqa: E402  (benchmarks/mvot.py: the same held-out questions)
from vrm.eval.visual import evaluate_visual  # noqa: E402
from vrm.formats.visual import without_plan  # noqa: E402
from vrm.model import load_model  # noqa: E402
from vrm.model.image_codes import load_checkpoint_image_tokenizer  # noqa: E402


def first_wrong(check: dict) -> str:
    """What an episode got wrong first: "action", "image", "stop" or "answer".

    >>> first_wrong({"act": [True, False], "acc": [True, True], "red": [False, False], "stopped": True})
    'action'
    >>> first_wrong({"act": [True, True], "acc": [True, False], "red": [False, False], "stopped": True})
    'image'
    >>> first_wrong({"act": [True], "acc": [True], "red": [False], "stopped": False})
    'stop'
    """
    action = next((k for k, right in enumerate(check["act"]) if not right), None)
    image = next((k for k, (a, r) in enumerate(zip(check["acc"], check["red"])) if not a or r), None)
    if action is not None and (image is None or action <= image):
        return "action"
    if image is not None:
        return "image"
    return "answer" if check["stopped"] else "stop"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--tasks", default="frozenlake,maze")
    p.add_argument("--sizes", default="5,6")
    p.add_argument("--n", type=int, default=64, help="questions per task and size")
    p.add_argument("--style", default="short")
    p.add_argument("--show", type=int, default=0, help="wrong-action episodes to print per task and size")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.checkpoint)
    tokenizer = load_checkpoint_image_tokenizer(args.checkpoint)
    for name in args.tasks.split(","):
        for size in (int(x) for x in args.sizes.split(",")):
            checks: dict[str, dict] = {}
            pairs = questions([name], [size], args.n, args.style)
            _, records = evaluate_visual(model, processor, tokenizer, pairs, progress=False, keep_checks=checks)
            kinds, asked, right, shown = Counter(), Counter(), Counter(), 0
            for (_, sample), record in zip(pairs, records):
                check = checks[sample.id]
                asked[check["steps"]] += 1
                right[check["steps"]] += bool(record["correct"])
                if record["correct"]:
                    continue
                kind = first_wrong(check)
                kinds[kind] += 1
                if kind == "action" and shown < args.show:
                    shown += 1
                    lines, k = check["lines"], check["act"].index(False)  # the first wrong line, after the one before
                    print(f"  {sample.question}\n    wrote: {[without_plan(x) for x in lines]}")
                    print("    lines: " + "\n           ".join(lines[max(k - 1, 0):k + 1]))
            wrong = sum(kinds.values())
            print(f"{name} {size}x{size}: {100 * sum(right.values()) / len(pairs):.1f}% right; first wrong in the "
                  f"{wrong} wrong: " + ", ".join(f"{k} {kinds[k]}" for k in ("action", "image", "stop", "answer")))
            print("  right by walk length: " + "  ".join(f"{k}: {right[k]}/{asked[k]}" for k in sorted(asked)),
                  flush=True)


if __name__ == "__main__":
    main()
