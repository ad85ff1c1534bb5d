"""Visual thoughts (MVoT): the visual format, the token discrepancy loss, interleaved decoding, the
V-metrics and `vrm train mvot` end to end on a tiny model."""

import json
import re

import pytest
import torch
from transformers import LogitsProcessor

from vrm import VrmError
from vrm.config import load_config
from vrm.eval.visual import thought_checks, visual_summary
from vrm.formats import get_format
from vrm.formats.visual import (PLAN, PLAN_SLOTS, plan_text, read_images, step_examples, step_lines,
                                without_plan)
from vrm.infer.interleaved import ImageSpanConstraint, generate_visual
from vrm.model.image_codes import code_ids, load_checkpoint_image_tokenizer, marker_ids
from vrm.model.vq import ImageTokenizer, ImageTokenizerConfig
from vrm.tasks import get_task
from vrm.train.data import IGNORE
from vrm.train.mvot import MVoTConfig, first_target, run, token_discrepancy_loss

TINY = ["tiny.vision_hidden=32", "tiny.vision_layers=1", "tiny.vision_heads=2", "tiny.lm_hidden=32",
        "tiny.lm_layers=1", "tiny.lm_heads=2", "tiny.lm_intermediate=64", "tiny.tokenizer_corpus=100",
        "batch_size=3", "eval_n=2", "progress=false", "model=scratch", "log_every=1", "eval_every=1000",
        "save_every=2"]


