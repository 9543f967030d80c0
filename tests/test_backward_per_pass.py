"""One backward per trainable pass (UnlearnConfig.backward_per_pass): same update as one backward of the summed
loss, one backward call per pass, and a non-finite later pass still stops training before any update."""

import pytest
import torch
from conftest import SavedActivations, train_args

from unlearn_trainer import GAConfig, GATrainer, IdkDPOConfig, IdkDPOTrainer, NonFiniteLossError, NPOConfig, NPOTrainer
from unlearn_trainer.testing import tiny_images, tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.trainers.pubg import PUBGConfig, PUBGTrainer
from unlearn_trainer.trainers.rmu import RMUConfig, RMUTrainer
from unlearn_trainer.trainers.sgpvt import SGPVTConfig, SGPVTTrainer


def _pubg_forget(n=2):
    rows = tiny_vqa_rows(n)
    for i, r in enumerate(rows):
        r.update(id=f"ent-{i}", question="who is this person ?", answer="this is a photo of a person . name city job")
    return rows


# name -> (trainer class, config class, config overrides, trainer kwargs factory, trainable passes per step)
CASES = {
    "ga_gd": (GATrainer, GAConfig, {"variant": "ga_gd"},
              lambda: dict(forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, seed=5)), 2),
    "npo_kl": (NPOTrainer, NPOConfig, {"retain_loss": "kl"},
               lambda: dict(forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, seed=5)), 2),
    "pubg_gd": (PUBGTrainer, PUBGConfig, {},
                lambda: dict(forget_dataset=_pubg_forget(), retain_dataset=tiny_vqa_rows(2, seed=5),
                             guidance_answers=["a person with red hair .", "a person in a blue city ."]), 3),
    "sgpvt": (SGPVTTrainer, SGPVTConfig, {"num_perturbations": 2, "lambda_k": 2.0},
              lambda: dict(forget_dataset=tiny_vqa_rows(2), distant_images=tiny_images(3, seed=7)), 3),
    "ga": (GATrainer, GAConfig, {}, lambda: dict(forget_dataset=tiny_vqa_rows(2)), 1),
    # DPO in one pass (the shared prompt once, both answers continued from its cache), then the retain pass
    "idk_dpo_gd": (IdkDPOTrainer, IdkDPOConfig, {"refusals": ["i do not know ."]},
                   lambda: dict(forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, seed=5)), 2),
    # with gradient checkpointing (no cache): both answers' full forwards and one backward, then the retain pass
    "idk_dpo_gd_checkpointing": (IdkDPOTrainer, IdkDPOConfig, {"refusals": ["i do not know ."],
                                                               "gradient_checkpointing": True},
                                 lambda: dict(forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, seed=5)),
                                 2),

    "rmu": (RMUTrainer, RMUConfig, {"steering_coeff": 20.0},
            lambda: dict(forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, seed=5)), 2),
}


def _run(name, tmp_path, per_pass, max_steps=1, patch=None):
    trainer_cls, config_cls, overrides, kwargs, passes = CASES[name]
    model, processor = tiny_model_and_processor("llava", seed=0)
    args = train_args(config_cls, tmp_path / str(per_pass), max_steps=max_steps, per_device_train_batch_size=2,
                      optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0,
                      backward_per_pass=per_pass, **overrides)
    trainer = trainer_cls(model=model, args=args, processing_class=processor, **kwargs())
    if patch:
        patch(trainer)
    calls = []
    backward = trainer.accelerator.backward
    trainer.accelerator.backward = lambda loss, **kw: calls.append(float(loss.detach())) or backward(loss, **kw)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    return trainer, model, before, calls, passes


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_pass_backward_gives_the_summed_loss_update(name, tmp_path):
    results = {}
    for per_pass in (True, False):
        trainer, model, before, calls, passes = _run(name, tmp_path, per_pass, max_steps=2)
        trainer.train()
        after = {n: p.detach().clone() for n, p in model.named_parameters()}
        logged = [h for h in trainer.state.log_history if "loss" in h]
        results[per_pass] = (after, logged)
        # one backward per trainable pass per step (or a single one of the sum), each step
        assert len(calls) == 2 * (passes if per_pass else 1), calls
        assert any(not torch.equal(after[n], before[n]) for n in after)
    (a_after, a_log), (b_after, b_log) = results[True], results[False]
    for n in a_after:
        torch.testing.assert_close(a_after[n], b_after[n], rtol=1e-4, atol=1e-6, msg=n)
    assert [sorted(h) for h in a_log] == [sorted(h) for h in b_log]
    for ha, hb in zip(a_log, b_log):
        for key in ha:
            if key not in ("grad_norm", "learning_rate", "epoch", "step"):
                assert ha[key] == pytest.approx(hb[key], rel=1e-4, abs=1e-6), key


def test_per_pass_loss_is_the_sum_of_the_passes(tmp_path):
    trainer, model, _, calls, _ = _run("ga_gd", tmp_path, True)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    trainer.current_gradient_accumulation_steps = 1  # set by train() for each step
    loss = trainer.training_step(model, batch)
    assert len(calls) == 2
    # compute_loss backpropagates the forget pass; Trainer.training_step's own backward gets the retain pass plus the
    # detached forget loss, i.e. the step's total, which it returns
    assert float(loss) == pytest.approx(calls[-1], rel=1e-6)
    with torch.no_grad():
        summed = trainer.compute_loss(model, batch)
    assert float(loss) == pytest.approx(float(summed), rel=1e-5)


def test_non_finite_retain_pass_stops_before_any_update(tmp_path):
    def nan_retain(trainer):
        original = trainer._retain_term
        trainer._retain_term = lambda model, retain: original(model, retain) * float("nan")

    trainer, model, before, calls, _ = _run("ga_gd", tmp_path, True, patch=nan_retain)
    with pytest.raises(NonFiniteLossError, match=r"step 0 \(forget rows .*retain_nll"):
        trainer.train()
    assert len(calls) == 1  # the forget pass was backpropagated, the NaN retain pass was not
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


@pytest.mark.parametrize("name", ["ga_gd", "pubg_gd"])
def test_per_pass_backward_frees_each_pass_before_the_next(name, tmp_path):
    peaks = {}
    for per_pass in (True, False):
        trainer, model, _, calls, passes = _run(name, tmp_path, per_pass)
        batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
        trainer.current_gradient_accumulation_steps = 1
        saved = SavedActivations()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            trainer.training_step(model, batch)
        assert saved.live == 0  # nothing of any pass's graph outlives the step
        peaks[per_pass] = saved.peak
    # summed: every pass's activations are alive before the one backward; per pass: only the largest pass's
    assert peaks[True] < 0.75 * peaks[False], peaks
