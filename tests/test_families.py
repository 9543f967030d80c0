"""Every tiny family of ``unlearn_trainer.testing``: answer-only batches with all processor keys, causal answers,
LoRA on the language model only, and GA / NPO unlearning end to end."""

import pytest
import torch
from conftest import answer_logprob, train_args
from peft import get_peft_model

from unlearn_trainer import GAConfig, GATrainer, NPOConfig, NPOTrainer, VLMUnlearningCollator
from unlearn_trainer.data import model_inputs
from unlearn_trainer.testing import TINY_FAMILIES, lora_config_for, tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.vision import get_adapter

ALL_FAMILIES = sorted(TINY_FAMILIES)

# processor outputs the model needs besides input_ids / attention_mask / pixel_values
EXTRA_KEYS = {
    "llava": set(),
    "llava_next": {"image_sizes"},
    "qwen2_vl": {"image_grid_thw", "mm_token_type_ids"},
    "qwen2_5_vl": {"image_grid_thw", "mm_token_type_ids"},
    "idefics3": {"pixel_attention_mask"},
    "smolvlm": {"pixel_attention_mask"},
    "gemma3": {"token_type_ids"},
    "paligemma": {"token_type_ids"},
    "internvl": set(),
    "mllama": {"aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"},
}


def _norm(s):
    return "".join(s.lower().split())


def test_every_family_is_covered():
    assert set(EXTRA_KEYS) == set(TINY_FAMILIES)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_collator_labels_answer_only_and_keeps_processor_keys(family):
    model, processor = tiny_model_and_processor(family)
    rows = tiny_vqa_rows(3)
    batch = VLMUnlearningCollator(processor)(rows)
    assert {"input_ids", "attention_mask", "pixel_values", "labels"} | EXTRA_KEYS[family] <= set(batch)
    image = get_adapter(model).image_token_mask(model, batch["input_ids"])
    for i, row in enumerate(rows):
        lab, ids = batch["labels"][i], batch["input_ids"][i]
        pos = lab.ne(-100).nonzero().flatten()
        assert pos.numel() > 0 and pos.tolist() == list(range(int(pos[0]), int(pos[-1]) + 1))
        assert _norm(processor.tokenizer.decode(ids[pos])) == _norm(row["answer"])
        assert image[i].any() and (lab[image[i]] == -100).all()
        assert int(pos[0]) > int(image[i].nonzero().max())
    if family == "paligemma":  # prefix-LM: the answer (and the eos after it) is the causal suffix
        for i in range(len(rows)):
            real = batch["attention_mask"][i].bool()
            pos = batch["labels"][i].ne(-100).nonzero().flatten()
            tti = batch["token_type_ids"][i][real]
            start, stop = int(pos[0]), int(real.nonzero().max()) + 1
            assert (tti[:start] == 0).all() and (tti[start:stop] == 1).all()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_answer_logits_do_not_see_later_tokens(family):
    """Changing the last answer token must not change the logits before it (no bidirectional leak, e.g. a
    PaliGemma answer put in the prefix)."""
    model, processor = tiny_model_and_processor(family)
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(2))
    last = int(batch["labels"][0].ne(-100).nonzero().max())
    other = dict(batch, input_ids=batch["input_ids"].clone())
    other["input_ids"][0, last] = (other["input_ids"][0, last] + 1) % model.config.get_text_config().vocab_size
    with torch.no_grad():
        a = model(**model_inputs(batch)).logits[0, :last]
        b = model(**model_inputs(other)).logits[0, :last]
        changed = model(**model_inputs(other)).logits[0, last]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(changed, model(**model_inputs(batch)).logits[0, last])


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_ga_and_npo_with_lora_lower_forget_logprob(family, tmp_path):
    forget = tiny_vqa_rows(2)
    for trainer_cls, config_cls in [(GATrainer, GAConfig), (NPOTrainer, NPOConfig)]:
        model, processor = tiny_model_and_processor(family)
        model = get_peft_model(model, lora_config_for(model))
        lm_path = get_adapter(model).language_model_path
        lora = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
        assert lora and all(f".{lm_path}." in n for n in lora), lora  # LoRA on the language model only
        before = answer_logprob(model, processor, forget)
        # a constant 1e-2 (Adam) moves every family by > 0.9 nats in 3 steps; 1e-1 overshoots on some
        args = train_args(config_cls, tmp_path, max_steps=3, learning_rate=1e-2, lr_scheduler_type="constant")
        trainer = trainer_cls(model=model, args=args, forget_dataset=forget, processing_class=processor)
        trainer.train()
        after = answer_logprob(model, processor, forget)
        assert after < before - 0.5, (trainer_cls.__name__, before, after)
