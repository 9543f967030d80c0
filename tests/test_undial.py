"""UNDIAL: the adjusted targets and the loss against hand values, the gradient property at the start (the answer token
goes down, the other tokens keep their ranking), boundedness, the cached targets (dense and sparse), no second model
copy under LoRA, end to end on tiny LLaVA / Qwen2-VL, accumulation, bad config."""

import math

import pytest
import torch
from conftest import answer_logprob, assert_accumulation_matches_larger_batch, tiny_model, train_args

from unlearn_trainer import UNDIALConfig, UNDIALTrainer, losses
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows


def test_adjusted_targets_hand_values():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    p = losses.undial_targets(z, torch.tensor([0]), gamma=math.log(5))  # target prob 0.5 -> 0.1 before renormalising
    torch.testing.assert_close(p, torch.tensor([[0.1, 0.3, 0.2]]) / 0.6)
    assert float(p[0, 1] / p[0, 2]) == pytest.approx(1.5)  # the other tokens keep their odds


def _batch(seed=0, V=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, V, generator=g)
    labels = torch.full((2, 5), -100)
    labels[0, 2:5] = torch.tensor([1, 4, 2])  # 3 answer tokens, predicted from positions 1..3
    labels[1, 4] = 5  # 1 answer token, predicted from position 3
    positions = [(0, 1, 1), (0, 2, 4), (0, 3, 2), (1, 3, 5)]
    return logits, labels, positions


def test_undial_loss_hand_values_and_gradient():
    """Value: mean over samples of the mean over answer tokens of KL(P_i || Q_i); gradient w.r.t. token i's logits:
    (Q_i - P_i) / (B n_s); zero at every prompt position."""
    logits, labels, positions = _batch()
    ref = logits + 0.3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    targets = torch.stack([losses.undial_targets(ref[s, t][None], torch.tensor([y]), 3.0)[0] for s, t, y in positions])
    z = logits.clone().requires_grad_(True)
    loss, target_prob = losses.undial_loss(z, labels, targets)
    kl = [float((targets[n] * (targets[n].log() - torch.log_softmax(logits[s, t], -1))).sum())
          for n, (s, t, _) in enumerate(positions)]
    assert float(loss) == pytest.approx((sum(kl[:3]) / 3 + kl[3]) / 2, rel=1e-5)
    probs = [float(torch.softmax(logits[s, t], -1)[y]) for s, t, y in positions]
    assert float(target_prob) == pytest.approx(sum(probs) / 4, rel=1e-5)
    (grad,) = torch.autograd.grad(loss, z)
    expected = torch.zeros_like(logits)
    for n, (s, t, _) in enumerate(positions):
        expected[s, t] = (torch.softmax(logits[s, t], -1) - targets[n]) / (2 * (3 if s == 0 else 1))
    torch.testing.assert_close(grad, expected)


