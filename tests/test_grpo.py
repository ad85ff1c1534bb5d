import json
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vrm import VrmError
from vrm.config import load_config
from vrm.model import TinyVLMConfig, build_tiny_vlm, load_model, save_model
from vrm.rewards import REWARDS, RewardResult
from vrm.tasks import get_task
from vrm.train.grpo import GRPOConfig, train
from vrm.train.grpo_loss import group_advantages, policy_loss
from vrm.train.loop import corpus
from vrm.train.rollout import HFBackend, Policy, encode_prompts, get_backend, pack, token_logps

TINY = dict(vision_hidden=32, vision_layers=1, vision_heads=2, lm_hidden=32, lm_layers=1, lm_heads=2,
            lm_intermediate=64)
RUN = ["tasks={shapes: 1.0}", "batch_size=4", "num_generations=8", "max_new_tokens=6", "eval_n=2", "progress=false",
       "threads=1", "lr=3e-2"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random tiny LLaVA saved as a checkpoint folder (built once for the module)."""
    torch.manual_seed(0)
    model, processor = build_tiny_vlm(TinyVLMConfig(**TINY), corpus([get_task("shapes")], 100))
    return save_model(model, processor, tmp_path_factory.mktemp("tiny") / "model")


def cfg(model_dir, out, *extra) -> GRPOConfig:
    return load_config(GRPOConfig, None, None, RUN + [f"model={model_dir}", f"out_dir={out}", *extra])


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.25, unbiased std sqrt(0.75 / 3) = 0.5; group 2: all equal, no signal
    expected = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(group_advantages(r, 4), torch.tensor(expected))
    dr = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0])  # Dr. GRPO: no std division
    torch.testing.assert_close(group_advantages(r, 4, scale=False), dr)
    torch.testing.assert_close(group_advantages(torch.tensor([3.0, 1.0]), 2, eps=0.0), torch.tensor([0.7071, -0.7071]),
                               atol=1e-4, rtol=0)


def test_policy_loss_by_hand():
    # completion 0 (A=+1): token ratios 1.5 (clipped to 1.2) and 1.0; completion 1 (A=-1): ratio 0.5
    # (clipped to 0.8) and a masked token.
    old = torch.zeros(2, 2)
    logps = torch.tensor([[math.log(1.5), 0.0], [math.log(0.5), 5.0]], requires_grad=True)
    adv, mask = torch.tensor([1.0, -1.0]), torch.tensor([[1, 1], [1, 0]])
    loss, stats = policy_loss(logps, old, adv, mask, epsilon=0.2)
    # per token: -min(1.5, 1.2) = -1.2, -1.0 | -min(-0.5, -0.8) = 0.8 -> means -1.1 and 0.8
    assert loss.item() == pytest.approx((-1.1 + 0.8) / 2)
    assert stats == {"clip_fraction": pytest.approx(2 / 3), "kl": 0.0}
    loss.backward()  # clipped tokens give no gradient; the unclipped one -A * ratio / (2 tokens * 2 rows)
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, -0.25], [0.0, 0.0]]))
    dr, _ = policy_loss(logps, old, adv, mask, epsilon=0.2, length_norm=False, max_tokens=4)
    assert dr.item() == pytest.approx((-1.2 - 1.0 + 0.8) / (2 * 4))  # Dr. GRPO: token sum / (rows * max tokens)
    ref = logps.detach() + torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0]])  # ref/policy = 2 on one token
    with_kl, stats = policy_loss(logps, old, adv, mask, epsilon=0.2, beta=0.1, ref_logps=ref)
    k3 = 2.0 - math.log(2.0) - 1.0  # exp(d) - d - 1
    assert stats["kl"] == pytest.approx(k3 / 3)
    assert with_kl.item() == pytest.approx(((-1.2 - 1.0 + 0.1 * k3) / 2 + 0.8) / 2)
    with pytest.raises(ValueError, match="reference"):
        policy_loss(logps, old, adv, mask, beta=0.1)


def test_token_logps_match_log_softmax_at_the_temperature():
    logits, ids = torch.randn(20, 5, 30), torch.randint(0, 30, (20, 5))
    logps, entropy = token_logps(logits, ids, temperature=0.7)
    full = (logits / 0.7).log_softmax(-1)
    torch.testing.assert_close(logps, full.gather(-1, ids.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1))


def test_shared_prompt_gives_the_plain_logps_and_gradients(tiny_model):
    model, processor = load_model(tiny_model)
    task = get_task("shapes")
    samples = [task.sample(i) for i in range(3)]  # questions of different lengths: left padding differs
    prompts = encode_prompts(processor, [s.image for s in samples], [s.question for s in samples])
    ids = torch.randint(3, len(processor.tokenizer), (6, 5), generator=torch.Generator().manual_seed(0))
    policy, results = Policy(model), []
    for share in (False, True):
        policy.share_prompt = share
        model.zero_grad()
        logps, entropy = policy(prompts, ids, 2, temperature=0.7)
        logps.sum().backward()
        results.append((logps.detach(), entropy,
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ea, ga), (b, eb, gb) = results
    assert a.shape == (6, 5) and (a < 0).all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ea, eb, atol=1e-5, rtol=1e-5)
    assert ga.keys() == gb.keys() and any("vision_tower" in n for n in ga)  # through the cache to the image
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-4, rtol=1e-4)


def test_hf_backend_shared_prompt_samples_the_same_tokens(tiny_model):
    model, processor = load_model(tiny_model)
    samples = [get_task("shapes").sample(i) for i in range(2)]
    prompts = encode_prompts(processor, [s.image for s in samples], [s.question for s in samples])
    outs = []
    for share in (False, True):
        torch.manual_seed(1)
        outs.append(HFBackend(share).generate(model, processor, prompts, None, None, 3, 6, 1.0))
    assert outs[0] == outs[1] and len(outs[0]) == 6


def test_pack_cuts_after_the_stop_token(tiny_model):
    _, processor = load_model(tiny_model)
    tok = processor.tokenizer
    think, end = tok.convert_tokens_to_ids("<think>"), tok.eos_token_id
    ids, mask, texts, truncated = pack([[think, end, 7, 7], [think, think]], [end], tok.pad_token_id, tok)
    assert ids.tolist() == [[think, end], [think, think]] and mask.tolist() == [[1, 1], [1, 1]]
    assert texts == ["<think>", "<think><think>"] and truncated == [False, True]


def test_config_errors(tmp_path):
    with pytest.raises(VrmError, match="algorithm"):
        cfg("m", tmp_path, "algorithm=ppo")
    with pytest.raises(VrmError, match="num_generations"):
        cfg("m", tmp_path, "num_generations=1")
    with pytest.raises(VrmError, match="rewards must name"):
        cfg("m", tmp_path, "rewards={accuracy: 1}")
    with pytest.raises(VrmError, match="grad_accum"):
        cfg("m", tmp_path, "grad_accum=3")
    with pytest.raises(VrmError, match="unknown format"):
        cfg("m", tmp_path, "format=poem")
    with pytest.raises(VrmError, match="vllm"):  # not installed here, and no GPU
        get_backend("vllm", model_path=str(tmp_path))


def digits(samples, completions, tasks, fmt) -> RewardResult:
    """A reward a random model learns in a few steps: the share of digits in what it writes."""
    values = [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]
    return RewardResult(values, {"digits": values})


def test_grpo_learns_logs_and_resumes_exactly(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(REWARDS, "digits", digits)
    straight = tmp_path / "straight"
    extra = ["rewards={digits: 1.0}", "format=direct", "steps=8", "save_every=4", "eval_every=4", "keep_checkpoints=3"]
    final = train(cfg(tiny_model, straight, *extra))
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(9))
    for key in ("reward", "reward_digits", "completion_length", "kl", "clip_fraction", "entropy", "loss", "lr",
                "data_errors", "zero_std_groups"):
        assert key in log[1], key
    assert {"accuracy", "format_ok", "per_task"} <= set(log[4]["eval"])
    rewards = [e["reward"] for e in log[1:]]
    assert sum(rewards[-3:]) > 2 * sum(rewards[:3]), rewards  # learned to write digits

    resumed = tmp_path / "resumed"  # as if killed after the checkpoint of step 4
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoints" / "step_0000008")
    with open(resumed / "log.jsonl", "a") as f:
        f.write('{"step": 9, "rew')
    train(cfg(tiny_model, resumed, *extra))
    a, b = load_file(final / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in again] == list(range(9))
    assert [e.get("reward") for e in again] == [e.get("reward") for e in log]  # the same rollouts again


def test_dr_grpo_with_reference_iterations_and_micro_batches(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(REWARDS, "digits", digits)
    out = tmp_path / "dr"
    train(cfg(tiny_model, out, "steps=2", "algorithm=dr_grpo", "beta=0.1", "num_iterations=2", "grad_accum=2",
              "eval_every=0", "share_prompt=false", "rewards={digits: 1.0}", "format=direct"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    assert log[1]["kl"] > 0  # the policy moved away from the frozen reference
    assert all(math.isfinite(e["loss"]) for e in log)


def test_two_processes_end_with_identical_weights(tiny_model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    script = tmp_path / "run.py"  # `python -m vrm.train.grpo`, with the learnable reward registered
    script.write_text("import sys\nfrom vrm.rewards import REWARDS\nfrom test_grpo import digits\n"
                      "REWARDS['digits'] = digits\nfrom vrm.train.grpo import main\nmain(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path]), "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}  # gloo; `--cpu` alone would start one process
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           str(script), *RUN, f"model={tiny_model}", f"out_dir={out}", "steps=3", "eval_every=0",
           "save_every=3", "rewards={digits: 1.0}", "format=direct", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # a rank that fails first leaves its error far above the others' tracebacks: show every error line, then the tail
    errors = "\n".join(line for line in done.stderr.splitlines() if "Error" in line)
    assert done.returncode == 0, f"{errors[-3000:]}\n...\n{done.stderr[-2000:]}"
    assert "on 2 process(es), weights sha256" in done.stdout and "on every rank" in done.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3]
    base, final = load_file(out / "base" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert any(not torch.equal(base[k], final[k]) for k in base)  # it trained
