"""Robustness probes (unlearn_trainer.evaluation.robustness): what they run on, what they skip and why, the callback's
before/after probes and their outputs, and the card's Robustness table (numbers only, no forget-set text)."""

import json
import logging
import os

import pytest
import torch
from conftest import train_args
from peft import get_peft_model

from unlearn_trainer import GAConfig, GATrainer
from unlearn_trainer.evaluation import UnlearningEvalCallback, robustness_table, run_probes
from unlearn_trainer.evaluation.robustness import NO_RETRAINED, PROBES, ProbeData, ProbeResultCache, parse_probes
from unlearn_trainer.hub import render_model_card, upload_allow_patterns
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.toyworld.full_model import probe_data

NAME = "Vorana Kell"  # a forgotten person: must never reach a table, a log line or the card


def _forget(n=4, seed=0):
    rows = tiny_vqa_rows(n, seed=seed)
    for r in rows:
        r["answer"] = f"this is {NAME} ."
        r["concepts"] = [NAME]
        r["paraphrased_answer"] = f"it is {NAME} ."
        r["perturbed_answers"] = ["this is a cat .", "this is the sky ."]
    return rows


def _retain(n, seed=2):
    words = ["cat", "dog", "sky", "person"]
    return [dict(r, concepts=[words[i % 4]]) for i, r in enumerate(tiny_vqa_rows(n, seed=seed))]


def _mc(letter="b"):
    return dict(tiny_vqa_rows(1)[0], options=["sky", NAME, "cat", "mat"], answer_letter=letter)


def _data(**kw):
    return ProbeData.from_rows(_forget() + [_mc()], _retain(3), nonmembers=tiny_vqa_rows(4, seed=7),
                               splits={"paraphrase_forget": _forget(2, seed=3), "paraphrase_retain": _retain(2, 3)},
                               **kw)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_processor("llava")


def test_parse_probes():
    assert parse_probes("cheap") == ("mia", "paraphrase", "mc")
    assert parse_probes("all") == PROBES and parse_probes("none") == ()
    assert parse_probes("mc, relearning,mc") == ("mc", "relearning")
    with pytest.raises(ValueError, match="Unknown probe 'bogus'.*choose from"):
        parse_probes("mia,bogus")


def test_probe_data_from_rows_and_a_row_cap():
    data = _data()
    assert len(data.members) == 4 and len(data.nonmembers) == 4  # the MC row is not a member of the open rows
    assert set(data.mc) == {"forget"} and set(data.paraphrase) == {"forget", "retain"}
    assert len(data.relearn_eval["forget_heldout"]) == 2
    held = {r["id"] for r in data.relearn_eval["forget_heldout"]}
    assert held.isdisjoint(r["id"] for r in data.relearn_attack if NAME in r["answer"])  # held out: never attacked
    assert len(data.truth_ratio_rows) == 4 and "shift" in data.notes
    capped = data.capped(2)
    assert len(capped.members) == 2 and len(capped.nonmembers) == 2 and len(capped.truth_ratio_rows) == 2


def test_run_probes_numbers_and_notes_without_a_retrained_model(tiny):
    model, processor = tiny
    results = run_probes(model, processor, _data(), ("mia", "paraphrase", "shift", "mc", "forget_quality"),
                         max_new_tokens=4, progress=False)
    mia = results["mia"]
    assert {k for k in mia if k.startswith("auc_")} and all(0.0 <= v <= 1.0 for k, v in mia.items()
                                                             if k.startswith("auc_"))
    assert "privleak" not in mia and NO_RETRAINED in mia["note"]
    assert results["forget_quality"] == {"skipped": NO_RETRAINED}
    assert "skipped" in results["shift"]  # no shift rows: a note, not a crash
    assert {"forget_name_recall", "retain_name_recall"} <= set(results["paraphrase"])
    assert {"forget_letter_acc", "forget_loglik_acc"} <= set(results["mc"])
    json.dumps(results)  # JSON-able
    table = robustness_table(results)
    assert "| mia | auc_" in table and "- forget_quality: skipped: no retrained model" in table
    assert NAME.split()[0].lower() not in table.lower()


