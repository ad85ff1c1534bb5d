"""Finding and reading the third-party CLEVR files vrm builds on (read at run time, never copied).

The CLEVR 1.0 question templates, ``metadata.json``, ``synonyms.json`` and ``properties.json``
are Copyright (c) 2017-present, Facebook, Inc., under the BSD licence with an additional patent
grant; the CLEVR-Math templates and ``clevr_math_metadata.json`` (Lindstroem & Abraham, 2022) are
derived from them under the same terms. The licence texts (``LICENSE``, ``PATENTS``) sit beside
the files in the data folder. vrm ships none of these files: it finds the folder through the
``VRM_CLEVR_DATA`` environment variable, else ``shared/data/clevr`` beside the repository.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vrm import VrmError
from vrm.tasks.shared_data import data_candidates

ENV_VAR = "VRM_CLEVR_DATA"
REQUIRED = ("metadata.json", "clevr_math_metadata.json", "synonyms.json", "properties.json",
            "templates", "clevr_math_templates")
MATH_PREFIX = "math_"


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The CLEVR data folder: ``data_dir`` if given, else the first of `data_candidates` that exists.

    Raises:
        VrmError: the folder is missing or lacks one of the files vrm reads.
    """
    tried = data_candidates("clevr", ENV_VAR, data_dir)
    for path in tried:
        if path.is_dir():
            missing = [name for name in REQUIRED if not (path / name).exists()]
            if missing:
                raise VrmError(f"CLEVR data folder {path} lacks {', '.join(missing)}")
            return path.resolve()
    where = str(tried[0]) if data_dir or os.environ.get(ENV_VAR) else "shared/data/clevr beside the repository"
    raise VrmError(f"CLEVR data not found at {where}: set {ENV_VAR} to the folder holding CLEVR's "
                   "templates/, clevr_math_templates/, metadata.json and synonyms.json")


@dataclass(frozen=True)
class Template:
    """One CLEVR question template: text variants, a program template, typed slots, constraints.

    ``family`` names the template file (``one_hop``; CLEVR-Math files get a ``math_`` prefix and
    underscores: ``math_subtraction_multihop``).
    """

    family: str
    file: str
    index: int
    text: tuple[str, ...]
    nodes: tuple[dict, ...]
    params: dict[str, str]
    constraints: tuple[dict, ...]


@dataclass(frozen=True)
class ClevrData:
    """Everything read from the data folder, parsed once per folder."""

    path: Path
    types: dict[str, tuple[str, ...]]
    synonyms: dict[str, tuple[str, ...]]
    colors: dict[str, tuple[int, int, int]]
    sizes: dict[str, float]
    templates: dict[str, tuple[Template, ...]]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VrmError(f"{path}: cannot read CLEVR data ({e})") from None


def _family(file_name: str, math: bool) -> str:
    stem = Path(file_name).stem.replace("-", "_")
    return MATH_PREFIX + stem if math else stem


@lru_cache(maxsize=4)
def _load(path: Path) -> ClevrData:
    metadata = _read_json(path / "metadata.json")
    math_metadata = _read_json(path / "clevr_math_metadata.json")
    properties = _read_json(path / "properties.json")
    types = {k: tuple(v) for k, v in metadata["types"].items() if v}
    if {k: tuple(v) for k, v in math_metadata["types"].items() if v} != types:
        raise VrmError(f"{path}: metadata.json and clevr_math_metadata.json disagree on value types")
    templates: dict[str, list[Template]] = {}
    for folder, math in (("templates", False), ("clevr_math_templates", True)):
        for file in sorted((path / folder).glob("*.json")):
            family = _family(file.name, math)
            for i, t in enumerate(_read_json(file)):
                templates.setdefault(family, []).append(Template(
                    family, file.name, i, tuple(t["text"]), tuple(t["nodes"]),
                    {p["name"]: p["type"] for p in t["params"]}, tuple(t["constraints"])))
    if not templates:
        raise VrmError(f"{path}: no question templates found")
    return ClevrData(
        path=path,
        types=types,
        synonyms={k: tuple(v) for k, v in _read_json(path / "synonyms.json").items()},
        colors={k: tuple(v) for k, v in properties["colors"].items()},
        sizes=dict(properties["sizes"]),
        templates={k: tuple(v) for k, v in templates.items()},
    )


def load_data(data_dir: str | Path | None = None) -> ClevrData:
    """Read (once, then cached) the CLEVR templates, value types, synonyms and properties."""
    return _load(find_data_dir(data_dir))
