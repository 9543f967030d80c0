"""The shared-prompt forward (IdkDPO's refusal and forget answer continued from one forward of the image and
question): the same log-probabilities and gradients as separate full forwards on every family it applies to, one
vision-tower forward for both answers, and a stated reason (the caller then runs full forwards) wherever a prefix's
forward is not the full forward's prefix."""

import pytest
import torch
from conftest import SavedActivations, tiny_model

from unlearn_trainer import VLMUnlearningCollator, losses
from unlearn_trainer.data import ForgetRetainDataset, model_inputs
from unlearn_trainer.data.refusals import RefusalCollator
from unlearn_trainer.testing import TINY_FAMILIES, tiny_vqa_rows
from unlearn_trainer.trainers.shared_prompt import shared_prompt_logprobs, shared_prompt_reason

POOL = ["i do not know .", "i do not know who this is .", "no"]
QUESTIONS = ["what is in this image ?", "who is this ?", "what is in this image , and what is it doing ?"]
NOT_SHARED = {"paligemma": "bidirectionally"}  # its full forwards are used instead


def _batches(processor, n=3):
    """A forget batch and its refusal batch; the questions differ in length, so the rows' prompts end at different
    columns (the continuations then hold the end of the longer prompts)."""
    rows = tiny_vqa_rows(n)
    for row, question in zip(rows, QUESTIONS):
        row["question"] = question
    paired = ForgetRetainDataset(rows, tiny_vqa_rows(2, seed=4))
    collator = RefusalCollator(VLMUnlearningCollator(processor), refusals=POOL, seed=3)
    batch = collator([paired[i] for i in range(n)])
    return batch["forget"], batch["refusal"]


@pytest.mark.parametrize("name", sorted(TINY_FAMILIES))
def test_shared_prompt_matches_full_forwards(name):
    model, processor = tiny_model(name)
    model.train()
    forget, refusal = _batches(processor)
    reason = shared_prompt_reason(model, [refusal, forget])
    if name in NOT_SHARED:
        assert reason is not None and NOT_SHARED[name] in reason
        return
    assert reason is None
    if name == "internvl":  # its processor pads on the left: the batches are moved to the right padding first
        assert not bool(forget["attention_mask"][:, 0].all())
    params = [p for p in model.parameters() if p.requires_grad]
    full = [losses.sequence_logprob(model(**model_inputs(b), use_cache=False).logits, b["labels"])
            for b in (refusal, forget)]
    shared = shared_prompt_logprobs(model, [refusal, forget])
    for a, b in zip(full, shared):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
    # a combination with different weights per answer, so that a swapped or shared answer would show
    grads_full = torch.autograd.grad(full[0].sum() - 2 * full[1].sum(), params, allow_unused=True)
    grads_shared = torch.autograd.grad(shared[0].sum() - 2 * shared[1].sum(), params, allow_unused=True)
    for a, b in zip(grads_full, grads_shared):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_the_prompt_runs_once_with_lora():
    """Under LoRA, both answers read the vision tower's output of one forward, hold less for backward than two
    full forwards, and the adapter gets the gradient of the separate full forwards."""
    model, processor = tiny_model("llava", lora=True)
    forget, refusal = _batches(processor)
    calls, head_tokens = [], []
    tower = model.get_base_model().model.vision_tower
    handles = [tower.register_forward_hook(lambda *a: calls.append(1)),
               model.get_base_model().lm_head.register_forward_hook(
                   lambda module, args, out: head_tokens.append(args[0].shape[1]))]
    held = {"shared": SavedActivations(), "full": SavedActivations()}
    try:
        with torch.autograd.graph.saved_tensors_hooks(held["shared"].pack, held["shared"].unpack):
            shared = shared_prompt_logprobs(model, [refusal, forget])
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == 1
    # the prompt's forward sends no position through the output layer (its logits predict no answer token; a
    # one-position slice made bf16 matmul on CPU copy the whole output weight), each answer its own columns
    c = refusal["input_ids"].shape[1] - head_tokens[1]
    assert head_tokens == [0, refusal["input_ids"].shape[1] - c, forget["input_ids"].shape[1] - c]
    with torch.autograd.graph.saved_tensors_hooks(held["full"].pack, held["full"].unpack):
        full = [losses.sequence_logprob(model(**model_inputs(b), use_cache=False).logits, b["labels"])
                for b in (refusal, forget)]
    # activations held for backward: the prompt once plus both answers, not both whole sequences (on these tiny
    # rows the prompt is short, so the saving is small; 0.78 measured)
    assert held["shared"].peak < 0.85 * held["full"].peak, {k: v.peak for k, v in held.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    g_shared = torch.autograd.grad((shared[0] - shared[1]).sum(), trainable)
    g_full = torch.autograd.grad((full[0] - full[1]).sum(), trainable)
    for a, b in zip(g_full, g_shared):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_cases_where_a_prompt_forward_is_not_the_full_forwards_prefix_are_refused():
    model, processor = tiny_model("llava")
    forget, refusal = _batches(processor)
    assert shared_prompt_reason(model, [refusal, forget]) is None
    other = dict(refusal, input_ids=refusal["input_ids"].clone())
    other["input_ids"][1, 3] += 1  # a different prompt token
    assert "prompts differ (input_ids)" in shared_prompt_reason(model, [other, forget])
    images = dict(refusal, pixel_values=refusal["pixel_values"] + 1)
    assert "prompts differ (pixel_values)" in shared_prompt_reason(model, [images, forget])
    holes = dict(forget, attention_mask=forget["attention_mask"].clone())
    holes["attention_mask"][0, 5] = 0  # padding inside a sequence
    assert "padding inside" in shared_prompt_reason(model, [refusal, holes])
    model.gradient_checkpointing_enable()
    assert "checkpointing" in shared_prompt_reason(model, [refusal, forget])


def test_another_transformers_generation_api_falls_back(monkeypatch):
    """The continuation uses transformers 5.24's generation inputs; with a different API the caller runs full
    forwards instead of failing mid-training."""
    from transformers.generation.utils import GenerationMixin

    model, processor = tiny_model("llava")
    forget, refusal = _batches(processor)
    monkeypatch.setattr(GenerationMixin, "prepare_inputs_for_generation",
                        lambda self, input_ids, past_key_values=None, cache_position=None, **kwargs: {})
    assert "generation inputs differ" in shared_prompt_reason(model, [refusal, forget])
