"""Task registry: every task vrm can sample, export, train on and evaluate.

Procedural tasks draw training samples from seeds below `TEST_SEED_BASE` and evaluation samples
from seeds at or above it, so held-out evaluation never sees a training image.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

from vrm import VrmError
from vrm.tasks.base import Sample, Task
from vrm.tasks.easyvqa import EasyVQATask
from vrm.tasks.jsonl import JsonlTask, read_rows, write_dataset
from vrm.tasks.shapes import ShapesTask

TEST_SEED_BASE = 9_000_000

TASKS: dict[str, Callable[..., Task]] = {
    "shapes": ShapesTask,
    "easyvqa": EasyVQATask,
}


def get_task(name: str, **params) -> Task:
    """Build a registered task; unknown names and parameters raise a clear `VrmError`."""
    if name not in TASKS:
        raise VrmError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    factory = TASKS[name]
    known = {f.name for f in dataclasses.fields(factory) if not f.name.startswith("_")} - {"name"}
    unknown = set(params) - known
    if unknown:
        raise VrmError(f"task {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(known)}")
    try:
        return factory(**params)
    except (ValueError, TypeError) as e:
        raise VrmError(f"task {name!r}: {e}") from None


def is_dataset(task: Task) -> bool:
    """Datasets have a fixed list of rows (``len`` and ``get``); the rest are procedural."""
    return hasattr(task, "__len__") and hasattr(task, "get")


def eval_samples(task: Task, n: int | None = None, seed: int = 0) -> Iterator[Sample]:
    """The held-out samples to evaluate on.

    Procedural tasks: seeds ``TEST_SEED_BASE + seed + i`` for i < n (n defaults to 1,000).
    Datasets: every row in order, or n rows drawn without replacement with ``seed``.
    """
    if is_dataset(task):
        total = len(task)
        if n is None or n >= total:
            indices = range(total)
        else:
            import random

            indices = sorted(random.Random(seed).sample(range(total), n))
        return (task.get(i) for i in indices)
    n = 1000 if n is None else n
    return (task.sample(TEST_SEED_BASE + seed + i) for i in range(n))


__all__ = ["Sample", "Task", "TASKS", "TEST_SEED_BASE", "get_task", "is_dataset", "eval_samples",
           "JsonlTask", "read_rows", "write_dataset"]
