"""Can an MVoT checkpoint draw the next state, and read the answer off the last one? Teacher-forced
on held-out one-step examples (the true action line and the true latest image in context, as in
training): accuracy of its image codes, next to what copying the latest image unchanged would score,
then apart for the codes the action changes (the agent's old and new cell) and the others, images
right whole, the action lines right (the action after "Step k:", looked up in the question) by k,
for a model that writes plans (`--plan`) the plans right whole (every slot), and answer steps right
(the whole answer line, from the true final image). A model below the copy line has not learned
to copy yet; one above it draws the action's change too. Last, whether
the answer looks at the final image at all: the mean total-variation distance between the answer
token's distribution with the context's image and with every code of it blanked (set to the image's
most common code, the background). Near 0, the model answers from the text alone (e.g. a walk cut
short by a hole) and the visual thought is decoration.

    python benchmarks/mvot_codes.py runs/spatial/mvot/final --n 96

Prints one line per task.
"""
import argparse

import torch

from vrm.formats.visual import PLAN
from vrm.model import load_model
from vrm.model.image_codes import IMAGE_TOKENIZER_DIR, code_ids
from vrm.tasks import TEST_SEED_BASE, get_task
from vrm.train.data import IGNORE, collate
from vrm.train.mvot import MVoTConfig, MVoTStage, changed_codes


# " The", " answer", " is", " A": the letter is the answer line's 4th target token (" D" is two tokens
# in the embedded tokenizer, " " and "D": there the 4th is " ", still the token that picks the letter)
LETTER_AT = 3


def code_accuracy(model, processor, stage, task, n: int, batch_size: int = 16) -> dict[str, float]:
    first, k = code_ids(processor.tokenizer)

    def code_positions(row):
        return ((row >= first) & (row < first + k)).nonzero().flatten()

    pairs = [(task, task.sample(TEST_SEED_BASE + i)) for i in range(n)]
    c = dict.fromkeys(("right", "copied", "total", "changed", "changed_right", "whole", "images",
                       "answers", "answers_right", "image_effect", "plans", "plans_right"), 0)
    plan_id = processor.tokenizer.convert_tokens_to_ids(PLAN)
    actions = {}  # step k -> [right, asked]
    for b in range(0, n, batch_size):
        batch = collate(stage.examples(processor, pairs[b:b + batch_size], draw=10_000 + b),
                        processor.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(**batch).logits[:, :-1]
        labels, ids = batch["labels"][:, 1:], batch["input_ids"]
        moved = changed_codes(ids, batch["labels"], first, k)[:, 1:]
        answering = []
        for r in range(len(labels)):
            at = code_positions(labels[r])
            if len(at) == 0:  # the answer step: no image to draw
                said = labels[r] != IGNORE
                c["answers"] += 1
                c["answers_right"] += int((logits[r, said].argmax(-1) == labels[r, said]).all())
                answering.append(r)
                continue
            said = torch.isin(labels[r], stage.actions).nonzero().flatten()
            if len(said):
                step = processor.tokenizer.decode(labels[r, said[0] - 2])  # "Step k:", " ", "Go down."
                tally = actions.setdefault(int(step.split()[1].rstrip(":")), [0, 0])
                tally[0] += int(logits[r, said[0]].argmax() == labels[r, said[0]])
                tally[1] += 1
            opened = (labels[r] == plan_id).nonzero().flatten()
            if len(opened):  # the plan: from its first slot to the image
                slots = torch.arange(int(opened[0]) + 1, int(at[0]) - 1)
                c["plans"] += 1
                c["plans_right"] += int((logits[r, slots].argmax(-1) == labels[r, slots]).all())
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
        if answering:
            c["image_effect"] += answer_image_effect(model, batch, logits, answering, first, k)
    share = lambda a, b: c[a] / max(c[b], 1)  # noqa: E731
    return {"codes": share("right", "total"), "copy": share("copied", "total"),
            "changed": share("changed_right", "changed"),
            "unchanged": (c["right"] - c["changed_right"]) / max(c["total"] - c["changed"], 1),
            "whole": share("whole", "images"), "answers": share("answers_right", "answers"),
            "image_effect": share("image_effect", "answers"), "plans": share("plans_right", "plans"),
            "n_codes": c["total"], "n_answers": c["answers"], "actions": dict(sorted(actions.items()))}


def answer_image_effect(model, batch, logits, rows, first: int, k: int) -> float:
    """Summed over the answer ``rows``: the total-variation distance between the distribution of the
    answer's letter token with the context's image and with that image blanked to its most common
    code (the question's image, seen through the vision tower, stays)."""
    ids = batch["input_ids"][rows].clone()
    is_code = (ids >= first) & (ids < first + k)
    for r in range(len(rows)):
        ids[r, is_code[r]] = ids[r, is_code[r]].mode().values
    per_row = len(batch["input_ids"])
    blanked = {key: value[rows] if len(value) == per_row else value
               for key, value in batch.items() if key != "input_ids"}
    with torch.no_grad():
        changed = model(input_ids=ids, **blanked).logits[:, :-1]
    labels = batch["labels"][rows, 1:]
    total = 0.0
    for r in range(len(rows)):
        letter = (labels[r] != IGNORE).nonzero().flatten()[LETTER_AT]
        before, after = logits[rows[r], letter].softmax(-1), changed[r, letter].softmax(-1)
        total += 0.5 * float((before - after).abs().sum())
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an MVoT checkpoint (vrm train mvot), with its image_tokenizer/")
    p.add_argument("--tasks", default="frozenlake,maze")
    p.add_argument("--sizes", default="3,4,5")
    p.add_argument("--style", default="short", help="the tasks' question style (the one the model trained on)")
    p.add_argument("--n", type=int, default=96, help="held-out episodes per task (one random step each)")
    p.add_argument("--answer-share", type=float, default=0.3, help="share of episodes asked their answer step")
    p.add_argument("--plan", action="store_true", help="the model writes plans (it trained with plan=true)")
    p.add_argument("--mark-next", action="store_true", help="its plans mark the next action (mark_next=true)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    plan = args.plan or args.mark_next
    model, processor = load_model(args.model)
    model.eval()
    stage = MVoTStage(MVoTConfig(vq=f"{args.model}/{IMAGE_TOKENIZER_DIR}", answer_share=args.answer_share,
                                       plan=plan, mark_next=args.mark_next))
    for name in args.tasks.split(","):
        task = get_task(name, style=args.style, sizes=args.sizes)
        r = code_accuracy(model, processor, stage, task, args.n)
        print(f"{name:12s} codes {100 * r['codes']:5.1f}% (copying the latest image {100 * r['copy']:5.1f}%): "
              f"changed {100 * r['changed']:5.1f}%, unchanged {100 * r['unchanged']:5.1f}%, images whole "
              f"{100 * r['whole']:5.1f}% ({r['n_codes']} codes); answers {100 * r['answers']:5.1f}% "
              f"({r['n_answers']} answer steps), answer's change with the image blanked {r['image_effect']:.3f}")
        right, asked = (sum(t[i] for t in r["actions"].values()) for i in (0, 1))
        by_step = ", ".join(f"{k}: {a}/{b}" for k, (a, b) in r["actions"].items())
        plans = f"; plans right whole {100 * r['plans']:5.1f}%" if plan else ""
        print(f"{'':12s} actions right {100 * right / max(asked, 1):5.1f}% by step ({by_step}){plans}")


if __name__ == "__main__":
    main()
