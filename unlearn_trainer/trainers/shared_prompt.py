"""Several answers to the same prompts in one forward: the image and question once, each answer continued from them.

Objectives that score two answers to the same (image, question) rows (IdkDPO: the refusal and the forget answer)
would otherwise run the whole sequence, image tokens included, once per answer. Here the columns every batch shares
(the prompt up to the shortest one in the batch) run once, with gradient, and return their key/value cache; each
batch's remaining columns then run on a copy of that cache, as generation continues a prompt. The log-probabilities
and their gradients are those of separate full forwards (up to float rounding: tested per family); the activations
kept for backward are the shared prompt's once plus each answer's.

It applies when the forward of a prefix is the prefix of the full forward: padding at either end (left-padded
batches are moved to the right first: rotary positions see only the tokens' distances), a causal language model (not
PaliGemma's bidirectional prompt), no gradient checkpointing (which turns the cache off), and identical prompt columns
and images in every batch; and not under FSDP, which frees a layer's gathered weights after the layer's backward
while the prompt's backward of that layer, reached through the cache, still needs them (DDP and ZeRO-3 work: tested).
:func:`shared_prompt_reason` says why not otherwise, and the caller runs the full forwards instead.
"""

from __future__ import annotations

import copy
import inspect

import torch

from .. import losses
from ..data.collator import model_inputs
from ..vision.adapters import is_checkpointing, is_fsdp_sharded, unwrap_model

__all__ = ["shared_prompt_logprobs", "shared_prompt_reason"]

# Inputs that only the prompt's forward reads (the images); the continuations get the cache instead.
try:  # transformers' own list (pixel_values, image_sizes, pixel_attention_mask ...)
    from transformers.generation.utils import MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL as _PREFILL_ONLY
except ImportError:  # pragma: no cover - older transformers
    _PREFILL_ONLY = ("pixel_values", "pixel_attention_mask", "image_sizes", "pixel_values_videos")


def _answer_start(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the column of the first answer token (labels != -100)."""
    return (labels != -100).int().argmax(-1)


def _split_column(batches: list[dict]) -> int:
    """The shared columns ``[0, c)``: one before the earliest answer token of any row of any batch, so that every
    answer token is predicted by a continuation's logits."""
    return int(min(int(_answer_start(b["labels"]).min()) for b in batches)) - 1


def _sequence_keys(inputs: dict, length: int) -> list[str]:
    return [k for k, v in inputs.items() if torch.is_tensor(v) and v.dim() >= 2 and v.shape[1] == length
            and k not in _PREFILL_ONLY]


def _right_padded(batch: dict) -> dict:
    """``batch`` with left padding moved to the right (every sequence-shaped tensor, labels included, shifted left
    per row by its count of leading padding), so that the shared prompt columns hold no padding. The rows' tokens
    keep their order and their distances, which is all rotary positions see: the logits are the same up to float
    rounding. A right-padded batch comes back as it is."""
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2 or bool(mask[:, 0].bool().all()):
        return batch
    length = mask.shape[1]
    lead = (mask != 0).int().argmax(-1)  # leading padding per row
    index = (torch.arange(length, device=mask.device)[None, :] + lead[:, None]) % length
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() >= 2 and v.shape[0] == mask.shape[0] and v.shape[1] == length:
            idx = index.view(*index.shape, *([1] * (v.dim() - 2))).expand_as(v)
            v = torch.gather(v, 1, idx)
        out[k] = v
    return out


def shared_prompt_reason(model, batches: list[dict]) -> str | None:
    """``None`` if :func:`shared_prompt_logprobs` applies to ``batches`` on ``model``, else why not (one line)."""
    batches = [_right_padded(b) for b in batches]
    base = unwrap_model(model)
    text_config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if getattr(text_config, "use_bidirectional_attention", False):
        return "the prompt attends bidirectionally (prefix-LM), so a prefix's forward is not the full forward's"
    if is_checkpointing(model):
        return "gradient checkpointing turns the key/value cache off"
    if is_fsdp_sharded(model):
        return ("FSDP frees each layer's gathered weights after its backward, which the prompt's backward still "
                "needs after the answers'")
    prepare = getattr(base, "prepare_inputs_for_generation", None)
    if prepare is None or "cache" not in inspect.signature(base.forward).parameters:
        return "the model does not continue from a cache (or not with this transformers version's cache API)"
    from transformers.generation.utils import GenerationMixin

    if "next_sequence_length" not in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters:
        return "this transformers version's generation inputs differ from the ones this path was written for (5.24)"
    if any("attention_mask" not in b or "labels" not in b for b in batches):
        return "a batch has no attention_mask or labels"
    if any(b["input_ids"].shape[0] != batches[0]["input_ids"].shape[0] for b in batches):
        return "the batches have different numbers of rows"
    c = _split_column(batches)
    if c < 1:
        return "a row has no prompt before its answer"
    for b in batches:
        mask = b["attention_mask"].bool()
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()) or not bool(mask[:, :c].all()):
            return "padding inside the sequences (neither left nor right padding)"
    first = model_inputs(batches[0])
    keys = _sequence_keys(first, first["input_ids"].shape[1])
    for other in batches[1:]:
        inputs = model_inputs(other)
        if set(inputs) != set(first):
            return "the batches have different model inputs"
        for k, v in first.items():
            w = inputs[k]
            if k in keys:
                same = torch.equal(v[:, :c], w[:, :c])
            elif torch.is_tensor(v):
                same = torch.is_tensor(w) and v.shape == w.shape and torch.equal(v, w)
            else:
                same = v == w
            if not same:
                return f"the batches' prompts differ ({k})"
    return None


