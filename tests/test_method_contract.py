"""The method contract of UnlearnTrainer as a new method's author uses it: a subclass defined here, with a single loss
or with two passes, trains, logs its terms, gets one backward per pass with the gradient of the summed loss, and has
its citation and tag on the model card."""

import pytest
import torch
from conftest import train_args

from unlearn_trainer import UnlearnConfig, UnlearnTrainer, losses
from unlearn_trainer.citation import Citation
from unlearn_trainer.hub import render_model_card
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows


class CappedGATrainer(UnlearnTrainer):
    """A new single-loss method: gradient ascent on the forget answers, capped at 5 nats."""

    method_name = "capped_ga"
    citation = Citation("Capped GA", "Capping Gradient Ascent", "A. Author", "Test Venue 2026",
                        summary="gradient ascent that stops at 5 nats.")

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        nll = losses.sequence_nll(self.forget_logits(model, forget), forget["labels"])
        return losses.ga_loss(nll, ceiling=5.0), {"capped_nll": nll.mean()}


class TwoPassTrainer(UnlearnTrainer):
    """A new method with two trainable passes: GA on the forget answers, then NLL on the same answers halved."""

    method_name = "two_pass"
    citation = Citation("Two-Pass", "Unlearning in Two Passes", "B. Author", "Test Venue 2026")

    def unlearning_passes(self, model, inputs):
        forget = inputs["forget"]
        return [lambda: self._ga(model, forget), lambda: self._descent(model, forget)]

    def _ga(self, model, forget):
        nll = losses.sequence_nll(self.forget_logits(model, forget), forget["labels"])
        return -nll.mean(), {"ga_nll": nll.mean()}

    def _descent(self, model, forget):
        nll = losses.nll_loss(self.forward_logits(model, forget), forget["labels"])
        return 0.5 * nll, {"descent_nll": nll}


def _trainer(cls, tmp_path, retain=False, **overrides):
    model, processor = tiny_model_and_processor("llava", seed=0)
    args = train_args(UnlearnConfig, tmp_path, max_steps=2, optim="sgd", learning_rate=0.5,
                      lr_scheduler_type="constant", max_grad_norm=0.0, **overrides)
    trainer = cls(model=model, args=args, processing_class=processor, forget_dataset=tiny_vqa_rows(4),
                  retain_dataset=tiny_vqa_rows(4, seed=5) if retain else None)
    calls = []
    backward = trainer.accelerator.backward
    trainer.accelerator.backward = lambda loss, **kw: calls.append(float(loss.detach())) or backward(loss, **kw)
    return trainer, model, calls


@pytest.mark.parametrize("cls, terms, passes", [(CappedGATrainer, {"capped_nll"}, 1),
                                                 (TwoPassTrainer, {"ga_nll", "descent_nll"}, 2)])
@pytest.mark.parametrize("retain", [False, True])
def test_a_new_method_trains_logs_its_terms_and_cites_its_paper(cls, terms, passes, retain, tmp_path):
    trainer, model, calls = _trainer(cls, tmp_path, retain=retain)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    expected = terms | ({"retain_nll"} if retain else set())
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(expected <= set(h) for h in logged), logged
    assert len(calls) == 2 * (passes + retain)  # one backward per trainable pass, each step
    card = render_model_card(trainer)
    assert str(cls.citation) in card and f"**{cls.citation.name}**" in card
    assert f"- {cls.method_name}\n" in card.split("---")[1]  # the method's tag in the card's metadata


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_new_two_pass_method_gets_the_gradient_of_its_summed_loss(accumulation, tmp_path):
    """One backward per pass (the first inside compute_loss, the last by Trainer's training_step) updates the model as
    one backward of the summed loss, with gradient accumulation too."""
    results = {}
    for per_pass in (True, False):
        trainer, model, calls = _trainer(TwoPassTrainer, tmp_path / str(per_pass), retain=True,
                                         backward_per_pass=per_pass, per_device_train_batch_size=2 // accumulation,
                                         gradient_accumulation_steps=accumulation)
        trainer.train()
        assert len(calls) == 2 * accumulation * (3 if per_pass else 1)
        logged = [h for h in trainer.state.log_history if "loss" in h]
        results[per_pass] = ({n: p.detach().clone() for n, p in model.named_parameters()}, logged)
    (a_params, a_log), (b_params, b_log) = results[True], results[False]
    for n in a_params:
        torch.testing.assert_close(a_params[n], b_params[n], rtol=1e-4, atol=1e-6, msg=n)
    for ha, hb in zip(a_log, b_log, strict=True):
        for key in ("loss", "ga_nll", "descent_nll", "retain_nll"):
            assert ha[key] == pytest.approx(hb[key], rel=1e-4, abs=1e-6), key


def test_a_method_must_override_its_loss_or_its_passes(tmp_path):
    class Nothing(UnlearnTrainer):
        method_name = "nothing"

    trainer, model, _ = _trainer(Nothing, tmp_path)
    with pytest.raises(NotImplementedError, match="unlearning_loss.*or.*unlearning_passes"):
        trainer.train()


def test_a_direct_compute_loss_call_keeps_the_whole_objective(tmp_path):
    """Outside Trainer's step, compute_loss backpropagates nothing itself: its loss carries every pass's graph."""
    trainer, model, calls = _trainer(TwoPassTrainer, tmp_path, retain=True)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    model.train()
    loss = trainer.compute_loss(model, batch)
    assert calls == [] and all(p.grad is None for p in model.parameters())
    loss.backward()
    total = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert float(trainer.compute_loss(model, batch)) == pytest.approx(float(loss), rel=1e-6)
    assert total
