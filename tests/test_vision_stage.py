"""The vision stage: the tower learns to see by classifying its caption's tokens (SuperClass-style)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from vrm import VrmError
from vrm.config import load_config, recipe_has
from vrm.train.data import IGNORE
from vrm.train.loop import param_groups, part_of
from vrm.train.sft import SFTConfig
from vrm.train.vision import VisionConfig, caption_targets, run

TINY = ["tiny.vision_hidden=32", "tiny.vision_heads=2", "tiny.lm_hidden=32", "tiny.lm_layers=1", "tiny.lm_heads=2",
        "tiny.lm_intermediate=64", "tiny.tokenizer_corpus=200", "tasks={easyvqa: 1.0}", "batch_size=8", "eval_n=8",
        "progress=false", "model=scratch", "log_every=1"]


def test_caption_targets_are_the_normalised_multi_hot_of_the_caption_tokens():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 7, 5, 2], [IGNORE, 3, IGNORE, IGNORE, IGNORE, IGNORE]])
    t = caption_targets(labels, vocab=10, ignore={2})
    expected = torch.zeros(2, 10)
    expected[0, 5] = expected[0, 7] = 0.5  # 5 counted once; the special token 2 left out
    expected[1, 3] = 1.0
    torch.testing.assert_close(t, expected)
    assert caption_targets(torch.full((1, 3), IGNORE), 10, set()).sum() == 0  # no caption: no target


def test_vision_stage_trains_the_tower_and_leaves_the_lm(tmp_path):
    cfg = load_config(VisionConfig, None, None, TINY + [f"out_dir={tmp_path}", "steps=40", "lr=3e-3",
                                                         "warmup_steps=5", "eval_every=40", "save_every=40"])
    final = run(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first, last = sum(e["loss"] for e in log[:5]) / 5, sum(e["loss"] for e in log[-5:]) / 5
    assert last < first - 0.2, (first, last)  # from ~ln(vocab) towards the caption's few tokens
    recall = log[-1]["eval"]["per_task"]["easyvqa"]
    assert 0.0 <= recall <= 1.0 and log[-1]["eval"]["n"] == 8
    base, done = load_file(tmp_path / "base" / "model.safetensors"), load_file(final / "model.safetensors")
    changed = {part_of(k) for k in base if not torch.equal(base[k], done[k])}
    assert changed == {"vision", "projector"}  # the token embeddings it scores against stay put


def test_vision_stage_refuses_a_non_llava_model():
    from types import SimpleNamespace

    from vrm.train.vision import VisionStage

    stage = VisionStage(load_config(VisionConfig, None, None, []))
    with pytest.raises(VrmError, match="qwen2_vl"):
        stage.prepare(SimpleNamespace(config=SimpleNamespace(model_type="qwen2_vl")), None)


def test_train_all_runs_a_recipes_vision_stage_first_and_reasoning_stage_last(tmp_path):
    with_vision, without = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with_vision.write_text("vision: {steps: 1}\nalign: {}\nsft: {}\n")
    without.write_text("align: {}\nsft: {}\n")
    assert recipe_has(with_vision, "vision") and not recipe_has(without, "vision")
    assert not recipe_has(tmp_path / "missing.yaml", "vision")
    from vrm.cli import recipe_stages

    assert recipe_stages(str(with_vision)) == ["vision", "align", "sft"] and recipe_stages(None) == ["align", "sft"]
    with_reasoning = tmp_path / "c.yaml"
    with_reasoning.write_text("vision: {}\nalign: {}\nsft: {}\nreasoning: {}\n")
    assert recipe_stages(str(with_reasoning)) == ["vision", "align", "sft", "reasoning"]


def test_vision_lr_puts_the_tower_in_its_own_group():
    from vrm.model.build import TinyVLMConfig, build_tiny_vlm

    model, _ = build_tiny_vlm(TinyVLMConfig(vision_hidden=32, vision_heads=2, lm_hidden=32, lm_layers=1, lm_heads=2,
                                            lm_intermediate=64, vocab_size=300), ["a red circle"] * 20)
    for p in model.parameters():
        p.requires_grad_(True)
    cfg = load_config(SFTConfig, None, None, ["lr=1e-4", "vision_lr=1e-3"])
    rest, vision = param_groups(model, cfg)
    assert (rest["lr"], vision["lr"]) == (1e-4, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(part_of(names[id(p)]) == "vision" for p in vision["params"])
    assert len(param_groups(model, load_config(SFTConfig, None, None, ["lr=1e-4"]))) == 1  # unset: one group


def test_random_targets_score_against_a_fixed_table_not_the_token_embeddings():
    from vrm.model.build import TinyVLMConfig, build_tiny_vlm
    from vrm.train.vision import VisionStage, token_logits

    model, _ = build_tiny_vlm(TinyVLMConfig(vision_hidden=32, vision_heads=2, lm_hidden=32, lm_layers=1, lm_heads=2,
                                            lm_intermediate=64, vocab_size=300), ["a red circle"] * 20)
    model.eval()
    pixels = torch.randn(2, 3, 64, 64)
    tied = VisionStage(load_config(VisionConfig, None, None, []))
    rand = VisionStage(load_config(VisionConfig, None, None, ["targets=random", "seed=3"]))
    tied.scoring(model), rand.scoring(model)
    assert tied.table is None and rand.table.shape == model.get_input_embeddings().weight.shape
    resumed = VisionStage(load_config(VisionConfig, None, None, ["targets=random", "seed=3"]))  # no prepare
    torch.testing.assert_close(rand.table, resumed.scoring(model))  # seeded: a resumed run scores the same way
    with torch.no_grad():
        before = token_logits(model, pixels, 10.0, rand.table), token_logits(model, pixels, 10.0, tied.table)
        model.get_input_embeddings().weight.mul_(-1.0)  # flip every word embedding
        after = token_logits(model, pixels, 10.0, rand.table), token_logits(model, pixels, 10.0, tied.table)
    torch.testing.assert_close(before[0], after[0])  # the random table does not see the LM's words
    torch.testing.assert_close(before[1], -after[1])  # the tied one does: cosines flip sign
    assert before[0].abs().max() <= 10.0 + 1e-4  # cosines x scale


def test_unknown_vision_targets_are_refused():
    with pytest.raises(VrmError, match="targets"):
        load_config(VisionConfig, None, None, ["targets=words"])


def test_dense_targets_put_each_shape_in_its_own_token():
    from vrm.model import load_model
    from vrm.tasks.easyvqa import EasyVQATask
    from vrm.tasks.shapes import ShapesTask
    from vrm.train.vision import object_rows, cell_targets

    _, processor = load_model(None)
    tok = processor.tokenizer
    task = ShapesTask()
    sample = task.sample(11)
    rows = object_rows(tok, task, sample)
    targets, located = cell_targets(rows["object_xy"], rows["object_ids"], grid=4, vocab=len(tok), empty=7)
    assert located.tolist() == [True]
    occupied = {(o["row"] - 1) * 4 + o["col"] - 1: o for o in sample.trace["objects"]}
    for k in range(16):
        if k in occupied:  # row r, column c -> token (r-1)*4 + c-1: its colour and shape words, half each
            words = tok(f" {occupied[k]['colour']} {occupied[k]['shape']}", add_special_tokens=False)["input_ids"]
            assert sorted(targets[0, k].nonzero().flatten().tolist()) == sorted(words)
            torch.testing.assert_close(targets[0, k, words], torch.full((len(words),), 1 / len(words)))
        else:
            assert targets[0, k].nonzero().flatten().tolist() == [7]  # an empty cell names the empty token
    easy = EasyVQATask("train")
    rows = object_rows(tok, easy, easy.get(0))  # easy-VQA does not say where its shape is
    assert not cell_targets(rows["object_xy"], rows["object_ids"], 4, len(tok), 7)[1].any()


@pytest.mark.parametrize("word_units", [False, True])
def test_dense_vision_stage_lowers_the_per_token_loss(tmp_path, word_units):
    cfg = load_config(VisionConfig, None, None, TINY + [f"out_dir={tmp_path}", "steps=40", "lr=3e-3", "dense=1.0",
                                                         "tasks={shapes: 1.0}", "warmup_steps=5", "eval_every=40",
                                                         "save_every=40", f"word_units={str(word_units).lower()}"])
    final = run(cfg)
    if word_units:  # the checkpoint says which projector units detect which words
        from transformers import AutoConfig

        assert AutoConfig.from_pretrained(final).word_units[-1] == AutoConfig.from_pretrained(final).image_token_id
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first, last = sum(e["dense"] for e in log[:5]) / 5, sum(e["dense"] for e in log[-5:]) / 5
    # softmax over the vocabulary starts near ln(vocab); the units' sigmoid loss near ln 2 = 0.69
    assert last < first - (0.03 if word_units else 0.2), (first, last)


def test_negative_dense_weight_is_refused():
    with pytest.raises(VrmError, match="dense"):
        load_config(VisionConfig, None, None, ["dense=-1"])


def test_word_units_start_as_the_words_they_detect():
    from vrm.model.build import TinyVLMConfig, build_tiny_vlm
    from vrm.tasks.shapes import ShapesTask
    from vrm.train.vision import init_word_units, word_unit_ids

    task = ShapesTask()
    model, processor = build_tiny_vlm(TinyVLMConfig(vision_hidden=32, vision_heads=2, lm_hidden=32, lm_layers=1,
                                                    lm_heads=2, lm_intermediate=64, vocab_size=400),
                                      [task.caption(task.sample(i)) for i in range(50)])
    units = word_unit_ids([task], processor.tokenizer, empty=model.config.image_token_id, samples=50)
    tok = processor.tokenizer
    red = tok(" red", add_special_tokens=False)["input_ids"]
    assert set(red) <= set(units) and units[-1] == model.config.image_token_id and units[:-1] == sorted(units[:-1])
    init_word_units(model, units)
    torch.testing.assert_close(model.model.multi_modal_projector.linear_2.weight[:, :len(units)],
                               model.get_input_embeddings().weight[units].T)
    assert model.config.word_units == units
    with pytest.raises(VrmError, match="do not fit"):
        init_word_units(model, list(range(33)))  # 32 hidden units


def test_word_units_need_the_dense_loss():
    with pytest.raises(VrmError, match="dense"):
        load_config(VisionConfig, None, None, ["word_units=true"])


def test_word_units_only_holds_the_free_units_at_zero_through_training_and_reload(tmp_path):
    from vrm.model import load_model
    from vrm.model.build import TinyVLMConfig, build_tiny_vlm
    from vrm.tasks.shapes import ShapesTask
    from vrm.train.vision import init_word_units, word_unit_ids

    task = ShapesTask()
    model, processor = build_tiny_vlm(TinyVLMConfig(vision_hidden=32, vision_heads=2, lm_hidden=32, lm_layers=1,
                                                    lm_heads=2, lm_intermediate=64, vocab_size=400,
                                                    projector_act="sigmoid"),
                                      [task.caption(task.sample(i)) for i in range(50)])
    units = word_unit_ids([task], processor.tokenizer, empty=model.config.image_token_id, samples=50)
    init_word_units(model, units, only=True)
    k = len(units)

    def step(m):
        projector = m.model.multi_modal_projector
        before = projector.linear_1.weight[:k].clone()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
        ids = torch.tensor([[m.config.image_token_id] * 16 + [5, 6]])
        loss = m(input_ids=ids, pixel_values=torch.randn(1, 3, 64, 64), labels=ids).loss
        loss.backward(), opt.step()
        assert not torch.equal(projector.linear_1.weight[:k], before)  # the word units learn
        assert projector.linear_1.weight[k:].abs().sum() == 0 and projector.linear_1.bias[k:].abs().sum() == 0
        assert projector.linear_2.weight[:, k:].abs().sum() == 0  # the free units write nothing
        assert m.model.multi_modal_projector.act.__class__.__name__.lower().startswith("sigmoid")

    model.train(), step(model)
    model.save_pretrained(tmp_path), processor.save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)  # a later stage: the mask comes back with the config
    assert loaded.config.word_units_only and loaded.config.word_units == units
    loaded.train(), step(loaded)


def test_free_units_off_needs_word_units():
    with pytest.raises(VrmError, match="word_units"):
        load_config(VisionConfig, None, None, ["dense=1", "free_units=false"])
