"""The model behind the server: admission (a bounded queue), deadlines, batch and streamed generation.

One generation runs at a time (a CPU is saturated by one; a GPU user raises ``concurrency``);
up to ``max_queue`` more wait, and past that a request is refused at once (HTTP 429) instead of
piling up. Every request has a deadline: waiting past it fails (HTTP 503), generating past it
stops early (``finish_reason: "length"``). A streamed generation whose client goes away stops at
its next token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from vrm import VrmError
from vrm.formats import question_prompt
from vrm.infer.generate import Completion, generate_completions, stop_ids


@dataclass
class Limits:
    """What one client may ask of the server."""

    max_request_bytes: int = 8_000_000
    max_image_pixels: int = 4096 * 4096
    max_tokens: int = 512
    max_n: int = 8
    max_queue: int = 32
    concurrency: int = 1
    timeout_s: float = 120.0


class Refused(VrmError):
    """A request the server turns away; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Ask:
    """One validated request: an image, a question, and how to answer it."""

    image: Image.Image
    question: str
    format: str = "direct"
    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 64

    def prompt(self) -> str:
        """The question as the format asks it (formats may add instructions)."""
        return question_prompt(self.format, self.question)


class _Cancelled(StoppingCriteria):
    """Stops generation once ``event`` is set (the client left)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _QueueStreamer(BaseStreamer):
    """Hands each new token id from the generating thread to an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue, self.prompt_seen = loop, queue, False

    def put(self, value):
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, token)

    def end(self):
        pass


class Engine:
    """A loaded model plus the rules for sharing it between clients."""

    def __init__(self, model, processor, name: str, limits: Limits | None = None):
        self.model, self.processor, self.name = model, processor, name
        self.limits = limits or Limits()
        self.running = 0
        self.waiting = 0
        self.served = 0
        self._slots: asyncio.Semaphore | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.limits.concurrency, thread_name_prefix="vrm-generate")
        self._stops = set(stop_ids(model, processor))

    def deadline(self) -> float:
        return time.monotonic() + self.limits.timeout_s

    @asynccontextmanager
    async def slot(self, deadline: float):
        """Wait for a free generation slot: 429 when the queue is full, 503 past the deadline."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.concurrency)
        if self._slots.locked() and self.waiting >= self.limits.max_queue:
            raise Refused(429, f"server busy: {self.waiting} requests already waiting; retry later")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, TimeoutError):
            raise Refused(503, f"timed out after {self.limits.timeout_s:g}s waiting for a free generation slot") from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.served += 1
            self._slots.release()

    def _generate(self, ask: Ask, deadline: float, **kwargs) -> list[Completion]:
        sample = ask.temperature > 0  # greedy n > 1 is n copies of one greedy answer, as OpenAI's API gives
        out = generate_completions(
            self.model, self.processor, [ask.image], [ask.prompt()], max_new_tokens=ask.max_tokens,
            do_sample=sample, temperature=ask.temperature or 1.0, num_return_sequences=ask.n if sample else 1,
            max_time=max(0.01, deadline - time.monotonic()), **kwargs)
        return out if sample else out * ask.n

    async def complete(self, ask: Ask, deadline: float) -> list[Completion]:
        """All ``ask.n`` completions at once (one batch)."""
        async with self.slot(deadline):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._generate, ask, deadline)

    async def stream(self, ask: Ask, deadline: float, info: dict | None = None) -> AsyncIterator[str]:
        """The text of one completion as it is generated, in pieces.

        The first piece is ``""``, yielded as soon as the request holds a slot (so a caller can
        turn a refusal into an HTTP status before it starts a response). The pieces add up to
        exactly the text `complete` returns (ends stripped, stop token dropped). ``info`` receives
        ``completion_tokens`` and ``finish_reason``. Closing the iterator early stops the generation.
        """
        info = {} if info is None else info
        async with self.slot(deadline):
            yield ""
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            cancel = threading.Event()
            done = object()

            def run():
                try:
                    return self._generate(ask, deadline, streamer=_QueueStreamer(loop, queue),
                                          stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]))
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, done)

            future = loop.run_in_executor(self._pool, run)
            tok, ids, sent = self.processor.tokenizer, [], ""
            info["finish_reason"] = "length"
            try:
                while (token := await queue.get()) is not done:
                    if token in self._stops:
                        info["finish_reason"] = "stop"
                        continue
                    if token == tok.pad_token_id:
                        continue
                    ids.append(token)
                    text = tok.decode(ids, skip_special_tokens=False).strip()
                    if text.startswith(sent) and not text.endswith("\ufffd") and len(text) > len(sent):
                        yield text[len(sent):]
                        sent = text
                await future  # raise what the generation raised
                text = tok.decode(ids, skip_special_tokens=False).strip()
                if text.startswith(sent) and len(text) > len(sent):  # a character cut short at the end
                    yield text[len(sent):]
                info["completion_tokens"] = len(ids)
            finally:
                cancel.set()
                if not future.done():
                    await asyncio.shield(future)
