"""Evaluate a model on (task, sample) pairs: generate, parse with the format, score with the task."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from vrm import VrmError
from vrm.formats import format_for, get_format
from vrm.infer.search import Query, get_strategy, run_search
from vrm.tasks import Sample, Task


def summarize(records: list[dict]) -> dict:
    """Accuracy overall, per task and per question family (``task/family``).

    >>> summarize([{"task": "t", "family": "a", "correct": 1.0}, {"task": "t", "family": "b", "correct": 0.0}])
    {'accuracy': 0.5, 'n': 2, 'per_task': {'t': 0.5}, 'per_family': {'t/a': 1.0, 't/b': 0.0}}
    """
    by_task, by_family = defaultdict(list), defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r["correct"])
        by_family[f"{r['task']}/{r['family']}"].append(r["correct"])
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {
        "accuracy": mean([r["correct"] for r in records]),
        "n": len(records),
        "per_task": {k: mean(v) for k, v in sorted(by_task.items())},
        "per_family": {k: mean(v) for k, v in sorted(by_family.items())},
    }


def evaluate(model, processor, pairs: Iterable[tuple[Task, Sample]], format: str = "direct",
             batch_size: int = 64, max_new_tokens: int | None = None, progress: bool = True,
             total: int | None = None, search="greedy", scorer: str = "likelihood",
             image_tokenizer=None, thoughts: dict | None = None) -> tuple[dict, list[dict]]:
    """Answer every sample (greedily, or with a `vrm.infer.search` strategy, by name or object, and a
    scorer); returns (summary, per-sample records).

    The ``visual`` format answers with visual thoughts (`vrm.eval.visual`): it needs the model's
    ``image_tokenizer``, and fills ``thoughts`` (sample id -> drawn images) when given one."""
    fmt = get_format(format)
    if fmt.name == "visual":
        from vrm.eval.visual import evaluate_visual

        if get_strategy(search).name != "greedy":
            raise VrmError("search strategies work on text formats; the visual format decodes greedily")
        if image_tokenizer is None:
            raise VrmError("the visual format needs the model's image tokenizer")
        return evaluate_visual(model, processor, image_tokenizer, pairs, batch_size=min(batch_size, 32),
                               progress=progress, total=total, keep_images=thoughts)
    max_new_tokens = max_new_tokens or fmt.max_new_tokens
    records: list[dict] = []
    bar = tqdm(total=total, desc="eval", unit="q", disable=not progress, leave=False)
    for batch in batches(pairs, batch_size):
        # greedy too goes through vrm's decoder: the same tokens as HF generate, but finished rows leave
        # the batch instead of waiting for its longest answer
        queries = [Query(s.image, fmt.prompt(s), s, task) for task, s in batch]
        outputs = run_search(model, processor, queries, search, scorer, format, max_new_tokens, batch_size).completions
        records += [answer_record(task, s, fmt, out) for (task, s), out in zip(batch, outputs)]
        bar.update(len(batch))
    bar.close()
    return summarize(records), records


def evaluate_per_task(model, processor, pairs: Iterable[tuple[Task, Sample]], formats: str | dict,
                      **kwargs) -> tuple[dict, list[dict]]:
    """`evaluate` with each task in the format ``formats`` names for it (`vrm.formats.format_for`):
    one summary over all the records, in the order of ``pairs``' tasks."""
    by_format: dict[str, list] = defaultdict(list)
    for task, sample in pairs:
        by_format[format_for(formats, task.name)].append((task, sample))
    records: list[dict] = []
    kwargs.pop("total", None)
    for name, group in by_format.items():
        records += evaluate(model, processor, group, name, total=len(group), **kwargs)[1]
    return summarize(records), records


def batches(pairs: Iterable, size: int) -> Iterator[list]:
    """``pairs`` in lists of ``size`` (the last one may be shorter).

    >>> list(batches(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    batch = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def answer_record(task: Task, sample: Sample, fmt, output: str) -> dict:
    """One evaluated answer: the sample, the model's output, what the format read from it, and
    whether that is right by the task's own verifier (unparsed scores 0)."""
    parsed = fmt.parse(output)
    return {
        "id": sample.id, "task": sample.task, "family": sample.family, "question": sample.question,
        "answer": sample.answer, "output": output, "prediction": parsed.answer, "parsed": parsed.ok,
        "correct": fmt.score(sample, task, parsed.answer) if parsed.ok else 0.0,
        **({"stages": parsed.stages} if parsed.stages else {}),
    }


def format_table(summary: dict, title: str = "") -> str:
    """A plain-text table: per task and per family accuracy."""
    lines = [title] if title else []
    lines.append(f"{'':30s} {'accuracy':>9s}")
    for name, acc in summary["per_task"].items():
        lines.append(f"{name:30s} {100 * acc:8.1f}%")
        for fam, facc in summary["per_family"].items():
            if fam.startswith(name + "/"):
                lines.append(f"  {fam.split('/', 1)[1]:28s} {100 * facc:8.1f}%")
    lines.append(f"{'overall (n=%d)' % summary['n']:30s} {100 * summary['accuracy']:8.1f}%")
    return "\n".join(lines)
