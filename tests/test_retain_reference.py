"""The shared machinery's retain rows and reference model: training walks the whole retain set; the reference of a
PEFT model is frozen (or the run is refused) and runs in eval mode."""

import pytest
import torch
from conftest import tiny_model, train_args
from peft import get_peft_model

from unlearn_trainer import (
    GAConfig,
    GATrainer,
    NPOConfig,
    NPOTrainer,
    SaliencyConfig,
    SaliencyTrainer,
    VLMUnlearningCollator,
    losses,
)
from unlearn_trainer.data import ForgetRetainDataset, model_inputs
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows


def _record_pairs(trainer) -> list[list[tuple[int, int]]]:
    """Make ``trainer``'s collator record, per batch, the (forget row, retain row) pairs it collates."""
    pairs: list[list[tuple[int, int]]] = []
    collator = trainer.data_collator

    def recording(items):
        pairs.append([(it["forget"]["__index__"], it["retain"]["__index__"]) for it in items])
        return collator(items)

    trainer.data_collator = recording
    return pairs


# -- item: training walks the whole retain set ------------------------------------------------------------------
def test_pairing_rotates_through_the_retain_set_each_cycle():
    forget = [{"question": "q", "answer": f"f{i}"} for i in range(3)]
    retain = [{"question": "q", "answer": f"r{i}"} for i in range(10)]
    ds = ForgetRetainDataset(forget, retain, seed=1)
    assert ds.epochs_per_cycle == 4  # ceil(10 / 3)
    epochs = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        epochs.append([ds[i]["retain"]["__index__"] for i in range(3)])
    for cycle in (epochs[:4], epochs[4:]):
        assert {j for e in cycle for j in e} == set(range(10))  # every retain row once per 4 epochs
    assert all(len(set(e)) == 3 for e in epochs)  # no retain row twice in one epoch
    assert epochs[:4] != epochs[4:]  # each cycle has its own order
    # a function of (seed, epoch, index) only: a fresh copy gives the same pairs, another seed others
    other, again = ForgetRetainDataset(forget, retain, seed=2), ForgetRetainDataset(forget, retain, seed=1)
    again.set_epoch(5)
    assert [again[i]["retain"]["__index__"] for i in range(3)] == epochs[5]
    assert [[other.retain_index(i, e) for i in range(3)] for e in range(8)] != epochs
    # more forget rows than retain rows: every epoch covers the whole retain set, in a fresh order
    big = ForgetRetainDataset(retain, forget, seed=0)
    orders = [[big.retain_index(i, e) for i in range(10)] for e in range(3)]
    assert all(set(o) == {0, 1, 2} for o in orders) and len({tuple(o) for o in orders}) > 1


def test_training_uses_every_retain_row(tmp_path):
    """Through a real trainer: 3 forget rows, 10 retain rows, 4 one-batch epochs: every retain row is used."""
    model, processor = tiny_model("llava", lora=True)
    args = train_args(GAConfig, tmp_path, variant="ga_gd", per_device_train_batch_size=3, max_steps=4,
                      learning_rate=1e-3)
    trainer = GATrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(3),
                        retain_dataset=tiny_vqa_rows(10, seed=4), processing_class=processor)
    pairs = _record_pairs(trainer)
    trainer.train()
    assert trainer.state.epoch == 4 and len(pairs) == 4
    seen = [{j for _, j in batch} for batch in pairs]
    assert set().union(*seen) == set(range(10)), seen
    assert all(len(s) == 3 for s in seen)
    assert all("retain_nll" in h for h in trainer.state.log_history if "loss" in h)


def test_accumulation_and_resume_see_the_same_pairs(tmp_path):
    """The pairs of each epoch are the same with gradient accumulation, and a run resumed mid-epoch continues
    with the pairs of the uninterrupted run."""
    forget, retain = tiny_vqa_rows(2), tiny_vqa_rows(5, seed=4)

    def run(out, bs, acc, max_steps, **kw):
        model, processor = tiny_model("llava", lora=True)
        args = train_args(GAConfig, tmp_path / out, variant="ga_gd", per_device_train_batch_size=bs,
                          gradient_accumulation_steps=acc, max_steps=max_steps, learning_rate=1e-3, **kw)
        trainer = GATrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                            processing_class=processor)
        return trainer, _record_pairs(trainer)

    whole, whole_pairs = run("whole", 2, 1, 3)  # 3 epochs of one step
    whole.train()
    accumulated, acc_pairs = run("acc", 1, 2, 3)
    accumulated.train()
    assert [sorted(b) for b in whole_pairs] == [sorted(a + b) for a, b in zip(acc_pairs[::2], acc_pairs[1::2])]
    assert len({tuple(sorted(b)) for b in whole_pairs}) == 3  # the pairs change every epoch

    # 1 row per step, 2 steps per epoch: checkpoint after step 3 (mid-epoch 1), resume there
    straight, straight_pairs = run("straight", 1, 1, 6, save_strategy="steps", save_steps=3)
    straight.train()
    resumed, resumed_pairs = run("straight", 1, 1, 6)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "out" / "checkpoint-3"))
    assert resumed_pairs[-3:] == straight_pairs[-3:], (resumed_pairs, straight_pairs)
    assert {j for b in straight_pairs for _, j in b} == set(range(5))


