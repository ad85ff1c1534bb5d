"""The shipped clevr-only checkpoint (models/clevr, `recipes/clevr.yaml`'s xy_one to xy_seven runs, in
fp16): it answers CLEVR-2D questions in stages, its captions place the objects, and the consistency
reward reads its real answers. The embedded model never learned stages; this one did, so these tests
check skill."""

import re
from pathlib import Path

import pytest

from clevr_data import needs_data
from vrm.eval.run import evaluate
from vrm.formats.structured import tagged
from vrm.model import load_model
from vrm.tasks import eval_samples, get_task
from vrm.tasks.clevr.consistency import consistency

CLEVR_MODEL = Path(__file__).resolve().parents[1] / "models" / "clevr"
pytestmark = needs_data


@pytest.fixture(scope="module")
def answered():
    model, processor = load_model(CLEVR_MODEL)
    assert model.config.answer_format == "stages"
    task = get_task("clevr", reasoning="checks", place="xy")
    samples = list(eval_samples(task, n=32))
    summary, records = evaluate(model, processor, [(task, s) for s in samples], format="stages", progress=False)
    return samples, summary, records


def test_answers_parse_and_beat_guessing(answered):
    _, summary, records = answered
    assert all(r["parsed"] for r in records)
    # 32 held-out questions of all families (yes/no, counts, colours, shapes, ...): 29 right when written
    # (the models shipped before it, 1,600, 3,200, 4,800, 6,600 and 8,000 steps fewer: 26, 30, 26, 25 and
    # 20; on 1,000 questions this one is the best, 91.2% against 89.3% and 87.1%: 32 are few).
    assert summary["accuracy"] >= 0.75, [(r["question"], r["answer"], r["prediction"]) for r in records]


def test_captions_count_the_objects(answered):
    samples, _, records = answered
    heads = [re.match(r"(\d+) objects?:", tagged(r["output"], "CAPTION", ("REASONING",)) or "") for r in records]
    counted = [bool(m) and int(m.group(1)) == len(s.trace["scene"]["objects"]) for s, m in zip(samples, heads)]
    assert sum(counted) >= 28, counted


def test_consistency_reads_real_answers(answered):
    _, _, records = answered
    scores = [consistency(None, r["output"]) for r in records]
    assert all(0.0 <= x <= 1.0 for x in scores)
    consistent = [r["correct"] for r, x in zip(records, scores) if x == 1.0]
    rest = [r["correct"] for r, x in zip(records, scores) if x < 1.0]
    # a fully consistent answer is right more often than the others (22 of 22 vs 7 of 10 when written)
    assert consistent and rest and sum(consistent) / len(consistent) > sum(rest) / len(rest), scores
