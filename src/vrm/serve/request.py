"""Reading an OpenAI chat-completions request into an `Ask`, refusing anything unsafe or malformed.

The server only ever looks at images sent inline as ``data:`` URLs: a client-sent path or URL is
refused, never opened or fetched. Every refusal is a `Refused` with a 4xx status and a message
that says what to fix.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from vrm import VrmError
from vrm.formats import get_format
from vrm.images import load_image_bytes
from vrm.serve.engine import Ask, Limits, Refused

SEARCHES = ("greedy",)
DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,(?P<data>.*)", re.DOTALL | re.IGNORECASE)


@dataclass
class ChatRequest:
    ask: Ask
    stream: bool = False
    show_reasoning: bool = False
    search: str = "greedy"


def _bad(message: str) -> Refused:
    return Refused(400, message)


def decode_data_url(url: Any, limits: Limits):
    """The image of a ``data:image/...;base64,`` URL; anything else is refused.

    >>> decode_data_url("file:///etc/passwd", Limits())
    Traceback (most recent call last):
    ...
    vrm.serve.engine.Refused: image_url must be an inline data:image/...;base64 URL; the server never opens paths or fetches URLs
    """
    if not isinstance(url, str) or not (m := DATA_URL.fullmatch(url.strip())):
        raise _bad("image_url must be an inline data:image/...;base64 URL; the server never opens paths or fetches URLs")
    try:
        raw = base64.b64decode("".join(m["data"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad("image_url: the data URL is not valid base64") from None
    try:
        return load_image_bytes(raw, "image_url", max_pixels=limits.max_image_pixels)
    except VrmError as e:
        raise _bad(str(e)) from None


def _parts(message: dict, index: int) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise _bad(f"messages[{index}].content must be a string or a list of content parts")
    return content


def _number(data: dict, key: str, default, low, high, kind=(int, float)):
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise _bad(f"{key} must be a number from {low} to {high}, got {json.dumps(value)[:40]}")
    return value


def _flag(data: dict, key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false")
    return value


def parse_chat(body: bytes, limits: Limits, default_format: str = "direct") -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` body.

    One image (in any user message) and the text of the last user message make the question.
    vrm's extensions: ``format`` (a registered format; ``default_format``, the model's own, when
    absent), ``search`` and ``show_reasoning``.

    >>> parse_chat(b'{"messages": []}', Limits())
    Traceback (most recent call last):
    ...
    vrm.serve.engine.Refused: messages must be a non-empty list of {role, content} objects
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"request body is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _bad("messages must be a non-empty list of {role, content} objects")
    images, question = [], None
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(f"messages[{i}].role must be system, user or assistant")
        if role != "user":
            continue
        texts = []
        for part in _parts(message, i):
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                images.append(url.get("url") if isinstance(url, dict) else url)
            else:
                raise _bad(f"messages[{i}]: content parts must be text or image_url, got {json.dumps(kind)[:40]}")
        question = " ".join(t.strip() for t in texts if t.strip())
    if not images:
        raise _bad("no image: send one image as an image_url content part with a data: URL")
    if len(images) > 1:
        raise _bad(f"one image per request, got {len(images)}")
    if not question:
        raise _bad("no question: the last user message needs a text part")
    fmt = data.get("format", default_format)
    try:
        get_format(fmt if isinstance(fmt, str) else "")
    except VrmError as e:
        raise _bad(str(e)) from None
    if not get_format(fmt).text_only:
        raise _bad(f"format {fmt!r} draws images (visual thoughts); the API serves text formats: use `vrm ask`")
    search = data.get("search") or "greedy"
    if search not in SEARCHES:
        raise _bad(f"unknown search {json.dumps(search)[:40]}; known: {', '.join(SEARCHES)}")
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", min(get_format(fmt).max_new_tokens, limits.max_tokens),
                         1, limits.max_tokens, int)
    ask = Ask(
        image=decode_data_url(images[0], limits),
        question=question,
        format=fmt,
        n=_number(data, "n", 1, 1, limits.max_n, int),
        temperature=float(_number(data, "temperature", 0.0, 0, 2)),
        max_tokens=max_tokens,
    )
    return ChatRequest(ask, _flag(data, "stream"), _flag(data, "show_reasoning"), search)