def _full_position_ids(base, inputs: dict) -> torch.Tensor | None:
    """Position ids of the full sequences, for models that compute them from the images (Qwen2-VL's 3-D M-RoPE);
    ``None`` for the others (positions 0..L-1, which a cache continues by itself)."""
    inner = getattr(base, "model", None)
    get_rope_index = getattr(inner, "get_rope_index", None)
    if get_rope_index is None:
        return None
    params = inspect.signature(get_rope_index).parameters
    kwargs = {k: inputs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask",
                                      "mm_token_type_ids") if k in params and k in inputs}
    positions, _ = get_rope_index(inputs["input_ids"], **kwargs)
    return positions


def shared_prompt_logprobs(model, batches: list[dict]) -> list[torch.Tensor]:
    """Per-sequence answer log-probabilities ``log p(y | I, x)`` (``[B]`` each, with gradient) of every batch in
    ``batches`` (collated rows that share their images and prompts and differ in the answers), computing the shared
    prompt once. Call :func:`shared_prompt_reason` first: this assumes it returned ``None``."""
    batches = [_right_padded(b) for b in batches]
    base = unwrap_model(model)
    c = _split_column(batches)
    first = model_inputs(batches[0])
    keys = _sequence_keys(first, first["input_ids"].shape[1])
    forward_params = inspect.signature(base.forward).parameters
    prompt = {k: (v[:, :c] if k in keys else v) for k, v in first.items()}
    positions = _full_position_ids(base, first)
    if positions is not None:
        prompt["position_ids"] = positions[..., :c]
    if "logits_to_keep" in forward_params:
        # no position: the prompt's logits predict no answer token. (Not the last position: a one-token slice sent
        # through the output layer in bf16 on CPU made matmul copy the whole [D, V] weight, 0.8 s on LLaVA-7B.)
        prompt["logits_to_keep"] = torch.zeros(0, dtype=torch.long, device=first["input_ids"].device)
    cache = model(**prompt, use_cache=True).cache
    out = []
    for batch in batches:
        inputs = model_inputs(batch)
        length = inputs["input_ids"].shape[1]
        continued = copy.copy(cache)  # each answer continues its own copy (the update replaces, never writes into,
        continued.layers = [copy.copy(layer) for layer in cache.layers]  # the shared tensors)
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if positions is not None:
            extra["position_ids"] = _full_position_ids(base, inputs) if batch is not batches[0] else positions
        step = base.prepare_inputs_for_generation(inputs["input_ids"], next_sequence_length=length - c,
                                                  cache=continued, attention_mask=inputs["attention_mask"],
                                                  is_first_iteration=False, use_cache=True, **extra)
        logits = model(**step).logits
        out.append(losses.sequence_logprob(logits, batch["labels"][:, c:]))
    return out
