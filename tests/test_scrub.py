"""SCRUB: the teacher KL against hand values and its gradient, the max/min alternation by optimizer step, the retain
set it needs, end to end on LLaVA / Qwen2-VL with and without LoRA, gradient accumulation within each phase, bad
configurations and the example."""

import json
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import save_forget_retain, save_tiny_llava, tiny_model, train_args

from unlearn_trainer import SCRUBConfig, SCRUBTrainer, losses
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.trainers.scrub import scrub_phase

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_scrub_kl_hand_value_and_gradient():
    student = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]], requires_grad=True)  # B=1, T=3, V=2
    teacher = torch.tensor([[[9.0, 9.0], [0.0, 0.0], [0.0, 1.0]]])
    labels = torch.tensor([[-100, 0, 1]])  # positions 0 and 1 predict answer tokens
    for T in (1.0, 2.0):
        student.grad = None
        value = losses.scrub_kl(student, teacher, labels, temperature=T)
        p_t = [F.softmax(teacher[0, i] / T, -1) for i in (0, 1)]
        p_s = [F.softmax(student[0, i].detach() / T, -1) for i in (0, 1)]
        hand = T ** 2 * sum(float((pt * (pt.log() - ps.log())).sum()) for pt, ps in zip(p_t, p_s)) / 2
        assert value.item() == pytest.approx(hand, rel=1e-5)
        value.backward()
        for i in (0, 1):  # d/dz_s = T (p_s - p_t) / (B n_s)
            torch.testing.assert_close(student.grad[0, i], T * (p_s[i] - p_t[i]) / 2)
        assert torch.count_nonzero(student.grad[0, 2]) == 0  # the last position predicts nothing
    with pytest.raises(ValueError, match="temperature"):
        losses.scrub_kl(student, teacher, labels, temperature=0.0)


def test_phase_schedule():
    assert [scrub_phase(s, 2, 1, None) for s in range(6)] == ["max", "max", "min"] * 2
    assert [scrub_phase(s, 1, 2, 2) for s in range(9)] == ["max", "min", "min"] * 2 + ["min"] * 3
    assert [scrub_phase(s, 1, 0, None) for s in range(3)] == ["max"] * 3


def _trainer(model, processor, tmp_path, **overrides):
    args = train_args(SCRUBConfig, tmp_path, **{"max_steps": 2, "kd_temperature": 1.0, **overrides})
    return SCRUBTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2),
                        retain_dataset=tiny_vqa_rows(2, seed=5), processing_class=processor)


def test_trainer_alternates_as_configured(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    trainer = _trainer(model, processor, tmp_path, max_steps=7, max_steps_per_cycle=2, min_steps_per_cycle=1,
                       max_cycles=2)
    seen = []
    forward = trainer.forward_logits

    def record(m, batch):  # which batch each trainable pass ran on (forget rows have ids 0/1, retain 5+)
        if torch.is_grad_enabled():
            seen.append((trainer.state.global_step, "forget" if batch is trainer._batch["forget"] else "retain"))
        return forward(m, batch)

    compute = trainer.compute_loss

    def keep(model, inputs, *a, **k):
        trainer._batch = inputs
        return compute(model, inputs, *a, **k)

    trainer.forward_logits, trainer.compute_loss = record, keep
    trainer.train()
    assert [w for _, w in seen] == ["forget", "forget", "retain", "forget", "forget", "retain", "retain"]
    assert [s for s, _ in seen] == list(range(7))
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert ["scrub_forget_kl" in h for h in logged] == [True, True, False, True, True, False, False]
    assert all({"scrub_retain_kl", "retain_nll"} <= set(h) for h in logged if "scrub_forget_kl" not in h)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("lora", [False, True])
def test_scrub_end_to_end(family, lora, tmp_path):
    model, processor = tiny_model(family, lora=lora)
    trainer = _trainer(model, processor, tmp_path, max_steps=4, max_cycles=None, learning_rate=5e-2,
                       lr_scheduler_type="constant")
    assert (trainer._ref_model is None) == lora  # under LoRA the teacher is the adapter-disabled model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in before)
    forget = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])["forget"]
    with torch.no_grad():
        kl = losses.scrub_kl(trainer.forward_logits(model, forget), trainer.reference_logits(model, forget),
                             forget["labels"])
    assert kl.item() > 1e-3  # the student has left the teacher on the forget answers


def test_gradient_accumulation_within_each_phase(tmp_path):
    results = []
    for batch, accumulation in ((2, 1), (1, 2)):
        model, processor = tiny_model_and_processor("llava", seed=0)
        trainer = _trainer(model, processor, tmp_path / str(batch), per_device_train_batch_size=batch,
                           gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                           lr_scheduler_type="constant", max_grad_norm=0.0, kd_temperature=2.0)
        with torch.no_grad():  # student != teacher, so that the first (max) step has a gradient
            w = model.lm_head.weight
            w.add_(0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.train()  # step 0: max (forget), step 1: min (retain)
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    moved = [n for n in before if not torch.equal(results[0][n], before[n])]
    assert moved
    for n in moved:
        torch.testing.assert_close(results[0][n], results[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_needs_a_retain_set_and_valid_settings(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    with pytest.raises(ValueError, match="needs a retain set"):
        SCRUBTrainer(model=model, args=train_args(SCRUBConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                     processing_class=processor)
    for bad, match in (({"alpha": -1.0}, "alpha"), ({"gamma": -0.5}, "gamma"), ({"kd_temperature": 0.0}, "kd_temp"),
                       ({"max_steps_per_cycle": 0}, "max_steps_per_cycle"), ({"max_cycles": 0}, "max_cycles")):
        with pytest.raises(ValueError, match=match):
            train_args(SCRUBConfig, tmp_path, **bad)


def test_example_on_a_saved_model(tmp_path):
    model_dir, data_dir = save_tiny_llava(tmp_path), save_forget_retain(tmp_path, 2, 3)
    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--forget_split", "forget",
            "--retain_split", "retain", "--max_steps", "2", "--per_device_train_batch_size", "2", "--output_dir",
            str(out), "--max_new_tokens", "4", "--disable_tqdm", "true", "--max_cycles", "3"]
    trainer = runpy.run_path(str(EXAMPLES / "run_scrub.py"))["main"](argv)
    assert trainer.args.max_cycles == 3 and trainer._ref_model is None
    assert json.loads((out / "results.json").read_text())["method"] == "scrub"
    assert (out / "adapter_model.safetensors").exists()
