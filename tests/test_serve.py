"""`vrm serve`: the OpenAI client works unchanged against it; bad requests get clear 4xx errors;
the queue limit, deadlines and client cancellation behave."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import httpx
import pytest

from vrm.infer.generate import generate
from vrm.serve import Engine, Limits
from vrm.serve.app import create_app
from vrm.serve.engine import Ask
from vrm.tasks import get_task

openai = pytest.importorskip("openai")


def data_url(image, kind="PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def user(url: str, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def count_sample():
    task = get_task("shapes", families=("count_all",))
    return task.sample(9_000_011)


def test_openai_client_unchanged(server, loaded, count_sample):
    """The official client: answer, streaming, n, models — and the answer is the model's own."""
    base, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
    messages = user(data_url(count_sample.image), count_sample.question)
    expected = generate(*loaded, [count_sample.image], [count_sample.question], max_new_tokens=64)[0]
    assert expected == count_sample.answer  # the embedded model counts all shapes right (100% held out)

    reply = client.chat.completions.create(model="vrm-tiny", messages=messages)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens > 16  # 16 image tokens + text

    pieces = [c.choices[0].delta.content or "" for c in
              client.chat.completions.create(model="vrm-tiny", messages=messages, stream=True)]
    assert "".join(pieces) == expected

    several = client.chat.completions.create(model="vrm-tiny", messages=messages, n=3, temperature=1.0)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert [m.id for m in client.models.list().data] == ["vrm-tiny"]


def test_stream_adds_up_to_the_whole_caption(server, count_sample):
    """A long completion streamed piece by piece is exactly the non-streamed one."""
    base, _ = server
    body = {"messages": user(data_url(count_sample.image), "Describe the image."), "format": "caption", "max_tokens": 96}
    whole = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]["content"]
    text, chunks = "", 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: {"):
                import json

                text += json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                chunks += 1
    assert text == whole and len(whole.split()) > 5 and chunks > 5


@pytest.mark.parametrize("body, status, says", [
    (b"not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"messages": []}', 400, "non-empty list"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "no image"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}},'
     b' {"type": "text", "text": "q"}]}]}', 400, "never opens paths"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},'
     b' {"type": "text", "text": "q"}]}]}', 400, "fetches URLs"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},'
     b' {"type": "text", "text": "q"}]}]}', 400, "not valid base64"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},'
     b' {"type": "text", "text": "q"}]}]}', 400, "not a readable image"),
    (b"x" * 300_000, 413, "limit"),
])
def test_bad_requests_get_a_clear_4xx(server, body, status, says):
    base, _ = server
    r = httpx.post(f"{base}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status
    assert says in r.json()["error"]["message"]


def test_limits_on_pixels_tokens_n_and_options(server, count_sample):
    from PIL import Image

    base, _ = server
    small = data_url(count_sample.image)
    cases = [
        ({"messages": user(data_url(Image.new("RGB", (600, 600))), "q")}, "over 262,144 pixels"),
        ({"messages": user(small, "q"), "max_tokens": 97}, "max_tokens must be"),
        ({"messages": user(small, "q"), "n": 9}, "n must be"),
        ({"messages": user(small, "q"), "format": "poetry"}, "unknown format"),
        ({"messages": user(small, "q"), "search": "telepathy"}, "unknown search"),
        ({"messages": user(small, "q") + user(small, "again")}, "one image per request"),
    ]
    for body, says in cases:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 400 and says in r.json()["error"]["message"], (body.keys(), r.text)
    assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_page_and_health(server):
    base, _ = server
    page = httpx.get(base + "/")
    assert page.status_code == 200 and "/v1/chat/completions" in page.text
    health = httpx.get(base + "/health").json()
    assert health["model"] == "vrm-tiny" and "direct" in health["formats"]


def test_full_queue_is_refused_and_waiting_times_out(loaded, count_sample):
    """One request holds the only slot: with no queue the next is a 429; with a queue it waits
    until the deadline and gets a 503."""

    async def scenario(max_queue: int) -> httpx.Response:
        engine = Engine(*loaded, "vrm-tiny", Limits(max_queue=max_queue, timeout_s=0.3))
        transport = httpx.ASGITransport(app=create_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with engine.slot(time.monotonic() + 10):
                return await client.post("/v1/chat/completions", json={"messages": user(data_url(count_sample.image), "q")})

    busy = asyncio.run(scenario(0))
    assert busy.status_code == 429 and "busy" in busy.json()["error"]["message"] and busy.headers["retry-after"]
    late = asyncio.run(scenario(4))
    assert late.status_code == 503 and "timed out" in late.json()["error"]["message"]


def test_closing_a_stream_stops_generation_and_frees_the_slot(loaded, count_sample):
    async def scenario():
        engine = Engine(*loaded, "vrm-tiny")
        ask = Ask(count_sample.image, "Describe the image.", format="caption", max_tokens=200)
        stream = engine.stream(ask, engine.deadline())
        assert await stream.__anext__() == ""  # holds the slot
        assert engine.running == 1
        await stream.__anext__()
        await stream.aclose()
        return engine

    engine = asyncio.run(scenario())
    assert engine.running == 0 and engine.served == 1


def test_a_request_without_format_gets_the_models_own(count_sample):
    """The server passes the model's recorded answer format (config.answer_format) as the default."""
    import json as _json

    from vrm.serve.request import parse_chat

    body = _json.dumps({"messages": user(data_url(count_sample.image), "How many shapes?")}).encode()
    assert parse_chat(body, Limits()).ask.format == "direct"
    assert parse_chat(body, Limits(), "think").ask.format == "think"
    assert parse_chat(body, Limits(), "think").ask.max_tokens == 512  # the think format's budget (800), capped by Limits
    assert parse_chat(body, Limits(max_tokens=1000), "think").ask.max_tokens == 800
    asked = _json.dumps({"messages": user(data_url(count_sample.image), "How many?"), "format": "direct"}).encode()
    assert parse_chat(asked, Limits(), "think").ask.format == "direct"
