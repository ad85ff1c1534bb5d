"""Formats: how a sample becomes a target text, and how a completion is parsed back.

Every format has ``target(sample, task) -> str`` and ``parse(completion) -> Parsed``. The
structured formats (R1 think/answer, LLaVA-CoT stages, MVoT visual) register here too.
"""

from __future__ import annotations

from vrm import VrmError
from vrm.formats.direct import CaptionFormat, DirectFormat, Parsed
from vrm.formats.structured import StagesFormat, ThinkFormat
from vrm.formats.visual import VisualFormat

FORMATS = {"direct": DirectFormat(), "caption": CaptionFormat(), "think": ThinkFormat(), "stages": StagesFormat(),
           "visual": VisualFormat()}


def question_prompt(name: str, question: str) -> str:
    """How format ``name`` asks a bare question (no sample around it), e.g. for `vrm ask` and the server.

    >>> question_prompt("direct", "How many?")
    'How many?'
    """
    from vrm.tasks.base import Sample

    return get_format(name).prompt(Sample("question", None, question, "", "question"))


def answer_format(model) -> str:
    """The format a model answers in when none is asked: the one its training recorded
    (``config.answer_format``, set by ``vrm train ... answer_format=think``), else ``direct``."""
    return getattr(model.config, "answer_format", None) or "direct"


def get_format(name: str):
    if name not in FORMATS:
        raise VrmError(f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]


__all__ = ["FORMATS", "Parsed", "answer_format", "get_format", "question_prompt"]
