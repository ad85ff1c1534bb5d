import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vrm import VrmError
from vrm.eval.cells import TOL, cell_errors, cells_right, grid_size
from vrm.model.vq import ImageTokenizer, ImageTokenizerConfig, load_image_tokenizer
from vrm.tasks import get_task
from vrm.tasks.spatial.frozenlake import render_lake
from vrm.train.vq import VQConfig, restart_dead_codes, run, step_images

torch.set_num_threads(1)
TASKS = ("frozenlake", "maze", "minibehavior")


def tiny(downsample: int = 8, **kw) -> ImageTokenizer:
    torch.manual_seed(0)
    return ImageTokenizer(ImageTokenizerConfig(downsample=downsample, codebook_size=32, code_dim=8, channels=16, **kw)).eval()


def renderings(n: int = 3) -> list[Image.Image]:
    return [get_task(name).sample(i).image for name in TASKS for i in range(n)]


@pytest.mark.parametrize("downsample,tokens", [(4, 256), (8, 64), (16, 16)])
def test_encode_decode_round_trip_shapes(downsample, tokens):
    model = tiny(downsample)
    assert model.config.tokens_per_image == tokens and model.config.grid ** 2 == tokens
    images = renderings(1) + [Image.new("L", (32, 48), 128)]  # grey and another size: converted, resized
    codes = model.encode(images)
    assert codes.shape == (4, tokens) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < model.config.codebook_size
    out = model.decode(codes)
    assert [(im.size, im.mode) for im in out] == [((64, 64), "RGB")] * 4
    assert model.encode(out).shape == (4, tokens)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="downsample"):
        ImageTokenizerConfig(downsample=2)
    with pytest.raises(ValueError):
        VQConfig(downsample=32)


def test_decode_rejects_wrong_length_and_out_of_range_codes():
    model = tiny()
    with pytest.raises(ValueError, match="64"):
        model.decode(torch.zeros(1, 63, dtype=torch.long))
    with pytest.raises(ValueError, match="64"):
        model.decode(torch.zeros(64, dtype=torch.long))
    with pytest.raises(ValueError, match="32"):
        model.decode(torch.full((1, 64), 32))
    with pytest.raises(ValueError):
        model.decode(torch.full((1, 64), -1))


def test_code_distances_by_hand():
    model = ImageTokenizer(ImageTokenizerConfig(codebook_size=3, code_dim=2, channels=16))
    with torch.no_grad():  # normalised: (1, 0), (0, 1), (-1, 0)
        model.codebook.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5], [-3.0, 0.0]]))
    assert torch.allclose(model.codebook_vectors(), torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    mse = model.code_distances("mse")
    euclidean = model.code_distances("euclidean")
    # (1,0)-(0,1): squares 1, 1; (1,0)-(-1,0): 4, 0; (0,1)-(-1,0): 1, 1
    assert torch.allclose(mse, torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]))
    r2 = math.sqrt(2)
    assert torch.allclose(euclidean, torch.tensor([[0.0, r2, 2.0], [r2, 0.0, r2], [2.0, r2, 0.0]]))
    for s in (mse, euclidean):
        assert torch.equal(s, s.T) and torch.all(s.diagonal() == 0)
    assert model.code_distances().shape == (3, 3)
    with pytest.raises(ValueError, match="cosine"):
        model.code_distances("cosine")


def test_save_and_load_give_identical_codes(tmp_path):
    model = tiny()
    images = renderings(2)
    model.save_pretrained(tmp_path / "vq")
    again = load_image_tokenizer(tmp_path / "vq")
    assert not again.training and again.config.codebook_size == 32
    assert torch.equal(again.encode(images), model.encode(images))
    assert torch.equal(again.code_distances(), model.code_distances())


