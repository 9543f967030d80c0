"""Membership inference (issue 14): AUC, PrivLeak and the four attacks on answer tokens, checked on hand-made cases."""

import math

import pytest
import torch

from unlearn_trainer import VLMUnlearningCollator
from unlearn_trainer.evaluation import (
    MIA_ATTACKS,
    answer_token_statistics,
    auc,
    mia_auc,
    mia_scores,
    privleak,
)
from unlearn_trainer.evaluation.mia import scores_from_statistics
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows


def test_auc_of_known_separations():
    assert auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0  # perfect separator
    assert auc([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]) == 0.0  # reversed
    assert auc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5  # identical distributions
    assert auc([1.0, 1.0], [1.0]) == 0.5  # all tied: each pair counts 1/2
    assert auc([2.0, 1.0], [1.0, 0.0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)  # one tie among four pairs


def test_auc_rejects_empty_and_non_finite_scores():
    with pytest.raises(ValueError, match="member_scores is empty"):
        auc([], [1.0])
    with pytest.raises(ValueError, match="nonmember_scores is empty"):
        auc([1.0], [])
    with pytest.raises(ValueError, match="non-finite values at positions \\[1\\]"):
        auc([1.0, float("nan")], [0.0])


def test_privleak_is_muses_normalised_gap_in_percent():
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.8, 0.8) == 0.0
    # MUSE's sign: an unlearned model that still recognises the forget rows (under-unlearning) is negative; the
    # target model of MUSE's tables (AUC ~1 in our member-positive convention) scores about -100
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert privleak(0.75, 0.5) == pytest.approx(-50.0)
    assert privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearning: members look less member-like than unseen
    # MUSE's AUCs are holdout-positive (0.3 unlearned, 0.4 retrained): (0.3 - 0.4) / 0.4
    assert privleak(0.7, 0.6) == pytest.approx(-25.0)
    with pytest.raises(ValueError, match="auc_retrained is 1.0"):
        privleak(0.9, 1.0)
    with pytest.raises(ValueError, match="auc_unlearned must be an AUC"):
        privleak(1.5, 0.5)


def test_attack_scores_on_hand_made_statistics():
    stats = [{"logprobs": [-1.0, -2.0, -3.0, -4.0, -5.0], "mu": [-1.0] * 5, "sigma": [1.0, 1.0, 1.0, 2.0, 4.0],
              "zlib_bytes": 10}]
    scores = scores_from_statistics(stats, k=0.4)
    assert scores["loss"] == [-3.0]
    assert scores["zlib"] == [pytest.approx(-0.3)]
    assert scores["min_k"] == [pytest.approx((-4.0 - 5.0) / 2)]  # the 2 lowest of 5 tokens
    # standardised: 0, -1, -2, -1.5, -1 -> the 2 lowest are -2 and -1.5
    assert scores["min_k_plus_plus"] == [pytest.approx((-2.0 - 1.5) / 2)]
    # k=0.2 of 5 tokens keeps 1; k=0.1 keeps max(1, int(0.5)) = 1 rather than none
    assert scores_from_statistics(stats, ["min_k"], k=0.2)["min_k"] == [-5.0]
    assert scores_from_statistics(stats, ["min_k"], k=0.1)["min_k"] == [-5.0]
    assert scores_from_statistics(stats, ["min_k"], k=1.0)["min_k"] == [-3.0]
    with pytest.raises(ValueError, match="Unknown membership-inference attack"):
        scores_from_statistics(stats, ["min_k", "gradnorm"])
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        scores_from_statistics(stats, k=0.0)


def _answer_positions(processor, row) -> list[int]:
    """Positions t whose logits predict an answer token (the label at t + 1 is not -100), for a batch of one row."""
    labels = VLMUnlearningCollator(processor)([row])["labels"][0]
    return [t for t in range(len(labels) - 1) if labels[t + 1] != -100], labels


def _replace_logits(model, make):
    def hook(module, args, output):
        output.logits = make(output.logits)
        return output

    return model.register_forward_hook(hook)


