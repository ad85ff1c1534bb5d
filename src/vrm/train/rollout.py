"""Rollouts for GRPO: G sampled completions per prompt, through a generation backend, and the
policy's per-token log-probabilities of them.

Backends share two methods: ``generate(model, processor, prompts, images, questions, n,
max_new_tokens, temperature) -> token-id lists`` (``n`` per prompt, in order; ``prompts`` are the
processor's tensors of ``images`` + ``questions``), and ``sync(model)`` after the weights change:

- `HFBackend` (``backend: hf``, the default): transformers ``generate`` on the training weights,
  CPU or GPU, each prompt encoded once and its cache repeated ``n`` times; nothing to sync.
- `VLLMBackend` (``backend: vllm``): a colocated vLLM engine on the GPU, its weights reloaded
  from the policy after every optimiser step. A clear `VrmError` where vllm is not importable or
  no CUDA GPU is visible.

`Policy` scores completions. All G completions of a prompt share it, so by default the prompt
(image tokens included) runs once per group and its key/value cache is repeated G times for the
completions: the same log-probabilities (`sharing_error` checks it against the plain forward at
start-up) for about 1/G of the prompt compute. Models with per-token prompt inputs (Qwen2-VL's
``mm_token_type_ids``) always take the plain path.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass

import torch
from torch import nn

from vrm import VrmError
from vrm.infer.generate import placeholder_ids, prompt_text, stop_ids

PER_TOKEN = ("mm_token_type_ids", "token_type_ids")  # prompt inputs with one entry per token


def encode_prompts(processor, images, questions) -> dict[str, torch.Tensor]:
    """The processor's tensors for one image + question per row, left-padded (as for generation)."""
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        return dict(processor(images=list(images), text=[prompt_text(processor, q) for q in questions],
                              padding=True, return_tensors="pt"))
    finally:
        tok.padding_side = side


