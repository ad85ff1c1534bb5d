"""Bounded load test of `vrm serve` on loopback: mixed valid, malformed, oversized, streamed and
cancelled requests from concurrent clients against a real server process.

Checks (exit 1 if any fails): every valid request answered (200 with an answer), every bad one a
4xx with an error message, the server alive at the end, its memory flat (resident set after the
run within ``--rss-slack-mb`` of the level after a warm-up round). Prints the figures.

    python benchmarks/serve_load.py --requests 240 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict

import httpx

from vrm.tasks import get_task

KINDS = ("valid", "stream", "cancel", "malformed", "bad_image", "url_image", "oversized", "too_many_tokens")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def messages(url: str, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def request_for(kind: str, sample, url: str, cap: int) -> dict:
    """The method arguments of one request of ``kind``."""
    if kind in ("valid", "stream", "cancel"):
        body = {"messages": messages(url, sample.question), "stream": kind != "valid"}
        if kind == "cancel":  # a long completion, so there is something to cancel
            body.update(messages=messages(url, "Describe the image."), format="caption", max_tokens=200)
        return {"json": body}
    if kind == "malformed":
        return {"content": b'{"messages": [', "headers": {"content-type": "application/json"}}
    if kind == "bad_image":
        return {"json": {"messages": messages("data:image/png;base64," + base64.b64encode(b"\x89PNG broken").decode(), "q")}}
    if kind == "url_image":
        return {"json": {"messages": messages("file:///etc/passwd", "q")}}
    if kind == "oversized":
        return {"content": b"{" + b" " * (cap + 10) + b"}", "headers": {"content-type": "application/json"}}
    if kind == "too_many_tokens":
        return {"json": {"messages": messages(url, sample.question), "max_tokens": 10 ** 6}}
    raise ValueError(kind)


async def one(client: httpx.AsyncClient, kind: str, sample, url: str, cap: int) -> tuple[str, bool, float, str]:
    """Send one request; returns (kind, as expected?, seconds, what happened)."""
    t0 = time.perf_counter()
    args = request_for(kind, sample, url, cap)
    try:
        if kind in ("stream", "cancel"):
            text = ""
            async with client.stream("POST", "/v1/chat/completions", **args) as r:
                if r.status_code != 200:
                    return kind, False, time.perf_counter() - t0, f"status {r.status_code}"
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                        if kind == "cancel" and len(text) >= 5:
                            return kind, True, time.perf_counter() - t0, "cancelled"  # leaving the block closes it
                ok = kind == "cancel" or sample.answer is None or bool(text)
                return kind, ok, time.perf_counter() - t0, "200"
        r = await client.post("/v1/chat/completions", **args)
        if kind == "valid":
            ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
        else:
            ok = 400 <= r.status_code < 500 and bool(r.json().get("error", {}).get("message"))
        return kind, ok, time.perf_counter() - t0, str(r.status_code)
    except httpx.HTTPError as e:
        return kind, False, time.perf_counter() - t0, f"{type(e).__name__}: {e}"


async def run_load(base: str, n: int, clients: int, seed: int, cap: int) -> list[tuple[str, bool, float, str]]:
    rng = random.Random(seed)
    task = get_task("shapes")
    samples = [task.sample(9_500_000 + i) for i in range(16)]
    urls = [data_url(s.image) for s in samples]
    weights = {"valid": 4, "stream": 3, "cancel": 2, "malformed": 1, "bad_image": 1, "url_image": 1, "oversized": 1,
               "too_many_tokens": 1}
    plan = [rng.choices(list(weights), list(weights.values()))[0] for _ in range(n)]
    plan[: len(KINDS)] = KINDS  # every kind at least once
    queue: asyncio.Queue = asyncio.Queue()
    for i, kind in enumerate(plan):
        queue.put_nowait((kind, i % len(samples)))
    results = []

    async def worker():
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            while not queue.empty():
                kind, i = queue.get_nowait()
                results.append(await one(client, kind, samples[i], urls[i], cap))

    await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=240)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="checkpoint (default: the embedded model)")
    p.add_argument("--rss-slack-mb", type=float, default=60.0)
    args = p.parse_args(argv)
    port, cap = free_port(), 1_000_000
    cmd = [sys.executable, "-m", "vrm.cli", "serve", "--port", str(port), "--quiet", "--max-request-mb", "1",
           "--max-queue", str(args.clients * 2)] + (["--model", args.model] if args.model else [])
    server = subprocess.Popen(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                if server.poll() is not None:
                    print("server exited before it was ready", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        asyncio.run(run_load(base, 2 * args.clients, args.clients, args.seed + 1, cap))  # warm-up
        rss_start = httpx.get(base + "/health").json()["rss_mb"]
        t0 = time.perf_counter()
        results = asyncio.run(run_load(base, args.requests, args.clients, args.seed, cap))
        wall = time.perf_counter() - t0
        health = httpx.get(base + "/health", timeout=10).json()
    finally:
        server.terminate()
        server.wait(30)
    by_kind, times, failures = Counter(), defaultdict(list), []
    for kind, ok, seconds, what in results:
        by_kind[kind, ok] += 1
        times[kind].append(seconds)
        if not ok:
            failures.append(f"{kind}: {what}")
    print(f"{len(results)} requests from {args.clients} concurrent clients in {wall:.1f}s "
          f"({len(results) / wall:.1f} requests/s)")
    print(f"{'kind':18s} {'ok':>5s} {'failed':>6s} {'median s':>9s} {'p95 s':>7s}")
    for kind in KINDS:
        ts = sorted(times[kind])
        if ts:
            print(f"{kind:18s} {by_kind[kind, True]:5d} {by_kind[kind, False]:6d} {statistics.median(ts):9.3f} "
                  f"{ts[int(0.95 * (len(ts) - 1))]:7.3f}")
    growth = health["rss_mb"] - rss_start
    print(f"server alive: {health['status']}; served {health['served']}; "
          f"resident memory {rss_start:.0f} MB after warm-up -> {health['rss_mb']:.0f} MB at the end ({growth:+.0f} MB)")
    problems = failures[:10]
    if growth > args.rss_slack_mb:
        problems.append(f"memory grew {growth:.0f} MB (> {args.rss_slack_mb:g} MB)")
    if health["running"] or health["waiting"]:
        problems.append(f"slots still busy at the end: {health}")
    for problem in problems:
        print("FAIL", problem)
    print("load test", "FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
