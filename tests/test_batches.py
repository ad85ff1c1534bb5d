"""How a training batch is made and split: the background prefetcher and the length groups."""

import itertools
import random
import threading

import pytest

from vrm import VrmError
from vrm.train.data import Prefetcher, length_groups


def test_prefetcher_makes_the_next_batch_in_the_background_and_returns_each_draws_own():
    made = []  # (draw, thread name), in the order batches were made
    release = threading.Event()

    def make(draw):
        if draw == 1:
            release.wait(5)  # the main thread gets draw 0 back while draw 1 is still being made
        made.append((draw, threading.current_thread().name))
        return [f"batch {draw}"]

    batches = Prefetcher(make)
    assert batches.get(0, 1) == ["batch 0"]
    assert [d for d, _ in made] == [0]  # draw 1 waits in the background
    release.set()
    assert batches.get(1, 2) == ["batch 1"]
    batches.settle()
    assert [d for d, _ in made] == [0, 1, 2]  # settled: nothing is being made
    assert batches.get(2) == ["batch 2"]
    assert batches.get(7) == ["batch 7"]  # a draw nobody asked for ahead is made on demand
    assert all(name.startswith("vrm-batches") for _, name in made)
    batches.close()


def test_prefetcher_raises_a_batchs_error_at_that_draw():
    def make(draw):
        if draw == 1:
            raise VrmError("data.jsonl line 3: not JSON")
        return [draw]

    batches = Prefetcher(make)
    assert batches.get(0, 1) == [0]
    batches.settle()  # waiting does not raise
    with pytest.raises(VrmError, match="line 3"):
        batches.get(1, 2)
    batches.close()


def test_length_groups_find_the_least_padding_any_split_has():
    """Against every split of the sorted lengths into at most k contiguous groups."""
    rng = random.Random(0)
    for _ in range(30):
        lengths = [rng.choice([rng.randint(40, 70), rng.randint(200, 320)]) for _ in range(rng.randint(1, 9))]
        k, overhead = rng.randint(1, 4), rng.choice([0, 64])
        groups = length_groups(lengths, k, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths))) and len(groups) <= k

        def cost(gs):
            return sum(len(g) * max(lengths[i] for i in g) + overhead for g in gs)

        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))])
                   for m in range(min(k, len(order)))
                   for cuts in itertools.combinations(range(1, len(order)), m))
        assert cost(groups) == best
