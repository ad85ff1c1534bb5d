"""Evaluating visual thoughts (MVoT): answer accuracy, and every drawn image compared with the true
state after its step, cell by cell (`vrm.eval.cells`).

Per thought k (the image drawn after action k), against the true renderings of states k-1 and k:

- *changed cells*: cells whose true rendering differs between states k-1 and k (where the agent left
  and where it arrived; none when a move runs into a wall);
- **V-Acc**: the changed cells are all drawn right (with no changed cell: every cell is);
- **V-Red** (redundancy): some cell that should not change is drawn wrong, i.e. a change drawn
  outside the intended area;
- a thought is *correct* when it has V-Acc and no V-Red. **V-Steps**: the length of the first run of
  correct thoughts from step 1; **V-Ratio**: V-Steps over the episode's number of steps.

Thoughts are compared with the true states as the image tokenizer draws them (`thought_checks`'s
``through``): a thought is right when the model drew what the tokenizer makes of the true state.
V-Acc and V-Red are pooled over all thoughts drawn (a thought past the true episode counts as
wrong: the model went on after it should have stopped); V-Steps and V-Ratio are averaged over
episodes. Missing thoughts (the model answered early) end the V-Steps run.

Two more figures say where a wrong episode went wrong before any drawing: **A-Acc**, the share of
step lines that name the question's action for that step (reading the action list), and **Stops**,
the share of episodes that drew exactly as many thoughts as the walk has steps (deciding to answer).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from vrm.eval.cells import cell_errors, cells_right, grid_size
from vrm.formats import get_format
from vrm.formats.visual import step_lines, without_plan
from vrm.infer.interleaved import generate_visual
from vrm.tasks import Sample, Task


def thought_checks(thoughts, sample: Sample, task: Task, through=None, lines=()) -> dict:
    """V-Acc / V-Red per drawn thought, V-Steps and V-Ratio of one episode.

    ``through`` (optional): a function images -> images that the true renderings pass through before
    the comparison, e.g. the image tokenizer's encode-decode round trip, so that a thought counts as
    right when the model drew the codes the tokenizer gives the true state (the tokenizer's own error
    is reported apart, by `vrm train vq`). Which cells change is always read from the true renderings.
    ``lines``: the step lines the model wrote, compared with the true ones.

    Returns ``{"steps": true step count, "acc": [bool per thought], "red": [bool per thought],
    "act": [bool per line], "stopped": bool, "v_steps": int, "v_ratio": float}``.
    """
    trace = sample.trace
    n, steps = grid_size(trace), len(trace["states"]) - 1
    rendered = [task.render(trace, k) for k in range(steps + 1)]
    truth = through(rendered) if through is not None else rendered
    acc, red = [], []
    for k, image in enumerate(thoughts, start=1):
        if k > steps:
            acc.append(False)
            red.append(True)
            continue
        changed = cell_errors(rendered[k], rendered[k - 1], n) > 0
        right = cells_right(image, truth[k], n)
        acc.append(bool(right[changed].all()) if changed.any() else bool(right.all()))
        red.append(bool((~right[~changed]).any()))
    run = 0
    for a, r in zip(acc, red):
        if not a or r:
            break
        run += 1
    run = min(run, steps)
    true_lines = step_lines(sample)
    act = [k < len(true_lines) and without_plan(line) == true_lines[k] for k, line in enumerate(lines)]
    return {"steps": steps, "acc": acc, "red": red, "act": act, "stopped": len(thoughts) == steps,
            "v_steps": run, "v_ratio": run / steps if steps else 1.0}


def visual_summary(checks: list[dict]) -> dict:
    """Pool per-episode checks into V-Acc, V-Red, A-Acc (over thoughts), V-Steps, V-Ratio, Stops
    (over episodes).

    >>> visual_summary([{"steps": 2, "acc": [True, False], "red": [False, False], "act": [True, True],
    ...                  "stopped": True, "v_steps": 1, "v_ratio": 0.5},
    ...                 {"steps": 1, "acc": [True], "red": [True], "act": [False], "stopped": True,
    ...                  "v_steps": 0, "v_ratio": 0.0}])  # doctest: +NORMALIZE_WHITESPACE
    {'v_acc': 0.6666666666666666, 'v_red': 0.3333333333333333, 'v_steps': 0.5, 'v_ratio': 0.25,
     'a_acc': 0.6666666666666666, 'stops': 1.0, 'thoughts': 3, 'episodes': 2}
    """
    pooled = lambda key: [x for c in checks for x in c[key]]  # noqa: E731
    mean = lambda xs: float(np.mean(xs)) if len(xs) else 0.0  # noqa: E731
    acc = pooled("acc")
    return {"v_acc": mean(acc), "v_red": mean(pooled("red")), "v_steps": mean([c["v_steps"] for c in checks]),
            "v_ratio": mean([c["v_ratio"] for c in checks]), "a_acc": mean(pooled("act")),
            "stops": mean([c["stopped"] for c in checks]), "thoughts": len(acc), "episodes": len(checks)}


def evaluate_visual(model, processor, image_tokenizer, pairs: Iterable[tuple[Task, Sample]], batch_size: int = 32,
                    max_steps: int = 16, progress: bool = True, total: int | None = None,
                    keep_images: dict | None = None, keep_checks: dict | None = None) -> tuple[dict, list[dict]]:
    """Answer with visual thoughts and score answers and thoughts; returns (summary, records) as
    `vrm.eval.run.evaluate` does, the summary with ``visual`` (overall) and ``visual_per_task``.

    ``keep_images``: a dict to fill with sample id -> the decoded thoughts (for reports);
    ``keep_checks``: one to fill with sample id -> its `thought_checks` (and the step lines written).
    """
    from vrm.eval.run import answer_record, batches, summarize

    fmt = get_format("visual")
    records, checks = [], defaultdict(list)

    def round_trip(images):
        return image_tokenizer.decode(image_tokenizer.encode(images))

    bar = tqdm(total=total, desc="eval visual", unit="q", disable=not progress, leave=False)
    for batch in batches(pairs, batch_size):
        replies = generate_visual(model, processor, image_tokenizer, [s.image for _, s in batch],
                                  [fmt.prompt(s) for _, s in batch], max_steps=max_steps)
        for (task, s), reply in zip(batch, replies):
            check = thought_checks(reply.images, s, task, round_trip, reply.lines) if "states" in s.trace else None
            if check:
                checks[s.task].append(check)
            if keep_images is not None:
                keep_images[s.id] = reply.images
            if keep_checks is not None and check:
                keep_checks[s.id] = {**check, "lines": reply.lines}
            records.append({
                **answer_record(task, s, fmt, reply.text), "finish_reason": reply.finish_reason,
                **({"visual": {k: check[k] for k in ("steps", "v_steps", "v_ratio")}
                    | {"v_acc": float(np.mean(check["acc"])) if check["acc"] else 0.0}} if check else {}),
            })
        bar.update(len(batch))
    bar.close()
    summary = summarize(records)
    every = [c for cs in checks.values() for c in cs]
    if every:
        summary["visual"] = visual_summary(every)
        summary["visual_per_task"] = {t: visual_summary(cs) for t, cs in sorted(checks.items())}
    return summary, records


def visual_table(summary: dict) -> str:
    """The V-metrics per task, as a plain-text table."""
    lines = [f"{'visual thoughts':22s} {'V-Acc':>7s} {'V-Red':>7s} {'V-Steps':>8s} {'V-Ratio':>8s} {'A-Acc':>7s} "
             f"{'Stops':>7s} {'thoughts':>9s}"]
    rows = {**summary.get("visual_per_task", {}), "overall": summary["visual"]}
    for name, v in rows.items():
        lines.append(f"{name:22s} {100 * v['v_acc']:6.1f}% {100 * v['v_red']:6.1f}% {v['v_steps']:8.2f} "
                     f"{100 * v['v_ratio']:7.1f}% {100 * v['a_acc']:6.1f}% {100 * v['stops']:6.1f}% {v['thoughts']:9d}")
    return "\n".join(lines)
