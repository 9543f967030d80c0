"""Each method's config defaults are its paper's settings, and a run that departs from them says so on its card."""

import dataclasses
import logging

import pytest
from conftest import train_args

from unlearn_trainer import (
    FTTPConfig,
    GAConfig,
    GATrainer,
    IdkDPOConfig,
    IdkNLLConfig,
    NPOConfig,
    PUBGConfig,
    PUBGTrainer,
    RMUConfig,
    SaliencyConfig,
    SaliencyTrainer,
    SCRUBConfig,
    SGPVTConfig,
    SimNPOConfig,
    UNDIALConfig,
    ViKeRConfig,
    ViKeRTrainer,
)
from unlearn_trainer.hub import render_model_card
from unlearn_trainer.testing import lora_config_for, tiny_images, tiny_model_and_processor, tiny_vqa_rows

CONFIGS = [GAConfig, NPOConfig, FTTPConfig, ViKeRConfig, SGPVTConfig, SaliencyConfig, PUBGConfig, IdkNLLConfig,
           IdkDPOConfig, RMUConfig, SCRUBConfig, SimNPOConfig, UNDIALConfig]
SALIENCY_LOGGER = "unlearn_trainer.trainers.saliency"


def _deviations_section(card: str) -> str:
    return card.split("## Deviations from the paper\n", 1)[1].split("\n## ", 1)[0].strip()


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_config_defaults_are_the_papers(config_cls, tmp_path):
    from unlearn_trainer.trainers.base import PerFamily

    args = config_cls(output_dir=str(tmp_path), report_to="none")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for name, paper in config_cls.paper_settings.items():
        # retain_loss follows the data (a retain set given or not); per-family values default to None, resolved from
        # the model when the trainer is built
        if name in fields and name != "retain_loss":
            expected = None if isinstance(paper, PerFamily) else paper
            assert getattr(args, name) == expected, (config_cls.__name__, name)


def test_the_papers_numbers():
    """The values the issue names, read from the papers (ViKeR App. A.4, FTTP App. B, SGPVT Sec. 4, PUBG App. C,
    MMUnlearner Table 5, MLLMU-Bench's NPO beta)."""
    viker = ViKeRConfig(output_dir="unused", report_to="none")
    assert (viker.learning_rate, viker.per_device_train_batch_size, viker.num_train_epochs) == (5e-6, 2, 1.0)
    fttp = FTTPConfig(output_dir="unused", report_to="none")
    assert (fttp.learning_rate, fttp.per_device_train_batch_size, fttp.max_steps) == (3e-4, 2, 10)
    sgpvt = SGPVTConfig(output_dir="unused", report_to="none")
    assert (sgpvt.learning_rate, sgpvt.per_device_train_batch_size, sgpvt.max_steps) == (2e-5, 4, 20)
    pubg = PUBGConfig(output_dir="unused", report_to="none")
    assert (pubg.per_device_train_batch_size, pubg.max_steps) == (8, 30)
    assert dict(PUBGConfig.paper_settings["learning_rate"]) == {"mistral": 2e-5, "llama": 3e-5}
    assert dict(SaliencyConfig.paper_settings["learning_rate"]) == {"llava": 2e-5, "qwen2_vl": 1e-5}
    assert NPOConfig(output_dir="unused", report_to="none").beta == 0.4
    for cls in (FTTPConfig, ViKeRConfig, SGPVTConfig, SaliencyConfig, PUBGConfig):  # the papers have no GA ceiling
        assert cls(output_dir="unused", report_to="none").forget_loss_ceiling is None


def _viker(tmp_path, args, retain=None, r=8, alpha=16):
    model, processor = tiny_model_and_processor("llava")
    return ViKeRTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), retain_dataset=retain,
                        processing_class=processor, peft_config=lora_config_for(model, r=r, alpha=alpha),
                        reference_images=tiny_images(5, seed=3))


def test_a_paper_default_run_says_none(tmp_path):
    args = ViKeRConfig(output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True)
    trainer = _viker(tmp_path, args)
    assert trainer.paper_deviations() == []
    assert _deviations_section(render_model_card(trainer)).startswith("None")