def test_identical_retrained_model_gives_zero_privleak_and_forget_quality_one(tiny):
    model, processor = tiny
    results = run_probes(model, processor, _data(max_rows=3), ("mia", "forget_quality"), retrained=(model, processor),
                         max_new_tokens=4, progress=False)
    assert results["forget_quality"]["forget_quality"] == pytest.approx(1.0)  # KS p of identical distributions
    leaks = {k: v for k, v in results["mia"].items() if k.startswith("privleak")}
    assert leaks and all(v == pytest.approx(0.0, abs=1e-6) for v in leaks.values())
    assert results["mia"]["privleak"] in leaks.values()


def test_mc_probe_reports_letter_and_loglik(tiny, monkeypatch):
    import unlearn_trainer.evaluation.evaluator as ev

    model, processor = tiny
    monkeypatch.setattr(ev, "generate_answers", lambda *a, **k: ["b )"])  # right letter
    monkeypatch.setattr(ev, "option_loglikelihoods", lambda *a, **k: [[0.0, -1.0, -2.0, -3.0]])  # wrong option
    data = ProbeData(mc={"forget": [_mc("b")]})
    mc = run_probes(model, processor, data, ("mc",), progress=False)["mc"]
    assert mc["forget_letter_acc"] == 1.0 and mc["forget_loglik_acc"] == 0.0


def test_relearning_probe_curve_and_retrained_baseline(tiny):
    model, processor = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = run_probes(model, processor, _data(), ("relearning",), retrained=(model, processor),
                         relearn_steps=(0, 2), max_new_tokens=4, progress=False)["relearning"]
    assert {"step0_forget_heldout_name_recall", "step2_forget_heldout_name_recall",
            "retrained_step0_forget_heldout_name_recall", "retrained_step2_forget_heldout_name_recall"} <= set(results)
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # the attack works on a copy


class _NoForward(torch.nn.Module):
    """A retrained model that must not run: its numbers come from the cache."""

    def forward(self, *a, **k):
        raise AssertionError("the retrained model ran although its numbers were cached")


def test_retrained_numbers_are_cached_on_disk_per_rows_and_settings(tiny, tmp_path):
    model, processor = tiny
    data = _data()
    cache = ProbeResultCache.for_data(tmp_path, data, relearn_steps=(0, 1))
    probes = ("mia", "forget_quality", "relearning")
    first = run_probes(model, processor, data, probes, retrained=tiny, max_new_tokens=4, progress=False,
                       relearn_steps=(0, 1), retrained_cache=cache)
    assert os.path.exists(cache.path) and NAME.split()[0].lower() not in open(cache.path).read().lower()
    again = ProbeResultCache.for_data(tmp_path, data, relearn_steps=(0, 1))  # a later run: same file, read back
    assert again.path == cache.path and {"mia", "truth_ratios"} < set(again) and len(again) == 3
    second = run_probes(model, processor, data, probes, retrained=(_NoForward(), processor), max_new_tokens=4,
                        progress=False, relearn_steps=(0, 1), retrained_cache=again)
    assert second == first
    # other settings or other rows (a changed perturbed answer) are another file
    assert ProbeResultCache.for_data(tmp_path, data, relearn_steps=(0, 2)).path != cache.path
    changed = _data()
    changed.truth_ratio_rows[0] = dict(changed.truth_ratio_rows[0], perturbed_answers=["this is a dog ."])
    assert ProbeResultCache.for_data(tmp_path, changed, relearn_steps=(0, 1)).path != cache.path
    # a damaged file is recomputed, not trusted
    open(cache.path, "w").write("{not json")
    assert dict(ProbeResultCache(cache.path)) == {}


