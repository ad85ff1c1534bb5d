"""Which maze cells does an image tokenizer get wrong, and can the last visual thought still name the
answer? Round-trips held-out maze states (one random state per walk) and counts the cells drawn
wrong (`vrm.eval.cells`: mean RGB difference above TOL) by what the cell holds: floor, the walk's
trail, its start, the agent, each with or without a candidate letter. Then encodes the final state
of held-out walks (the walk always ends on a candidate) and counts the walks that the best rule from
the agent cell's code to a letter gets wrong (a code shared by walks ending on different letters):
there a model reading the last image cannot name the answer.

    python benchmarks/vq_cells.py runs/spatial/vq/final --n 300

Prints one line per kind of cell, then the images right and the answer conflicts.
"""
import argparse
from collections import Counter, defaultdict

import torch

from vrm.eval.cells import TOL, cell_errors
from vrm.model.vq import load_image_tokenizer
from vrm.tasks import TEST_SEED_BASE, get_task
from vrm.tasks.spatial.render import PATCH, layout


def cell_kind(cell, path, candidates) -> str:
    kind = "agent" if cell == path[-1] else "start" if cell == path[0] else "trail" if cell in path else "floor"
    return kind + ("+letter" if cell in candidates else "")


def patch_index(n: int, canvas: int, row: int, col: int) -> int:
    """The code of cell (row, col) in the row-major codes of a grid whose cells are whole patches."""
    cell, offset = layout(n, canvas)
    if cell != PATCH:
        raise ValueError(f"a {n}x{n} grid on {canvas} px has {cell} px cells, not one {PATCH} px patch each")
    side = canvas // PATCH
    return (offset // PATCH + row) * side + offset // PATCH + col


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tokenizer", help="an image tokenizer folder (vrm train vq: <out_dir>/final)")
    p.add_argument("--n", type=int, default=300, help="held-out walks")
    p.add_argument("--sizes", default="3,4,5")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vq = load_image_tokenizer(args.tokenizer)
    task = get_task("maze", style="short", sizes=args.sizes)
    cells, wrong, images_right = Counter(), Counter(), 0
    answers_by_code = defaultdict(Counter)
    for i in range(args.n):
        sample = task.sample(TEST_SEED_BASE + i)
        trace, n = sample.trace, sample.trace["size"]
        states = [tuple(s[:2]) for s in trace["states"]]
        candidates = [tuple(c) for c in trace["candidates"]]
        k = i % len(states)
        truth = task.render(trace, k)
        errors = cell_errors(vq.decode(vq.encode([truth]))[0], truth, n)
        images_right += int((errors <= TOL).all())
        for r in range(n):
            for c in range(n):
                kind = cell_kind((r, c), states[:k + 1], candidates)
                cells[kind] += 1
                wrong[kind] += int(errors[r, c] > TOL)
        final = vq.encode([task.render(trace, len(states) - 1)])[0]
        answers_by_code[int(final[patch_index(n, truth.width, *states[-1])])][sample.answer] += 1
    for kind in sorted(cells):
        print(f"{kind:14s} {wrong[kind]:5d} of {cells[kind]:5d} cells wrong ({100 * wrong[kind] / cells[kind]:5.1f}%)")
    conflicts = sum(sum(c.values()) - max(c.values()) for c in answers_by_code.values())
    print(f"images right {100 * images_right / args.n:.1f}% of {args.n}; final agent cell's code names another "
          f"walk's answer in {conflicts} of {args.n} walks ({len(answers_by_code)} distinct codes)")


if __name__ == "__main__":
    main()
