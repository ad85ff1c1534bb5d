"""Does the model decide, or guess the base rate? Teacher-forced yes/no decisions of a check.

With ``reasoning=checks`` the think target of a shapes count / exists question checks every shape
in turn ("row 1, column 2 red yes, 1; row 4, column 4 blue no."). This script feeds held-out
targets to the model (teacher forcing) and reads, at every "yes" / "no" of the target, the
probability the model gives "yes", split by what the right decision is. A model that compares
gives p(yes) near 1 where the answer is yes and near 0 where it is no; one that has only learned
how often "yes" comes gives the same p(yes) to both.

    python benchmarks/decisions.py                                  # the embedded model
    python benchmarks/decisions.py --model runs/x/final --family count_shape --n 100

The README records what it printed.
"""
from __future__ import annotations

import argparse

import torch

from vrm.formats import get_format
from vrm.model import load_model
from vrm.tasks import TEST_SEED_BASE
from vrm.tasks.shapes import ShapesTask
from vrm.train.data import collate, encode


def word_ids(tokenizer, word: str) -> set[int]:
    """Every token id that decodes to ``word`` with or without surrounding spaces."""
    return {i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip() == word}


def decisions(model, processor, family: str, n: int) -> dict[bool, list[float]]:
    """p(yes) at each decision of ``n`` held-out targets, keyed by whether the decision is yes."""
    task, fmt, tok = ShapesTask(families=(family,), reasoning="checks"), get_format("think"), processor.tokenizer
    yes, no = word_ids(tok, "yes"), word_ids(tok, "no")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(TEST_SEED_BASE, TEST_SEED_BASE + n):
        sample = task.sample(seed)
        batch = collate([encode(processor, sample, fmt.prompt(sample), fmt.target(sample, task))], pad)
        with torch.no_grad():
            probs = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0].softmax(-1)
        labels = batch["labels"][0].tolist()
        for i, label in enumerate(labels[1:], start=1):
            if label in yes or label in no:
                out[label in yes].append(sum(probs[i - 1, j].item() for j in yes))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="checkpoint (default: the embedded model)")
    p.add_argument("--family", action="append", help="count_colour, count_shape, exists (default: all three)")
    p.add_argument("--n", type=int, default=40, help="held-out questions per family")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    model.eval()
    print(f"{'family':14s} {'truth':>5s} {'n':>5s} {'mean p(yes)':>12s} {'decided right':>14s}")
    for family in args.family or ["count_colour", "count_shape", "exists"]:
        for truth, ps in decisions(model, processor, family, args.n).items():
            if ps:
                right = sum((x > 0.5) == truth for x in ps) / len(ps)
                print(f"{family:14s} {'yes' if truth else 'no':>5s} {len(ps):5d} {sum(ps) / len(ps):12.3f} {100 * right:13.1f}%")


if __name__ == "__main__":
    main()
