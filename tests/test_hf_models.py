"""Tiny random LLaVA and Qwen2-VL models built locally (no downloads) run through vrm's own code
path: `encode`/`collate` -> one optimiser step -> `generate`; and a LoRA stage of `train` that
merges its adapters into a plain HF checkpoint.
"""

from __future__ import annotations

import json
import math

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from vrm.infer.generate import generate, prompt_text
from vrm.model import TinyVLMConfig, build_tiny_vlm, load_model
from vrm.model.tokenizer import END, IMAGE_TOKEN, train_tokenizer
from vrm.tasks import get_task
from vrm.train.data import IGNORE, collate, encode
from vrm.train.loop import TrainConfig, add_lora, part_of, set_trainable, train

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

TINY = dict(image_size=64, patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2,
            lm_hidden=64, lm_layers=1, lm_heads=2, lm_intermediate=128, vocab_size=512)


def shapes_samples(n: int, start: int = 0):
    task = get_task("shapes")
    return [task.sample(seed) for seed in range(start, start + n)]


def shapes_corpus(n: int = 100) -> list[str]:
    """Questions, answers and captions of ``n`` shapes samples (3n strings)."""
    task = get_task("shapes")
    texts = []
    for s in shapes_samples(n):
        texts += [s.question, s.answer, task.caption(s)]
    return texts


def build_tiny_llava():
    return build_tiny_vlm(TinyVLMConfig(**TINY), shapes_corpus())


# Qwen2-VL's special tokens: chat turns, the image span and the per-patch placeholders.
QWEN_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template, reduced to what vrm renders: one image + text per user turn.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN_PATCH, QWEN_MERGE, QWEN_TEMPORAL = 8, 2, 2


class LocalQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without a video processor.

    This venv has no torchvision, so transformers cannot resolve the video processor's base class
    and the stock constructor fails even for ``video_processor=None``; images never need it.
    """

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def build_qwen2vl_processor(corpus: list[str]) -> Qwen2VLProcessor:
    """vrm's locally trained BPE + Qwen's special tokens and template; a 64x64 image -> 16 tokens."""
    tok = train_tokenizer(corpus, 512)
    tok.add_special_tokens({"extra_special_tokens": QWEN_TOKENS}, replace_extra_special_tokens=False)
    tok.eos_token = "<|im_end|>"
    tok.chat_template = QWEN_CHAT_TEMPLATE
    side = 64  # min = max pixels: every image is resized to 64x64 -> 8x8 patches -> 4x4 merged tokens
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=QWEN_PATCH, merge_size=QWEN_MERGE, temporal_patch_size=QWEN_TEMPORAL,
        min_pixels=side * side, max_pixels=side * side, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    return LocalQwen2VLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)


def build_tiny_qwen2vl(corpus: list[str], seed: int = 0):
    """A randomly initialised 1-layer Qwen2-VL (vision depth 1, embed 32; LM hidden 64) + processor."""
    processor = build_qwen2vl_processor(corpus)
    tok = processor.tokenizer
    ids = dict(zip(QWEN_TOKENS, tok.convert_tokens_to_ids(QWEN_TOKENS)))
    hidden, heads = 64, 2
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
        # M-RoPE sections (temporal, height, width) must sum to head_dim / 2 = 16.
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        bos_token_id=tok.bos_token_id, eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id,
    )
    vision = dict(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=QWEN_PATCH,
                  spatial_merge_size=QWEN_MERGE, temporal_patch_size=QWEN_TEMPORAL)
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(model, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def check_prompt_masking(processor, sample, example, end_token: str) -> int:
    """Labels are IGNORE exactly on the prompt; the rest is the answer + end token. Returns prompt length."""
    prompt = processor(images=[sample.image], text=[prompt_text(processor, sample.question)],
                       return_tensors="pt")["input_ids"][0]
    n = len(prompt)
    ids, labels = example["input_ids"], example["labels"]
    assert ids.shape == labels.shape and ids.dim() == 1
    assert torch.equal(ids[:n], prompt)
    assert (labels[:n] == IGNORE).all()
    assert (labels[n:] != IGNORE).all() and len(labels) > n
    assert torch.equal(labels[n:], ids[n:])
    assert processor.tokenizer.decode(labels[n:].tolist()) == sample.answer + end_token
    return n


def check_collated_rows(batch, examples, pad_id: int) -> None:
    width = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (len(examples), width)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        assert torch.equal(batch["input_ids"][i, :n], e["input_ids"])
        assert torch.equal(batch["labels"][i, :n], e["labels"])
        assert batch["attention_mask"][i].sum() == n
        assert (batch["input_ids"][i, n:] == pad_id).all() and (batch["labels"][i, n:] == IGNORE).all()


def one_step(model, batch, lr: float = 1e-3) -> float:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return loss.item()


# ---------------------------------------------------------------------------------------------
# LLaVA
# ---------------------------------------------------------------------------------------------


def test_tiny_llava_encode_train_generate_reload(tmp_path):
    cfg = TinyVLMConfig(**TINY)
    model, processor = build_tiny_llava()
    assert isinstance(model, LlavaForConditionalGeneration)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert model.config.image_token_index == image_id
    assert model.config.text_config.vocab_size == len(tok)

    samples = shapes_samples(4)
    examples = [encode(processor, s, s.question, s.answer) for s in samples]
    per_image = (cfg.image_size // cfg.patch_size) ** 2
    assert per_image == cfg.image_tokens == 16
    for s, e in zip(samples, examples):
        assert (e["input_ids"] == image_id).sum() == per_image
        assert e["pixel_values"].shape == (1, 3, 64, 64)
        n = check_prompt_masking(processor, s, e, END)
        assert (e["input_ids"][n:] != image_id).all()

    batch = collate(examples, tok.pad_token_id)
    check_collated_rows(batch, examples, tok.pad_token_id)
    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    assert ((batch["input_ids"] == image_id).sum(dim=1) == per_image).all()

    # One AdamW step: a near-uniform random model starts at ~ln(vocab); every part moves.
    before = snapshot(model)
    loss = one_step(model, batch)
    assert math.isfinite(loss) and abs(loss - math.log(len(tok))) < 1.0
    moved = changed(model, before)
    assert {part_of(n) for n in moved} == {"vision", "projector", "lm"}
    assert "model.language_model.embed_tokens.weight" in moved
    with torch.no_grad():
        assert model(**batch).loss.item() < loss  # the step went downhill on its own batch

    # generate: one string per (image, question), greedy -> deterministic.
    images, questions = [s.image for s in samples[:2]], [s.question for s in samples[:2]]
    out = generate(model, processor, images, questions, max_new_tokens=4)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)
    assert generate(model, processor, images, questions, max_new_tokens=4) == out
    assert all("<pad>" not in t and END not in t for t in out)

    # A plain HF checkpoint: the Auto classes reload it offline with identical outputs.
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor2 = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(model2, LlavaForConditionalGeneration)
    examples2 = [encode(processor2, s, s.question, s.answer) for s in samples]
    batch2 = collate(examples2, processor2.tokenizer.pad_token_id)
    assert batch2.keys() == batch.keys()
    for k in batch:
        assert torch.equal(batch2[k], batch[k]), k
    with torch.no_grad():
        logits, logits2 = model(**batch).logits, model2(**batch2).logits
    assert logits.shape == (4, batch["input_ids"].shape[1], len(tok))
    assert torch.equal(logits, logits2)
    assert generate(model2, processor2, images, questions, max_new_tokens=4) == out


# ---------------------------------------------------------------------------------------------
# Qwen2-VL
# ---------------------------------------------------------------------------------------------


def test_tiny_qwen2vl_encode_train_generate():
    model, processor = build_tiny_qwen2vl(shapes_corpus())
    tok = processor.tokenizer
    image_id = model.config.image_token_id
    assert processor.image_token == "<|image_pad|>" and processor.image_token_id == image_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == model.config.vision_start_token_id
    assert model.config.text_config.vocab_size == len(tok)

    samples = shapes_samples(4)
    examples = [encode(processor, s, s.question, s.answer) for s in samples]
    grid = 64 // QWEN_PATCH  # 8x8 patches
    per_image = grid * grid // QWEN_MERGE**2  # merged 2x2 -> 16 tokens
    patch_dim = 3 * QWEN_TEMPORAL * QWEN_PATCH * QWEN_PATCH
    for s, e in zip(samples, examples):
        assert e["image_grid_thw"].tolist() == [[1, grid, grid]]
        assert e["pixel_values"].shape == (grid * grid, patch_dim)
        ids = e["input_ids"]
        assert (ids == image_id).sum() == per_image
        # <|vision_start|> <|image_pad|> x 16 <|vision_end|>, contiguous
        start = (ids == model.config.vision_start_token_id).nonzero().flatten().tolist()
        assert len(start) == 1 and (ids == model.config.vision_end_token_id).sum() == 1
        assert (ids[start[0] + 1: start[0] + 1 + per_image] == image_id).all()
        assert ids[start[0] + 1 + per_image] == model.config.vision_end_token_id
        check_prompt_masking(processor, s, e, "<|im_end|>")

    batch = collate(examples, processor.tokenizer.pad_token_id)
    check_collated_rows(batch, examples, tok.pad_token_id)
    assert batch["image_grid_thw"].tolist() == [[1, grid, grid]] * 4
    assert batch["pixel_values"].shape == (4 * grid * grid, patch_dim)
    assert (batch["mm_token_type_ids"].sum(dim=1) == per_image).all()

    # Parameter naming: patch embed + blocks are vision, the merger is the projector.
    n_train = set_trainable(model, ["projector", "lm"])
    params = dict(model.named_parameters())
    vision = [n for n in params if part_of(n) == "vision"]
    merger = [n for n in params if part_of(n) == "projector"]
    assert vision and all(".visual.blocks." in n or ".visual.patch_embed." in n for n in vision)
    assert merger and all(".visual.merger." in n for n in merger)
    assert not any(params[n].requires_grad for n in vision)
    assert all(params[n].requires_grad for n in merger)
    assert all(p.requires_grad for n, p in params.items() if part_of(n) == "lm")
    assert n_train == sum(p.numel() for n, p in params.items() if part_of(n) != "vision")

    before = snapshot(model)
    loss = one_step(model, batch)
    assert math.isfinite(loss) and abs(loss - math.log(len(tok))) < 1.0
    moved = changed(model, before)
    assert {part_of(n) for n in moved} == {"projector", "lm"}
    assert set(merger) <= moved  # every merger tensor moved
    assert not moved & set(vision)
    with torch.no_grad():
        assert model(**batch).loss.item() < loss

    images, questions = [s.image for s in samples[:2]], [s.question for s in samples[:2]]
    out = generate(model, processor, images, questions, max_new_tokens=4)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)
    assert generate(model, processor, images, questions, max_new_tokens=4) == out
    assert all("<|im_end|>" not in t and "<pad>" not in t for t in out)


def test_qwen2vl_collate_mm_token_type_ids():
    """vrm's own `collate(encode(...))` batch must carry (B, T) modality ids that Qwen2-VL accepts."""
    model, processor = build_tiny_qwen2vl(shapes_corpus(30))
    samples = shapes_samples(4)
    examples = [encode(processor, s, s.question, s.answer) for s in samples]
    batch = collate(examples, processor.tokenizer.pad_token_id)
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape
    assert torch.equal(batch["mm_token_type_ids"], (batch["input_ids"] == processor.image_token_id).long())
    with torch.no_grad():
        assert math.isfinite(model(**batch).loss.item())


