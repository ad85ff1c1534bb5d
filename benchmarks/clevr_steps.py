"""Where does a CLEVR answer go wrong? The model's REASONING against the trace's, sentence by sentence.

Each program node of a clevr sample is one or two sentences of the `stages` target
(`vrm.tasks.clevr.explain`). This script has the model answer held-out questions in stages
(greedy) and finds, per answer, the first sentence of its reasoning that differs from the target's,
counted by the kind of program node it belongs to (``filter_shape``, ``relate:left``, ...).
"(order only)" marks a listing with the right objects in another order. A step can also differ
because the model took a union's branches in the other order, so these are the first *differences*,
an upper bound on the first errors. (A coordinate restated a pixel off counts as a difference too.)
It then splits the wrong answers by their caption: right (every object, placed within
`captions.TOLERANCE` pixels), so the reasoning went wrong, or not, so the model misread the scene.

    python benchmarks/clevr_steps.py --model runs/clevr/reason/final --n 1000
    python benchmarks/clevr_steps.py --model runs/clevr/checks/final reasoning=checks
    python benchmarks/clevr_steps.py --model runs/clevr/xy/final --n 1000 reasoning=checks place=xy
    python benchmarks/clevr_steps.py --records runs/clevr/xy/eval.jsonl reasoning=checks place=xy  # answers of a
        # `vrm eval --task clevr --format stages --records FILE` run, not generated again
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import torch

from vrm.config import parse_overrides
from vrm.eval.run import evaluate
from vrm.model import load_model
from vrm.tasks import eval_samples, get_task
from vrm.tasks.clevr.executor import node_values
from vrm.tasks.clevr.explain import step as node_words

sys.path.insert(0, str(Path(__file__).resolve().parent))
from captions import TOLERANCE, compare  # noqa: E402  (benchmarks/captions.py: a caption against the truth)


def sentences(text: str) -> list[str]:
    """``"Red ones: a. Count: 1."`` -> ``["Red ones: a.", "Count: 1."]``"""
    return [s for s in re.split(r"(?<=\.) ", text.strip()) if s]


def target_sentences(sample, checks: bool, coords: bool = False, merges: bool = False) -> list[tuple[str, str]]:
    """(sentence, node kind) for every sentence of the sample's reasoning target, in order."""
    objects, program = sample.trace["scene"]["objects"], sample.trace["program"]
    outputs = [n["output"] for n in program]
    out = []
    for node in program:
        words = node_words(node, outputs, objects, checks, coords, merges)
        if words is None:
            continue
        kind = node["type"]
        if kind == "relate":
            kind += ":" + node_values(node)[0]
        out += [(s, kind) for s in sentences(words)]
    return out


def first_difference(truth: list[tuple[str, str]], got: list[str]) -> str | None:
    """The node kind of the first sentence that differs (None when all agree)."""
    for k, (sentence, kind) in enumerate(truth):
        if k >= len(got):
            return kind + " (missing)"
        if got[k] != sentence:
            same_set = sorted(got[k].partition(": ")[2].rstrip(".").split(", ")) == \
                sorted(sentence.partition(": ")[2].rstrip(".").split(", "))
            return kind + (" (order only)" if same_set and got[k].partition(": ")[0] == sentence.partition(": ")[0]
                           else "")
    return "extra sentences" if len(got) > len(truth) else None


def caption_right(truth: str, caption: str) -> bool:
    """Whether a caption names every object right (its place within `TOLERANCE` pixels) and no other."""
    c = compare(truth, caption, 4)
    return bool(c["count_right"]) and c["whole_right"] == c["objects"] == caption.count("; ") + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--records", help="read the answers from this `vrm eval --records` file (its first --n) "
                    "instead of generating them")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("params", nargs="*", help="the clevr parameters the model was trained on, as key=value "
                    "(e.g. reasoning=checks place=xy)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("clevr", split="test", **parse_overrides(args.params))
    pairs = [(task, s) for s in eval_samples(task, n=args.n, seed=0)]
    if args.records:
        with open(args.records) as f:
            by_id = {r["id"]: r for r in map(json.loads, filter(str.strip, f))}
        missing = [s.id for _, s in pairs if s.id not in by_id]
        if missing:
            raise SystemExit(f"{args.records}: no answers to {len(missing)} of the {args.n} questions "
                             f"(first {missing[0]}); evaluate with --n {args.n} --seed 0")
        records = [by_id[s.id] for _, s in pairs]
        summary = {"accuracy": sum(r["correct"] for r in records) / len(records)}
    else:
        model, processor = load_model(args.model)
        summary, records = evaluate(model, processor, pairs, "stages", max_new_tokens=args.max_new_tokens,
                                    progress=False)
    firsts, right_but_differs, wrong, seen = Counter(), 0, 0, 0
    for (_, sample), record in zip(pairs, records):
        stages = record.get("stages", {})
        kind = first_difference(target_sentences(sample, **task.layout), sentences(stages.get("REASONING", "")))
        firsts[kind or "none (reasoning as the trace's)"] += 1
        right_but_differs += int(kind is not None and record["correct"] >= 1)
        if record["correct"] < 1:
            wrong += 1
            seen += caption_right(task.caption(sample), stages.get("CAPTION", ""))
    print(f"{args.records or args.model or 'embedded model'}: {args.n} clevr questions in stages, "
          f"accuracy {100 * summary['accuracy']:.1f}%")
    print("first sentence that differs from the trace's, by program node:")
    for kind, count in firsts.most_common():
        print(f"  {kind:36s} {count:5d}")
    print(f"answers right although the reasoning differs somewhere: {right_but_differs}")
    print(f"wrong answers: {wrong}; with the caption right (every object, its place within {TOLERANCE} px), so "
          f"the reasoning went wrong: {seen}; with an object misread, missed or misplaced: {wrong - seen}")


if __name__ == "__main__":
    main()
