"""Can an MVoT checkpoint draw the next state, and read the answer off the last one? Teacher-forced
on held-out one-step examples (the true action line and the true latest image in context, as in
training): accuracy of its image codes, next to what copying the latest image unchanged would score,
then apart for the codes the action changes (the agent's old and new cell) and the others, images
right whole, and answer steps right (the whole answer line, from the true final image). A model below
the copy line has not learned to copy yet; one above it draws the action's change too.

    python benchmarks/mvot_codes.py runs/spatial/mvot/final --n 96

Prints one line per task.
"""
import argparse

import torch

from vrm.model import load_model
from vrm.model.image_codes import IMAGE_TOKENIZER_DIR, code_ids
from vrm.tasks import TEST_SEED_BASE, get_task
from vrm.train.data import IGNORE, collate
from vrm.train.mvot import MVoTConfig, MVoTStage, changed_codes


def code_accuracy(model, processor, stage, task, n: int, batch_size: int = 16) -> dict[str, float]:
    first, k = code_ids(processor.tokenizer)

    def code_positions(row):
        return ((row >= first) & (row < first + k)).nonzero().flatten()

    pairs = [(task, task.sample(TEST_SEED_BASE + i)) for i in range(n)]
    c = dict.fromkeys(("right", "copied", "total", "changed", "changed_right", "whole", "images",
                       "answers", "answers_right"), 0)
    for b in range(0, n, batch_size):
        batch = collate(stage.examples(processor, pairs[b:b + batch_size], draw=10_000 + b),
                        processor.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(**batch).logits[:, :-1]
        labels, ids = batch["labels"][:, 1:], batch["input_ids"]
        moved = changed_codes(ids, batch["labels"], first, k)[:, 1:]
        for r in range(len(labels)):
            at = code_positions(labels[r])
            if len(at) == 0:  # the answer step: no image to draw
                said = labels[r] != IGNORE
                c["answers"] += 1
                c["answers_right"] += int((logits[r, said].argmax(-1) == labels[r, said]).all())
                continue
            gold = labels[r, at]
            pred = logits[r, at, first:first + k].argmax(-1) + first
            latest = ids[r, code_positions(ids[r])[:len(at)]]  # the context's image comes first
            hit = pred == gold
            c["right"] += int(hit.sum())
            c["copied"] += int((latest == gold).sum())
            c["total"] += len(at)
            c["changed"] += int(moved[r, at].sum())
            c["changed_right"] += int(hit[moved[r, at]].sum())
            c["whole"] += int(hit.all())
            c["images"] += 1
    share = lambda a, b: c[a] / max(c[b], 1)  # noqa: E731
    return {"codes": share("right", "total"), "copy": share("copied", "total"),
            "changed": share("changed_right", "changed"),
            "unchanged": (c["right"] - c["changed_right"]) / max(c["total"] - c["changed"], 1),
            "whole": share("whole", "images"), "answers": share("answers_right", "answers"),
            "n_codes": c["total"], "n_answers": c["answers"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an MVoT checkpoint (vrm train mvot), with its image_tokenizer/")
    p.add_argument("--tasks", default="frozenlake,maze")
    p.add_argument("--sizes", default="3,4,5")
    p.add_argument("--n", type=int, default=96, help="held-out episodes per task (one random step each)")
    p.add_argument("--answer-share", type=float, default=0.3, help="share of episodes asked their answer step")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    model.eval()
    stage = MVoTStage(MVoTConfig(vq=f"{args.model}/{IMAGE_TOKENIZER_DIR}", answer_share=args.answer_share))
    for name in args.tasks.split(","):
        task = get_task(name, style="short", sizes=args.sizes)
        r = code_accuracy(model, processor, stage, task, args.n)
        print(f"{name:12s} codes {100 * r['codes']:5.1f}% (copying the latest image {100 * r['copy']:5.1f}%): "
              f"changed {100 * r['changed']:5.1f}%, unchanged {100 * r['unchanged']:5.1f}%, images whole "
              f"{100 * r['whole']:5.1f}% ({r['n_codes']} codes); answers {100 * r['answers']:5.1f}% "
              f"({r['n_answers']} answer steps)")


if __name__ == "__main__":
    main()
