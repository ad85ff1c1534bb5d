"""`vrm` command line: demo, ask, eval, data export, train."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vrm import VrmError  # noqa: E402


def _threads(n: int = 2) -> None:
    import torch

    torch.set_num_threads(n)


def cmd_demo(args) -> None:
    """Questions from every registered task, answered by the model; a table and an HTML report."""
    from vrm.eval.report import write_report
    from vrm.eval.run import evaluate_per_task, format_table
    from vrm.model import load_model
    from vrm.tasks import TASKS, eval_samples, get_task

    _threads()
    t0 = time.time()
    model, processor = load_model(args.model)
    pairs, images = [], {}
    for name in sorted(TASKS):
        task = get_task(name, split="test")
        for s in eval_samples(task, n=args.n, seed=args.seed):
            pairs.append((task, s))
            images[s.id] = s.image
    formats = getattr(model.config, "answer_format", None)  # each task in the format the model answers it in
    summary, records = evaluate_per_task(model, processor, pairs, formats, progress=not args.quiet, total=len(pairs))
    print(format_table(summary, f"vrm demo: {args.model or 'embedded model'}, {args.n} held-out questions per task"))
    report = write_report(Path(args.out) / "report.html", summary, records, images, "vrm demo")
    print(f"report: {report}  ({time.time() - t0:.1f}s)")


def cmd_ask(args) -> None:
    from vrm.formats import answer_format, get_format, question_prompt
    from vrm.images import load_image
    from vrm.infer.generate import generate
    from vrm.model import load_model

    _threads()
    image = load_image(args.image)
    if args.format:
        get_format(args.format)  # a bad name fails before the model loads
    model, processor = load_model(args.model)
    args.format = args.format or answer_format(model)
    fmt = get_format(args.format)
    thoughts = []
    if fmt.name == "visual":
        from vrm.infer.interleaved import generate_visual
        from vrm.model.image_codes import load_checkpoint_image_tokenizer

        reply = generate_visual(model, processor, load_checkpoint_image_tokenizer(args.model), [image],
                                [question_prompt(args.format, args.question)])[0]
        out, thoughts = reply.text, reply.images
    else:
        out = generate(model, processor, [image], [question_prompt(args.format, args.question)],
                       max_new_tokens=args.max_new_tokens or fmt.max_new_tokens)[0]
    parsed = fmt.parse(out)
    if args.show_reasoning:
        for name, text in parsed.stages.items():
            print(f"[{name}] {text}")
        if thoughts:
            folder = Path(args.thoughts)
            folder.mkdir(parents=True, exist_ok=True)
            for k, picture in enumerate(thoughts, start=1):
                picture.save(folder / f"thought_{k}.png")
            print(f"[visual thoughts] {len(thoughts)} images: {folder}/thought_1.png ...")
        else:
            print(f"[output] {out}")
    print(parsed.answer if parsed.ok else f"(unparsed) {out}")


def cmd_eval(args) -> None:
    from vrm.config import parse_overrides
    from vrm.eval.report import write_report
    from vrm.eval.run import evaluate, format_table
    from vrm.eval.visual import visual_table
    from vrm.files import write_atomic
    from vrm.formats import answer_format, get_format
    from vrm.infer.scorers import get_scorer
    from vrm.infer.search import get_strategy
    from vrm.model import load_model
    from vrm.tasks import JsonlTask, count_samples, eval_samples, get_task

    _threads()
    temperature = {} if args.temperature is None else {"temperature": args.temperature}
    strategy = get_strategy(args.search, **temperature)  # a bad name fails before the model loads
    get_scorer(args.scorer)
    if args.format:
        get_format(args.format)
    if bool(args.task) == bool(args.data):
        raise VrmError("give exactly one of --task NAME or --data FILE.jsonl")
    if args.data and args.params:
        raise VrmError("task parameters (key=value) apply to --task, not to --data")
    task = JsonlTask(args.data) if args.data else get_task(args.task, split=args.split, **parse_overrides(args.params))
    samples = eval_samples(task, n=args.n, seed=args.seed)
    if args.report:
        samples = list(samples)  # the report needs the images again
    total = count_samples(task, args.n)
    model, processor = load_model(args.model)
    args.format = args.format or answer_format(model, None if args.data else task.name)
    image_tokenizer, thoughts = None, {}
    if args.format == "visual":
        from vrm.model.image_codes import load_checkpoint_image_tokenizer

        image_tokenizer = load_checkpoint_image_tokenizer(args.model)
    started = time.perf_counter()
    summary, records = evaluate(model, processor, ((task, s) for s in samples), args.format,
                                batch_size=args.batch_size, progress=not args.quiet, total=total,
                                search=strategy, scorer=args.scorer, image_tokenizer=image_tokenizer,
                                thoughts=thoughts, max_new_tokens=args.max_new_tokens)
    print(format_table(summary, f"{args.task or args.data} ({args.format})"))
    if "visual" in summary:
        print(visual_table(summary))
    if args.json:
        write_atomic(args.json, json.dumps({**summary, "model": args.model or "embedded", "format": args.format,
                                            "task": args.task, "data": args.data, "seed": args.seed}, indent=2))
    if args.records:
        write_atomic(args.records, "".join(json.dumps(r) + "\n" for r in records))
    if args.report:
        runs = record_run(Path(args.report) / "runs.jsonl", {
            "name": args.format if args.search == "greedy" else
            f"{args.format} {args.search} {args.scorer}" + (f" T={args.temperature}" if temperature else ""),
            "accuracy": summary["accuracy"], "seconds": time.perf_counter() - started, "n": summary["n"],
            "model": args.model or "embedded", "data": args.task or args.data})
        path = write_report(Path(args.report) / "report.html", summary, records, {s.id: s.image for s in samples},
                            f"vrm eval: {args.task or args.data}", runs=runs if len(runs) > 1 else None,
                            thoughts=thoughts)
        print(f"report: {path}")


def record_run(path: Path, run: dict) -> list[dict]:
    """Add this evaluation to the report folder's runs (same data, same model) and return them all:
    successive `vrm eval --report DIR --search ...` calls build DIR's accuracy-vs-compute plot."""
    from vrm.files import write_atomic

    runs = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    runs = [r for r in runs if (r["data"], r["model"], r["name"]) != (run["data"], run["model"], run["name"])]
    runs.append(run)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in runs))
    return [r for r in runs if (r["data"], r["model"]) == (run["data"], run["model"])]