def test_at_the_start_the_answer_goes_down_and_the_others_keep_their_ranking():
    """Student == reference: the gradient raises the answer token's logit loss (descent lowers it) and lowers every
    other logit's loss in proportion to its probability (grad_v = p_v (1 - c), c = 1 / (1 - p_y + p_y e^-gamma)), so
    a descent step keeps the other tokens' ranking; the optimum keeps their odds exactly."""
    g = torch.Generator().manual_seed(2)
    z0 = 2 * torch.randn(1, 3, 9, generator=g)
    labels = torch.tensor([[-100, 3, -100]])  # one answer token (3), predicted from position 0
    gamma, y = 4.0, 3
    target = losses.undial_targets(z0[0, :1], torch.tensor([y]), gamma)
    z = z0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(losses.undial_loss(z, labels, target)[0], z)
    p = torch.softmax(z0[0, 0], -1)
    c = 1 / (1 - p[y] + p[y] * math.exp(-gamma))
    others = torch.arange(9) != y
    assert float(grad[0, 0, y]) > 0 and (grad[0, 0, others] < 0).all()
    torch.testing.assert_close(grad[0, 0, others], p[others] * (1 - c))
    stepped = z0[0, 0] - 5.0 * grad[0, 0]
    assert torch.equal(stepped[others].argsort(), z0[0, 0, others].argsort())  # ranking of the other tokens kept
    assert float(torch.softmax(stepped, -1)[y]) < float(p[y])
    # bounded: minimising the loss over the logits converges to the target, not to a collapse
    zz = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([zz], lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        loss = losses.undial_loss(zz, labels, target)[0]
        assert float(loss) >= -1e-6
        loss.backward()
        opt.step()
    q = torch.softmax(zz.detach()[0, 0], -1)
    torch.testing.assert_close(q, target[0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(q[others] / q[others].sum(), p[others] / p[others].sum(), atol=1e-4, rtol=1e-3)
    assert float(q[y]) == pytest.approx(float(p[y] * math.exp(-gamma) * c), rel=1e-3)


def test_sparse_targets_keep_the_answer_token_and_match_exact_when_k_covers_the_vocab():
    g = torch.Generator().manual_seed(3)
    V = 40
    ref = 3 * torch.randn(6, V, generator=g)
    answer = ref.argmin(-1)  # the least likely token: never in a plain top-k
    p = losses.undial_targets(ref, answer, 10.0)
    values, ids, rem = losses.sparse_topk_keeping(p, answer, 4)
    assert (ids == answer[:, None]).any(-1).all()  # the lowered answer token is always kept, exactly
    torch.testing.assert_close(values[ids == answer[:, None]], p.gather(-1, answer[:, None])[:, 0])
    torch.testing.assert_close(rem, 1 - values.sum(-1))
    labels = torch.full((1, 7), -100)
    labels[0, 1:] = answer
    logits = torch.cat([torch.randn(6, V, generator=g), torch.zeros(1, V)]).unsqueeze(0)
    exact, _ = losses.undial_loss(logits, labels, p)
    sparse, _ = losses.undial_loss(logits, labels, (values, ids, rem))
    assert float(sparse) <= float(exact) + 1e-6  # the bucket KL is a lower bound
    # at the start (student == reference) the tail completion is exact: P's tail is the reference's, rescaled
    z = torch.cat([ref, torch.zeros(1, V)]).unsqueeze(0).requires_grad_(True)
    (g_exact,) = torch.autograd.grad(losses.undial_loss(z, labels, p)[0], z)
    (g_sparse,) = torch.autograd.grad(losses.undial_loss(z, labels, (values, ids, rem))[0], z)
    torch.testing.assert_close(g_sparse, g_exact)
    full = losses.sparse_topk_keeping(p, answer, V)
    torch.testing.assert_close(losses.undial_loss(logits, labels, full)[0], exact)


def _memorized(family, rows, steps=30):
    """A tiny model fine-tuned on ``rows`` first (the paper's setting: the model has memorised the forget set), so
    that its answer tokens carry probability for UNDIAL to remove (at random init they have ~1/V)."""
    from unlearn_trainer import VLMUnlearningCollator
    from unlearn_trainer.data import model_inputs

    model, processor = tiny_model_and_processor(family)
    batch = VLMUnlearningCollator(processor)(rows)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        losses.nll_loss(model(**model_inputs(batch)).logits, batch["labels"]).backward()
        opt.step()
    return model.eval(), processor


def _trainer(tmp_path, family="llava", lora=True, memorized=False, **overrides):
    if memorized:
        from peft import get_peft_model

        from unlearn_trainer.testing import lora_config_for

        model, processor = _memorized(family, tiny_vqa_rows(4))
        model = get_peft_model(model, lora_config_for(model)) if lora else model
    else:
        model, processor = tiny_model(family, lora)
    args = train_args(UNDIALConfig, tmp_path, **{"learning_rate": 1e-1 if lora else 5e-3, **overrides})
    return UNDIALTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(4), processing_class=processor), model


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_undial_forgets_end_to_end(family, lora, tmp_path):
    trainer, model = _trainer(tmp_path, family, lora, memorized=True, max_steps=8,
                              learning_rate=2e-2 if lora else 2e-3)
    forget = tiny_vqa_rows(4)
    before = answer_logprob(model, trainer.processing_class, forget)
    if lora:  # the reference is the adapter-disabled model: no second copy
        assert trainer._ref_model is None
        assert all(m is model for m in vars(trainer).values() if isinstance(m, torch.nn.Module))
    else:
        assert trainer._ref_model is not None and trainer._ref_model is not model
    trainer.train()
    after = answer_logprob(model, trainer.processing_class, forget)
    assert after < before - 1.0, (before, after)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"undial_kl", "forget_token_prob"} <= set(h) for h in logged)
    assert logged[-1]["forget_token_prob"] < logged[0]["forget_token_prob"]
    assert set(trainer._ref_cache["undial_targets"]) == {0, 1, 2, 3}