def test_discrepancy_loss_by_hand():
    # S for a 3-code book; two image positions with true codes 2 and 0.
    S = torch.tensor([[0.0, 1.0, 4.0], [1.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    logits = torch.tensor([[0.0, 0.0, 0.0], [torch.log(torch.tensor(3.0)), 0.0, 0.0]])
    # row 0: p = 1/3 each, S[2] = (4, 1, 0) -> 5/3; row 1: p = (3/5, 1/5, 1/5), S[0] = (0, 1, 4) -> 1.
    loss = token_discrepancy_loss(logits, torch.tensor([2, 0]), S)
    assert loss.item() == pytest.approx((5 / 3 + 1) / 2)
    # certain and right: zero; no image positions: zero
    assert token_discrepancy_loss(torch.tensor([[0.0, 50.0, 0.0]]), torch.tensor([1]), S).item() == pytest.approx(0, abs=1e-6)
    assert token_discrepancy_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), S).item() == 0.0


def test_step_examples_keep_only_the_latest_image():
    task = get_task("frozenlake", sizes="3")
    s = next(task.sample(i) for i in range(50) if len(task.sample(i).trace["states"]) >= 3)
    m = len(s.trace["states"]) - 1
    codes = [[k] * 4 for k in range(m + 1)]
    steps = step_examples(s, codes)
    assert len(steps) == m + 1
    for k, (ctx, target) in enumerate(steps):
        assert read_images(ctx) == [codes[k]]  # one image in context: the latest
        assert ctx.count("Step ") == k
        if k < m:
            assert target.startswith(f" Step {k + 1}: Go ") and read_images(target) == [codes[k + 1]]
        else:
            assert target == f" The answer is {s.answer}."
    full = get_format("visual").target(s, task, codes)
    assert read_images(full) == codes and full.endswith(f"The answer is {s.answer}.")
    parsed = get_format("visual").parse(full)
    assert parsed.ok and task.score(s, parsed.answer) == 1.0
    assert parsed.stages["images"] == str(m + 1) and "[image] Step 1: Go" in parsed.stages["steps"]
    with pytest.raises(ValueError, match="image codes"):
        get_format("visual").target(s, task)


def test_plan_crosses_off_one_action_per_step():
    # 3x3 maze walks: every step line's plan is the question's actions right-aligned in the fixed
    # slots with the steps taken so far crossed off; the action of step k is the first slot not
    # done in the plan before it, and the answer step comes when the last slot is done.
    task = get_task("maze", sizes="3", style="short")
    s = next(task.sample(i) for i in range(50) if len(task.sample(i).trace["actions"]) >= 3)
    actions = s.trace["actions"]
    lines = step_lines(s, plan=True)
    assert [without_plan(line) for line in lines] == step_lines(s)
    slots_of = lambda text: re.findall(r"Done\.|Go \w+\.", text.split(PLAN)[1])  # noqa: E731
    previous = slots_of(plan_text(actions, 0))
    assert len(previous) == PLAN_SLOTS and previous[-len(actions):] == [f"Go {a}." for a in actions]
    for k, line in enumerate(lines):
        slots = slots_of(line)
        first_open = next(i for i, w in enumerate(previous) if w != "Done.")
        assert line.startswith(f"Step {k + 1}: {previous[first_open]} ")
        assert slots == previous[:first_open] + ["Done."] + previous[first_open + 1:]
        previous = slots
    assert previous == ["Done."] * PLAN_SLOTS
    ctx, target = step_examples(s, [[k] for k in range(len(actions) + 1)], plan=True)[2]
    assert ctx.count(PLAN) == 1 and ctx.startswith(f"{step_lines(s)[0]} {lines[1]} <boi>")
    assert target == f" {lines[2]} <boi><img_3><eoi>"
    with pytest.raises(ValueError, match="holds 14"):
        plan_text(["up"] * 15, 0)


def test_marked_plan_has_one_next_slot_that_follows_from_two_slots_before():
    # With mark_next the next action is the one "Next:" slot of the plan before (step 1: the
    # question's first), and each slot of a plan is a function of the previous plan's same slot and
    # the one before it: Next -> Done, after a Next -> marked, else copied.
    task = get_task("maze", sizes="4", style="short")
    s = next(task.sample(i) for i in range(80) if len(task.sample(i).trace["actions"]) >= 5)
    actions = s.trace["actions"]
    lines = step_lines(s, plan=True, mark_next=True)
    assert [line.replace("Next: ", "") for line in lines] == step_lines(s, plan=True)
    assert [without_plan(line) for line in lines] == step_lines(s)
    slots_of = lambda text: re.findall(r"Done\.|Next: Go \w+\.|Go \w+\.", text.split(PLAN)[1])  # noqa: E731
    previous = slots_of(plan_text(actions, 0, mark_next=True))
    assert previous[-len(actions)] == f"Next: Go {actions[0]}."
    for line in lines:
        marked = [w for w in previous if w.startswith("Next:")]
        assert len(marked) == 1 and line.split(PLAN)[0].split(": ", 1)[1].strip() == marked[0][len("Next: "):]
        slots = slots_of(line)
        rule = ["Done." if p.startswith("Next:") else f"Next: {p}" if i and previous[i - 1].startswith("Next:")
                else p for i, p in enumerate(previous)]
        assert slots == rule
        previous = slots
    assert previous == ["Done."] * PLAN_SLOTS
    ctx, target = step_examples(s, [[k] for k in range(len(actions) + 1)], plan=True, mark_next=True)[1]
    assert ctx.startswith(lines[0]) and target == f" {lines[1]} <boi><img_2><eoi>"
    with pytest.raises(ValueError, match="needs plan=true"):
        MVoTConfig(mark_next=True)


def test_visual_parse_unreadable_is_unparsed():
    fmt = get_format("visual")
    assert not fmt.parse("<boi><img_1><eoi> Step 1: Go up. <boi><img_2>").ok
    assert not fmt.parse("").ok
    assert fmt.parse("<boi><img_1><eoi> the answer is C").answer == "the answer is C"


def test_image_span_constraint():
    # vocab: 0-3 text, 4 boi, 5 eoi, 6-8 codes; images of 2 codes
    c = ImageSpanConstraint(first_code=6, n_codes=3, boi=4, eoi=5, tokens_per_image=2)
    rows = torch.tensor([[1, 4, 6, 7, 5, 2],   # outside (image closed)
                         [0, 0, 1, 2, 3, 4],   # just opened: codes only
                         [0, 1, 2, 3, 4, 8],   # one code in: codes only
                         [0, 1, 2, 4, 8, 6]])  # full: eoi only
    out = c(rows, torch.zeros(4, 9))
    allowed = [set(torch.nonzero(r > float("-inf")).flatten().tolist()) for r in out]
    assert allowed == [{0, 1, 2, 3, 4}, {6, 7, 8}, {6, 7, 8}, {5}]


@pytest.fixture(scope="module")
def vq(tmp_path_factory):
    torch.manual_seed(0)
    model = ImageTokenizer(ImageTokenizerConfig(image_size=64, downsample=16, codebook_size=8, code_dim=4, channels=16))
    path = tmp_path_factory.mktemp("vq") / "final"
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vq):
    out = tmp_path_factory.mktemp("mvot")
    cfg = load_config(MVoTConfig, None, None, TINY + [f"out_dir={out}", f"vq={vq[1]}", "steps=3"])
    return run(cfg), out