def test_load_image_tokenizer_errors(tmp_path):
    with pytest.raises(VrmError, match="config.json"):
        load_image_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VrmError, match="config.json"):
        load_image_tokenizer(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(VrmError, match="not an image tokenizer"):
        load_image_tokenizer(tmp_path / "other")


@pytest.mark.parametrize("rows", [["SFF", "FHF", "FFG"], ["SFFFF", "FFFFF", "FFHFF", "FFFFG", "FFFFF"]])
def test_cells_find_exactly_the_cells_that_changed(rows):
    n = len(rows)
    before, after = render_lake(rows, (1, 0)), render_lake(rows, (1, 1))
    assert cells_right(before, before, n).all()
    assert cell_errors(before, before, n).max() == 0
    wrong = ~cells_right(after, before, n)
    assert sorted(zip(*np.nonzero(wrong))) == [(1, 0), (1, 1)]


def test_agent_on_a_hole_counts_as_wrong():
    """The smallest frozenlake contrast: the red agent on a navy hole (8 px cells)."""
    rows = ["SFFFF", "FFFFF", "FFHFF", "FFFFG", "FFFFF"]
    errors = cell_errors(render_lake(rows, (2, 2)), render_lake(rows, (0, 0)), 5)
    assert errors[2, 2] > TOL and errors[0, 0] > TOL


def test_cells_reject_images_of_different_sizes():
    with pytest.raises(ValueError, match="same size"):
        cell_errors(Image.new("RGB", (32, 32)), Image.new("RGB", (64, 64)), 4)


@pytest.mark.parametrize("name", TASKS)
def test_grid_size_of_every_spatial_task(name):
    task = get_task(name)
    for seed in range(5):
        trace = task.sample(seed).trace
        n = grid_size(trace)
        assert n == trace.get("size", trace.get("room"))
        assert cells_right(task.render(trace, 0), task.render(trace, 0), n).shape == (n, n)
    with pytest.raises(ValueError):
        grid_size({"objects": []})


def test_step_images_are_a_function_of_seed_and_step():
    tasks = [get_task(name) for name in TASKS]
    a = step_images(tasks, [1, 1, 1], 3, 6, 0)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in step_images(tasks, [1, 1, 1], 3, 6, 0)]
    assert [im.tobytes() for im in a] != [im.tobytes() for im in step_images(tasks, [1, 1, 1], 4, 6, 0)]


def test_restart_moves_dead_codes_onto_latents_the_codebook_misses():
    model = ImageTokenizer(ImageTokenizerConfig(codebook_size=2, code_dim=2, channels=16))
    with torch.no_grad():
        model.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    latents = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)  # (B, D, h, w)
    moved = restart_dead_codes(model, torch.tensor([5, 0]), latents, torch.Generator().manual_seed(0))
    assert moved == 1
    assert torch.allclose(model.codebook_vectors(), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert restart_dead_codes(model, torch.tensor([5, 0]), latents, torch.Generator().manual_seed(0)) == 0


def tiny_run(out, steps: int) -> VQConfig:
    return VQConfig(steps=steps, batch_size=8, channels=32, code_dim=8, codebook_size=64, lr=3e-3, warmup_steps=5,
                    restart_every=10, eval_every=1000, eval_n=4, save_every=10, log_every=5, out_dir=str(out),
                    threads=1, progress=False)


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    tasks = [get_task(name) for name in TASKS]
    images = step_images(tasks, [1, 1, 1], 10_000, 12, 99)

    def mse(model) -> float:
        x = model.pixels(images)
        with torch.no_grad():
            return F.mse_loss(model(x)[0], x).item()

    torch.manual_seed(0)
    before = mse(ImageTokenizer(tiny_run(tmp_path, 30).tokenizer_config()))
    run(tiny_run(tmp_path / "a", 20))
    final = run(tiny_run(tmp_path / "a", 30))  # resumes from step 20
    trained = load_image_tokenizer(final)
    assert mse(trained) < 0.5 * before
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]
    report = json.loads((final / "report.json").read_text())
    assert set(report["per_task"]) == set(TASKS) and 0 <= report["accuracy"] <= 1 and 0 < report["usage"] <= 1
    assert json.loads((tmp_path / "a" / "log.jsonl").read_text().splitlines()[-1])["eval"]["per_task"]

    # As if killed before step 30 was saved: the rerun resumes from step 20 and redoes 21-30 identically.
    first = {k: v.clone() for k, v in trained.state_dict().items()}
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "step_0000030")
    again = load_image_tokenizer(run(tiny_run(tmp_path / "a", 30)))
    for name, p in again.state_dict().items():
        assert torch.equal(p, first[name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_vq_cells_benchmark_finds_a_cell_code_and_names_its_kind():
    from bench_loader import load_benchmark

    bench = load_benchmark("vq_cells")
    # 4x4 on 64 px: 8 px cells from pixel 16, the 8x8 code grid's column/row 2; cell (1, 2) -> (2+1)*8 + 2+2
    assert bench.patch_index(4, 64, 1, 2) == 28
    assert bench.patch_index(5, 64, 0, 0) == 9  # 5x5 starts at pixel 8
    with pytest.raises(ValueError, match="6 px cells"):
        bench.patch_index(10, 64, 0, 0)
    path, letters = [(0, 0), (0, 1), (1, 1)], [(1, 1), (0, 1), (3, 3)]
    assert [bench.cell_kind(c, path, letters) for c in [(1, 1), (0, 1), (0, 0), (3, 3), (2, 2)]] == [
        "agent+letter", "trail+letter", "start", "floor+letter", "floor"]