def test_qwen2vl_lora_keeps_merger_trainable():
    model, processor = build_tiny_qwen2vl(shapes_corpus(30))
    set_trainable(model, ["projector", "lm"])
    peft_model = add_lora(model, TrainConfig(lora_r=4, trainable=["projector", "lm"]))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    assert not any(part_of(n) == "vision" for n in trainable)
    assert any(".merger." in n for n in trainable)


# ---------------------------------------------------------------------------------------------
# LoRA through vrm's training loop
# ---------------------------------------------------------------------------------------------


def test_lora_train_merges_into_plain_checkpoint(tmp_path):
    cfg = TrainConfig(
        model="scratch", tiny=TinyVLMConfig(**TINY), tasks={"shapes": 1.0}, steps=3, batch_size=2,
        lora_r=4, trainable=["projector", "lm"], lr=1e-2, warmup_steps=0, eval_every=3, eval_n=2,
        save_every=3, log_every=1, out_dir=str(tmp_path), progress=False, threads=1,
    )
    final = train(cfg)
    assert final == tmp_path / "final"
    assert (tmp_path / "checkpoints" / "step_0000003" / "DONE").is_file()
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2, 3]
    assert all(math.isfinite(e["loss"]) for e in entries)
    assert entries[-1]["eval"]["n"] == 2

    model, processor = load_model(final)
    base, _ = load_model(tmp_path / "base")
    assert isinstance(model, LlavaForConditionalGeneration)
    sd, base_sd = model.state_dict(), base.state_dict()
    assert sd.keys() == base_sd.keys()
    assert not any(w in k for k in sd for w in ("lora", "base_layer", "modules_to_save", "original_module"))
    assert not any("lora" in f.name or "adapter" in f.name for f in final.iterdir())

    differs = {k for k in sd if not torch.equal(sd[k], base_sd[k])}
    parts = {k: part_of(k) for k in sd}
    # LoRA targets (the LM's linear layers) got their merged deltas; the projector was fully trained.
    lm_linear = {k for k in sd if parts[k] == "lm" and k.endswith("proj.weight")}
    assert lm_linear and lm_linear <= differs
    assert {k for k in sd if parts[k] == "projector" and k.endswith("weight")} <= differs
    # Not trainable: the vision tower; and the LM's non-linear weights (embeddings, norms) had no adapter.
    assert not any(parts[k] == "vision" for k in differs)
    assert not any(parts[k] == "lm" and not k.endswith("proj.weight") for k in differs)

    s = get_task("shapes").sample(1)
    assert len(generate(model, processor, [s.image], [s.question], max_new_tokens=3)) == 1