def repeat_rows(inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Every prompt row repeated ``n`` times in place (``a, a, b, b``), image tensors included.

    Image patches concatenated over the batch (Qwen2-VL's ``pixel_values`` beside
    ``image_grid_thw``) are split per image first.
    """
    rows = inputs["input_ids"].shape[0]
    out = {}
    for key, value in inputs.items():
        if key == "pixel_values" and "image_grid_thw" in inputs and value.shape[0] != rows:
            chunks = value.split(inputs["image_grid_thw"].prod(-1).tolist())
            out[key] = torch.cat([c for c in chunks for _ in range(n)])
        else:
            out[key] = value.repeat_interleave(n, dim=0)
    return out


def select_rows(inputs: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Prompt rows ``start:stop`` of a processor batch, image tensors included (see `repeat_rows`)."""
    rows = inputs["input_ids"].shape[0]
    out = {}
    for key, value in inputs.items():
        if key == "pixel_values" and "image_grid_thw" in inputs and value.shape[0] != rows:
            sizes = inputs["image_grid_thw"].prod(-1).tolist()
            out[key] = value[sum(sizes[:start]):sum(sizes[:stop])]
        else:
            out[key] = value[start:stop]
    return out


@dataclass
class Rollout:
    """Completions of a batch of prompts, ``G`` per prompt, contiguous per prompt.

    Shapes: ``completion_ids`` and ``completion_mask`` (B*G, C); ``mask`` is 1 on generated tokens
    up to and including the stop token. ``texts`` keep special tokens (``<think>``...).
    """

    prompts: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    truncated: list[bool]
    group_size: int

    def take(self, groups: list[int], device) -> tuple:
        """(prompts, completion ids, mask, row indices) of some prompt groups, on ``device``, the
        completion columns trimmed to the longest of them."""
        rows = torch.tensor([g * self.group_size + j for g in groups for j in range(self.group_size)])
        mask = self.completion_mask[rows]
        width = max(1, int(mask.sum(1).max()))
        parts: dict[str, list] = {}
        for g in groups:
            for key, value in select_rows(self.prompts, g, g + 1).items():
                parts.setdefault(key, []).append(value)
        prompts = {key: torch.cat(v).to(device) for key, v in parts.items()}
        return prompts, self.completion_ids[rows, :width].to(device), mask[:, :width].to(device), rows.to(device)


def pack(sequences: list[list[int]], stops: list[int], pad_id: int, tokenizer) -> tuple:
    """Token lists -> (ids (N, C) right-padded, mask (N, C), texts, truncated): each cut after its
    first stop token; text without the stop token and padding."""
    cut = []
    for seq in sequences:
        end = next((i for i, t in enumerate(seq) if t in stops), None)
        cut.append((seq[: end + 1] if end is not None else seq, end is None))
    width = max(1, max(len(s) for s, _ in cut))
    ids = torch.full((len(cut), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(cut), width), dtype=torch.long)
    texts = []
    for i, (seq, truncated) in enumerate(cut):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
        body = seq if truncated else seq[:-1]
        texts.append(tokenizer.decode([t for t in body if t != tokenizer.pad_token_id],
                                      skip_special_tokens=False).strip())
    return ids, mask, texts, [t for _, t in cut]


def rollout_seed(seed: int, step: int, rank: int) -> int:
    """The sampling seed of one step on one rank: a resumed run samples what the first run did."""
    digest = hashlib.sha256(f"rollout-{seed}-{step}-{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rollout_metrics(r, rewards) -> dict[str, float]:
    """What a rollout batch scored: reward (total, spread within groups, each part), accuracy (share of
    correct answers), the share of groups without signal, completion length and truncation."""
    total = torch.tensor(rewards.total).view(-1, r.group_size)
    out = {"reward": total.mean().item(), "reward_std": total.std(dim=1).mean().item(),
           "zero_std_groups": (total.std(dim=1) == 0).float().mean().item(),
           **{f"reward_{name}": sum(v) / len(v) for name, v in rewards.parts.items()},
           "completion_length": r.completion_mask.sum(1).float().mean().item(),
           "truncated": sum(r.truncated) / len(r.truncated)}
    if "correctness" in rewards.parts:
        out["accuracy"] = sum(v == 1.0 for v in rewards.parts["correctness"]) / len(r.texts)
    return out


def rollout(backend, model, processor, images, questions, n: int, max_new_tokens: int,
            temperature: float) -> Rollout:
    """Encode the prompts, sample ``n`` completions of each, pack them for the policy."""
    prompts = encode_prompts(processor, images, questions)
    sequences = backend.generate(model, processor, prompts, images, questions, n, max_new_tokens, temperature)
    stops = stop_ids(model, processor)
    pad = processor.tokenizer.pad_token_id
    ids, mask, texts, truncated = pack(sequences, stops, stops[0] if pad is None else pad, processor.tokenizer)
    return Rollout(prompts, ids, mask, texts, truncated, n)


class HFBackend:
    """transformers ``generate``, ``n`` samples per prompt. With ``share_prompt`` each prompt is
    encoded once and its cache repeated ``n`` times before sampling (same samples, fewer FLOPs)."""

    name = "hf"

    def __init__(self, share_prompt: bool = True):
        self.share_prompt = share_prompt

    @torch.no_grad()
    def generate(self, model, processor, prompts, images, questions, n, max_new_tokens, temperature):
        stops = stop_ids(model, processor)
        pad = processor.tokenizer.pad_token_id
        inputs = {k: v.to(model.device) for k, v in prompts.items()}
        width = inputs["input_ids"].shape[1]
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=None, top_k=None,
                      eos_token_id=stops, pad_token_id=stops[0] if pad is None else pad,
                      suppress_tokens=placeholder_ids(model))
        was_training = model.training
        model.eval()
        try:
            if self.share_prompt and not set(inputs) & set(PER_TOKEN):  # cache all but the last prompt token
                ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
                first = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions(mask[:, :-1]),
                              use_cache=True, logits_to_keep=1, **inputs)
                first.past_key_values.batch_repeat_interleave(n)
                out = model.generate(input_ids=ids.repeat_interleave(n, dim=0), attention_mask=mask.repeat_interleave(
                    n, dim=0), past_key_values=first.past_key_values, **kwargs)
            else:
                out = model.generate(**inputs, num_return_sequences=n, **kwargs)
        finally:
            model.train(was_training)
        return out[:, width:].tolist()

    def sync(self, model) -> None:
        pass


class VLLMBackend:
    """A vLLM engine on the same GPU ("colocate"), weights pushed from the policy after each update.
    vLLM caches shared prompt prefixes itself."""

    name = "vllm"
    share_prompt = True

    def __init__(self, model_path: str, gpu_memory_utilization: float = 0.3, max_model_len: int = 2048, seed: int = 0):
        if importlib.util.find_spec("vllm") is None:
            raise VrmError("backend=vllm needs the vllm package, which is not installed here (pip install vllm); "
                           "use backend=hf")
        if not torch.cuda.is_available():
            raise VrmError("backend=vllm needs a CUDA GPU and none is visible; use backend=hf")
        from vllm import LLM

        self.llm = LLM(model=str(model_path), gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, enable_prefix_caching=True, seed=seed)

    def generate(self, model, processor, prompts, images, questions, n, max_new_tokens, temperature):
        from vllm import SamplingParams

        params = SamplingParams(n=n, max_tokens=max_new_tokens, temperature=temperature,
                                stop_token_ids=stop_ids(model, processor), skip_special_tokens=False)
        requests = [{"prompt": prompt_text(processor, q), "multi_modal_data": {"image": im}}
                    for im, q in zip(images, questions)]
        outs = self.llm.generate(requests, params, use_tqdm=False)
        return [list(c.token_ids) for o in outs for c in o.outputs]

    def sync(self, model) -> None:
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        engine_model.load_weights(model.state_dict().items())
        self.llm.reset_prefix_cache()


