"""How fast does vrm train and generate on this CPU, and how close is training to the hardware ceiling?

    .venv/bin/python benchmarks/train_speed.py [--model PATH] [--batch-size 32] [--steps N]
                                               [--threads 2] [--length-groups 4]
                                               [--recipe recipes/tiny.yaml --section sft] [--quick]

What it measures, in one process (so every number shares the same threads and machine load):

1. Ceiling: dense fp32 GEMM FLOP/s from ``torch.matmul`` of n x n matrices (n = 1024, 1536, 2048);
   the median of several repeats per size, best size wins; measured before and again after the
   training steps, and the higher of the two is the ceiling (on a shared machine a busy moment
   lowers one measurement; the higher one makes MFU the conservative figure). Nothing this
   process does in fp32 can
   be faster, so ``MFU = model FLOP/s / ceiling`` is the fraction of the machine training uses.
2. SFT training: the tiny-recipe step (every part trainable, AdamW fp32, grad-norm clip 1.0) on
   `direct`-format batches of shapes + easyvqa (or a recipe section's tasks and format mix:
   ``--recipe R --section S``), through the training loop's own code (`Stage.examples`,
   `Stage.batch_loss`: ``--length-groups`` forward calls per batch), timed per phase: data
   (sample + encode), forward (collate included), backward, optimizer. Medians over ``--steps``
   timed steps after warm-up steps (means too: a format mix has short and long steps).
   tokens/s counts non-padding tokens (image tokens included) over the whole step, data included.
3. Where the time goes: one extra step under torch.profiler gives the fraction of forward+backward
   spent in matmul kernels (self time of mm/addmm/bmm/convolution/SDPA ops), applied to the median
   step. That splits the MFU gap into "time outside matmuls" (other ops, Python, optimizer, data)
   and "matmuls slower than the ceiling" (model FLOPs / matmul time, small shapes are inefficient).
4. Generation: greedy ``model.generate`` with min_new_tokens = max_new_tokens, so every row yields
   exactly ``--gen-tokens`` new tokens; tokens/s = rows * new tokens / wall time (prefill included).

Model FLOPs per training step (the usual 6N convention, per sample i with L_i non-padding tokens):
    LM:        6 * N_lm * L_i  + 12 * lm_layers * lm_hidden * L_i^2        (attention, non-causal)
    vision:    6 * conv multiply-adds (patch embedding or LeViT's conv stem, per output position)
               + ViT: 6 * N_vis * V + 12 * vis_layers * vis_hidden * V^2   with V = patches + 1 (CLS)
    projector: 6 * N_proj * patches
N_* count only weights used in matmuls (Linear/Conv, incl. the tied lm_head), not embedding
lookups, norms or biases. Work on padding tokens is *not* counted: padding lowers the MFU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vrm.infer.generate import prompt_text, stop_ids
from vrm.model import TinyVLMConfig, build_tiny_vlm, load_model
from vrm.model.build import unused_vision_parameters
from vrm.config import load_config
from vrm.train.data import Prefetcher
from vrm.train.loop import config_tasks, corpus, part_of
from vrm.train.stage import Stage
from vrm.train.sft import SFTConfig

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
              "aten::convolution_backward", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def gemm_ceiling(sizes: list[int], repeats: int) -> float:
    """Best (over sizes) median FLOP/s of an fp32 n x n matmul."""
    best = 0.0
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.matmul(a, b, out=c)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b, out=c)
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def matmul_params(model) -> dict[str, int]:
    """Weights of Linear modules per part (vision / projector / lm), embeddings excluded, and
    ``conv``: multiply-adds of the vision tower's convolutions for one image (weights x output
    positions, measured by hooks on one forward; a CLIP patch embedding or LeViT's conv stem)."""
    counts = {"vision": 0, "projector": 0, "lm": 0, "conv": 0}
    unused = set(unused_vision_parameters(model))  # LeViT's stage after the stem: not model FLOPs
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name + ".weight" not in unused:
            counts[part_of(name + ".weight")] += m.weight.numel()

    def count(module, _, out):
        counts["conv"] += module.weight.numel() * out.shape[-2] * out.shape[-1]

    tower = model.model.vision_tower
    hooks = [m.register_forward_hook(count) for m in tower.modules() if isinstance(m, torch.nn.Conv2d)]
    size = model.config.vision_config.image_size
    with torch.no_grad():
        tower.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return counts


