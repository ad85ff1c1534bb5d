"""Does the clevr consistency reward see a wrong answer? It scored against the eval's own verdicts.

`vrm.tasks.clevr.consistency` scores a stages answer by how far its steps agree with its own caption
and with each other, without the ground truth. This script reads the per-answer records of a
`vrm eval --records` run and prints how often an answer is fully consistent, the accuracy of the
consistent and the inconsistent answers, and the share of wrong answers the reward flags (scores
below 1): the room a search scorer built on it has to pick a better candidate.

    vrm eval --model runs/clevr/xy/final --task clevr --format stages --n 1000 --records runs/clevr/xy/eval.jsonl
    python benchmarks/consistency.py runs/clevr/xy/eval.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from vrm.tasks.clevr.consistency import consistency


def tally(records: list[dict]) -> dict[str, Counter]:
    """Per family (and "all"): answers, right answers, consistent answers and right consistent ones."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        consistent = consistency(None, r["output"]) == 1.0
        right = r["correct"] >= 1
        for key in ("all", r["family"]):
            out[key] += Counter(answers=1, right=right, consistent=consistent, right_consistent=right and consistent)
    return out


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", help="a JSONL file of `vrm eval --records` (clevr, --format stages)")
    args = ap.parse_args()
    lines = Path(args.records).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    counts = tally(records)
    print(f"{args.records}: {len(records)} answers")
    print(f"{'':26s} {'accuracy':>9s} {'consistent':>11s} {'acc. consistent':>16s} {'acc. not':>9s} "
          f"{'wrong flagged':>14s}")
    for key in ["all", *sorted(k for k in counts if k != "all")]:
        c = counts[key]
        inconsistent = c["answers"] - c["consistent"]
        wrong = c["answers"] - c["right"]
        flagged = wrong - (c["consistent"] - c["right_consistent"])
        print(f"{key:26s} {percent(c['right'], c['answers']):>9s} {percent(c['consistent'], c['answers']):>11s} "
              f"{percent(c['right_consistent'], c['consistent']):>16s} "
              f"{percent(c['right'] - c['right_consistent'], inconsistent):>9s} {percent(flagged, wrong):>14s}")


if __name__ == "__main__":
    main()