def test_a_departing_run_lists_each_departure_on_the_card(tmp_path):
    args = train_args(ViKeRConfig, tmp_path, learning_rate=1e-3, max_steps=2, per_device_train_batch_size=8,
                      forget_loss_ceiling=1.0, lam=0.5)
    trainer = _viker(tmp_path, args, retain=tiny_vqa_rows(2, seed=5), r=4)
    section = _deviations_section(render_model_card(trainer))
    for line in ["learning_rate 0.001 (paper: 5e-6)", "train batch size 8 (paper: 2)", "max_steps 2 (paper: 1 epoch)",
                 "lam 0.5 (paper: 0.05)", "forget_loss_ceiling 1.0 (a guard the paper does not have)",
                 "retain NLL term added (the paper has no retain set)", "LoRA r 4 (paper: 8)"]:
        assert f"- {line}" in section, (line, section)
    assert "lora_alpha" not in section and "num_reference_images" not in section  # those are the paper's


def _preserved_rows():
    """P of MMUnlearner Eq. 6 in miniature: VQA rows of other images plus text-only QA."""
    return tiny_vqa_rows(3, seed=7) + tiny_vqa_rows(3, with_images=False)


def _saliency(tmp_path, family="llava", retain=None, **overrides):
    model, processor = tiny_model_and_processor(family)
    args = train_args(SaliencyConfig, tmp_path, **{"learning_rate": None, **overrides})
    return SaliencyTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), retain_dataset=retain,
                           preserve_dataset=_preserved_rows(), processing_class=processor)


@pytest.mark.parametrize("family, lr", [("llava", 2e-5), ("qwen2_vl", 1e-5)])
def test_per_family_learning_rate_is_the_papers_and_recorded_in_args(family, lr, tmp_path):
    trainer = _saliency(tmp_path, family, retain=tiny_vqa_rows(2, seed=5))
    assert trainer.args.learning_rate == lr and trainer.paper_family == family
    assert not any(d.startswith("learning_rate") for d in trainer.paper_deviations())
    assert f"| `learning_rate` | {lr} |" in render_model_card(trainer)


def test_an_explicit_learning_rate_is_kept_and_listed(tmp_path):
    trainer = _saliency(tmp_path, "qwen2_vl", retain=tiny_vqa_rows(2, seed=5), learning_rate=1e-3)
    assert trainer.args.learning_rate == 1e-3
    assert "learning_rate 0.001 (paper: 1e-5 for qwen2_vl)" in trainer.paper_deviations()


def test_saliency_without_retain_set_warns_once_and_the_card_says_eq3_is_dropped(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=SALIENCY_LOGGER):
        trainer = _saliency(tmp_path)
    warnings = [r for r in caplog.records if r.name == SALIENCY_LOGGER and "Eq. 3" in r.getMessage()]
    assert len(warnings) == 1 and "not the paper's objective" in warnings[0].getMessage()
    assert "- no retain set: L_r of Eq. 3 dropped" in _deviations_section(render_model_card(trainer))


def test_saliency_with_retain_set_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=SALIENCY_LOGGER):
        trainer = _saliency(tmp_path, retain=tiny_vqa_rows(2, seed=5))
    assert not [r for r in caplog.records if "Eq. 3" in r.getMessage()]
    assert not any("retain" in d for d in trainer.paper_deviations())


def test_a_method_without_recorded_paper_settings_says_so(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, variant="ga"), forget_dataset=tiny_vqa_rows(2),
                        processing_class=processor)
    assert trainer.paper_deviations() == []
    assert _deviations_section(render_model_card(trainer)).startswith("None recorded")


def test_pubg_lr_follows_the_language_model_and_demo_style_departures_are_listed(tmp_path):
    model, processor = tiny_model_and_processor("llava")  # a Llama language model: the paper's Vicuna setting
    args = train_args(PUBGConfig, tmp_path, learning_rate=None, max_steps=30, per_device_train_batch_size=8,
                      query="tell me about this person .", incontext_prompt="describe the picture .",
                      guidance_do_sample=False)
    trainer = PUBGTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, 5),
                          processing_class=processor, peft_config=lora_config_for(model, r=8, alpha=16),
                          guidance_answers=["a small picture ."] * 2)
    assert trainer.args.learning_rate == 3e-5 and trainer.paper_family == "llama"
    deviations = trainer.paper_deviations()
    assert "incontext_prompt differs from the paper's" in deviations
    assert "guidance_do_sample False (paper: True)" in deviations
    assert "LoRA r 8 (paper: 128)" in deviations and "LoRA alpha 16 (paper: 256)" in deviations
    assert any(d.startswith("query ") for d in deviations)
    assert not any(d.startswith(("learning_rate", "max_steps", "train batch", "retain", "no retain")) for d in deviations)