@pytest.mark.parametrize("top_k", [None, 8])
def test_targets_are_cached_once_and_match_a_recompute(top_k, tmp_path):
    trainer, model = _trainer(tmp_path, max_steps=4, cache_top_k=top_k)
    calls = []
    original = trainer._adjusted_targets
    trainer._adjusted_targets = lambda ref, batch: calls.append(batch["sample_index"].tolist()) or original(ref, batch)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))["forget"]
    with torch.no_grad(), trainer.reference(model) as ref:
        logits = trainer.forward_logits(ref, batch)
    shifted, answer, mask = losses.shift(logits, batch["labels"])
    trainer.train()
    assert sum(len(c) for c in calls) == 4  # 4 steps over 4 rows in batches of 2: each row's targets computed once
    cached = trainer._ref_cache["undial_targets"][int(batch["sample_index"][0])]
    exact = losses.undial_targets(shifted[0][mask[0]], answer[0][mask[0]], trainer.args.gamma)
    if top_k is None:
        torch.testing.assert_close(cached.probs, exact)
    else:
        assert cached.probs.shape[-1] == 8 and cached.ids.dtype == torch.int32
        torch.testing.assert_close(cached.probs, exact.gather(-1, cached.ids.long()))
        assert trainer.reference_cache_nbytes() < 4 * exact.numel() * 4
        assert any("target_tail_mass" in h for h in trainer.state.log_history)
    cached.tokens = cached.tokens.flip(0) + 1  # a cache that no longer matches the rows' answers is an error
    with pytest.raises(RuntimeError, match=f"forget sample {int(batch['sample_index'][0])} do not match"):
        trainer.compute_loss(model, {"forget": batch})


def test_undial_gradient_accumulation_matches_larger_batch(tmp_path):
    assert_accumulation_matches_larger_batch(UNDIALTrainer, UNDIALConfig, tmp_path,
                                             logged=("retain_nll", "undial_kl"), retain_loss="nll")


def test_undial_config_errors_and_paper_defaults(tmp_path):
    args = UNDIALConfig(output_dir=str(tmp_path), report_to="none")
    assert (args.gamma, args.cache_top_k) == (10.0, 128)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        train_args(UNDIALConfig, tmp_path, gamma=0.0)
    with pytest.raises(ValueError, match="cache_top_k must be >= 2"):
        train_args(UNDIALConfig, tmp_path, cache_top_k=1)
    with pytest.raises(ValueError, match="do not match"):
        losses.undial_loss(*_batch()[:2], torch.full((3, 6), 1 / 6))
    # a retain set adds a term the paper does not have: the card says so
    model, processor = tiny_model("llava", lora=True)
    trainer = UNDIALTrainer(model=model, args=train_args(UNDIALConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                            retain_dataset=tiny_vqa_rows(2, seed=5), processing_class=processor)
    assert "retain NLL term added (the paper has no retain set)" in trainer.paper_deviations()
