import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vrm import VrmError
from vrm.images import load_image, load_image_bytes
from vrm.tasks import JsonlTask, get_task, read_rows, write_dataset


def test_export_round_trip(tmp_path):
    task = get_task("shapes")
    samples = [task.sample(i) for i in range(5)]
    path = write_dataset(samples, tmp_path)
    assert path == tmp_path / "data.jsonl" and not (tmp_path / "data.jsonl.tmp").exists()
    row = json.loads(path.read_text().splitlines()[0])
    assert set(row) == {"id", "image", "question", "answer", "meta"}
    assert row["meta"]["trace"]["objects"] == samples[0].trace["objects"]
    back = JsonlTask(str(path))
    assert len(back) == 5
    for i, s in enumerate(samples):
        r = back.get(i)
        assert (r.id, r.question, r.answer, r.family, r.trace) == (s.id, s.question, s.answer, s.family, s.trace)
        assert np.array_equal(np.asarray(r.image), np.asarray(s.image))


@pytest.mark.parametrize("line,msg", [
    ("{not json", "data.jsonl:2: not valid JSON"),
    ('{"id": "x", "image": "a.png"}', "data.jsonl:2: missing field"),
    ("[1, 2]", "data.jsonl:2: expected a JSON object"),
    ('{"id": "x", "image": "a.png", "question": {"q": 1}, "answer": "1"}', "data.jsonl:2: field"),
])
def test_bad_line_names_file_and_line(tmp_path, line, msg):
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a", "image": "a.png", "question": "q?", "answer": "1"}\n' + line + "\n")
    with pytest.raises(VrmError, match=msg):
        read_rows(path)


def test_missing_and_corrupt_images(tmp_path):
    path = tmp_path / "data.jsonl"
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    path.write_text('{"id": "a", "image": "gone.png", "question": "q?", "answer": "1"}\n'
                    '{"id": "b", "image": "bad.png", "question": "q?", "answer": "1"}\n')
    task = JsonlTask(str(path))
    with pytest.raises(VrmError, match=r"data.jsonl:1: .*gone.png: image file not found"):
        task.get(0)
    with pytest.raises(VrmError, match=r"data.jsonl:2: .*not a readable image"):
        task.get(1)


def test_images_of_any_mode_become_rgb(tmp_path):
    from PIL import Image
    for mode in ("L", "RGBA", "P", "I;16", "1", "CMYK"):
        Image.new(mode, (7, 3)).save(tmp_path / f"x.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}")
        img = load_image(tmp_path / f"x.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}")
        assert img.mode == "RGB" and img.size == (7, 3)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_image_loader_never_crashes(data):
    try:
        img = load_image_bytes(data)
        assert img.mode == "RGB"
    except VrmError:
        pass


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=40), max_size=5))
def test_jsonl_reader_never_crashes(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass") if all(
        "\ud800" > c or c > "\udfff" for line in lines for c in line) else path.write_text("x")
    try:
        rows = read_rows(path)
        assert all("question" in r for r in rows)
    except VrmError:
        pass