# -- item: the PEFT reference is frozen or the run is refused ---------------------------------------------------
def test_peft_reference_with_trainable_base_weights_is_refused(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    model.base_model.model.model.multi_modal_projector.requires_grad_(True)
    with pytest.raises(ValueError, match=r"multi_modal_projector.*Freeze them.*modules_to_save.*without PEFT"):
        NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                   processing_class=processor)
    # a KL retain term uses the reference too
    with pytest.raises(ValueError, match="multi_modal_projector"):
        GATrainer(model=model, args=train_args(GAConfig, tmp_path, retain_loss="kl"), forget_dataset=tiny_vqa_rows(2),
                  retain_dataset=tiny_vqa_rows(2, seed=1), processing_class=processor)
    # a run without the reference may train them
    GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
              processing_class=processor)
    # LoraConfig(bias="all") trains the base biases: refused as well
    base, _ = tiny_model_and_processor("llava")
    with pytest.raises(ValueError, match=r"\.bias"):
        NPOTrainer(model=get_peft_model(base, lora_config_for(bias="all")), args=train_args(NPOConfig, tmp_path),
                   forget_dataset=tiny_vqa_rows(2), processing_class=processor)


def test_trainable_set_changed_after_construction_is_refused_at_train(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                         processing_class=processor)
    model.base_model.model.model.multi_modal_projector.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="multi_modal_projector"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # refused before any update


def test_saliency_trainable_modules_with_peft_and_kl_retain_is_refused(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    args = train_args(SaliencyConfig, tmp_path, trainable_modules=["multi_modal_projector"], retain_loss="kl")
    with pytest.raises(ValueError, match="multi_modal_projector.*trainable_modules"):
        SaliencyTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2),
                        retain_dataset=tiny_vqa_rows(2, seed=1), processing_class=processor)


def test_modules_to_save_is_allowed_and_the_reference_stays_the_base(tmp_path):
    """PEFT's modules_to_save trains a copy; the adapter-disabled reference keeps the original module."""
    base, processor = tiny_model_and_processor("llava")
    rows = tiny_vqa_rows(2)
    batch = VLMUnlearningCollator(processor)(rows)
    with torch.no_grad():
        expected = base(**model_inputs(batch)).logits
    model = get_peft_model(base, lora_config_for(modules_to_save=["multi_modal_projector"]))
    projector = model.base_model.model.model.multi_modal_projector
    assert any(p.requires_grad for p in projector.modules_to_save.parameters())
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path, max_steps=3), forget_dataset=rows,
                         processing_class=processor)
    start = {n: p.detach().clone() for n, p in projector.modules_to_save.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p, start[n]) for n, p in projector.modules_to_save.named_parameters())
    torch.testing.assert_close(trainer.reference_logits(model, batch), expected)


# -- item: the reference runs in eval mode -----------------------------------------------------------------------
def _with_dropout(model, p=0.5):
    """Attention dropout in the language model (the tiny configs have none), so train mode is visible."""
    for m in model.modules():
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = p
    return model


def test_peft_reference_runs_in_eval_mode_and_restores_train_mode(tmp_path):
    base, processor = tiny_model_and_processor("llava")
    _with_dropout(base)
    rows = tiny_vqa_rows(2)
    batch = VLMUnlearningCollator(processor)(rows)
    with torch.no_grad():
        expected = base.eval()(**model_inputs(batch)).logits
    model = get_peft_model(base, lora_config_for(dropout=0.3))
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=rows,
                         processing_class=processor)
    model.train()
    vision = model.base_model.model.model.vision_tower.eval()  # a module the user keeps in eval stays so
    with torch.no_grad():
        noisy = [trainer.forward_logits(model, batch) for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1])  # the policy itself does run with dropout
    first, second = trainer.reference_logits(model, batch), trainer.reference_logits(model, batch)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, expected)
    assert model.training and not vision.training
    assert all(m.training for n, m in model.named_modules() if "vision_tower" not in n)


def test_npo_caches_the_eval_mode_reference_under_lora_dropout(tmp_path):
    """Through training: the cached reference log-probs are the base model's eval-mode values, not dropout noise."""
    base, processor = tiny_model_and_processor("llava")
    _with_dropout(base)
    rows = tiny_vqa_rows(2)
    batch = VLMUnlearningCollator(processor)(rows)
    with torch.no_grad():
        expected = losses.sequence_logprob(base.eval()(**model_inputs(batch)).logits, batch["labels"])
    model = get_peft_model(base, lora_config_for(dropout=0.3))
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path, max_steps=2), forget_dataset=rows,
                         processing_class=processor)
    trainer.train()
    cache = trainer._ref_cache["npo_ref_logp"]
    torch.testing.assert_close(torch.stack([cache[0], cache[1]]), expected)
