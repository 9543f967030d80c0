import math

import pytest
import torch

from unlearn_trainer import losses


def _logits_labels():
    # one sample, T=3; answer tokens are positions 1 and 2 (labels at 0 masked)
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 2]])
    return logits, labels


def test_token_logprobs_hand_computed():
    logits, labels = _logits_labels()
    logps, mask = losses.token_logprobs(logits, labels)
    # position 0 predicts label 1 from logits [2,0,0]: log(1/(e^2+2)); position 1 predicts 2 from [0,1,0]
    expected = torch.tensor([[-math.log(math.e**2 + 2), -math.log(2 + math.e)]])
    assert mask.tolist() == [[True, True]]
    torch.testing.assert_close(logps, expected)
    torch.testing.assert_close(losses.sequence_logprob(logits, labels), expected.sum(-1))
    torch.testing.assert_close(losses.sequence_nll(logits, labels), -expected.mean(-1))


def test_masked_positions_do_not_count():
    logits, labels = _logits_labels()
    labels2 = labels.clone()
    labels2[0, 2] = -100
    nll = losses.sequence_nll(logits, labels2)
    torch.testing.assert_close(nll, torch.tensor([math.log(math.e**2 + 2)]))
    altered = logits.clone()
    altered[0, 1] = torch.tensor([9.0, -3.0, 4.0])  # predicts the masked position only
    torch.testing.assert_close(losses.sequence_nll(altered, labels2), nll)


def test_no_answer_tokens_raises():
    logits, _ = _logits_labels()
    with pytest.raises(ValueError, match="no answer tokens"):
        losses.sequence_nll(logits, torch.full((1, 3), -100))


def test_per_sample_mean_then_batch_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 1, 2, -100, -100], [-100, -100, 3, 4, 5]])
    per = losses.sequence_nll(logits, labels)
    assert losses.nll_loss(logits, labels).item() == pytest.approx(per.mean().item())
    # different from a token-level mean because the samples have 2 and 3 answer tokens
    token_mean = -(losses.token_logprobs(logits, labels)[0].sum() / 5)
    assert not math.isclose(per.mean().item(), token_mean.item(), rel_tol=1e-4)


def test_ga_loss_and_ceiling_stops_gradient():
    nll = torch.tensor([1.0, 30.0], requires_grad=True)
    loss = losses.ga_loss(nll, ceiling=20.0)
    assert loss.item() == pytest.approx(-15.5)
    loss.backward()
    assert nll.grad.tolist() == [-0.5, 0.0]
    nll2 = torch.tensor([1.0, 30.0], requires_grad=True)
    losses.ga_loss(nll2).backward()
    assert nll2.grad.tolist() == [-0.5, -0.5]


def test_ga_loss_all_above_ceiling_still_differentiable():
    nll = torch.tensor([30.0, 40.0], requires_grad=True)
    loss = losses.ga_loss(nll, ceiling=5.0)
    loss.backward()  # no "does not require grad" error; zero gradient
    assert nll.grad.tolist() == [0.0, 0.0]


def test_ga_loss_ceiling_compares_the_mean_token_nll_for_any_reduction():
    # sums of 2 and 3 answer tokens (mean token NLL 1.0 and 10.0): the ceiling reads the mean, the loss the sum
    summed = torch.tensor([2.0, 30.0], requires_grad=True)
    loss = losses.ga_loss(summed, ceiling=5.0, mean_token_nll=summed.detach() / torch.tensor([2.0, 3.0]))
    assert loss.item() == pytest.approx(-16.0)
    loss.backward()
    assert summed.grad.tolist() == [-0.5, 0.0]
    with_sums = torch.tensor([2.0, 30.0], requires_grad=True)
    losses.ga_loss(with_sums, ceiling=5.0).backward()  # without it the sum itself is compared
    assert with_sums.grad.tolist() == [-0.5, 0.0] and losses.ga_loss(with_sums, ceiling=1.0).item() == -16.0


