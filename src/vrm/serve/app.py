"""`vrm serve`: an OpenAI-compatible chat-completions server and the web page, on FastAPI + uvicorn.

Routes: ``POST /v1/chat/completions`` (``stream``, ``n``, ``temperature``, ``max_tokens``, and vrm's
``format`` / ``search`` / ``show_reasoning``), ``GET /v1/models``, ``GET /health``, ``GET /`` (the page).
Errors are OpenAI-shaped: ``{"error": {"message", "type", "code"}}`` with a 4xx status for the
client's mistakes.

Structured formats stream their reasoning as ``delta.reasoning_content`` and the parsed answer
as ``delta.content`` at the end (the convention reasoning-model APIs use); plain formats stream
``delta.content`` as it is generated.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from vrm.formats import FORMATS, answer_format, get_format
from vrm.infer.generate import Completion
from vrm.serve.engine import Engine, Refused
from vrm.serve.request import ChatRequest, parse_chat


def error_body(message: str, status: int) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux), for /health and the load test."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return float("nan")


async def read_body(request: Request, cap: int, timeout: float) -> bytes:
    """The request body, refused with 413 past ``cap`` bytes and 408 if it trickles in too slowly."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise Refused(413, f"request body is {int(length):,} bytes; the limit is {cap:,}")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise Refused(413, f"request body is over the limit of {cap:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise Refused(408, f"request body not received within {timeout:g}s") from None


def message_of(req: ChatRequest, completion: Completion) -> dict:
    """The assistant message for one completion: the answer, and the reasoning when asked for."""
    fmt = get_format(req.ask.format)
    parsed = fmt.parse(completion.text)
    content = parsed.answer if fmt.structured and parsed.ok else completion.text
    message = {"role": "assistant", "content": content}
    if req.show_reasoning and fmt.structured:
        message["reasoning_content"] = completion.text
        message["stages"] = parsed.stages
        message["parsed"] = parsed.ok
    return message


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="vrm", docs_url=None, redoc_url=None)
    app.state.engine = engine
    limits = engine.limits

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(error_body(str(exc), exc.status), status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", 500), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("vrm.serve").joinpath("static/index.html").read_text()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "running": engine.running, "waiting": engine.waiting,
                "served": engine.served, "rss_mb": round(rss_mb(), 1),
                "formats": [name for name, f in FORMATS.items() if f.text_only]}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "vrm"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_body(request, limits.max_request_bytes, limits.timeout_s)
        req = parse_chat(body, limits, answer_format(engine.model))
        deadline = engine.deadline()
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": engine.name}
        if req.stream:
            return await stream_response(req, head, deadline)
        completions = await engine.complete(req.ask, deadline)
        prompt = completions[0].prompt_tokens
        used = sum(c.completion_tokens for c in completions)
        return {**head, "object": "chat.completion",
                "choices": [{"index": i, "message": message_of(req, c), "finish_reason": c.finish_reason}
                            for i, c in enumerate(completions)],
                "usage": {"prompt_tokens": prompt, "completion_tokens": used, "total_tokens": prompt + used}}

    async def stream_response(req: ChatRequest, head: dict, deadline: float) -> StreamingResponse:
        structured = get_format(req.ask.format).structured
        key = "reasoning_content" if structured else "content"

        def chunk(index: int, delta: dict, finish: str | None = None) -> str:
            body = {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(body)}\n\n"

        if req.ask.n > 1:  # several choices: generate them as one batch, then send each whole
            completions = await engine.complete(req.ask, deadline)

            async def events():
                for i, c in enumerate(completions):
                    yield chunk(i, {"role": "assistant", "content": ""})
                    yield chunk(i, {"content": message_of(req, c)["content"]}, c.finish_reason)
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        info: dict = {}
        pieces = engine.stream(req.ask, deadline, info)
        await pieces.__anext__()  # holds a slot now, or raised Refused (-> 429/503) before any byte is sent

        async def events():
            text = ""
            try:
                yield chunk(0, {"role": "assistant", "content": ""})
                async for piece in pieces:
                    text += piece
                    yield chunk(0, {key: piece})
                if structured:
                    parsed = get_format(req.ask.format).parse(text)
                    yield chunk(0, {"content": parsed.answer if parsed.ok else text})
                yield chunk(0, {}, info.get("finish_reason", "stop"))
                yield "data: [DONE]\n\n"
            finally:
                await pieces.aclose()  # a client that left stops the generation here

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
