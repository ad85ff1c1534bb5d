import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vrm import VrmError
from vrm.config import load_config, parse_overrides
from vrm.formats import answer_format
from vrm.model import load_model
from vrm.tasks import get_task
from vrm.train.data import IGNORE, collate, encode, step_samples
from vrm.train.loop import part_of, train
from vrm.train.sft import SFTConfig

TINY = ["tiny.vision_hidden=32", "tiny.vision_layers=1", "tiny.vision_heads=2", "tiny.lm_hidden=32",
        "tiny.lm_layers=1", "tiny.lm_heads=2", "tiny.lm_intermediate=64", "tiny.tokenizer_corpus=200",
        "tasks={shapes: 1.0}", "batch_size=4", "eval_n=4", "progress=false", "model=scratch", "log_every=1"]


def tiny_cfg(tmp_path, *extra):
    return load_config(SFTConfig, None, None, TINY + [f"out_dir={tmp_path}", *extra])


def test_step_samples_are_a_function_of_step():
    tasks = [get_task("shapes")]
    a = [s.id for _, s in step_samples(tasks, [1.0], 3, 8, 0)]
    assert a == [s.id for _, s in step_samples(tasks, [1.0], 3, 8, 0)]
    assert a != [s.id for _, s in step_samples(tasks, [1.0], 4, 8, 0)]
    assert all(int(i.split("-")[1]) < 9_000_000 for i in a)


def test_one_task_per_batch_draws_each_batch_from_one_task_by_weight():
    tasks = [get_task("shapes"), get_task("maze", sizes="3")]
    mixed = {t.name for step in range(20) for t, _ in step_samples(tasks, [1.0, 1.0], step, 16, 0)}
    assert mixed == {"shapes", "maze"}
    per_batch = [{t.name for t, _ in step_samples(tasks, [1.0, 1.0], step, 16, 0, one_task=True)} for step in range(40)]
    assert all(len(names) == 1 for names in per_batch)
    picked = [names.pop() for names in per_batch]
    assert 8 < picked.count("maze") < 32  # both tasks drawn, about half each
    assert [t.name for t, _ in step_samples(tasks, [0.0, 1.0], 5, 4, 0, one_task=True)] == ["maze"] * 4
    again = [s.id for _, s in step_samples(tasks, [1.0, 1.0], 7, 8, 0, one_task=True)]
    assert again == [s.id for _, s in step_samples(tasks, [1.0, 1.0], 7, 8, 0, one_task=True)]


def test_tokenizer_corpus_holds_visual_step_lines_only_for_walks():
    from vrm.train.loop import corpus

    walk = corpus([get_task("maze", sizes="3")], 2)
    assert any(t.startswith("Step 1: Go ") and t.endswith(".") and "<img_" not in t for t in walk)
    shapes = corpus([get_task("shapes")], 2)
    assert not any(t.startswith("Step 1:") for t in shapes)


def test_tokenizer_tasks_teach_the_tokenizer_text_it_does_not_train_on(tmp_path):
    from vrm.train.loop import base_model

    def step_line_lengths(*extra):
        cfg = tiny_cfg(tmp_path / str(len(extra)), *extra)
        _, processor = base_model(cfg, [get_task("shapes")], tmp_path / str(len(extra)), True)
        return {len(processor.tokenizer.tokenize(f" Step 3: Go {d}. <boi>")) for d in ("down", "up", "left", "right")}

    assert len(step_line_lengths()) > 1  # shapes text only: the directions split unevenly
    assert step_line_lengths("tiny.tokenizer_tasks=[maze]") == {8}  # ' Step', ' 3', ':', ' Go', ' down', '.', ' ', '<boi>'


