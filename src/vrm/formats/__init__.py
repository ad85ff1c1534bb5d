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


def format_for(spec: str | dict | None, task: str | None = None) -> str:
    """The format ``spec`` names for ``task``: ``spec`` is one format name for every task, or a
    mapping task -> name with an optional ``default`` entry; ``direct`` when nothing applies.

    >>> format_for({"shapes": "think", "default": "stages"}, "shapes"), format_for({"shapes": "think"}, "clevr")
    ('think', 'direct')
    """
    if isinstance(spec, dict):
        return spec.get(task) or spec.get("default") or "direct"
    return spec or "direct"


def format_names(spec: str | dict | None) -> list[str]:
    """Every format name a spec mentions (to check them all up front)."""
    return [n for n in (spec.values() if isinstance(spec, dict) else [spec]) if n]


def answer_format(model, task: str | None = None) -> str:
    """The format a model answers ``task`` in when none is asked: the one its training recorded
    (``config.answer_format``, set by ``vrm train ... answer_format=think`` or per task,
    ``"answer_format={shapes: think, default: direct}"``), else ``direct``."""
    return format_for(getattr(model.config, "answer_format", None), task)


def get_format(name: str):
    if name not in FORMATS:
        raise VrmError(f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]


__all__ = ["FORMATS", "Parsed", "answer_format", "format_for", "format_names", "get_format", "question_prompt"]
