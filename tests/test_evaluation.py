import json

import pytest
import torch
from conftest import train_args
from peft import get_peft_model

from unlearn_trainer import GAConfig, GATrainer, VLMUnlearningCollator
from unlearn_trainer.data import model_inputs
from unlearn_trainer.evaluation import (
    UnlearningEvalCallback,
    evaluate_rows,
    format_table,
    generate_answers,
    option_loglikelihoods,
)
from unlearn_trainer.losses import token_logprobs
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows


def _rows():
    rows = tiny_vqa_rows(3) + tiny_vqa_rows(1, with_images=False)
    rows[0]["concepts"] = ["cat"]
    rows[1]["expected"] = "dog"
    rows[2]["options"] = ["cat", "dog", "sky", "mat"]
    rows[2]["answer_letter"] = "b"
    rows[3]["private"] = ["cat"]
    return rows


def test_generation_passes_images_and_is_greedy(family, monkeypatch):
    model, processor = tiny_model_and_processor(family)
    seen = []
    original = model.generate

    def spy(**kwargs):
        seen.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    rows = tiny_vqa_rows(3)
    first = generate_answers(model, processor, rows, max_new_tokens=4, batch_size=2)
    assert len(first) == 3 and all(isinstance(a, str) for a in first)
    assert all("pixel_values" in kw and kw["do_sample"] is False for kw in seen)
    assert processor.tokenizer.padding_side == "right"  # restored after left-padded generation
    assert generate_answers(model, processor, rows, max_new_tokens=4, batch_size=3) == first  # batch-size invariant


def test_option_loglikelihood_is_mean_token_logprob():
    model, processor = tiny_model_and_processor("llava")
    row = _rows()[2]
    scores = option_loglikelihoods(model, processor, [row])
    assert len(scores) == 1 and len(scores[0]) == 4
    batch = VLMUnlearningCollator(processor)([{**row, "answer": "sky"}])
    with torch.no_grad():
        logps, mask = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
    assert scores[0][2] == pytest.approx((logps.sum() / mask.sum()).item(), rel=1e-5)


def test_evaluate_rows_reports_metrics_from_row_fields(monkeypatch):
    model, processor = tiny_model_and_processor("llava")
    import unlearn_trainer.evaluation.evaluator as ev

    answers = ["a cat sits on the mat .", "the dog is blue .", "b", "there is a cat"]
    monkeypatch.setattr(ev, "generate_answers", lambda *a, **k: list(answers))
    monkeypatch.setattr(ev, "option_loglikelihoods", lambda *a, **k: [[0.0, -1.0, -2.0, -3.0]])
    metrics, preds = evaluate_rows(model, processor, _rows(), is_well_formed=lambda t: t.endswith("."))
    assert preds == answers
    assert metrics["name_recall"] == 1.0  # row 0 mentions its concept
    assert metrics["attribute_accuracy"] == 1.0  # row 1 mentions "dog"
    assert metrics["privacy_leak"] == 1.0  # row 3 leaks "cat"
    assert metrics["mc_letter_acc"] == 1.0 and metrics["mc_loglik_acc"] == 0.0  # loglik picks "a", gold is "b"
    assert metrics["coherence"] == pytest.approx(0.5)
    assert metrics["rougeL_f"] > 0.5
    with pytest.raises(ValueError, match="empty split"):
        evaluate_rows(model, processor, [])


def test_callback_on_a_tiny_run(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    model = get_peft_model(model, lora_config_for(model))
    forget = tiny_vqa_rows(2)
    splits = {"forget": [dict(r, concepts=["cat", "dog"]) for r in forget], "retain": tiny_vqa_rows(2, seed=4)}
    cb = UnlearningEvalCallback(processor, splits, eval_steps=2, output_dir=str(tmp_path / "eval"),
                                is_well_formed=lambda t: True, max_new_tokens=4)
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=4), forget_dataset=forget,
                        processing_class=processor, callbacks=[cb])
    trainer.train()
    assert [h["label"] for h in cb.history] == ["before", "step 2", "after"]
    assert {"forget", "retain"} == set(cb.history[0]["metrics"])
    saved = json.loads((tmp_path / "eval" / "unlearning_eval.json").read_text())
    assert saved["history"][-1]["label"] == "after" and "after" in saved["answers"]
    table = (tmp_path / "eval" / "unlearning_eval.md").read_text()
    assert "| split | metric | before | after |" in table and "| forget | rougeL_f |" in table
    assert (tmp_path / "eval" / "unlearning_eval.png").stat().st_size > 1000
    assert any(h.get("unlearning_eval") == "after" for h in trainer.state.log_history)


def test_format_table():
    table = format_table({"before": {"f": {"n": 2, "name_recall": 1.0}}, "after": {"f": {"n": 2, "name_recall": 0.25}}})
    assert table.splitlines()[2] == "| f | name_recall | 1.000 | 0.250 |"


def test_row_metrics_hook_and_more_than_four_options(monkeypatch):
    model, processor = tiny_model_and_processor("llava")
    import unlearn_trainer.evaluation.evaluator as ev

    rows = [dict(tiny_vqa_rows(1)[0], options=["a1", "b1", "c1", "d1", "e1"], answer_letter="e")]
    monkeypatch.setattr(ev, "generate_answers", lambda *a, **k: ["e"])
    monkeypatch.setattr(ev, "option_loglikelihoods", lambda *a, **k: [[0.0, -1.0, -2.0, -3.0, 1.0]])
    metrics, _ = evaluate_rows(model, processor, rows, row_metrics=lambda r, p: {"official_acc": float(p == ["e"])})
    assert metrics["mc_letter_acc"] == 1.0 and metrics["mc_loglik_acc"] == 1.0
    assert metrics["official_acc"] == 1.0