def test_labels_cover_only_the_answer(tmp_path):
    cfg = tiny_cfg(tmp_path)
    from vrm.model.build import build_tiny_vlm
    from vrm.train.loop import corpus
    _, processor = build_tiny_vlm(cfg.tiny, corpus([get_task("shapes")], 50))
    s = get_task("shapes").sample(0)
    ex = encode(processor, s, s.question, s.answer)
    labelled = ex["labels"][ex["labels"] != IGNORE]
    assert processor.tokenizer.decode(labelled) == s.answer + "<|end|>"
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((ex["input_ids"] == image_id).sum()) == 16
    batch = collate([ex, encode(processor, s, "Describe the image.", "a long caption " * 5)], 0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["attention_mask"][0].sum() == len(ex["input_ids"])


def test_parts_and_freezing():
    assert part_of("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == "vision"
    assert part_of("model.multi_modal_projector.linear_1.weight") == "projector"
    assert part_of("model.language_model.layers.0.self_attn.q_proj.weight") == "lm"
    assert part_of("model.visual.merger.mlp.0.weight") == "projector"
    assert part_of("model.visual.blocks.0.attn.qkv.weight") == "vision"


def test_config_overrides_and_errors(tmp_path):
    cfg = tiny_cfg(tmp_path, "steps=7", "trainable=[lm]")
    assert (cfg.steps, cfg.trainable, cfg.tiny.lm_hidden, cfg.lr) == (7, ["lm"], 32, 2e-4)
    with pytest.raises(VrmError, match="unknown option"):
        tiny_cfg(tmp_path, "stepz=3")
    with pytest.raises(VrmError, match="trainable"):
        tiny_cfg(tmp_path, "trainable=[eyes]")
    with pytest.raises(VrmError, match="unknown format"):
        tiny_cfg(tmp_path, "formats={poetry: 1}")
    with pytest.raises(VrmError, match="unknown format"):
        tiny_cfg(tmp_path, "answer_format=poetry")
    assert parse_overrides(["a.b.c=1.5"]) == {"a": {"b": {"c": 1.5}}}
    with pytest.raises(VrmError, match="one_task_per_batch"):
        tiny_cfg(tmp_path, "task_formats={shapes: {think: 1}}")
    with pytest.raises(VrmError, match="not in tasks"):
        tiny_cfg(tmp_path, "task_formats={maze: {think: 1}}", "one_task_per_batch=true")
    with pytest.raises(VrmError, match="unknown format"):
        tiny_cfg(tmp_path, "answer_format={shapes: poetry}")
    # YAML 1.2 booleans: yes/no/on stay words (answers, token texts), true/false are booleans
    assert parse_overrides(["w={yes: 2, no: 3}", "p=false", "q=True", "r=on"]) == {
        "w": {"yes": 2, "no": 3}, "p": False, "q": True, "r": "on"}
    with pytest.raises(VrmError, match="true or false"):
        tiny_cfg(tmp_path, "progress=no")


def test_overrides_replace_a_whole_value_and_reach_into_a_dotted_one(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sft:\n  tasks: {shapes: 2, easyvqa: 1}\n  token_weights: {yes: 10, no: 10}\n"
                      "  tiny: {lm_hidden: 48, lm_layers: 1}\n")
    base = load_config(SFTConfig, recipe, "sft")
    assert (base.tasks, base.token_weights, base.tiny.lm_hidden) == ({"shapes": 2, "easyvqa": 1}, {"yes": 10, "no": 10}, 48)
    cfg = load_config(SFTConfig, recipe, "sft", ["token_weights={}", "tasks.easyvqa=3", "tiny.lm_layers=2"])
    assert (cfg.token_weights, cfg.tasks) == ({}, {"shapes": 2, "easyvqa": 3})
    assert (cfg.tiny.lm_hidden, cfg.tiny.lm_layers) == (48, 2)  # the recipe's other tiny entries stay
    assert load_config(SFTConfig, recipe, "sft", ["tasks={clevr: 1}"]).tasks == {"clevr": 1}


def test_training_learns_and_freezes(tmp_path):
    cfg = tiny_cfg(tmp_path, "steps=30", "lr=3e-3", "warmup_steps=5", "eval_every=100", "save_every=100",
                   "trainable=[projector, lm]", "task_params={shapes: {families: [exists]}}", "answer_format=think")
    final = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 31))
    first, last = sum(e["loss"] for e in log[:5]) / 5, sum(e["loss"] for e in log[-5:]) / 5
    assert last < first * 0.65, (first, last)  # from ln(vocab) towards the answer tokens
    base, done = load_file(tmp_path / "base" / "model.safetensors"), load_file(final / "model.safetensors")
    vision = [k for k in base if part_of(k) == "vision"]
    assert vision and all(torch.equal(base[k], done[k]) for k in vision)
    lm = [k for k in base if part_of(k) == "lm"]
    assert any(not torch.equal(base[k], done[k]) for k in lm)
    model, _ = load_model(final)
    assert model.config.model_type == "llava"
    assert answer_format(model) == "think"  # recorded: `vrm ask/eval/demo` answer in it when no --format is given


