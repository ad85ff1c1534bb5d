"""The evaluation report: tables, matplotlib plots beside the HTML, wrong and right galleries."""

from PIL import Image

from vrm.eval.report import write_report
from vrm.eval.run import summarize


def test_report_has_tables_plots_and_both_galleries(tmp_path):
    records = [
        {"id": "a", "task": "shapes", "family": "count_all", "question": "How many?", "answer": "3", "output": "3",
         "prediction": "3", "correct": 1.0},
        {"id": "b", "task": "shapes", "family": "exists", "question": "Is there a red circle?", "answer": "yes",
         "output": "<think>none red</think><answer>no</answer>", "prediction": "no", "correct": 0.0,
         "stages": {"think": "none red"}},
    ]
    summary = summarize(records)
    images = {"a": Image.new("RGB", (64, 64), "white"), "b": Image.new("RGB", (64, 64), "red")}
    runs = [{"name": "greedy", "accuracy": 0.5, "seconds": 1.0}, {"name": "stage_beam:4", "accuracy": 0.6, "seconds": 5.0}]
    path = write_report(tmp_path / "report.html", summary, records, images, runs=runs)
    page = path.read_text()
    assert "50.0%" in page and "Wrong (1; showing 1)" in page and "Right (1; showing 1)" in page
    assert "none red" in page and "stage_beam:4" in page
    for plot in ("report-families.png", "report-compute.png"):
        data = (tmp_path / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(tmp_path / plot).width > 300
    assert page.count("data:image/png") == 4  # two plots + two samples