def test_stop_above_is_the_one_ceiling():
    values = torch.tensor([[-1.0, -6.0], [-3.0, -0.5]], requires_grad=True)
    gated = losses.stop_above(values, -values, 2.0)
    assert torch.equal(gated, values.detach())
    gated.sum().backward()
    assert values.grad.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert losses.stop_above(values, -values, None) is values


def test_npo_loss_hand_computed():
    policy, ref = torch.tensor([-2.0]), torch.tensor([-1.0])
    value = losses.npo_loss(policy, ref, beta=0.4)
    # -(2/0.4) * log sigmoid(-0.4 * (-2 - -1)) = -5 * log sigmoid(0.4)
    assert value.item() == pytest.approx(-5 * math.log(1 / (1 + math.exp(-0.4))), rel=1e-6)
    with pytest.raises(ValueError):
        losses.npo_loss(policy, ref, beta=0.0)


@pytest.mark.parametrize("beta", [0.4, 1.0, 2.5])
def test_npo_gradient_is_reweighted_ga_gradient(beta):
    torch.manual_seed(1)
    base = torch.randn(1, 6, 11)
    labels = torch.tensor([[-100, -100, 4, 7, 1, 9]])
    ref_logp = losses.sequence_logprob(torch.randn(1, 6, 11), labels)

    logits = base.clone().requires_grad_(True)
    losses.npo_loss(losses.sequence_logprob(logits, labels), ref_logp, beta).backward()
    npo_grad = logits.grad.clone()

    logits2 = base.clone().requires_grad_(True)
    policy = losses.sequence_logprob(logits2, labels)
    policy.backward()  # gradient of GA's objective log p(y) (a minimiser descends -NLL = log p)
    ga_grad = logits2.grad

    p, pr = policy.detach().exp(), ref_logp.exp()
    weight = 2 * p**beta / (p**beta + pr**beta)
    torch.testing.assert_close(weight, losses.npo_weight(policy.detach(), ref_logp, beta))
    torch.testing.assert_close(npo_grad, weight * ga_grad, rtol=1e-5, atol=1e-7)


def test_npo_weight_tends_to_one_as_beta_vanishes():
    w = losses.npo_weight(torch.tensor([-3.0]), torch.tensor([-1.0]), beta=1e-6)
    assert w.item() == pytest.approx(1.0, abs=1e-5)


def test_token_kl_hand_computed_and_direction():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.25, 0.75]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert losses.token_kl(p, q).item() == pytest.approx(expected, rel=1e-6)
    reverse = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert losses.token_kl(q, p).item() == pytest.approx(reverse, rel=1e-6)


def test_kl_retain_loss_answer_tokens_only():
    torch.manual_seed(2)
    policy = torch.randn(1, 5, 9)
    labels = torch.tensor([[-100, -100, 3, 4, -100]])
    assert losses.kl_retain_loss(policy, policy.clone(), labels).item() == pytest.approx(0.0, abs=1e-7)
    ref = policy.clone()
    ref[0, 0] += 5.0  # position 0 predicts a masked label: must not count
    ref[0, 4] += 5.0  # last position predicts nothing
    assert losses.kl_retain_loss(policy, ref, labels).item() == pytest.approx(0.0, abs=1e-7)
    ref[0, 2] += torch.randn(9)  # predicts answer token 3
    expected = losses.token_kl(policy[0, 2], ref[0, 2]).item() / 2
    assert losses.kl_retain_loss(policy, ref, labels).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_is_log_softmax_gather_with_its_gradient(dtype):
    """TRL's ``selective_log_softmax`` gives the textbook ``log_softmax -> gather`` values (in float32, 0 where
    masked) and the same gradient."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50).to(dtype).requires_grad_()
    labels = torch.randint(0, 50, (3, 7))
    labels[:, :3] = -100
    labels[1, 5] = -100
    logps, mask = losses.token_logprobs(logits, labels)
    targets = labels[:, 1:]
    expected = logits[:, :-1].float().log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = expected.masked_fill(targets.eq(-100), 0.0)
    assert logps.dtype == torch.float32 and mask.tolist() == targets.ne(-100).tolist()
    torch.testing.assert_close(logps, expected)
    (grad,) = torch.autograd.grad(logps.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad, expected_grad)