def test_levit_tower_trains_at_batch_one_and_reloads_as_a_hf_checkpoint(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vrm.model.build import unused_vision_parameters

    cfg = tiny_cfg(tmp_path, "tiny.vision_tower=levit", "batch_size=1", "steps=3", "eval_every=3", "save_every=3",
                   "trainable=[vision, projector, lm]")
    final = train(cfg)  # batch 1 in train mode: LeViT's batch norms see 16 positions per channel
    base, done = load_file(tmp_path / "base" / "model.safetensors"), load_file(final / "model.safetensors")
    stem = [k for k in base if "vision_tower.patch_embeddings" in k and k.endswith("convolution.weight")]
    assert len(stem) == 4 and all(not torch.equal(base[k], done[k]) for k in stem)  # the conv stem trains
    model = AutoModelForImageTextToText.from_pretrained(final)
    processor = AutoProcessor.from_pretrained(final)
    assert model.config.vision_config.model_type == "levit"
    unused = unused_vision_parameters(model)
    assert unused and all(torch.equal(base[k], done[k]) for k in unused if k in base)  # frozen, not trained
    image = get_task("shapes").sample(1).image
    enc = processor(images=[image], text=["<image>"], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_index).sum()) == 16  # one token per 16x16 cell
    features = model.model.get_image_features(enc["pixel_values"]).pooler_output
    assert features[0].shape == (16, 32)  # 16 cells, projected to the LM width


def test_unknown_vision_tower_is_a_clear_error(tmp_path):
    with pytest.raises(VrmError, match="vision_tower"):
        tiny_cfg(tmp_path, "tiny.vision_tower=resnet")


def _cli(tmp_path, steps):
    return [sys.executable, "-m", "vrm.cli", "train", "sft", *TINY, f"out_dir={tmp_path}", f"steps={steps}",
            "save_every=2", "eval_every=100", "keep_checkpoints=2"]


