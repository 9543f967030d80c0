"""TOFU's truth ratio and forget quality (issue 14) on hand-made cases."""

import importlib
import math

import pytest

from unlearn_trainer.evaluation import forget_quality, truth_ratios
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows


def _module():
    """The module (the package attribute ``forget_quality`` is the function of the same name)."""
    return importlib.import_module("unlearn_trainer.evaluation.forget_quality")


def test_forget_quality_is_the_ks_p_value():
    same = [0.1 * i for i in range(20)]
    assert forget_quality(same, list(same)) == pytest.approx(1.0)
    far = forget_quality(same, [100 + v for v in same])
    assert far < 1e-6
    shifted = forget_quality(same, [v + 0.5 for v in same])  # partial overlap: in between
    assert far < shifted < 1.0
    with pytest.raises(ValueError, match="retrained_truth_ratios is empty"):
        forget_quality(same, [])
    with pytest.raises(ValueError, match="unlearned_truth_ratios has non-finite values at positions \\[2\\]"):
        forget_quality([1.0, 2.0, float("inf")], same)


def test_truth_ratio_is_the_papers_mean_of_normalised_probabilities(monkeypatch):
    """Stubbed answer log-probabilities: the ratio is mean(P_pert^(1/n)) / P_para^(1/n), per row, in row order."""
    seen = []
    per_answer = {"para0": [math.log(0.5)] * 2, "pa": [math.log(0.2)], "pb": [math.log(0.4)] * 3,
                  "answer1": [math.log(0.25)], "pc": [math.log(0.5)]}

    def fake(model, processor, rows, batch_size, progress, desc, distribution, index_of=None):
        seen.extend(r["answer"] for r in rows)
        return [{"logprobs": per_answer[r["answer"]]} for r in rows]

    monkeypatch.setattr(_module(), "_answer_statistics", fake)
    rows = [
        {"question": "q0", "answer": "a0", "paraphrased_answer": "para0", "perturbed_answers": ["pa", "pb"]},
        {"question": "q1", "answer": "answer1", "perturbed_answers": ["pc"]},  # no paraphrase: falls back to answer
    ]
    _, processor = tiny_model_and_processor("llava")
    ratios = truth_ratios(None, processor, rows)
    assert seen == ["para0", "pa", "pb", "answer1", "pc"]
    assert ratios == [pytest.approx((0.2 + 0.4) / 2 / 0.5), pytest.approx(0.5 / 0.25)]


def _boost_tokens(model, processor, text: str, amount: float = 8.0):
    """A forward hook that raises the logits of ``text``'s tokens everywhere: that answer becomes far more likely."""
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]

    def hook(module, args, output):
        output.logits[..., ids] += amount
        return output

    return model.register_forward_hook(hook)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_truth_ratio_below_one_when_the_paraphrase_is_far_more_likely(family):
    model, processor = tiny_model_and_processor(family)
    rows = [{**r, "paraphrased_answer": "the sky is blue", "perturbed_answers": ["a cat sits", "dog red mat"]}
            for r in tiny_vqa_rows(2)]
    handle = _boost_tokens(model, processor, "the sky is blue")
    try:
        ratios = truth_ratios(model, processor, rows, batch_size=4)
    finally:
        handle.remove()
    assert len(ratios) == 2 and all(r < 0.1 for r in ratios)
    handle = _boost_tokens(model, processor, "a cat sits")  # the other way round: a wrong answer preferred
    try:
        assert all(r > 1 for r in truth_ratios(model, processor, rows, batch_size=4))
    finally:
        handle.remove()
    assert truth_ratios(model, processor, rows, batch_size=1) == pytest.approx(
        truth_ratios(model, processor, rows, batch_size=4), rel=1e-4)


def test_a_row_without_perturbed_answers_is_named_by_position_not_by_its_text():
    _, processor = tiny_model_and_processor("llava")
    rows = [{"question": "who is ada vorana ?", "answer": "ada vorana", "perturbed_answers": ["bob"]},
            {"question": "who is ada vorana ?", "answer": "ada vorana secret"}]
    with pytest.raises(ValueError) as err:
        truth_ratios(None, processor, rows)
    message = str(err.value)
    assert "row #1" in message and "perturbed_answers" in message
    assert "vorana" not in message and "secret" not in message
    with pytest.raises(ValueError, match="row #0 has no usable 'perturbed_answers'"):
        truth_ratios(None, processor, [{**rows[0], "perturbed_answers": "bob"}])  # a string, not a list
