import math

import pytest
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
    assert TinyVLMConfig(vision_tower="clip", patch_size=8).image_tokens == 64
    with pytest.raises(ValueError, match="stride 16"):
        TinyVLMConfig(vision_tower="levit", patch_size=8)


def test_chat_layouts_place_the_question_around_the_image():
    from vrm.model.tokenizer import train_tokenizer

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    rendered = {}
    for layout in ("in_order", "text_first", "text_around"):
        tok = train_tokenizer(["How many red shapes are there? 3"], 300, layout)
        rendered[layout] = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered["in_order"] == "<|user|>\n<image>\nHow many?<|end|>\n<|assistant|>\n"
    assert rendered["text_first"] == "<|user|>\nHow many?\n<image><|end|>\n<|assistant|>\n"
    assert rendered["text_around"] == "<|user|>\nHow many?\n<image>\nHow many?<|end|>\n<|assistant|>\n"
    # a message without an image is not repeated
    plain = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert plain == "<|user|>\nhi<|end|>\n"
    with pytest.raises(ValueError, match="unknown chat layout"):
        train_tokenizer(["x"], 300, "sideways")


def test_generation_never_writes_the_image_placeholder():
    """Even a model that prefers the image placeholder token cannot emit it: the next forward
    over the completion (GRPO's loss, a search step) would look for image features it lacks."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from vrm.infer.generate import generate_completions
    from vrm.model import load_model
    from vrm.tasks import get_task

    model, processor = load_model()
    image_id = model.config.image_token_index

    class PreferPlaceholder(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, image_id] += 1e4  # added: a suppressed (-inf) token stays -inf
            return scores

    sample = get_task("shapes").sample(9_000_000)
    prefer = LogitsProcessorList([PreferPlaceholder()])
    unguarded = generate_completions(model, processor, [sample.image], [sample.question], max_new_tokens=3,
                                     logits_processor=prefer, suppress_tokens=[])[0]
    assert unguarded.text.startswith("<image>")  # the preference bites when nothing suppresses it
    done = generate_completions(model, processor, [sample.image], [sample.question], max_new_tokens=3,
                                logits_processor=prefer)[0]
    assert done.completion_tokens >= 1 and "<image>" not in done.text


def test_saving_a_levit_model_again_writes_the_same_config(tmp_path):
    """transformers' LevitEncoder appends a [""] to its config's down_ops at each build; save_model
    drops them, so a load-and-save round trip writes the config it read, and builds the same tower."""
    import json

    from vrm.model import load_model, save_model

    model, processor = load_model()
    first = save_model(model, processor, tmp_path / "first")
    again, processor = load_model(first)
    second = save_model(again, processor, tmp_path / "second")
    ops = [json.loads((d / "config.json").read_text())["vision_config"]["down_ops"] for d in (first, second)]
    assert ops[0] == ops[1] and [""] not in ops[0], ops
    assert [n for n, _ in again.named_parameters()] == [n for n, _ in model.named_parameters()]
