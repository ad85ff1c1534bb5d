"""Task registry: every task vrm can sample, export, train on and evaluate.

Procedural tasks draw training samples from seeds below `TEST_SEED_BASE` and evaluation samples
from seeds at or above it, so held-out evaluation never sees a training image.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Iterator

from vrm import VrmError
from vrm.tasks.base import Sample, Task
from vrm.tasks.clevr import ClevrTask
from vrm.tasks.spatial import FrozenLakeTask, MazeTask, MiniBehaviorTask, MvotTask
from vrm.tasks.easyvqa import EasyVQATask
from vrm.tasks.jsonl import JsonlTask, read_rows, write_dataset
from vrm.tasks.shapes import ShapesTask

TEST_SEED_BASE = 9_000_000

TASKS: dict[str, Callable[..., Task]] = {
    "shapes": ShapesTask,
    "easyvqa": EasyVQATask,
    "clevr": ClevrTask,
    "frozenlake": FrozenLakeTask,
    "maze": MazeTask,
    "minibehavior": MiniBehaviorTask,
    "mvot": MvotTask,
}


def get_task(name: str, split: str | None = None, **params) -> Task:
    """Build a registered task; unknown names and parameters raise a clear `VrmError`.

    ``split`` reaches datasets with fixed splits (easy-VQA); procedural tasks take no split (their
    held-out samples are their seeds >= `TEST_SEED_BASE`) and ignore it.
    """
    if name not in TASKS:
        raise VrmError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    factory = TASKS[name]
    known = {f.name for f in dataclasses.fields(factory) if not f.name.startswith("_")} - {"name"}
    if split is not None and "split" in known:
        params = {**params, "split": split}
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


def count_samples(task: Task, n: int | None = None) -> int:
    """How many samples `eval_samples` yields: n (default 1,000), at most a dataset's size."""
    if is_dataset(task):
        return len(task) if n is None else min(n, len(task))
    return 1000 if n is None else n


def eval_samples(task: Task, n: int | None = None, seed: int = 0, split: str = "test") -> Iterator[Sample]:
    """The samples to evaluate on (or export), `count_samples(task, n)` of them.

    Procedural tasks: seeds ``base + seed + i``, base `TEST_SEED_BASE` for the test split, 0 for train.
    Datasets (the split is the task's own): every row in order, or n rows drawn without
    replacement with ``seed``.
    """
    count = count_samples(task, n)
    if is_dataset(task):
        if count == len(task):
            indices = range(count)
        else:
            indices = sorted(random.Random(seed).sample(range(len(task)), count))
        return (task.get(i) for i in indices)
    base = TEST_SEED_BASE if split == "test" else 0
    return (task.sample(base + seed + i) for i in range(count))


__all__ = ["Sample", "Task", "TASKS", "TEST_SEED_BASE", "get_task", "is_dataset", "eval_samples", "count_samples",
           "JsonlTask", "read_rows", "write_dataset"]