def test_step_lines_are_one_length_in_a_visual_model(trained):
    # Every step line is the same tokens long whatever its action or number, so an image and the
    # next one sit a fixed distance apart; the codes stay one run of ids after the step words.
    from vrm.model import load_model

    _, processor = load_model(trained[0])
    tok = processor.tokenizer
    lengths = {len(tok(f" Step {k}: {move}. <boi>", add_special_tokens=False)["input_ids"])
               for k in (1, 9, 12, 40) for move in ("Go left", "Go down", "Go right", "Go up", "Toggle")}
    assert lengths == {6}  # " ", "Step 3:", " ", "Go down.", " ", "<boi>"
    first, n = code_ids(tok)
    assert tok.convert_ids_to_tokens([first, first + n - 1]) == ["<img_0>", f"<img_{n - 1}>"]
    assert tok.decode(tok(" Step 3: Go down. The answer is B.", add_special_tokens=False)["input_ids"]) \
        == " Step 3: Go down. The answer is B."
    # The plan: one token per slot and one between, so a plan is 2 * PLAN_SLOTS + 1 tokens whatever
    # it holds; the question's moves one token each, 2 apart ("Actions: up, down, left.").
    plans = {len(tok(plan_text(a, d, mark), add_special_tokens=False)["input_ids"])
             for a, d in ((["up"], 0), (["down", "left", "right"], 1), (["up"] * PLAN_SLOTS, 3)) for mark in (0, 1)}
    assert plans == {2 * PLAN_SLOTS + 1}
    question = tok("Actions: up, right, down, left. Does", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(question)
    at = pieces.index(" up")
    assert pieces[at:at + 8] == [" up", ",", " right", ",", " down", ",", " left", "."]
    assert " up" not in tok.convert_ids_to_tokens(tok("the upper deck", add_special_tokens=False)["input_ids"])


def test_changed_codes_are_the_cells_the_action_changes(trained, vq):
    # On real one-step examples: the marked target codes are exactly where the tokenizer's codes of
    # state k+1 differ from those of state k; the answer step marks nothing.
    from vrm.model import load_model
    from vrm.train.data import collate
    from vrm.train.mvot import MVoTStage, changed_codes

    _, processor = load_model(trained[0])
    stage = MVoTStage(load_config(MVoTConfig, None, None, TINY + [f"vq={vq[1]}"]))
    task = get_task("frozenlake", sizes="4", style="short")
    pairs = [(task, task.sample(i)) for i in range(6)]
    batch = collate(stage.examples(processor, pairs, draw=0), processor.tokenizer.pad_token_id)
    first, k = code_ids(processor.tokenizer)
    marked = changed_codes(batch["input_ids"], batch["labels"], first, k)
    drawn_codes = [int(((batch["input_ids"][r] >= first) & (batch["labels"][r] != -100)).sum()) for r in range(6)]
    for row, (_, sample) in enumerate(pairs):
        target = batch["labels"][row][batch["labels"][row] != -100]
        if drawn_codes[row] == 0:
            assert not marked[row].any()
            continue
        drawn = target[(target >= first) & (target < first + k)] - first
        states = [vq[0].encode([task.render(sample.trace, j)])[0] for j in range(len(sample.trace["states"]))]
        step = next(j for j in range(1, len(states)) if states[j].tolist() == drawn.tolist())
        assert int(marked[row].sum()) == int((states[step] != states[step - 1]).sum())
    assert marked.any()  # some action changed a code


def test_answer_share_sets_how_often_the_answer_step_is_trained(trained, vq):
    from vrm.model import load_model
    from vrm.train.mvot import MVoTStage

    _, processor = load_model(trained[0])
    task = get_task("maze", sizes="3", style="short")
    pairs = [(task, task.sample(i)) for i in range(40)]
    eos = processor.tokenizer.eos_token_id

    def answer_rows(*extra):
        stage = MVoTStage(load_config(MVoTConfig, None, None, TINY + [f"vq={vq[1]}", *extra]))
        rows = [e for d in range(5) for e in stage.examples(processor, pairs, draw=d)]
        return sum(int(e["labels"][-1]) == eos for e in rows) / len(rows)  # the answer step ends the turn

    steps = [len(s.trace["states"]) for _, s in pairs]  # a walk of m moves has m + 1 steps
    assert answer_rows() == pytest.approx(sum(1 / m for m in steps) / len(steps), abs=0.08)
    assert answer_rows("answer_share=0.6") == pytest.approx(0.6, abs=0.08)
    assert answer_rows("answer_share=1") == 1.0  # the answer step alone: learning to read the last image
    for wrong in (0.0, 1.5):
        with pytest.raises(ValueError, match="answer_share"):
            MVoTConfig(answer_share=wrong)


def test_answer_weight_moves_the_loss_onto_the_answer_step(trained, vq):
    # With a huge answer_weight the cross-entropy is that of the answer rows' words after the first
    # (their own model call's token mean): the first, the decision to stop rather than draw, keeps
    # weight 1. An MVoT checkpoint trains on with the image codes it has.
    from vrm.model import load_model
    from vrm.train.data import collate
    from vrm.train.mvot import MVoTStage

    model, processor = load_model(trained[0])
    cfg = load_config(MVoTConfig, None, None, TINY + [f"vq={vq[1]}", "answer_share=0.5", "answer_weight=1e9",
                                                      "discrepancy_weight=0"])
    stage = MVoTStage(cfg)
    vocab = len(processor.tokenizer)
    model, processor = stage.prepare(model, processor)
    assert len(processor.tokenizer) == vocab
    stage.codes = code_ids(processor.tokenizer)
    task = get_task("frozenlake", sizes="3", style="short")
    rows = stage.examples(processor, [(task, task.sample(i)) for i in range(8)], draw=0)
    eos = processor.tokenizer.eos_token_id
    answers = [e for e in rows if int(e["labels"][-1]) == eos]
    assert 0 < len(answers) < len(rows)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        loss, _ = stage.loss(model, collate(rows, pad))
        batch = collate(answers, pad)
        decision = first_target(batch["labels"])
        assert processor.tokenizer.decode(batch["labels"][0, decision[0]]) == " The"
        batch["labels"][torch.arange(len(answers)), decision] = IGNORE
        alone = model(**batch).loss
    assert loss.item() == pytest.approx(alone.item(), rel=1e-4)


def test_action_weight_moves_the_loss_onto_the_action_lines(trained, vq):
    # With a huge action_weight the cross-entropy is the mean over the drawing steps' action tokens
    # ("Go down.") alone: what a run that must learn to look up step k's action trains on.
    from vrm.model import load_model
    from vrm.train.data import collate
    from vrm.train.mvot import MVoTStage

    model, processor = load_model(trained[0])
    stage = MVoTStage(load_config(MVoTConfig, None, None, TINY + [f"vq={vq[1]}", "answer_share=0.3",
                                                                  "action_weight=1e9", "discrepancy_weight=0"]))
    task = get_task("maze", sizes="3", style="steps")
    rows = stage.examples(processor, [(task, task.sample(i)) for i in range(8)], draw=0)
    batch = collate(rows, processor.tokenizer.pad_token_id)
    actions = torch.isin(batch["labels"], stage.actions)
    assert 0 < int(actions.sum()) < len(rows)  # one per drawing row; the answer rows have none
    said = [processor.tokenizer.decode(t) for t in batch["labels"][actions]]
    assert set(said) <= {"Go left.", "Go down.", "Go right.", "Go up."}
    with torch.no_grad():
        loss, _ = stage.loss(model, batch)
        logits = model(**batch).logits[:, :-1]
    at = actions[:, 1:]
    alone = torch.nn.functional.cross_entropy(logits[at], batch["labels"][:, 1:][at])
    assert loss.item() == pytest.approx(alone.item(), rel=1e-4)
    with pytest.raises(ValueError, match="action_weight"):
        MVoTConfig(action_weight=0)


def test_train_mvot_resumes_and_saves_the_image_tokenizer(trained, vq):
    final, out = trained
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [1, 2, 3]
    assert all(e["l_d"] >= 0 and e["loss"] == pytest.approx(e["ce"] + e["l_d"], rel=1e-4) for e in lines)
    again = load_checkpoint_image_tokenizer(final)
    image = get_task("maze", sizes="3").sample(0).image
    assert again.encode([image]).tolist() == vq[0].encode([image]).tolist()
    from vrm.model import load_model

    model, processor = load_model(final)
    first, n = code_ids(processor.tokenizer)
    assert n == 8 and model.get_input_embeddings().weight.shape[0] >= first + n
    # resume: more steps continue the log, each step once
    cfg = load_config(MVoTConfig, None, None, TINY + [f"out_dir={out}", f"vq={vq[1]}", "steps=4"])
    run(cfg)
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


class Scripted(LogitsProcessor):
    """Stands in for a trained model's preferences: at the start of a step, write a mark (the step's
    line), then open an image; after ``images[row]`` steps, end the turn. What is drawn inside each
    image is left to the model and the constraint under test."""

    def __init__(self, mark, boi, eoi, eos, images):
        self.mark, self.boi, self.eoi, self.eos, self.images = mark, boi, eoi, eos, images

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            if ids[-1] == self.eoi:  # a step starts (the context ends with the latest image)
                done = ids.count(self.mark) >= self.images[row]
                scores[row, self.eos if done else self.mark] += 100
            elif ids[-1] == self.mark:
                scores[row, self.boi] += 100
        return scores


def test_interleaved_decoding_draws_whole_images(trained, vq):
    from vrm.model import load_model

    model, processor = load_model(trained[0])
    tok = processor.tokenizer
    boi, eoi = marker_ids(tok)
    mark = tok.convert_tokens_to_ids("<SUMMARY>")
    task = get_task("frozenlake", sizes="3", style="short")
    samples = [task.sample(i) for i in range(2)]
    scripted = Scripted(mark, boi, eoi, tok.eos_token_id, images=[2, 1])  # row 1 stops first
    replies = generate_visual(model, processor, vq[0], [s.image for s in samples], [s.question for s in samples],
                              max_steps=4, logits_processor=[scripted])
    for reply, sample, n in zip(replies, samples, [2, 1]):
        assert reply.finish_reason == "stop" and len(reply.thoughts) == n
        assert all(len(c) == 16 and all(0 <= x < 8 for x in c) for c in reply.thoughts)
        images = read_images(reply.text)
        assert images[0] == vq[0].encode([sample.image]).tolist()[0]  # the question's own image first
        assert images[1:] == reply.thoughts
        assert reply.text.count("<SUMMARY>") == n
        assert [im.size for im in reply.images] == [(64, 64)] * n
    capped = generate_visual(model, processor, vq[0], [samples[0].image], [samples[0].question], max_steps=1,
                             logits_processor=[Scripted(mark, boi, eoi, tok.eos_token_id, images=[5])])[0]
    assert capped.finish_reason == "steps" and len(capped.thoughts) == 2


def test_evaluate_visual_keeps_each_episodes_checks(trained, vq):
    from vrm.eval.visual import evaluate_visual
    from vrm.model import load_model

    model, processor = load_model(trained[0])
    task = get_task("frozenlake", sizes="3", style="short")
    pairs = [(task, task.sample(i)) for i in range(2)]
    checks = {}
    _, records = evaluate_visual(model, processor, vq[0], pairs, max_steps=2, progress=False, keep_checks=checks)
    assert list(checks) == [s.id for _, s in pairs]
    for record in records:
        check = checks[record["id"]]
        assert {k: check[k] for k in ("steps", "v_steps", "v_ratio")} == {k: record["visual"][k] for k in
                                                                         ("steps", "v_steps", "v_ratio")}
        assert check["steps"] == len(task.sample(int(record["id"].split("-")[1])).trace["states"]) - 1
        assert len(check["act"]) == len(check["lines"])


def test_v_metrics_by_hand():
    from vrm.tasks.spatial.render import cell_box

    task = get_task("frozenlake", sizes="4")
    s = next(task.sample(i) for i in range(100) if len(task.sample(i).trace["states"]) >= 4)
    m = len(s.trace["states"]) - 1
    truth = [task.render(s.trace, k) for k in range(m + 1)]
    perfect = thought_checks(truth[1:], s, task)
    assert perfect["acc"] == [True] * m and perfect["red"] == [False] * m and perfect["v_ratio"] == 1.0
    # step 2 drawn as if the agent had not moved: V-Acc fails there, no change outside
    stuck = thought_checks([truth[1], truth[1], *truth[3:]], s, task)
    assert stuck["acc"][:2] == [True, False] and stuck["red"][:2] == [False, False]
    assert stuck["v_steps"] == 1 and stuck["v_ratio"] == pytest.approx(1 / m)
    # step 1 right, but a cell the move does not touch repainted: a redundant change
    touched = {tuple(s.trace["states"][0]), tuple(s.trace["states"][1])}
    far = next((r, c) for r in range(4) for c in range(4) if (r, c) not in touched)
    spoiled = truth[1].copy()
    spoiled.paste((0, 0, 0), cell_box(4, 64, *far)[:2] + tuple(x + 1 for x in cell_box(4, 64, *far)[2:]))
    checks = thought_checks([spoiled], s, task)
    assert checks["acc"] == [True] and checks["red"] == [True] and checks["v_steps"] == 0
    # answering early: missing thoughts end the run; one too many: the extra one is wrong
    assert thought_checks(truth[1:2], s, task)["v_steps"] == 1
    extra = thought_checks([*truth[1:], truth[-1]], s, task)
    assert extra["acc"][-1] is False and extra["v_steps"] == m
    assert visual_summary([perfect, stuck])["v_acc"] == pytest.approx((2 * m - 1) / (2 * m))
    # the step lines read against the question's actions, and whether it stopped when the walk did
    lines = step_lines(s)
    misread = lines[1].replace("Go ", "Go not ")
    read = thought_checks(truth[1:], s, task, lines=[lines[0], misread, *lines[2:], "Step 99: Go up."])
    assert read["act"] == [True, False] + [True] * (m - 2) + [False] and read["stopped"]
    assert not extra["stopped"] and not thought_checks(truth[1:2], s, task)["stopped"]
    summary = visual_summary([read, perfect])
    assert summary["a_acc"] == pytest.approx((m - 1) / (m + 1)) and summary["stops"] == 1.0


def test_visual_format_needs_a_visual_model(loaded):
    from vrm.eval.run import evaluate

    model, processor = loaded
    task = get_task("frozenlake")
    with pytest.raises(VrmError, match="image tokenizer"):
        evaluate(model, processor, [(task, task.sample(0))], "visual")
    with pytest.raises(VrmError, match="vrm train mvot"):
        load_checkpoint_image_tokenizer(None)
    with pytest.raises(VrmError, match="no image-code tokens"):
        code_ids(processor.tokenizer)


def test_cli_eval_visual_needs_a_visual_checkpoint(capsys):
    from vrm.cli import main

    assert main(["eval", "--task", "frozenlake", "--n", "2", "--format", "visual", "--quiet"]) == 2
    assert "vrm train mvot" in capsys.readouterr().err


def test_cli_eval_takes_task_parameters(capsys):
    from vrm.cli import main

    assert main(["eval", "--task", "frozenlake", "--n", "3", "--quiet", "sizes=3", "style=short"]) == 0
    out = capsys.readouterr().out
    assert "3x3" in out and "4x4" not in out
    assert main(["eval", "--task", "frozenlake", "--n", "1", "--quiet", "colour=red"]) == 2
    assert "no parameter" in capsys.readouterr().err


def test_cli_ask_saves_visual_thoughts(trained, tmp_path, capsys):
    from vrm.cli import main

    image = tmp_path / "lake.png"
    sample = get_task("frozenlake", sizes="3", style="short").sample(1)
    sample.image.save(image)
    code = main(["ask", "--model", str(trained[0]), "--format", "visual", "--show-reasoning", "--image", str(image),
                 "--thoughts", str(tmp_path / "thoughts"), sample.question])
    out = capsys.readouterr().out
    assert code == 0 and "[steps]" in out
    drawn = sorted((tmp_path / "thoughts").glob("thought_*.png"))
    assert f"{len(drawn)} images" in out or not drawn


def test_v_metrics_through_the_tokenizer(vq):
    # An untrained tokenizer draws nothing like the truth; a thought with exactly the codes of the
    # true state is still right when the truth goes through the same round trip.
    tokenizer = vq[0]
    task = get_task("maze", sizes="4")
    s = next(task.sample(i) for i in range(100) if len(task.sample(i).trace["states"]) >= 3)
    m = len(s.trace["states"]) - 1

    def round_trip(images):
        return tokenizer.decode(tokenizer.encode(images))

    drawn = round_trip([task.render(s.trace, k) for k in range(1, m + 1)])
    assert thought_checks(drawn, s, task)["v_ratio"] < 1.0
    checks = thought_checks(drawn, s, task, round_trip)
    assert checks["acc"] == [True] * m and checks["red"] == [False] * m and checks["v_ratio"] == 1.0


def test_training_on_needs_the_checkpoints_own_image_tokenizer(trained, vq, tmp_path):
    # A checkpoint's codes mean the pictures of the tokenizer saved beside it; another tokenizer with
    # the same codebook size would silently redraw every code as something else.
    from vrm.model import load_model
    from vrm.train.mvot import MVoTStage

    torch.manual_seed(1)
    other = tmp_path / "other"
    ImageTokenizer(ImageTokenizerConfig(image_size=64, downsample=16, codebook_size=8, code_dim=4,
                                        channels=16)).save_pretrained(other)
    model, processor = load_model(trained[0])
    stage = MVoTStage(load_config(MVoTConfig, None, None, TINY + [f"model={trained[0]}", f"vq={other}"]))
    with pytest.raises(VrmError, match="image_tokenizer"):
        stage.prepare(model, processor)
    stage = MVoTStage(load_config(MVoTConfig, None, None, TINY + [f"model={trained[0]}", f"vq={vq[1]}"]))
    assert stage.prepare(model, processor)[1] is processor


def test_new_tokens_start_apart():
    # transformers' mean resizing starts every new row at the old mean (cosine 0.98 between the
    # moves), where the model cannot tell "Go up." from "Go down." and never learns to; vrm's new
    # rows are random directions at the old rows' median length: about orthogonal.
    from vrm.model import load_model
    from vrm.model.image_codes import add_image_codes

    model, processor = load_model(None)
    old = model.get_input_embeddings().weight.shape[0]
    add_image_codes(model, processor, 16)
    table = model.get_input_embeddings().weight.detach()
    ids = processor.tokenizer.convert_tokens_to_ids(["Go left.", "Go down.", "Go right.", "Go up.", " up", " down"])
    rows = torch.nn.functional.normalize(table[ids], dim=1)
    cosines = (rows @ rows.T)[~torch.eye(len(ids), dtype=torch.bool)]
    assert cosines.abs().max() < 0.4
    assert torch.allclose(table[ids].norm(dim=1), table[:old].norm(dim=1).median().expand(len(ids)))


def test_training_on_adds_the_step_words_a_checkpoint_lacks(monkeypatch):
    # A checkpoint made before the plan's "Next:" slots existed gains them (and only them) when
    # trained on with mark_next; its other rows are untouched, and a model that has every word is
    # left as it is.
    from vrm.model import image_codes, load_model
    from vrm.formats.visual import step_words

    model, processor = load_model(None)
    before = [w for w in step_words() if not w.startswith("Next:")]
    monkeypatch.setattr(image_codes, "step_words", lambda: before)
    image_codes.add_image_codes(model, processor, 16)
    monkeypatch.undo()
    table = model.get_input_embeddings().weight.detach().clone()
    image_codes.add_step_words(model, processor)
    grown = model.get_input_embeddings().weight.detach()
    assert len(grown) == len(table) + 7 and torch.equal(grown[:len(table)], table)
    tok = processor.tokenizer
    ids = tok(" Remaining: Done. Next: Go up. Go up.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[1::2] == ["Remaining:", "Done.", "Next: Go up.", "Go up."]
    assert ids[5] >= len(table)
    image_codes.add_step_words(model, processor)
    assert len(model.get_input_embeddings().weight) == len(grown)