def test_attacks_on_hand_built_logits_match_hand_computation():
    """Logits 0 everywhere except c_t on the answer's next token: every quantity has a closed form."""
    model, processor = tiny_model_and_processor("llava")
    row = tiny_vqa_rows(1)[0]
    positions, labels = _answer_positions(processor, row)
    n = len(positions)
    assert n >= 4
    boosts = [0.5 * (i + 1) for i in range(n)][::-1]  # distinct, decreasing: the last tokens are the least likely

    def make(logits):
        out = torch.zeros_like(logits)
        for t, c in zip(positions, boosts):
            out[0, t, labels[t + 1]] = c
        return out

    vocab = model.get_output_embeddings().weight.shape[0]
    expected_logp, expected_z = [], []
    for c in boosts:
        norm = math.log(math.exp(c) + vocab - 1)
        lp, lo = c - norm, -norm
        p = math.exp(lp)
        mu = p * lp + (1 - p) * lo
        sigma = math.sqrt(p * (lp - mu) ** 2 + (1 - p) * (lo - mu) ** 2)
        expected_logp.append(lp)
        expected_z.append((lp - mu) / sigma)
    handle = _replace_logits(model, make)
    try:
        scores = mia_scores(model, processor, [row], k=0.5, batch_size=1)
    finally:
        handle.remove()
    keep = max(1, int(0.5 * n))
    mean_logp = sum(expected_logp) / n
    import zlib

    assert scores["loss"][0] == pytest.approx(mean_logp, rel=1e-5)
    assert scores["zlib"][0] == pytest.approx(mean_logp / len(zlib.compress(row["answer"].encode())), rel=1e-5)
    assert scores["min_k"][0] == pytest.approx(sum(sorted(expected_logp)[:keep]) / keep, rel=1e-5)
    assert scores["min_k_plus_plus"][0] == pytest.approx(sum(sorted(expected_z)[:keep]) / keep, rel=1e-4)


def test_prompt_and_image_token_logits_never_enter_the_scores():
    model, processor = tiny_model_and_processor("llava")
    row = tiny_vqa_rows(1)[0]
    positions, _ = _answer_positions(processor, row)
    clean = answer_token_statistics(model, processor, [row], batch_size=1)[0]

    def noisy(at):
        def make(logits):
            out = logits.clone()
            gen = torch.Generator().manual_seed(0)
            for t in at:
                out[0, t] += 5 * torch.randn(out.shape[-1], generator=gen)
            return out
        return make

    prompt_positions = [t for t in range(max(positions) + 1) if t not in positions]
    handle = _replace_logits(model, noisy(prompt_positions))
    try:
        shaken = answer_token_statistics(model, processor, [row], batch_size=1)[0]
    finally:
        handle.remove()
    assert shaken == clean
    handle = _replace_logits(model, noisy(positions[:1]))  # the same noise on one answer position does show
    try:
        moved = answer_token_statistics(model, processor, [row], batch_size=1)[0]
    finally:
        handle.remove()
    assert moved["logprobs"][0] != clean["logprobs"][0] and moved["logprobs"][1:] == clean["logprobs"][1:]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_batched_statistics_equal_row_by_row(family):
    model, processor = tiny_model_and_processor(family)
    rows = tiny_vqa_rows(4)  # answers of different lengths: left padding differs per row
    rows[1] = {**rows[1], "answer": "the sky is blue and the dog is red ."}
    batched = answer_token_statistics(model, processor, rows, batch_size=4)
    single = [answer_token_statistics(model, processor, [r], batch_size=1)[0] for r in rows]
    for b, s in zip(batched, single):
        assert b["zlib_bytes"] == s["zlib_bytes"]
        for key in ("logprobs", "mu", "sigma"):
            assert len(b[key]) == len(s[key])
            assert b[key] == pytest.approx(s[key], abs=1e-4)
    assert len(batched[1]["logprobs"]) > len(batched[0]["logprobs"])


def test_images_are_passed_to_the_model():
    model, processor = tiny_model_and_processor("llava")
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("pixel_values")), with_kwargs=True)
    try:
        answer_token_statistics(model, processor, tiny_vqa_rows(2), batch_size=2)
    finally:
        handle.remove()
    assert seen and all(p is not None for p in seen)


def test_mia_auc_of_a_set_against_itself_is_one_half_and_errors_are_clear():
    model, processor = tiny_model_and_processor("llava")
    rows = tiny_vqa_rows(3)
    result = mia_auc(model, processor, rows, rows, batch_size=2)
    assert set(result) == set(MIA_ATTACKS)
    assert all(v == 0.5 for v in result.values())
    assert set(mia_auc(model, processor, rows[:1], rows[1:], attacks=("loss",))) == {"loss"}
    with pytest.raises(ValueError, match="0 non-member rows"):
        mia_auc(model, processor, rows, [])
    with pytest.raises(ValueError, match="Unknown membership-inference attack"):
        mia_scores(model, processor, rows, attacks=("ppl",))
