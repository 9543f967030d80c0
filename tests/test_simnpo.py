"""SimNPO: the loss against hand values, its gradient (GA's reweighted by 2 sigmoid(beta mean_logp + gamma)), no
reference model at all, end to end on tiny LLaVA / Qwen2-VL with and without LoRA, accumulation, bad config."""

import math

import pytest
import torch
from conftest import answer_logprob, assert_accumulation_matches_larger_batch, tiny_model, train_args

from unlearn_trainer import SimNPOConfig, SimNPOTrainer, losses
from unlearn_trainer.testing import tiny_vqa_rows


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_simnpo_loss_hand_values():
    mean_logp = torch.tensor([-0.5, -2.0])
    beta, gamma = 2.5, 0.3
    # -(2/beta) mean log sigmoid(-beta m - gamma)
    expected = -(2 / beta) * (math.log(_sigmoid(1.25 - 0.3)) + math.log(_sigmoid(5.0 - 0.3))) / 2
    assert float(losses.simnpo_loss(mean_logp, beta, gamma)) == pytest.approx(expected, rel=1e-6)
    # gamma = 0, m = 0: -(2/beta) log(1/2)
    assert float(losses.simnpo_loss(torch.zeros(3), beta=2.0)) == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="beta must be > 0"):
        losses.simnpo_loss(mean_logp, beta=0.0)


def test_simnpo_loss_of_a_batch_uses_the_length_normalized_logprob():
    """The per-sample quantity is log p(y)/|y| over answer tokens only: prompt positions do not count."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 5, generator=g)
    labels = torch.full((2, 6), -100)
    labels[0, 3:6] = torch.tensor([1, 2, 3])
    labels[1, 5] = 4
    logp = torch.log_softmax(logits, -1)
    m0 = (logp[0, 2, 1] + logp[0, 3, 2] + logp[0, 4, 3]) / 3
    m1 = logp[1, 4, 4]
    got = losses.simnpo_loss(-losses.sequence_nll(logits, labels), beta=2.5)
    expected = -(2 / 2.5) * (torch.nn.functional.logsigmoid(-2.5 * m0) + torch.nn.functional.logsigmoid(-2.5 * m1)) / 2
    torch.testing.assert_close(got, expected)


def test_simnpo_gradient_is_ga_reweighted_and_the_weight_fades():
    """d L / d m_s = (1/B) * 2 sigmoid(beta m_s + gamma): GA's gradient on the mean log-prob (1/B) times the weight,
    which falls toward 0 as the answer becomes unlikely (bounded loss), unlike GA's constant weight."""
    beta, gamma = 2.5, 0.5
    m = torch.tensor([-0.1, -1.0, -4.0, -12.0], requires_grad=True)
    (grad,) = torch.autograd.grad(losses.simnpo_loss(m, beta, gamma), m)
    weight = losses.simnpo_weight(m.detach(), beta, gamma)
    torch.testing.assert_close(grad, weight / 4)
    assert weight.tolist() == sorted(weight.tolist(), reverse=True) and float(weight[-1]) < 1e-10
    assert float(weight[0]) < 2 and float(losses.simnpo_loss(m.detach(), beta, gamma)) > 0
    # the loss is bounded below: at a vanishing answer it goes to 0 instead of -infinity (GA)
    assert float(losses.simnpo_loss(torch.tensor([-1e4]), beta, gamma)) == pytest.approx(0.0, abs=1e-6)


def test_no_reference_model_is_ever_built_or_used(tmp_path, monkeypatch):
    import copy

    model, processor = tiny_model("llava", lora=False)
    copies = []
    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda obj, *a: copies.append(type(obj)) or real_deepcopy(obj, *a))
    trainer = SimNPOTrainer(model=model, args=train_args(SimNPOConfig, tmp_path, max_steps=2),
                            forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    assert trainer._ref_model is None and not trainer._uses_reference()
    assert not any(issubclass(c, torch.nn.Module) for c in copies)
    monkeypatch.setattr(type(trainer), "reference", lambda *a, **k: pytest.fail("SimNPO used the reference"))
    trainer.train()
    assert not trainer._ref_cache


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_simnpo_forgets_end_to_end(family, lora, tmp_path):
    model, processor = tiny_model(family, lora)
    forget = tiny_vqa_rows(4)
    before = answer_logprob(model, processor, forget)
    # the tiny random models start at a mean answer log-prob near -4.8, where beta 2.5 has saturated (weight ~1e-5):
    # a small beta keeps the weight near 1 so that a few steps show the direction
    args = train_args(SimNPOConfig, tmp_path, max_steps=8, learning_rate=1e-1 if lora else 5e-3, forget_weight=1.0,
                      beta=0.2)
    trainer = SimNPOTrainer(model=model, args=args, forget_dataset=forget, processing_class=processor)
    if lora:  # no second copy under LoRA either: every module the trainer holds is the model itself
        assert trainer._ref_model is None
        assert all(m is model for m in vars(trainer).values() if isinstance(m, torch.nn.Module))
    trainer.train()
    after = answer_logprob(model, processor, forget)
    assert after < before - 0.3, (before, after)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"simnpo_loss", "forget_nll"} <= set(h) for h in logged)


def test_simnpo_gradient_accumulation_matches_larger_batch(tmp_path):
    assert_accumulation_matches_larger_batch(SimNPOTrainer, SimNPOConfig, tmp_path,
                                             logged=("retain_nll", "simnpo_loss"), gamma=0.2)


def test_simnpo_config_errors_and_paper_defaults(tmp_path):
    args = SimNPOConfig(output_dir=str(tmp_path), report_to="none")
    assert (args.beta, args.gamma, args.forget_weight, args.learning_rate) == (2.5, 0.0, 0.1375, 1e-5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        train_args(SimNPOConfig, tmp_path, beta=0.0)
    with pytest.raises(ValueError, match="forget_weight must be > 0"):
        train_args(SimNPOConfig, tmp_path, forget_weight=0.0)
    with pytest.raises(ValueError, match="needs a retain set"):
        model, processor = tiny_model("llava")
        SimNPOTrainer(model=model, args=train_args(SimNPOConfig, tmp_path, retain_loss="nll"),
                      forget_dataset=tiny_vqa_rows(2), processing_class=processor)
