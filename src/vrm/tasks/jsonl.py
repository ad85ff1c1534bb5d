"""vrm's dataset file format: ``data.jsonl`` beside an ``images/`` folder.

Each line: ``{"id", "image", "question", "answer", "choices"?, "meta"?}``, the image path relative
to the file; ``meta`` holds the task, family and trace in plain JSON so a third party can re-check
every label. The same file reads back as a task for training and evaluation.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from vrm import VrmError
from vrm.answers import answers_match
from vrm.images import load_image
from vrm.tasks.base import Sample

REQUIRED = ("id", "image", "question", "answer")


def write_dataset(samples: Iterable[Sample], out_dir: str | Path, progress=None) -> Path:
    """Write samples as ``out_dir/data.jsonl`` + ``out_dir/images/<id>.png``.

    The JSONL is written to a temporary file and renamed, so an interrupted export never leaves
    a half-written ``data.jsonl`` (nor clobbers a previous complete one).
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    final = out_dir / "data.jsonl"
    tmp = out_dir / "data.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            rel = f"images/{s.id}.png"
            s.image.save(out_dir / rel)
            row = {"id": s.id, "image": rel, "question": s.question, "answer": s.answer}
            if s.choices:
                row["choices"] = s.choices
            row["meta"] = {"task": s.task, "family": s.family, "trace": s.trace}
            f.write(json.dumps(row) + "\n")
            if progress is not None:
                progress.update(1)
    os.replace(tmp, final)
    return final


def read_rows(path: str | Path) -> list[dict]:
    """Parse a JSONL file; a bad line raises a `VrmError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise VrmError(f"{path}: data file not found")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise VrmError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise VrmError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise VrmError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            bad = [k for k in REQUIRED if not isinstance(row[k], (str, int, float)) or isinstance(row[k], bool)]
            if bad:
                raise VrmError(f"{path}:{lineno}: field(s) {', '.join(bad)} must be text")
            if "choices" in row and not (isinstance(row["choices"], list) or row["choices"] is None):
                raise VrmError(f"{path}:{lineno}: 'choices' must be a list")
            if "meta" in row and not isinstance(row["meta"], (dict, type(None))):
                raise VrmError(f"{path}:{lineno}: 'meta' must be an object")
            row["_line"] = lineno
            rows.append(row)
    if not rows:
        raise VrmError(f"{path}: no rows")
    return rows


@dataclass
class JsonlTask:
    """A dataset file read as a task: ``get(i)`` is row i, ``sample(seed)`` a seeded row."""

    path: str
    name: str = "jsonl"
    families: tuple[str, ...] = ()
    _rows: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._rows = read_rows(self.path)
        self.families = tuple(sorted({(r.get("meta") or {}).get("family", "all") for r in self._rows}))

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, index: int) -> Sample:
        row = self._rows[index]
        meta = row.get("meta") or {}
        image_path = Path(self.path).parent / str(row["image"])
        try:
            image = load_image(image_path)
        except VrmError as e:
            raise VrmError(f"{self.path}:{row['_line']}: {e}") from None
        return Sample(str(row["id"]), image, str(row["question"]), str(row["answer"]),
                      meta.get("task", self.name), meta.get("family", "all"), row.get("choices"),
                      meta.get("trace") or {})

    def sample(self, seed: int) -> Sample:
        return self.get(random.Random(f"{self.name}-{seed}").randrange(len(self)))

    def score(self, sample: Sample, answer: str) -> float:
        return float(answers_match(answer, sample.answer))

    def caption(self, sample: Sample) -> str:
        return str(sample.trace.get("caption", ""))
