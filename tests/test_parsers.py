"""Property-based tests: every parser of outside input gives a result or its own clear error, never
an unexpected exception (format parsers, the server's request reader, config overrides)."""

from __future__ import annotations

import base64
import io
import json

from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from vrm import VrmError
from vrm.config import parse_overrides
from vrm.formats import FORMATS
from vrm.serve.engine import Limits, Refused
from vrm.serve.request import parse_chat

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def tiny_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


PNG = tiny_png()
part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30) | json_values}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": st.fixed_dictionaries({"url": st.just(PNG) | st.text(max_size=30)}) | json_values}),
    json_values,
)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "robot"]) | json_values,
                                 "content": st.text(max_size=20) | st.lists(part, max_size=3) | json_values})
request = st.fixed_dictionaries(
    {"messages": st.lists(message, max_size=3) | json_values},
    optional={"n": json_values, "temperature": json_values, "max_tokens": json_values, "stream": json_values,
              "format": st.sampled_from(list(FORMATS)) | json_values, "search": json_values,
              "show_reasoning": json_values},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request)
def test_chat_request_reader_never_crashes(body):
    try:
        req = parse_chat(json.dumps(body).encode(), Limits())
    except Refused as e:
        assert e.status == 400 and str(e)
    else:  # what passes is well formed
        assert req.ask.question and req.ask.image.mode == "RGB"
        assert 1 <= req.ask.n <= Limits().max_n and 1 <= req.ask.max_tokens <= Limits().max_tokens


@given(st.binary(max_size=200))
def test_chat_request_reader_takes_any_bytes(body):
    try:
        parse_chat(body, Limits())
    except Refused as e:
        assert e.status == 400


@given(st.text(max_size=200), st.sampled_from(sorted(FORMATS)))
def test_format_parsers_never_crash(text, name):
    parsed = FORMATS[name].parse(text)
    assert isinstance(parsed.answer, str) and isinstance(parsed.ok, bool)
    assert parsed.ok == bool(parsed.answer) or FORMATS[name].structured


@given(st.lists(st.text(max_size=30), max_size=4))
def test_config_overrides_never_crash(items):
    try:
        parse_overrides(items)
    except VrmError as e:
        assert str(e)
