"""Search at inference time: accuracy and wall time of greedy decoding, best-of-N, sentence-level
beam and stage-level beam (LLaVA-CoT) at several N with the judge and likelihood scorers, and the
speed of vrm's stage beam against LLaVA-CoT's reference loop at equal N.

    python benchmarks/search.py --quick                  # a short run (a few minutes on 2 CPU cores)
    python benchmarks/search.py --model out/sft --n 100 --report out/search

The reference loop (`reference_stage_beam`) does what LLaVA-CoT's published inference code does,
question by question: for each stage, each of the N candidates is one HF ``generate`` call that
re-encodes the image and the whole prefix; the knockout then judges two randomly drawn candidates
at a time, each comparison one more ``generate`` call. Two changes make the comparison fair and
about the search itself, not the judge's verbosity: the stage's opening tag is forced (as vrm's
stage beam does, so an untrained model follows the structure too), and each judgement reads the
logits of "1" and "2" after one generated token, where the original generates a sentence and
searches it for "I choose response 1". Same model, same N, same judging prompt, same token budgets.

With ``--report DIR`` the points of an accuracy-vs-compute plot go into DIR/search.html.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vrm.eval.run import answer_record, summarize  # noqa: E402
from vrm.formats import get_format  # noqa: E402
from vrm.formats.structured import STAGES  # noqa: E402
from vrm.infer.decode import Candidate, Stats, single_token  # noqa: E402
from vrm.infer.generate import prompt_text, stop_ids  # noqa: E402
from vrm.infer.scorers import Choice, Query, judge_prompt  # noqa: E402
from vrm.infer.search import DEFAULT_TEMPERATURE, get_strategy, run_search  # noqa: E402
from vrm.model import load_model  # noqa: E402
from vrm.tasks import eval_samples, get_task  # noqa: E402


@torch.inference_mode()
def reference_stage_beam(model, processor, query: Query, n: int, max_new_tokens: int, stats: Stats,
                         temperature: float = DEFAULT_TEMPERATURE, seed: int = 0) -> str:
    """LLaVA-CoT's stage-level beam search as its reference code runs it (see the module docstring):
    no shared cache, one ``generate`` per candidate and per judgement, one question at a time."""
    tok = processor.tokenizer
    stops = stop_ids(model, processor)
    one, two = single_token(processor, "1"), single_token(processor, "2")
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    head, answer = prompt_text(processor, query.prompt), ""

    def run(text: str, **kwargs):
        inputs = processor(images=[query.image], text=[text], return_tensors="pt").to(model.device)
        out = model.generate(**inputs, pad_token_id=pad, top_p=None, top_k=None, return_dict_in_generate=True, **kwargs)
        new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        stats.images += 1
        stats.encoded += inputs["input_ids"].shape[1]
        stats.forwards += len(new)
        return new, out

    for stage in STAGES:
        close = f"</{stage}>"
        used = len(tok.encode(answer, add_special_tokens=False)) + 1
        budget = max(1, max_new_tokens - used)
        candidates = []
        for _ in range(n):
            new, _ = run(head + answer + f"<{stage}>", do_sample=True, temperature=temperature, max_new_tokens=budget,
                         eos_token_id=[single_token(processor, close), *stops])
            stats.tokens += len(new)
            cut = next((i for i, t in enumerate(new) if t == single_token(processor, close) or t in stops), len(new))
            candidates.append(tok.decode(new[:cut], skip_special_tokens=False))
        while len(candidates) > 1:
            a = candidates.pop(rng.randrange(len(candidates)))
            b = candidates.pop(rng.randrange(len(candidates)))
            choice = Choice(query, stage, answer + f"<{stage}>", [Candidate([], [], None, a), Candidate([], [], None, b)], close)
            _, out = run(prompt_text(processor, judge_prompt(choice, 0, 1)), do_sample=False, max_new_tokens=1,
                         output_logits=True)
            logits = out.logits[0][0]
            stats.comparisons += 1
            candidates.append(a if logits[one] >= logits[two] else b)
        answer += f"<{stage}>{candidates[0]}{close}"
    return answer


def score(fmt, pairs, outputs: list[str]) -> tuple[dict, list[dict]]:
    """Parse and score completions the way `vrm.eval.run.evaluate` does."""
    records = [answer_record(task, s, fmt, out) for (task, s), out in zip(pairs, outputs)]
    return summarize(records), records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--task", default="clevr")
    ap.add_argument("--n", type=int, default=None, help="questions (default 100, quick 8)")
    ap.add_argument("--format", default="stages")
    ap.add_argument("--beams", default=None, help="values of N, comma-separated (default 2,4)")
    ap.add_argument("--strategies", default="best_of,sentence_beam,stage_beam",
                    help="which searches to run beside greedy, comma-separated")
    ap.add_argument("--include-greedy", action="store_true",
                    help="each search's first candidate is the greedy one (strategy N+greedy)")
    ap.add_argument("--distinct", default="0",
                    help="comma-separated masses at which candidates branch apart (strategy N+distinct; 0 = plain "
                         "sampling): each search runs with each, side by side")
    ap.add_argument("--temperatures", default=str(DEFAULT_TEMPERATURE),
                    help="what the sampled candidates sample at, comma-separated: each search runs at each")
    ap.add_argument("--scorers", default="judge,likelihood",
                    help="comma-separated: judge, likelihood, consensus; add verifier for the oracle")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="answer budget (default: the format's; quick 96)")
    ap.add_argument("--reference-n", type=int, default=20,
                    help="questions for the slow reference loop (default 20, 0 = skip it; its speed is per question)")
    ap.add_argument("--max-rows", type=int, default=64, help="candidate rows per batch (questions x N)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", help="write DIR/search.html with the accuracy-vs-compute plot")
    ap.add_argument("--quick", action="store_true", help="few questions, short answers: a smoke test")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    n = args.n or (8 if q else 100)
    beams = [int(b) for b in (args.beams or "2,4").split(",")]
    scorers, kinds = args.scorers.split(","), args.strategies.split(",")
    temperatures = [float(t) for t in args.temperatures.split(",")]
    at = (lambda t: "") if temperatures == [DEFAULT_TEMPERATURE] else (lambda t: f"@{t:g}")  # in the row names
    fmt = get_format(args.format)
    max_new = args.max_new_tokens or (96 if q else fmt.max_new_tokens)

    model, processor = load_model(args.model)
    task = get_task(args.task, split="test")
    pairs = [(task, s) for s in eval_samples(task, n=n, seed=args.seed)]
    queries = [Query(s.image, fmt.prompt(s), s, t) for t, s in pairs]
    print(f"{args.model or 'embedded model'} on {n} {args.task} questions, format {fmt.name}, "
          f"{max_new} new tokens at most, threads {args.threads}", flush=True)

    plus = "+greedy" if args.include_greedy else ""
    masses = [float(d) for d in args.distinct.split(",")]
    variants = [("", {}) if d == 0 else ("+distinct" + (f"{d:g}" if len(masses) > 1 else ""), {"distinct": d})
                for d in masses]  # (row-name suffix, get_strategy arguments)
    plan = [("greedy", "-", get_strategy("greedy"))] + [
        (f"{kind}:{b}{plus}{v}{at(t)}", sc, get_strategy(f"{kind}:{b}{plus}{'+distinct' if kw else ''}", temperature=t, **kw))
        for b in beams for sc in scorers for kind in kinds for v, kw in variants for t in temperatures]
    first = plus + variants[0][0]  # the variant the speed comparison and the report take
    rows, runs, kept = [], [], {}
    for strategy, scorer, search in plan:
        result = run_search(model, processor, queries, search, "likelihood" if scorer == "-" else scorer, fmt.name,
                            max_new, args.max_rows)
        summary, records = score(fmt, pairs, result.completions)
        rows.append((strategy, scorer, summary["accuracy"], result.stats, n))
        runs.append({"name": strategy if scorer == "-" else f"{strategy} {scorer}", "accuracy": summary["accuracy"],
                     "seconds": result.stats.seconds})
        kept[(strategy, scorer)] = (summary, records)
        print(f"  {strategy:22s} {scorer:10s} {100 * summary['accuracy']:5.1f}%  {result.stats.seconds:7.1f}s", flush=True)

    ref_n = min(n, args.reference_n)
    for b in beams if ref_n > 0 else []:
        stats = Stats()
        t0 = time.perf_counter()
        outputs = [reference_stage_beam(model, processor, qq, b, max_new, stats, seed=args.seed + i)
                   for i, qq in enumerate(queries[:ref_n])]
        stats.seconds = time.perf_counter() - t0
        summary, _ = score(fmt, pairs[:ref_n], outputs)
        rows.append((f"reference:{b}", "judge", summary["accuracy"], stats, ref_n))
        scaled = f" (time x{n / ref_n:.1f})" if ref_n < n else ""  # its time for all n questions
        runs.append({"name": f"LLaVA-CoT reference:{b}{scaled}", "accuracy": summary["accuracy"],
                     "seconds": stats.seconds * n / ref_n})
        print(f"  {'reference:%d' % b:22s} {'judge':10s} {100 * summary['accuracy']:5.1f}%  {stats.seconds:7.1f}s", flush=True)

    print(f"\n{'strategy':22s} {'scorer':10s} {'acc':>6s} {'seconds':>8s} {'s/q':>6s} {'tokens':>7s} {'forwards':>8s} "
          f"{'images':>6s} {'encoded':>8s} {'judged':>6s} {'repeats':>7s}")
    for strategy, scorer, acc, st, m in rows:
        print(f"{strategy:22s} {scorer:10s} {100 * acc:5.1f}% {st.seconds:8.1f} {st.seconds / m:6.2f} {st.tokens:7d} "
              f"{st.forwards:8d} {st.images:6d} {st.encoded:8d} {st.comparisons:6d} {st.repeats:7d}")
    print("(tokens: sampled; encoded: prompt/prefix tokens run through the model; images: vision-tower passes;"
          " repeats: candidates identical to an earlier one of their step; reference rows on %d question(s))" % ref_n)
    accuracy = {(s, sc): a for s, sc, a, _, _ in rows}
    for sc, v, t in [(sc, v, t) for sc in scorers for v, _ in variants for t in temperatures] if "stage_beam" in kinds else []:
        gain = 100 * (accuracy[(f"stage_beam:{max(beams)}{plus}{v}{at(t)}", sc)] - accuracy[("greedy", "-")])
        print(f"stage beam N={max(beams)}{plus}{v}{at(t)} ({sc}) vs greedy: {gain:+.1f} points")
    per_q = {(s, sc): st.seconds / m for s, sc, _, st, m in rows}
    for b in beams:
        ours = per_q.get((f"stage_beam:{b}{first}{at(temperatures[0])}", "judge"))
        ref = per_q.get((f"reference:{b}", "judge"))
        if ours and ref:
            print(f"stage beam vs reference (N={b}, judge): {ref / ours:.1f}x faster")

    if args.report:
        from vrm.eval.report import write_report

        key = (f"stage_beam:{max(beams)}{first}{at(temperatures[0])}", scorers[0])
        summary, records = kept.get(key, kept[("greedy", "-")])
        path = write_report(Path(args.report) / "search.html", summary, records, {s.id: s.image for _, s in pairs},
                            f"vrm search benchmark: {key[0]} {key[1]} (gallery), all runs in the plot", runs=runs)
        print(f"report: {path}")


if __name__ == "__main__":
    main()
