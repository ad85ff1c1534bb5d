"""The MVoT table: answer accuracy of Direct, CoT (`think`), Interleaved (MVoT without the token
discrepancy loss) and MVoT on the spatial tasks, per task and grid size, on the same held-out
questions, with the CoT-or-MVoT union and the visual-thought metrics of the two visual models.

    python benchmarks/mvot.py --direct runs/spatial/direct/final --cot runs/spatial/think/final \\
        --interleaved runs/spatial/interleaved/final --mvot runs/spatial/mvot/final --n 100

Any model may be left out (its column is skipped). ``--json FILE`` keeps every figure and each
question's result; ``--reuse FILE`` takes the columns given no checkpoint from such a file (same
questions: same ``--tasks --sizes --n --style``), so one table can join runs made apart.
``--sizes 3,4,5,6`` are the grid sizes asked (each size gets ``--n`` questions per task); include a
size larger than training's to see generalisation. Questions use the short style the recipes train on (``--style``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vrm.eval.run import evaluate  # noqa: E402
from vrm.eval.visual import visual_table  # noqa: E402
from vrm.model import load_model  # noqa: E402
from vrm.model.image_codes import load_checkpoint_image_tokenizer  # noqa: E402
from vrm.tasks import eval_samples, get_task  # noqa: E402

COLUMNS = {"direct": "direct", "cot": "think", "interleaved": "visual", "mvot": "visual"}


def questions(tasks: list[str], sizes: list[int], n: int, style: str):
    """(task, sample) pairs: ``n`` held-out questions per task and size (same for every model)."""
    pairs = []
    for name in tasks:
        for size in sizes:
            task = get_task(name, split="test", sizes=str(size), style=style)
            pairs += [(task, s) for s in eval_samples(task, n=n, seed=size * 100_000)]
    return pairs


def reused(path: str | None, asked: dict, skip: list[str]) -> tuple[dict, dict]:
    """(results, per-question results) of the columns an earlier ``--json`` holds, but ``skip``."""
    if not path:
        return {}, {}
    with open(path) as f:
        old = json.load(f)
    if old.get("questions") != asked:
        raise SystemExit(f"{path}: other questions ({old.get('questions')}), not {asked}")
    kept = [c for c in old["correct"] if c in COLUMNS and c not in skip]
    return {c: old[c] for c in kept}, {c: old["correct"][c] for c in kept}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for column in COLUMNS:
        p.add_argument(f"--{column}", help=f"checkpoint of the {column} model")
    p.add_argument("--tasks", default="frozenlake,maze")
    p.add_argument("--sizes", default="3,4,5,6")
    p.add_argument("--n", type=int, default=100, help="questions per task and size")
    p.add_argument("--style", default="short")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write every figure (and each question's result) here")
    p.add_argument("--reuse", help="an earlier --json of the same questions: its columns fill those given no checkpoint")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs = questions(args.tasks.split(","), [int(x) for x in args.sizes.split(",")], args.n, args.style)
    asked = {"tasks": args.tasks, "sizes": args.sizes, "n": args.n, "style": args.style}
    results, correct = reused(args.reuse, asked, skip=[c for c in COLUMNS if getattr(args, c)])
    for column, fmt in COLUMNS.items():
        path = getattr(args, column)
        if not path:
            if column in results:
                print(f"{column}: {100 * results[column]['accuracy']:.1f}% (from {args.reuse})", flush=True)
                if "visual" in results[column]:
                    print(visual_table(results[column]), flush=True)
            continue
        model, processor = load_model(path)
        tokenizer = load_checkpoint_image_tokenizer(path) if fmt == "visual" else None
        t0 = time.perf_counter()
        summary, records = evaluate(model, processor, pairs, fmt, image_tokenizer=tokenizer, total=len(pairs))
        summary["seconds"] = time.perf_counter() - t0
        results[column] = summary
        correct[column] = {r["id"]: r["correct"] for r in records}
        print(f"{column}: {100 * summary['accuracy']:.1f}% in {summary['seconds']:.0f}s", flush=True)
        if "visual" in summary:
            print(visual_table(summary), flush=True)
    if "cot" in correct and "mvot" in correct:
        union = {i: max(correct["cot"][i], correct["mvot"][i]) for i in correct["cot"]}
        by_family = {}
        for (task, s) in pairs:
            by_family.setdefault(f"{s.task}/{s.family}", []).append(union[s.id])
            by_family.setdefault(s.task, []).append(union[s.id])
        results["cot|mvot"] = {"per_family": {k: sum(v) / len(v) for k, v in by_family.items() if "/" in k},
                               "per_task": {k: sum(v) / len(v) for k, v in by_family.items() if "/" not in k},
                               "accuracy": sum(union.values()) / len(union)}
    names = [c for c in (*COLUMNS, "cot|mvot") if c in results]
    print(f"\n{'accuracy (%)':18s}" + "".join(f"{n:>13s}" for n in names))
    rows = sorted({k for r in results.values() for k in r["per_family"]})
    for task in sorted({k.split("/")[0] for k in rows}):
        print(f"{task:18s}" + "".join(f"{100 * results[n]['per_task'][task]:13.1f}" for n in names))
        for fam in (k for k in rows if k.startswith(task + "/")):
            print(f"  {fam.split('/')[1]:16s}" + "".join(f"{100 * results[n]['per_family'][fam]:13.1f}" for n in names))
    print(f"{'overall':18s}" + "".join(f"{100 * results[n]['accuracy']:13.1f}" for n in names))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "questions": asked, "correct": correct}, f, indent=2)


if __name__ == "__main__":
    main()