def test_callback_probes_before_and_after_writes_logs_and_card(tmp_path, caplog):
    model, processor = tiny_model_and_processor("llava")
    model = get_peft_model(model, lora_config_for(model))
    forget = _forget(2)
    splits = {"forget": forget, "retain": tiny_vqa_rows(2, seed=4)}
    cb = UnlearningEvalCallback(processor, splits, output_dir=str(tmp_path / "eval"), max_new_tokens=4,
                                probes=("mia", "mc"), probe_data=_data(max_rows=2))
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=2), forget_dataset=forget,
                        processing_class=processor, callbacks=[cb])
    with caplog.at_level(logging.DEBUG):
        trainer.train()
    assert set(cb.robustness) == {"before", "after"}
    logged = [e for e in trainer.state.log_history if "robustness" in e]
    assert [e["robustness"] for e in logged] == ["before", "after"]
    assert any(k.startswith("robustness_mia_auc_") for k in logged[-1])
    assert all(isinstance(v, float) for e in logged for k, v in e.items() if k.startswith("robustness_"))
    saved = json.loads((tmp_path / "eval" / "robustness.json").read_text())
    assert saved["after"]["mia"] == pytest.approx(cb.robustness["after"]["mia"])
    md = (tmp_path / "eval" / "robustness.md").read_text()
    assert "| probe | metric | before | after |" in md and "| mc | forget_letter_acc |" in md
    card = render_model_card(trainer)
    assert "## Robustness" in card and "| mia | auc_" in card
    for text in (md, card, caplog.text, json.dumps(trainer.state.log_history)):
        assert "vorana" not in text.lower() and "kell" not in text.lower()
    trainer.save_model(str(tmp_path / "eval"))
    allowed = upload_allow_patterns(trainer, str(tmp_path / "eval"))
    assert not any(p.startswith(("robustness", "unlearning_eval")) for p in allowed)
    # probe_before=False (sweeps from one model): evaluated before, probed after only
    cb = UnlearningEvalCallback(processor, splits, output_dir=str(tmp_path / "eval2"), max_new_tokens=4,
                                probes=("mc",), probe_data=_data(max_rows=2), probe_before=False)
    GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=1), forget_dataset=forget,
              processing_class=processor, callbacks=[cb]).train()
    assert set(cb.robustness) == {"after"} and [h["label"] for h in cb.history] == ["before", "after"]


def test_headline_shows_mc_by_letter_and_by_loglik():
    from unlearn_trainer.evaluation.evaluator import headline_table

    before = {"mc_forget": {"n": 4.0, "mc_letter_acc": 1.0, "mc_loglik_acc": 1.0}}
    after = {"mc_forget": {"n": 4.0, "mc_letter_acc": 0.75, "mc_loglik_acc": 0.0}}
    assert headline_table({"before": before, "after": after}).splitlines()[2:] == [
        "| mc_forget | 4 | mc_letter_acc | ↓ | 1.000 → 0.750 |",
        "| mc_forget | 4 | mc_loglik_acc | ↓ | 1.000 → 0.000 |",
    ]


def test_toyworld_probes_full_model_is_recognised_more_than_the_retrained_one(small_toyworld):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    world, ratio = small_toyworld.world, small_toyworld.ratio
    full = LlavaForConditionalGeneration.from_pretrained(small_toyworld.full_dir)
    processor = AutoProcessor.from_pretrained(small_toyworld.full_dir)
    retrained = LlavaForConditionalGeneration.from_pretrained(small_toyworld.retrained_dir)
    data = probe_data(world, ratio)
    forgotten = {world.identities[i].name for i in world.forget_identities(ratio)}
    assert {r["name"] for r in data.members} == forgotten
    assert data.nonmembers and not forgotten & {r["name"] for r in data.nonmembers}
    assert data.paraphrase and data.shift and data.truth_ratio_rows
    attack_ids = {r["id"] for r in data.relearn_attack}
    assert attack_ids.isdisjoint(r["id"] for r in data.relearn_eval["forget_heldout"])
    results = run_probes(full, processor, data, ("mia", "forget_quality"), retrained=(retrained, processor),
                         max_new_tokens=16, progress=False)
    mia = results["mia"]
    assert mia["auc_min_k"] > mia["retrained_auc_min_k"] and mia["auc_loss"] > mia["retrained_auc_loss"]
    assert mia["privleak"] < 0  # MUSE: negative = forget rows still recognised (the full model never forgot)
    assert 0.0 <= results["forget_quality"]["forget_quality"] <= 1.0
