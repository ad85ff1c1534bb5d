"""vrm's GRPO beside TRL's `GRPOTrainer`: same model, task, prompts, rewards, G, lengths and steps.

    .venv/bin/python benchmarks/grpo.py [--steps 100] [--format direct|think] [--plain] [--quick]

Both start from the embedded model (a fresh copy each) and see the same prompts in the same order
(vrm's `step_samples` for seed 0, handed to TRL as an unshuffled dataset); both use the rewards
``correctness`` (1.0) + ``format`` (0.5) from `vrm.rewards`, temperature 1 without top-k/top-p,
GRPO's length-normalised loss with group-std advantages, beta 0, epsilon 0.2, one pass per
rollout batch, AdamW (betas 0.9/0.99, no weight decay), cosine lr without warm-up, grad-norm
clip 1.0, fp32, 1 thread. TRL is set to fp32 without gradient checkpointing: its GRPO defaults
(bf16 autocast, gradient checkpointing) ran this model at ~40 s/step on this CPU, which says
nothing about the algorithm.

Steps/s counts from the start of the first step to the end of the last one (setup, evaluation and
saving excluded). Reward reached: the mean reward of the last third of the steps (first third
beside it). The default format is `direct`: the embedded model was trained to answer directly, so
its groups disagree from step one and both trainers do real updates. Under `think` it writes no
tags yet, every reward is 0 and there is nothing to learn in a short run (vrm would skip every
update: an empty comparison). The machine may be shared: the load average is printed beside.

Where vrm's time goes less: each prompt (image tokens included) runs once per group, not G
times, both when sampling (its KV cache repeated for the G samples) and when scoring the samples
with gradients; and groups whose G rewards are all equal (zero advantage, zero gradient at beta 0)
are left out of the update. ``--plain`` adds a vrm row without prompt sharing.

The last line is ``speedup N``: vrm steps/s over TRL steps/s (or ``speedup n/a`` and why).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from vrm.config import load_config  # noqa: E402
from vrm.formats import get_format  # noqa: E402
from vrm.infer.generate import stop_ids, user_messages  # noqa: E402
from vrm.model import load_model  # noqa: E402
from vrm.rewards import combined  # noqa: E402
from vrm.tasks import Sample, get_task  # noqa: E402
from vrm.train.data import step_samples  # noqa: E402
from vrm.train.grpo import GRPOConfig, train  # noqa: E402

REWARDS = {"correctness": 1.0, "format": 0.5}


def thirds(values: list[float]) -> tuple[float, float]:
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def run_vrm(args, out: Path, share: bool = True) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(GRPOConfig, None, None, [
        "model=embedded", f"tasks={{{args.task}: 1.0}}", f"format={args.format}", f"rewards={json.dumps(REWARDS)}",
        f"steps={args.steps}", f"batch_size={args.prompts}", f"num_generations={args.generations}",
        f"max_new_tokens={args.max_new_tokens}", f"lr={args.lr}", "warmup_steps=0", "eval_every=0",
        f"save_every={args.steps}", f"out_dir={out}", f"threads={args.threads}", "progress=false", "seed=0",
        f"share_prompt={str(share).lower()}"])
    train(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rewards = [e["reward"] for e in log]
    return {"seconds": log[-1]["elapsed"], "rewards": rewards,
            "length": sum(e["completion_length"] for e in log) / len(log),
            "split": (sum(e["rollout_s"] for e in log), sum(e["update_s"] for e in log))}


def run_trl(args, out: Path) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    model, processor = load_model()
    task, fmt, tok = get_task(args.task), get_format(args.format), processor.tokenizer
    stops = set(stop_ids(model, processor))
    rows = []
    for step in range(args.steps):
        for _, s in step_samples([task], [1.0], step, args.prompts, 0):
            rows.append({"prompt": user_messages(fmt.prompt(s)), "image": s.image, "answer": s.answer,
                         "sample_id": s.id, "question": s.question})

    def texts(completion_ids) -> list[str]:  # TRL decodes without special tokens: <think> would vanish
        return [tok.decode([t for t in ids if t not in stops and t != tok.pad_token_id],
                           skip_special_tokens=False).strip() for ids in completion_ids]

    def reward(name):
        def fn(completions, completion_ids, answer, sample_id, question, **_):
            samples = [Sample(i, None, q, a, args.task) for i, q, a in zip(sample_id, question, answer)]
            return combined({name: 1.0}, samples, texts(completion_ids), [task] * len(samples), fmt).total
        fn.__name__ = name
        return fn

    class Clock(TrainerCallback):
        start = end = None

        def on_step_begin(self, *a, **k):
            self.start = self.start or time.time()

        def on_step_end(self, *a, **k):
            self.end = time.time()

    clock = Clock()
    config = TRLConfig(
        output_dir=str(out), per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, learning_rate=args.lr,
        lr_scheduler_type="cosine", warmup_steps=0, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.0, epsilon=0.2, num_iterations=1, loss_type="grpo", scale_rewards="group", temperature=1.0,
        top_k=0, top_p=1.0, max_steps=args.steps, logging_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", shuffle_dataset=False, dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=True, bf16=False, gradient_checkpointing=False, seed=0,
        reward_weights=list(REWARDS.values()))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward(n) for n in REWARDS], args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=processor, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict
    trainer.train()
    log = [e for e in trainer.state.log_history if "reward" in e]
    return {"seconds": clock.end - clock.start, "rewards": [e["reward"] for e in log],
            "length": sum(e["completions/mean_length"] for e in log) / len(log), "split": None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--task", default="shapes")
    p.add_argument("--format", default="direct")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=8, help="G, completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_grpo")
    p.add_argument("--plain", action="store_true", help="also run vrm without prompt sharing")
    p.add_argument("--quick", action="store_true", help="30 steps (a few minutes)")
    args = p.parse_args()
    if args.quick:
        args.steps = 30
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    print(f"GRPO: embedded model, {args.task}, format {args.format}, {args.prompts} prompts x G={args.generations} "
          f"= {args.prompts * args.generations} completions/step, <= {args.max_new_tokens} new tokens, "
          f"{args.steps} steps, {args.threads} thread(s); load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {"vrm GRPO": run_vrm(args, out / "vrm")}
    if args.plain:
        results["vrm, prompt not shared"] = run_vrm(args, out / "vrm_plain", share=False)
    trl_error = None
    try:
        results["TRL GRPOTrainer 1.16"] = run_trl(args, out / "trl")
    except ImportError as e:
        trl_error = f"trl is not importable ({e}); pip install trl==1.16.0"
    except Exception as e:  # noqa: BLE001 - the benchmark reports why TRL could not run, whatever it is
        trl_error = f"TRL GRPOTrainer failed on this model: {type(e).__name__}: {str(e).splitlines()[0]}"
    print(f"\n{'':22s} {'steps/s':>8s} {'s/step':>7s} {'reward 1st 1/3':>15s} {'last 1/3':>9s} {'tokens':>7s}")
    for name, r in results.items():
        first, last = thirds(r["rewards"])
        print(f"{name:22s} {args.steps / r['seconds']:8.3f} {r['seconds'] / args.steps:7.2f} {first:15.3f} "
              f"{last:9.3f} {r['length']:7.1f}")
    rollout_s, update_s = results["vrm GRPO"]["split"]
    print(f"vrm time split: rollouts {rollout_s:.1f} s, updates {update_s:.1f} s; "
          f"load average now {os.getloadavg()[0]:.1f}")
    if trl_error:
        print(trl_error)
        print("speedup n/a")
        return
    vrm_s, trl_s = results["vrm GRPO"]["seconds"], results["TRL GRPOTrainer 1.16"]["seconds"]
    print(f"speedup {trl_s / vrm_s:.2f}")


if __name__ == "__main__":
    main()
