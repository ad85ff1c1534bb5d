"""Image codes in a VLM's vocabulary, for visual thoughts (MVoT): one token per code of the image
tokenizer (``<img_0>`` ... ``<img_{K-1}>``), with ``<boi>``/``<eoi>`` around each image, and one
token per piece of a step line (`vrm.formats.visual.step_words`: "Step 3:", "Go down.") so that
consecutive images sit a fixed number of tokens apart, and one per move as a question lists it
(`vrm.formats.visual.question_words`: " up", " down"), so the question's actions sit 2 tokens apart.

A checkpoint that draws visual thoughts keeps its image tokenizer beside it, in
``<checkpoint>/image_tokenizer``, so it is one folder to copy and to load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vrm import VrmError
from vrm.formats.visual import BOI, EOI, code_token, question_words, step_words

IMAGE_TOKENIZER_DIR = "image_tokenizer"


def add_image_codes(model, processor, codebook_size: int):
    """Add ``codebook_size`` code tokens (and the image markers, if missing), then the step lines'
    words and the question's moves (whole words only: " up" in "Actions: up, down." but not in
    "upper"), to the tokenizer and grow the LM's embeddings to match; new rows start spread like
    the old ones (`spread_new_rows`). The codes' ids are one contiguous run (`code_ids`)."""
    from tokenizers import AddedToken

    tok = processor.tokenizer
    if code_token(0) in tok.get_vocab():
        raise VrmError("this model already has image-code tokens")
    old = model.get_input_embeddings().weight.shape[0]
    tok.add_tokens([BOI, EOI], special_tokens=True)
    tok.add_tokens([code_token(i) for i in range(codebook_size)], special_tokens=True)
    tok.add_tokens([AddedToken(word, single_word=True, normalized=False)
                    for word in question_words() if word not in tok.get_vocab()])
    return add_step_words(model, processor, old)


def add_step_words(model, processor, old: int | None = None):
    """Add the step lines' words the tokenizer lacks (`vrm.formats.visual.step_words`; a checkpoint
    trained before a word was added, e.g. the plan's ``Next:`` slots, lacks it) and grow the LM's
    embeddings from ``old`` rows (default: as many as it has) to match, the new rows spread like the
    old ones (`spread_new_rows`). A model that has every word is returned unchanged."""
    tok = processor.tokenizer
    old = model.get_input_embeddings().weight.shape[0] if old is None else old
    tok.add_tokens([word for word in step_words() if word not in tok.get_vocab()])
    if len(tok) > old:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        spread_new_rows(model, old)
    return model, processor


@torch.no_grad()
def spread_new_rows(model, old: int, seed: int = 0) -> None:
    """Give the embedding rows from ``old`` on (input, and output if untied) random directions at
    the old rows' median length, so any two new tokens start about orthogonal, as two unrelated
    words are. transformers' ``mean_resizing`` draws them from the old rows' covariance times 1e-9,
    i.e. all at the old mean (cosine 0.98 between "Go up." and "Go down." in the embedded model),
    and as the model cannot tell such tokens apart, the training signal that would separate them
    cancels: after 1,200 MVoT steps the four moves were at cosine 0.99 and every action was read
    at chance."""
    tables = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != tables[0].data_ptr():
        tables.append(out.weight)
    generator = torch.Generator().manual_seed(seed)
    for table in tables:
        rows = torch.randn(len(table) - old, table.shape[1], generator=generator)
        length = table[:old].norm(dim=1).median()
        table[old:] = (rows / rows.norm(dim=1, keepdim=True) * length).to(table.dtype)


def code_ids(tokenizer) -> tuple[int, int]:
    """(id of ``<img_0>``, number of codes): the codes' ids are one contiguous run.

    Raises `VrmError` when the tokenizer has no image codes (a model not trained for visual thoughts).
    """
    vocab = tokenizer.get_vocab()
    if code_token(0) not in vocab:
        raise VrmError("this model has no image-code tokens: the visual format needs a model trained with "
                       "`vrm train mvot` (it draws visual thoughts)")
    first, n = vocab[code_token(0)], 0
    while code_token(n) in vocab:
        if vocab[code_token(n)] != first + n:
            raise VrmError("image-code token ids are not contiguous")
        n += 1
    return first, n


def marker_ids(tokenizer) -> tuple[int, int]:
    """The ids of ``<boi>`` and ``<eoi>``."""
    return tokenizer.convert_tokens_to_ids(BOI), tokenizer.convert_tokens_to_ids(EOI)


def load_checkpoint_image_tokenizer(model_path: str | Path | None):
    """The image tokenizer saved with a visual-thought checkpoint (``<path>/image_tokenizer``)."""
    from vrm.model.load import DEFAULT_MODEL_DIR
    from vrm.model.vq import load_image_tokenizer

    folder = Path(model_path or DEFAULT_MODEL_DIR) / IMAGE_TOKENIZER_DIR
    if not (folder / "config.json").is_file():
        raise VrmError(f"{folder}: no image tokenizer here; the visual format needs a checkpoint from "
                       "`vrm train mvot` (it saves its image tokenizer beside the model)")
    return load_image_tokenizer(folder)