def test_sigkill_mid_training_resumes_to_the_same_weights(tmp_path):
    """Killed at a random checkpoint, with a half-written checkpoint and a cut log line left behind
    (a kill mid-save), the rerun resumes from the last whole checkpoint and ends with the same
    weights and each step logged once."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    straight = tmp_path / "straight"
    subprocess.run(_cli(straight, 10), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    kill_after = random.choice([2, 4, 6, 8])
    proc = subprocess.Popen(_cli(killed, 10), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / f"step_{kill_after:07d}" / "DONE").exists():
        assert time.time() < deadline and proc.poll() is None, f"training ended before the kill after step {kill_after}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()
    newest = max(int(p.name[5:12]) for p in (killed / "checkpoints").glob("step_*") if (p / "DONE").exists())
    half = killed / "checkpoints" / f"step_{newest + 2:07d}.tmp"  # what a kill during save_state leaves
    half.mkdir(exist_ok=True)
    (half / "model.safetensors").write_bytes(b"\x00" * 100)
    stale = killed / "checkpoints" / "step_0000001"  # what a kill while deleting an old checkpoint leaves
    stale.mkdir()
    (stale / "optimizer.bin").write_bytes(b"\x00" * 10)
    with open(killed / "log.jsonl", "a") as f:
        f.write('{"step": 99, "lo')
    subprocess.run(_cli(killed, 10), check=True, env=env, capture_output=True)
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11)), f"killed after step {kill_after}"
    assert len(list((killed / "checkpoints").glob("step_*"))) == 2
    # a training checkpoint loads as a model: the run's base with that step's weights
    model, _ = load_model(straight / "checkpoints" / "step_0000010")
    for k, v in model.state_dict().items():
        if k in a:
            torch.testing.assert_close(v, a[k])


def test_focal_loss_by_hand():
    """Two target tokens (the prompt token's label is ignored): p = 0.5 and p = 0.9."""
    import math

    from vrm.train.losses import focal_loss

    logits = torch.log(torch.tensor([[[1.0, 1.0, 0.0], [0.05, 0.9, 0.05], [1.0, 1.0, 1.0]]]))
    logits[0, 0, 2] = -1e9  # p(token 0) = 0.5 at position 0
    labels = torch.tensor([[IGNORE, 0, 1]])  # position 0 predicts token 0, position 1 token 1
    focal, ce = focal_loss(logits, labels, gamma=2.0)
    want_ce = (-math.log(0.5) - math.log(0.9)) / 2
    want_focal = (0.5 ** 2 * -math.log(0.5) + 0.1 ** 2 * -math.log(0.9)) / 2
    assert math.isclose(ce.item(), want_ce, rel_tol=1e-5) and math.isclose(focal.item(), want_focal, rel_tol=1e-5)
    assert math.isclose(focal_loss(logits, labels, gamma=0.0)[0].item(), want_ce, rel_tol=1e-5)


def test_task_formats_give_each_tasks_batches_their_own_format(tmp_path):
    from vrm.train.stage import Stage

    cfg = tiny_cfg(tmp_path, "tasks={shapes: 1, maze: 1}", "one_task_per_batch=true", "formats={direct: 1}",
                   "task_formats={shapes: {think: 1}}")
    _, processor = load_model()
    tasks = [get_task("shapes"), get_task("maze", sizes="3")]
    stage, seen = Stage(cfg), {}
    for step in range(12):
        pairs = step_samples(tasks, [1.0, 1.0], step, 2, 0, one_task=True)
        target = processor.tokenizer.decode(stage.examples(processor, pairs, step)[0]["labels"].clamp(min=0))
        seen.setdefault(pairs[0][0].name, set()).add("<think>" in target)
    assert seen == {"shapes": {True}, "maze": {False}}


def test_token_weights_make_a_weighted_mean_by_hand():
    """The same two targets (p = 0.5 for token 0, p = 0.9 for token 1); token 0 weighs 3."""
    import math

    from vrm.train.losses import focal_loss

    logits = torch.log(torch.tensor([[[1.0, 1.0, 0.0], [0.05, 0.9, 0.05], [1.0, 1.0, 1.0]]]))
    logits[0, 0, 2] = -1e9
    labels = torch.tensor([[IGNORE, 0, 1]])
    loss, ce = focal_loss(logits, labels, 0.0, torch.tensor([3.0, 1.0, 1.0]))
    assert math.isclose(loss.item(), (3 * -math.log(0.5) - math.log(0.9)) / 4, rel_tol=1e-5)
    assert math.isclose(ce.item(), (-math.log(0.5) - math.log(0.9)) / 2, rel_tol=1e-5)
    focal, _ = focal_loss(logits, labels, 2.0, torch.tensor([3.0, 1.0, 1.0]))
    assert math.isclose(focal.item(), (3 * 0.25 * -math.log(0.5) + 0.01 * -math.log(0.9)) / 4, rel_tol=1e-5)


def test_vocab_weights_find_each_word_with_and_without_its_space():
    from vrm.train.losses import vocab_weights

    _, processor = load_model()
    tok = processor.tokenizer
    w = vocab_weights(tok, {"yes": 10.0, "no": 4.0})
    for text, want in ((" yes", 10.0), ("yes", 10.0), (" no", 4.0), (" red", 1.0)):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and w[ids[0]].item() == want, text
    assert (w != 1).sum().item() == 4  # " yes", "yes", " no", "no": nothing else
    with pytest.raises(VrmError, match="single token"):
        vocab_weights(tok, {"yes please": 2.0})


def test_token_weights_are_refused_where_they_would_do_nothing(tmp_path):
    with pytest.raises(VrmError, match="> 0"):
        tiny_cfg(tmp_path, "token_weights={yes: 0}")
    from vrm.train.vision import VisionConfig, VisionStage

    stage = VisionStage(VisionConfig(token_weights={"yes": 5.0}))
    with pytest.raises(VrmError, match="its own loss"):
        stage.bind(None)


def test_token_weighted_training_logs_its_cross_entropy_beside_it(tmp_path):
    cfg = tiny_cfg(tmp_path, "steps=3", "eval_every=100", "save_every=100", "log_every=1", "token_weights={yes: 5, no: 5}",
                   "task_params={shapes: {families: [exists]}}")  # every target: yes or no, then the end token
    train(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(e["loss"] > 0 and e["ce"] > 0 and e["loss"] != e["ce"] for e in log)


def test_focal_training_logs_its_cross_entropy_beside_it(tmp_path):
    cfg = tiny_cfg(tmp_path, "steps=6", "eval_every=100", "save_every=100", "log_every=1", "focal_gamma=2")
    train(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(0 < e["loss"] < e["ce"] for e in log)  # (1 - p)^2 < 1 on every token


@pytest.mark.parametrize("extra", [[], ["token_weights={yes: 5, no: 3}"], ["focal_gamma=2"]])
def test_length_groups_give_the_loss_and_gradient_of_one_padded_call(tmp_path, extra):
    """A batch of short direct answers and long think targets, as one padded forward and as
    length groups: the same loss and the same gradient (the groups' losses weighted by tokens)."""
    from vrm.train.stage import Stage

    from vrm.train.loop import set_trainable, train_mode

    model, processor = load_model()
    set_trainable(model, ["projector", "lm"])
    train_mode(model)  # as sft trains: the frozen tower's batch norms keep their statistics
    tasks = [get_task("shapes", families=["exists"], reasoning="checks")]
    pairs = step_samples(tasks, [1.0], 0, 6, 0)
    short = Stage(tiny_cfg(tmp_path, "formats={direct: 1}")).examples(processor, pairs[:3], 0)
    long = Stage(tiny_cfg(tmp_path, "formats={think: 1}")).examples(processor, pairs[3:], 0)
    examples = [long[0], short[0], long[1], short[1], short[2], long[2]]
    assert max(len(e["input_ids"]) for e in long) > 2 * max(len(e["input_ids"]) for e in short)

    def loss_and_grad(groups):
        stage = Stage(tiny_cfg(tmp_path, f"length_groups={groups}", *extra))
        stage.bind(processor)
        model.zero_grad()
        loss, named = stage.batch_loss(model, examples, processor.tokenizer.pad_token_id, "cpu")
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return loss.item(), grad, named

    one, one_grad, one_named = loss_and_grad(1)
    grouped, grouped_grad, grouped_named = loss_and_grad(3)
    assert grouped == pytest.approx(one, rel=1e-5)
    assert torch.allclose(grouped_grad, one_grad, rtol=1e-4, atol=1e-6)
    assert grouped_named.keys() == one_named.keys()
    for k in one_named:
        assert float(grouped_named[k]) == pytest.approx(float(one_named[k]), rel=1e-5)


def test_a_mixture_names_one_task_twice_with_variants():
    from vrm.train.loop import TrainConfig, config_tasks

    cfg = TrainConfig(tasks={"maze": 1.0, "maze@long": 1.0},
                      task_params={"maze": {"sizes": "3"}, "maze@long": {"sizes": "5", "min_actions": 9, "max_actions": 13}})
    short, long = config_tasks(cfg, split="test")
    assert short.name == long.name == "maze" and (short.sizes, long.sizes) == ((3,), (5,))
    assert len(long.sample(0).trace["actions"]) >= 9 and len(short.sample(0).trace["actions"]) <= 7
    with pytest.raises(VrmError, match="unknown task 'mase'"):
        config_tasks(TrainConfig(tasks={"mase@long": 1.0}))


def test_the_spatial_recipes_long_walk_section_extends_its_mvot_section():
    from pathlib import Path

    from vrm.config import load_config
    from vrm.train.loop import config_tasks
    from vrm.train.mvot import MVoTConfig

    recipe = Path(__file__).parent.parent / "recipes" / "spatial.yaml"
    main, long = (load_config(MVoTConfig, recipe, section) for section in ("mvot", "mvot_long"))
    assert long.model == main.out_dir + "/final" and (long.plan, long.vq) == (main.plan, main.vq)
    lengths = [len(t.sample(3).trace["actions"]) for t in config_tasks(long)[2:]]
    assert all(9 <= n <= 13 for n in lengths)