def get_backend(name: str, model_path: str = "", share_prompt: bool = True, **kwargs):
    if name == "hf":
        return HFBackend(share_prompt)
    if name == "vllm":
        return VLLMBackend(model_path, **kwargs)
    raise VrmError(f"unknown generation backend {name!r}; known: hf, vllm")


def token_logps(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each token under the sampling distribution, and its entropy (no grad).
    No (N, C, V) log-softmax is kept for the backward pass: the chosen logit minus the logsumexp.

    Shapes: logits (N, C, V), ids (N, C) -> logps (N, C), entropy (N, C).
    """
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logps = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse
    with torch.no_grad():  # H = lse - sum(p * logit), a few rows at a time
        entropy = torch.cat([z - ((x - z.unsqueeze(-1)).exp() * x).sum(-1)
                             for x, z in zip(logits.detach().split(8), lse.detach().split(8))])
    return logps, entropy


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded row, as ``generate`` counts them (padding at 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class Policy(nn.Module):
    """The model as a scorer of completions; one module so DDP sees one forward per backward.

    ``forward(prompts, completion_ids, group_size, temperature) -> (logps, entropy)``, both (N, C),
    prompts with B rows and completions with N = B * group_size rows.
    """

    def __init__(self, model, share_prompt: bool = True):
        super().__init__()
        self.model = model
        self.share_prompt = share_prompt

    def forward(self, prompts, completion_ids, group_size: int, temperature: float = 1.0):
        if self.share_prompt and not set(prompts) & set(PER_TOKEN):
            return self.shared(prompts, completion_ids, group_size, temperature)
        return self.plain(prompts, completion_ids, group_size, temperature)

    def plain(self, prompts, completion_ids, group_size, temperature):
        """Prompt and completion in one sequence per completion."""
        p = repeat_rows(prompts, group_size)
        mask = torch.cat([p.pop("attention_mask"), torch.ones_like(completion_ids[:, :-1])], dim=1)
        input_ids = torch.cat([p.pop("input_ids"), completion_ids[:, :-1]], dim=1)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions(mask), use_cache=False,
                         logits_to_keep=completion_ids.shape[1], **p)
        return token_logps(out.logits, completion_ids, temperature)

    def shared(self, prompts, completion_ids, group_size, temperature):
        """The prompt once per group; its cache repeated for the group's completions."""
        p = dict(prompts)
        prompt_mask = p.pop("attention_mask")
        first = self.model(attention_mask=prompt_mask, position_ids=positions(prompt_mask), use_cache=True,
                           logits_to_keep=1, **p)
        logits = first.logits.repeat_interleave(group_size, dim=0)
        if completion_ids.shape[1] > 1:
            cache = first.past_key_values
            cache.batch_repeat_interleave(group_size)
            rest = completion_ids[:, :-1]
            mask = torch.cat([prompt_mask.repeat_interleave(group_size, dim=0), torch.ones_like(rest)], dim=1)
            out = self.model(input_ids=rest, attention_mask=mask, position_ids=positions(mask)[:, -rest.shape[1]:],
                             past_key_values=cache, use_cache=True)
            logits = torch.cat([logits, out.logits], dim=1)
        return token_logps(logits, completion_ids, temperature)


@torch.no_grad()
def sharing_error(policy: Policy, prompts: dict[str, torch.Tensor], temperature: float = 1.0) -> float:
    """Largest log-prob difference between the shared-prompt and the plain forward on ``prompts``
    with two arbitrary 4-token completions each: ~1e-6 where sharing is exact."""
    ids = torch.randint(0, policy.model.get_input_embeddings().num_embeddings, (2 * len(prompts["input_ids"]), 4),
                        generator=torch.Generator().manual_seed(0)).to(prompts["input_ids"].device)
    shared = policy.shared(prompts, ids, 2, temperature)[0]
    plain = policy.plain(prompts, ids, 2, temperature)[0]
    return float((shared - plain).abs().max())