def step_flops(model, n: dict[str, int], lengths: list[int]) -> float:
    """Model FLOPs of one training step (see the module docstring); ``lengths`` = L_i per sample."""
    cfg = model.config
    vc, tc = cfg.vision_config, cfg.text_config
    patches = (vc.image_size // vc.patch_size) ** 2
    per_image = 6 * n["conv"] + 6 * n["projector"] * patches
    if vc.model_type != "levit":  # the ViT's transformer layers, CLS included
        v = patches + 1
        per_image += 6 * n["vision"] * v + 12 * vc.num_hidden_layers * vc.hidden_size * v * v
    lm = sum(6 * n["lm"] * L + 12 * tc.num_hidden_layers * tc.hidden_size * L * L for L in lengths)
    return len(lengths) * per_image + lm


def train_step(model, optimizer, params, stage, batches, step, pad_id) -> dict:
    """One SFT step as the training loop runs it, timed per phase (seconds), plus its token counts.
    ``batches`` (a `Prefetcher`) makes the next step's examples, in the background unless
    ``--no-prefetch``."""
    t0 = time.perf_counter()
    examples = batches.get(step, step + 1)
    t1 = time.perf_counter()
    loss, _ = stage.batch_loss(model, examples, pad_id, "cpu")
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t4 = time.perf_counter()
    lengths = [len(e["input_ids"]) for e in examples]
    groups = stage.groups(lengths)
    return {"data": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3, "total": t4 - t0,
            "lengths": lengths, "padded": sum(len(g) * max(lengths[i] for i in g) for g in groups),
            "loss": loss.item()}


def matmul_fraction(model, optimizer, params, stage, batches, step, pad_id) -> float:
    """Share of forward+backward time spent in matmul kernels, from one profiled step.

    All matmuls run in forward/backward; the profiler slows the many small non-matmul ops more
    than the big ones, so this is a lower bound on the matmul share.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        r = train_step(model, optimizer, params, stage, batches, step, pad_id)
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6
    return min(mm / (r["forward"] + r["backward"]), 1.0)


@torch.inference_mode()
def generation_speed(model, processor, samples, batch: int, new_tokens: int, repeats: int) -> float:
    """Generated tokens/s for ``batch`` rows, each forced to exactly ``new_tokens`` new tokens."""
    tok = processor.tokenizer
    rows = [samples[i % len(samples)] for i in range(batch)]
    side, tok.padding_side = tok.padding_side, "left"
    inputs = processor(images=[s.image for s in rows], text=[prompt_text(processor, s.question) for s in rows],
                       padding=True, return_tensors="pt")
    tok.padding_side = side
    stops = stop_ids(model, processor)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]

    def run() -> int:
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             temperature=None, top_p=None, top_k=None, eos_token_id=stops, pad_token_id=pad)
        return out[:, inputs["input_ids"].shape[1]:].numel()

    run()  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint folder (default: a fresh tiny VLM, default TinyVLMConfig)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default 20, quick 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--length-groups", type=int, default=SFTConfig.length_groups,
                    help="forward calls per batch, rows grouped by length (1: one padded call)")
    ap.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                    help="make each batch in the step (as before the loop's background prefetch)")
    ap.add_argument("--recipe", help="train on this recipe section's tasks and formats (with --section)")
    ap.add_argument("--section", default="sft")
    ap.add_argument("--gen-tokens", type=int, default=None, help="new tokens per row (default 32, quick 8)")
    ap.add_argument("--quick", action="store_true", help="few steps and repeats: a smoke test, not a measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    steps = args.steps or (3 if q else 20)
    warmup = 1 if q else 3
    gen_tokens = args.gen_tokens or (8 if q else 32)
    gen_repeats = 2 if q else 5

    print(f"threads={args.threads} batch={args.batch_size} steps={steps} (+{warmup} warm-up)", flush=True)
    gemm_sizes, gemm_repeats = ([1024], 3) if q else ([1024, 1536, 2048], 7)
    ceiling_before = gemm_ceiling(gemm_sizes, gemm_repeats)
    print(f"fp32 GEMM ceiling: {ceiling_before / 1e9:.1f} GFLOP/s", flush=True)

    overrides = [f"batch_size={args.batch_size}", f"length_groups={args.length_groups}", "model=scratch"]
    if args.recipe:
        cfg = load_config(SFTConfig, args.recipe, args.section, overrides)
    else:
        cfg = load_config(SFTConfig, None, None, [*overrides, "tasks={shapes: 1, easyvqa: 1}", "formats={direct: 1}"])
    tasks = config_tasks(cfg)
    stage = Stage(cfg)
    if args.model:
        model, processor = load_model(args.model)
    else:
        model, processor = build_tiny_vlm(TinyVLMConfig(), corpus(tasks, n=300))
    stage.bind(processor)
    if model.config.model_type != "llava":
        raise SystemExit(f"FLOP counting knows the LLaVA layout only, not {model.config.model_type!r}")
    n = matmul_params(model)
    print("matmul weights: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in n.items()), flush=True)
    pad_id = processor.tokenizer.pad_token_id
    pad_id = processor.tokenizer.eos_token_id if pad_id is None else pad_id

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]  # tiny recipe: every part trains
    optimizer = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.98), weight_decay=0.0)
    batches = Prefetcher(lambda step: stage.batch_examples(processor, tasks, step, 0), background=args.prefetch)
    results = []
    for step in range(warmup + steps):
        r = train_step(model, optimizer, params, stage, batches, step, pad_id)
        r["flops"] = step_flops(model, n, r["lengths"])
        if step >= warmup:
            results.append(r)
        print(f"  step {step + 1}/{warmup + steps}{' (warm-up)' if step < warmup else ''}: "
              f"{r['total']:.2f}s loss {r['loss']:.3f}", flush=True)
    mm_frac = matmul_fraction(model, optimizer, params, stage, batches, warmup + steps, pad_id)
    batches.close()
    ceiling_after = gemm_ceiling(gemm_sizes, gemm_repeats)
    ceiling = max(ceiling_before, ceiling_after)

    med = {k: statistics.median(r[k] for r in results) for k in ("data", "forward", "backward", "optimizer", "total")}
    tokens = statistics.median(sum(r["lengths"]) for r in results)
    flops = statistics.median(r["flops"] for r in results)
    padded = statistics.median(r["padded"] for r in results)
    compute = med["forward"] + med["backward"] + med["optimizer"]
    mfu, mfu_compute = flops / med["total"] / ceiling, flops / compute / ceiling
    mm_time = mm_frac * (med["forward"] + med["backward"])  # median step, matmul kernels only
    share = {"matmul": mm_time / med["total"], "other fwd/bwd": (1 - mm_frac) * (med["forward"] + med["backward"]) / med["total"],
             "data": med["data"] / med["total"], "optimizer": med["optimizer"] / med["total"]}
    mm_eff = flops / mm_time / ceiling if mm_time else float("nan")

    model.eval()
    gen_samples = [tasks[0].sample(i) for i in range(16)]
    gen1 = generation_speed(model, processor, gen_samples, 1, gen_tokens, gen_repeats)
    gen16 = generation_speed(model, processor, gen_samples, 16, gen_tokens, gen_repeats)

    rows = [
        ("fp32 GEMM ceiling", f"{ceiling / 1e9:.1f} GFLOP/s (before / after training: "
                              f"{ceiling_before / 1e9:.1f} / {ceiling_after / 1e9:.1f})"),
        ("tokens / step (non-padding)", f"{tokens:.0f} of {padded:.0f} padded ({100 * tokens / padded:.0f}%)"),
        ("model FLOPs / step", f"{flops / 1e9:.2f} GFLOP"),
        ("step time (median)", f"{med['total']:.3f} s"),
        ("  data / fwd / bwd / opt", " / ".join(f"{med[k]:.3f}" for k in ("data", "forward", "backward", "optimizer")) + " s"),
        ("SFT train tokens/s", f"{tokens / med['total']:.0f} (median step); "
                               f"{sum(sum(r['lengths']) for r in results) / sum(r['total'] for r in results):.0f} (all steps)"),
        ("SFT train samples/s", f"{args.batch_size / med['total']:.1f}"),
        ("model FLOP/s", f"{flops / med['total'] / 1e9:.2f} GFLOP/s"),
        ("MFU (whole step)", f"{100 * mfu:.1f}% of ceiling"),
        ("MFU (fwd+bwd+opt, no data)", f"{100 * mfu_compute:.1f}% of ceiling"),
        ("step share: " + " / ".join(share), " / ".join(f"{100 * v:.0f}%" for v in share.values())),
        ("matmul kernels speed", f"{100 * mm_eff:.0f}% of ceiling (useful model FLOPs / matmul time)"),
        ("generate tokens/s, batch 1", f"{gen1:.0f} ({gen_tokens} new tokens/row)"),
        ("generate tokens/s, batch 16", f"{gen16:.0f} ({gen_tokens} new tokens/row)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print(f"\nLimit: only {100 * share['matmul']:.0f}% of the step is matmul kernels, and they reach "
          f"{100 * mm_eff:.0f}% of the GEMM ceiling on these small shapes; the rest is non-matmul ops and "
          f"Python overhead in fwd/bwd {100 * share['other fwd/bwd']:.0f}%, optimizer {100 * share['optimizer']:.0f}%, "
          f"data encoding {100 * share['data']:.0f}%; padding wastes {1 - tokens / padded:.0%} of token slots.")

if __name__ == "__main__":
    main()
