import math

import torch

from vrm.model.build import TinyVLMConfig, init_2d_positions


def test_2d_positions_encode_row_and_column():
    weight = torch.zeros(1 + 16, 8)
    init_2d_positions(weight, grid=4)
    assert torch.equal(weight[0], torch.zeros(8))  # CLS untouched
    # patch 6 is row 1, column 2 (0-based); quarter=2, freqs = [1, 100**-0.5]
    row, col = 1.0, 2.0
    expected = [math.sin(row), math.sin(row * 0.1), math.cos(row), math.cos(row * 0.1),
                math.sin(col), math.sin(col * 0.1), math.cos(col), math.cos(col * 0.1)]
    torch.testing.assert_close(weight[1 + 6], torch.tensor(expected))
    # same row -> same first half, same column -> same second half
    torch.testing.assert_close(weight[1 + 4, :4], weight[1 + 7, :4])
    torch.testing.assert_close(weight[1 + 2, 4:], weight[1 + 14, 4:])


def test_image_tokens_match_patches():
    assert TinyVLMConfig().image_tokens == 16
    assert TinyVLMConfig(patch_size=8).image_tokens == 64
