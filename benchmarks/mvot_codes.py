"""Can an MVoT checkpoint draw the next state? Teacher-forced accuracy of its image codes on held-out
one-step examples (the true action line and the true latest image in context, as in training),
next to what copying the latest image unchanged would score. A model below the copy line has not
learned to copy yet; one above it draws the action's change too.

    python benchmarks/mvot_codes.py runs/spatial/mvot/final --n 96

Prints one line per task: code accuracy, copy-the-latest-image accuracy, number of codes.
"""
import argparse

import torch

from vrm.model import load_model
from vrm.model.image_codes import IMAGE_TOKENIZER_DIR, code_ids
from vrm.tasks import TEST_SEED_BASE, get_task
from vrm.train.data import collate
from vrm.train.mvot import MVoTConfig, MVoTStage


def code_accuracy(model, processor, stage, task, n: int, batch_size: int = 16) -> tuple[float, float, int]:
    first, k = code_ids(processor.tokenizer)

    def code_positions(row):
        return ((row >= first) & (row < first + k)).nonzero().flatten()

    pairs = [(task, task.sample(TEST_SEED_BASE + i)) for i in range(n)]
    right = copied = total = 0
    for b in range(0, n, batch_size):
        batch = collate(stage.examples(processor, pairs[b:b + batch_size], draw=10_000 + b),
                        processor.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(**batch).logits[:, :-1]
        labels, ids = batch["labels"][:, 1:], batch["input_ids"]
        for r in range(len(labels)):
            at = code_positions(labels[r])
            if len(at) == 0:  # the answer step: no image to draw
                continue
            gold = labels[r, at]
            pred = logits[r, at, first:first + k].argmax(-1) + first
            latest = ids[r, code_positions(ids[r])[:len(at)]]  # the context's image comes first
            right += int((pred == gold).sum())
            copied += int((latest == gold).sum())
            total += len(at)
    return right / max(total, 1), copied / max(total, 1), total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an MVoT checkpoint (vrm train mvot), with its image_tokenizer/")
    p.add_argument("--tasks", default="frozenlake,maze")
    p.add_argument("--sizes", default="3,4,5")
    p.add_argument("--n", type=int, default=96, help="held-out episodes per task (one random step each)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    model.eval()
    stage = MVoTStage(MVoTConfig(vq=f"{args.model}/{IMAGE_TOKENIZER_DIR}"))
    for name in args.tasks.split(","):
        task = get_task(name, style="short", sizes=args.sizes)
        acc, copy, total = code_accuracy(model, processor, stage, task, args.n)
        print(f"{name:12s} code accuracy {100 * acc:5.1f}%   copy the latest image {100 * copy:5.1f}%   ({total} codes)")


if __name__ == "__main__":
    main()
