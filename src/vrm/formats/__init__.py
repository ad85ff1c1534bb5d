"""Formats: how a sample becomes a target text, and how a completion is parsed back.

Every format has ``target(sample, task) -> str`` and ``parse(completion) -> Parsed``. The
structured formats (R1 think/answer, LLaVA-CoT stages, MVoT visual) register here too.
"""

from __future__ import annotations

from vrm import VrmError
from vrm.formats.direct import CaptionFormat, DirectFormat, Parsed

FORMATS = {"direct": DirectFormat(), "caption": CaptionFormat()}


def get_format(name: str):
    if name not in FORMATS:
        raise VrmError(f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]


__all__ = ["FORMATS", "Parsed", "get_format"]
