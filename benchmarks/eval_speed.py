"""Greedy answers two ways on the same questions: HF `generate` (what `vrm eval` used before) and vrm's
own decoder (`vrm.infer.search` greedy, through `vrm.eval.run.evaluate` as `vrm eval` runs it), which
drops finished answers from the batch instead of running every row until the longest one ends. Prints
the time of each (median of the rounds, run alternately) and how many answers are identical.

    python benchmarks/eval_speed.py --model models/clevr --n 64 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vrm.eval.run import batches, evaluate
from vrm.formats import get_format
from vrm.infer.generate import generate
from vrm.model import load_model
from vrm.tasks import eval_samples, get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/clevr")
    ap.add_argument("--format", default="stages")
    ap.add_argument("--n", type=int, default=64, help="questions, answered in batches of 64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    task, fmt = get_task("clevr", reasoning="checks", place="xy"), get_format(args.format)
    samples = list(eval_samples(task, n=args.n))
    chunks = list(batches(samples, 64))

    def hf(batch):
        return generate(model, processor, [s.image for s in batch], [fmt.prompt(s) for s in batch],
                        max_new_tokens=fmt.max_new_tokens)

    def vrm(batch):  # what `vrm eval` runs
        return [r["output"] for r in evaluate(model, processor, [(task, s) for s in batch], fmt.name,
                                              progress=False)[1]]

    seconds, answers = {"hf_generate": [], "vrm_greedy": []}, {}
    for _ in range(args.rounds):
        for name, answer in (("hf_generate", hf), ("vrm_greedy", vrm)):
            t0 = time.perf_counter()
            answers[name] = [out.strip() for batch in chunks for out in answer(batch)]
            seconds[name].append(time.perf_counter() - t0)
            print(f"  {name:12s} {seconds[name][-1]:7.1f}s", flush=True)
    hf_s, vrm_s = (statistics.median(seconds[k]) for k in ("hf_generate", "vrm_greedy"))
    same = sum(a == b for a, b in zip(answers["hf_generate"], answers["vrm_greedy"]))
    print(f"{args.model}, {args.n} questions, format {fmt.name}, median of {args.rounds} rounds: HF generate "
          f"{hf_s:.1f}s, vrm greedy {vrm_s:.1f}s ({hf_s / vrm_s:.2f}x faster); identical answers {same} of {len(samples)}")


if __name__ == "__main__":
    main()