def cmd_export(args) -> None:
    from tqdm.auto import tqdm

    from vrm.config import parse_overrides
    from vrm.tasks import count_samples, eval_samples, get_task, write_dataset

    task = get_task(args.task, **{**parse_overrides(args.params), "split": args.split})
    samples = eval_samples(task, n=args.n, seed=args.seed, split=args.split)
    n = count_samples(task, args.n)
    with tqdm(total=n, desc="export", disable=args.quiet) as bar:
        path = write_dataset(samples, args.out, bar)
    print(f"wrote {n} rows to {path}")


def recipe_stages(recipe: str | None) -> list[str]:
    """What `vrm train all` runs: the recipe's vision stage (if any), align, sft, then its
    reasoning stage (if any)."""
    from vrm.config import recipe_has

    has = (lambda section: bool(recipe) and recipe_has(recipe, section))
    return ["vision"] * has("vision") + ["align", "sft"] + ["reasoning"] * has("reasoning")


def cmd_train(args) -> None:
    from vrm.config import load_config
    from vrm.train import align, grpo, mvot, sft, vision, vq

    stages = {"vision": (vision.VisionConfig, vision.run), "align": (align.AlignConfig, align.run),
              "sft": (sft.SFTConfig, sft.run), "reasoning": (sft.SFTConfig, sft.run),
              "grpo": (grpo.GRPOConfig, grpo.run), "vq": (vq.VQConfig, vq.run), "mvot": (mvot.MVoTConfig, mvot.run)}
    names = recipe_stages(args.recipe) if args.stage == "all" else [args.stage]
    if args.section and len(names) > 1:
        raise VrmError("--section reads one stage's settings; name the stage, not 'all'")
    t0 = time.time()
    for name in names:
        cls, run = stages[name]
        overrides = args.overrides + (["progress=false"] if args.quiet else [])
        section = (args.section or name) if args.recipe else None
        cfg = load_config(cls, args.recipe, section, overrides)
        run(cfg)
        print(f"learning curve of {name} ({cfg.out_dir}/log.jsonl):")
        for line in (Path(cfg.out_dir) / "log.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if "eval" in entry:
                tasks = "  ".join(f"{k} {100 * v:5.1f}%" for k, v in entry["eval"]["per_task"].items())
                print(f"  step {entry['step']:6d}  {entry.get('elapsed', 0):7.0f}s  accuracy {100 * entry['eval']['accuracy']:5.1f}%  {tasks}")
    print(f"wall time {time.time() - t0:.0f}s")


def cmd_serve(args) -> None:
    from vrm.serve import Limits, serve

    _threads()
    limits = Limits(max_queue=args.max_queue, max_tokens=args.max_tokens, timeout_s=args.timeout,
                    max_request_bytes=args.max_request_mb * 1_000_000)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"vrm serve: listening on {args.host}, reachable from other machines", file=sys.stderr)
    serve(args.model, args.host, args.port, limits, "warning" if args.quiet else "info")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vrm", description="visual reasoning models")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="answer held-out questions of every task; table + out/demo/report.html")
    d.add_argument("--model", help="checkpoint folder or hub id (default: the embedded model)")
    d.add_argument("--n", type=int, default=100, help="questions per task")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="out/demo")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("ask", help="ask one question about one image")
    a.add_argument("question")
    a.add_argument("--image", required=True)
    a.add_argument("--model")
    a.add_argument("--format", help="direct, think, stages, caption, visual (default: the model's own, "
                                    "config.answer_format, else direct)")
    a.add_argument("--show-reasoning", action="store_true",
                   help="print every stage; the visual format also saves its visual thoughts as PNGs")
    a.add_argument("--thoughts", default="out/ask", help="folder for the visual thoughts (--show-reasoning)")
    a.add_argument("--max-new-tokens", type=int, help="default: enough for the format")
    a.set_defaults(func=cmd_ask)

    e = sub.add_parser("eval", help="accuracy on a task or a JSONL dataset")
    e.add_argument("--task")
    e.add_argument("--data", help="a data.jsonl file")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--n", type=int, help="number of questions (default: 1000, or the whole dataset)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--model")
    e.add_argument("--format", help="default: the model's own (config.answer_format), else direct")
    e.add_argument("--search", default="greedy",
                   help="greedy, sample[:T], best_of:N, sentence_beam:N or stage_beam:N (needs --format stages); "
                        "N+greedy: the first candidate greedy; N+distinct (or N+greedy+distinct): no candidate "
                        "repeats another where the model gives other tokens 0.1 of its probability")
    e.add_argument("--scorer", default="likelihood",
                   help="how search picks a candidate: likelihood, judge, consensus, reward:pkg.module:function, "
                        "verifier (oracle)")
    e.add_argument("--temperature", type=float,
                   help="what --search's sampled candidates sample at (default 0.7; sample:T names its own)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--max-new-tokens", type=int, help="answer budget (default: the format's)")
    e.add_argument("--json", help="write the summary here")
    e.add_argument("--records", help="write per-sample records (JSONL) here")
    e.add_argument("--report", help="write an HTML report into this folder")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("params", nargs="*", help="task parameters as key=value (e.g. style=short sizes=6)")
    e.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="datasets in and out").add_subparsers(dest="action", required=True)
    x = data.add_parser("export", help="write DIR/data.jsonl + DIR/images/")
    x.add_argument("--task", required=True)
    x.add_argument("--n", type=int)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--split", default="train", choices=["train", "test"])
    x.add_argument("--out", required=True)
    x.add_argument("--quiet", action="store_true")
    x.add_argument("params", nargs="*", help="task parameters as key=value (e.g. max_objects=8)")
    x.set_defaults(func=cmd_export)

    t = sub.add_parser("train", help="train a stage of the recipe (vision for a from-scratch tower, align, sft, "
                                      "reasoning: sft on step-by-step reasoning; all: the recipe's stages in "
                                      "order), RL it (grpo), "
                                      "or teach it visual thoughts (vq: the image tokenizer, then mvot)")
    t.add_argument("stage", choices=["vision", "align", "sft", "reasoning", "grpo", "vq", "mvot", "all"])
    t.add_argument("--recipe", help="YAML recipe, e.g. recipes/tiny.yaml")
    t.add_argument("--section", help="the recipe's section to read (default: the stage's name), e.g. mvot_long "
                                     "for a second mvot stage")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 tiny.lm_layers=2 (one entry); \"tasks={shapes: 1}\" replaces the whole value")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("serve", help="OpenAI-compatible API (POST /v1/chat/completions) and a web page at /")
    v.add_argument("--model", help="checkpoint folder or hub id (default: the embedded model)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--max-queue", type=int, default=32, help="requests that may wait; past this a 429")
    v.add_argument("--max-tokens", type=int, default=512, help="cap on max_tokens per request")
    v.add_argument("--max-request-mb", type=int, default=8, help="cap on a request body")
    v.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait and generate")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=cmd_serve)

    from vrm.tasks.clevr.cli import add_clevr_commands

    add_clevr_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if getattr(args, "command", None) in ("train", "eval") and all("=" in x and not x.startswith("-") for x in extra):
        # key=value after an option: argparse stops collecting positionals there
        target = "overrides" if args.command == "train" else "params"
        setattr(args, target, getattr(args, target) + extra)
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    from vrm.train import end_distributed

    try:
        args.func(args)
    except VrmError as e:
        end_distributed(ok=False)
        print(f"vrm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        end_distributed(ok=False)
        print("vrm: interrupted", file=sys.stderr)
        return 130
    end_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
