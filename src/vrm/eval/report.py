"""HTML report of an evaluation: summary and per-family tables, matplotlib plots (accuracy per
family; accuracy vs compute when several search strategies or runs are compared), and a gallery
of wrong and right samples with image, question, reasoning and answer. Self-contained HTML (images
inline) with the plots also kept as PNG files beside it."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from vrm.files import write_atomic


def _png(image: Image.Image, size: int = 128) -> str:
    buf = io.BytesIO()
    image.resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def family_plot(summary: dict) -> bytes:
    """Horizontal bars: accuracy of each question family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["per_family"])
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(names) + 1.0))
    ax.barh(names, [100 * summary["per_family"][n] for n in names], color="#2563eb")
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.invert_yaxis()
    ax.set_title(f"per family: overall {100 * summary['accuracy']:.1f}% on {summary['n']} questions")
    return _figure_png(fig)


def compute_plot(runs: list[dict]) -> bytes:
    """Accuracy against compute (wall seconds) for runs ``[{"name", "accuracy", "seconds"}]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in runs:
        ax.scatter(run["seconds"], 100 * run["accuracy"], s=36)
        ax.annotate(run["name"], (run["seconds"], 100 * run["accuracy"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("wall time (s, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs compute")
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def _card(r: dict, images: dict[str, Image.Image], thoughts: dict[str, list[Image.Image]]) -> str:
    e = html.escape
    ok = r["correct"] >= 1.0
    img = f'<img src="{_png(images[r["id"]])}" alt="{e(r["id"])}">' if r["id"] in images else ""
    if thoughts.get(r["id"]):
        img += '<div class="thoughts">' + "".join(
            f'<img src="{_png(t, 56)}" title="visual thought {k}" alt="thought {k}">'
            for k, t in enumerate(thoughts[r["id"]], start=1)) + "</div>"
    stages = r.get("stages") or {}
    reasoning = "".join(f"<p><i>{e(k)}</i>: {e(v)}</p>" for k, v in stages.items())
    if reasoning:
        reasoning = f"<details><summary>reasoning</summary>{reasoning}</details>"
    return (f'<div class="card {"right" if ok else "wrong"}">{img}<p class="q">{e(r["question"])}</p>{reasoning}'
            f'<p>expected: <b>{e(r["answer"])}</b></p><p>model: <b>{e(r.get("prediction", r["output"]))}</b></p>'
            f'<p class="verdict">{"right" if ok else "wrong"} · {e(r["task"])}/{e(r["family"])}</p></div>')


def write_report(path: str | Path, summary: dict, records: list[dict], images: dict[str, Image.Image],
                 title: str = "vrm evaluation", runs: list[dict] | None = None, max_cards: int = 60,
                 thoughts: dict[str, list[Image.Image]] | None = None) -> Path:
    """Write the report at ``path`` (plots beside it as ``<stem>-families.png`` / ``<stem>-compute.png``).

    ``images`` maps sample id -> image; ``runs`` (optional) are the points of the accuracy-vs-compute
    plot; ``thoughts`` (optional) maps sample id -> its visual thoughts, shown in order under the
    image; the gallery shows up to ``max_cards`` wrong and ``max_cards`` right samples.
    """
    thoughts = thoughts or {}
    e = html.escape
    path = Path(path)
    plots = {"families": family_plot(summary)}
    if runs:
        plots["compute"] = compute_plot(runs)
    figures = []
    for name, png in plots.items():
        write_atomic(path.with_name(f"{path.stem}-{name}.png"), png)
        figures.append(f'<img class="plot" alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    tasks = "".join(f"<tr><td>{e(t)}</td><td>{100 * a:.1f}%</td></tr>" for t, a in summary["per_task"].items())
    families = "".join(f"<tr><td>{e(f)}</td><td>{100 * a:.1f}%</td></tr>" for f, a in summary["per_family"].items())
    compared = "".join(f"<tr><td>{e(r['name'])}</td><td>{100 * r['accuracy']:.1f}%</td><td>{r['seconds']:.1f}</td></tr>"
                       for r in runs or [])
    if compared:
        compared = f"<table><tr><th>run</th><th>accuracy</th><th>seconds</th></tr>{compared}</table>"
    visual = "".join(f"<tr><td>{e(t)}</td><td>{100 * v['v_acc']:.1f}%</td><td>{100 * v['v_red']:.1f}%</td>"
                     f"<td>{v['v_steps']:.2f}</td><td>{100 * v['v_ratio']:.1f}%</td>"
                     f"<td>{100 * v['a_acc']:.1f}%</td><td>{100 * v['stops']:.1f}%</td></tr>"
                     for t, v in {**summary.get("visual_per_task", {}), "overall": summary.get("visual")}.items() if v)
    if visual:
        compared += ("<table><tr><th>visual thoughts</th><th>V-Acc</th><th>V-Red</th><th>V-Steps</th><th>V-Ratio</th>"
                     f"<th>A-Acc</th><th>Stops</th></tr>{visual}</table>")
    wrong = [r for r in records if r["correct"] < 1.0]
    right = [r for r in records if r["correct"] >= 1.0]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .8em}} .grid{{display:flex;flex-wrap:wrap;gap:12px}}
.card{{width:180px;border:2px solid;border-radius:6px;padding:8px;font-size:13px}} .card img{{image-rendering:pixelated}}
.right{{border-color:#16a34a}} .wrong{{border-color:#dc2626;background:#fef2f2}} .q{{font-weight:600}}
.verdict{{color:#555}} .thoughts img{{margin:2px 2px 0 0}} .plot{{max-width:100%;margin:.5em 1em .5em 0}}</style></head><body><h1>{e(title)}</h1>
<p>Overall accuracy <b>{100 * summary['accuracy']:.1f}%</b> on {summary['n']} questions.</p>
<table><tr><th>task</th><th>accuracy</th></tr>{tasks}</table>
<table><tr><th>family</th><th>accuracy</th></tr>{families}</table>{compared}
<div>{''.join(figures)}</div>
<h2>Wrong ({len(wrong)}; showing {min(len(wrong), max_cards)})</h2><div class="grid">{''.join(_card(r, images, thoughts) for r in wrong[:max_cards])}</div>
<h2>Right ({len(right)}; showing {min(len(right), max_cards)})</h2><div class="grid">{''.join(_card(r, images, thoughts) for r in right[:max_cards])}</div>
</body></html>"""
    return write_atomic(path, page)
