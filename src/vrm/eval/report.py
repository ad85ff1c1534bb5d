"""HTML report of an evaluation: the summary table and every sample with its image, question,
expected answer, the model's output and whether it was right. Self-contained (images inline)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from PIL import Image


def _img(image: Image.Image, size: int = 128) -> str:
    buf = io.BytesIO()
    image.resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(path: str | Path, summary: dict, records: list[dict], images: dict[str, Image.Image],
                 title: str = "vrm evaluation") -> Path:
    """Write the report atomically; ``images`` maps sample id -> image."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(task)}</td><td>{100 * acc:.1f}%</td></tr>" for task, acc in summary["per_task"].items())
    fams = "".join(
        f"<tr><td>{e(fam)}</td><td>{100 * acc:.1f}%</td></tr>" for fam, acc in summary["per_family"].items())
    cards = []
    for r in records:
        ok = r["correct"] >= 1.0
        img = f'<img src="{_img(images[r["id"]])}" alt="{e(r["id"])}">' if r["id"] in images else ""
        cards.append(
            f'<div class="card {"right" if ok else "wrong"}">{img}<p class="q">{e(r["question"])}</p>'
            f'<p>expected: <b>{e(r["answer"])}</b></p><p>model: <b>{e(r["output"])}</b></p>'
            f'<p class="verdict">{"right" if ok else "wrong"} · {e(r["task"])}/{e(r["family"])}</p></div>')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .8em}} .grid{{display:flex;flex-wrap:wrap;gap:12px}}
.card{{width:180px;border:2px solid;border-radius:6px;padding:8px;font-size:13px}} .card img{{image-rendering:pixelated}}
.right{{border-color:#16a34a}} .wrong{{border-color:#dc2626;background:#fef2f2}} .q{{font-weight:600}}
.verdict{{color:#555}}</style></head><body><h1>{e(title)}</h1>
<p>Overall accuracy <b>{100 * summary['accuracy']:.1f}%</b> on {summary['n']} questions.</p>
<table><tr><th>task</th><th>accuracy</th></tr>{rows}</table>
<table><tr><th>family</th><th>accuracy</th></tr>{fams}</table>
<div class="grid">{''.join(cards)}</div></body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
