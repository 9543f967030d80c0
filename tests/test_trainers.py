import pytest
import torch
from conftest import answer_logprob, assert_accumulation_matches_larger_batch, tiny_model, train_args
from peft import PeftModel

from unlearn_trainer import (
    GAConfig,
    GATrainer,
    NonFiniteLossError,
    NPOConfig,
    NPOTrainer,
    VLMUnlearningCollator,
)
from unlearn_trainer.data import model_inputs
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

TRAINERS = [(GATrainer, GAConfig), (NPOTrainer, NPOConfig)]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("trainer_cls,config_cls", TRAINERS, ids=["ga", "npo"])
def test_forget_logprob_drops(family, lora, trainer_cls, config_cls, tmp_path):
    model, processor = tiny_model(family, lora)
    forget = tiny_vqa_rows(4)
    before = answer_logprob(model, processor, forget)
    args = train_args(config_cls, tmp_path, max_steps=8, learning_rate=1e-1 if lora else 5e-3)
    trainer = trainer_cls(model=model, args=args, forget_dataset=forget, processing_class=processor)
    trainer.train()
    after = answer_logprob(model, processor, forget)
    assert after < before - 0.3, (before, after)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    key = "forget_nll" if trainer_cls is GATrainer else "npo_loss"
    assert all(key in h for h in logged)


def test_peft_reference_is_the_disabled_adapter_not_a_copy(family, tmp_path):
    model, processor = tiny_model(family, lora=True)
    base_ptrs = {p.data_ptr() for p in model.parameters()}
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                         processing_class=processor)
    assert trainer._ref_model is None
    modules = [v for v in vars(trainer).values() if isinstance(v, torch.nn.Module)]
    assert all(m is model for m in modules)
    assert {p.data_ptr() for p in trainer.model.parameters()} == base_ptrs
    # at step 0 the LoRA B matrices are zero: the reference equals the policy exactly
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])["forget"]
    ref = trainer.reference_logits(model, batch)
    with torch.no_grad():
        torch.testing.assert_close(ref, trainer.forward_logits(model, batch))


def test_full_model_reference_is_a_frozen_separate_copy(tmp_path):
    model, processor = tiny_model("llava", lora=False)
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                         processing_class=processor)
    ref = trainer._ref_model
    assert ref is not None and ref is not model
    assert not any(p.requires_grad for p in ref.parameters())
    assert not {p.data_ptr() for p in ref.parameters()} & {p.data_ptr() for p in model.parameters()}
    # GA needs no reference at all
    ga = GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                   processing_class=processor)
    assert ga._ref_model is None


def test_npo_reference_logprobs_cached_once(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    calls = []
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path, max_steps=4), forget_dataset=tiny_vqa_rows(2),
                         processing_class=processor)
    original = trainer._ref_logp
    trainer._ref_logp = lambda ref, batch: calls.append(batch["sample_index"].tolist()) or original(ref, batch)
    trainer.train()
    assert len(calls) == 1 and sorted(calls[0]) == [0, 1]  # 4 steps, one reference pass
    assert set(trainer._ref_cache["npo_ref_logp"]) == {0, 1}

    calls.clear()
    model2, _ = tiny_model("llava", lora=True)
    t2 = NPOTrainer(model=model2, args=train_args(NPOConfig, tmp_path, max_steps=4, cache_reference=False),
                    forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    original2 = t2._ref_logp
    t2._ref_logp = lambda ref, batch: calls.append(1) or original2(ref, batch)
    t2.train()
    assert len(calls) == 4


def test_adapter_saves_as_safetensors_and_reloads(family, tmp_path):
    model, processor = tiny_model(family, lora=True)
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, max_steps=3), forget_dataset=tiny_vqa_rows(2),
                        processing_class=processor)
    trainer.train()
    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    assert (out / "adapter_model.safetensors").exists()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert (out / "training_args.json").exists()
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(2))
    model.eval()
    with torch.no_grad():
        expected = model(**model_inputs(batch)).logits
    base, _ = tiny_model_and_processor(family)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**model_inputs(batch)).logits, expected)


@pytest.mark.parametrize("trainer_cls,config_cls,extra", [
    (GATrainer, GAConfig, {"variant": "ga_gd"}),
    (NPOTrainer, NPOConfig, {"retain_loss": "kl"}),
], ids=["ga_gd", "npo_kl"])
def test_gradient_accumulation_matches_larger_batch(trainer_cls, config_cls, extra, tmp_path):
    assert_accumulation_matches_larger_batch(trainer_cls, config_cls, tmp_path, **extra)


def test_non_finite_loss_stops_with_step(tmp_path):
    model, processor = tiny_model("llava", lora=False)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                        processing_class=processor)
    with pytest.raises(NonFiniteLossError, match=r"step 0 \(forget rows .*forget_nll"):
        trainer.train()


def test_retain_configuration_errors(tmp_path):
    model, processor = tiny_model("llava", lora=False)
    with pytest.raises(ValueError, match="needs a retain set"):
        GATrainer(model=model, args=train_args(GAConfig, tmp_path, variant="ga_gd"), forget_dataset=tiny_vqa_rows(2),
                  processing_class=processor)
    with pytest.raises(ValueError, match="forget set is empty"):
        GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=[], processing_class=processor)
    with pytest.raises(ValueError, match="variant"):
        train_args(GAConfig, tmp_path, variant="nope")


def test_ga_variants_log_their_retain_term(tmp_path):
    for variant, key in [("ga_gd", "retain_nll"), ("ga_kl", "retain_kl")]:
        model, processor = tiny_model("llava", lora=True)
        trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path, variant=variant, max_steps=2),
                            forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2, seed=3),
                            processing_class=processor)
        trainer.train()
        assert all(key in h and "forget_nll" in h for h in trainer.state.log_history if "loss" in h)


def test_plain_training_arguments_and_train_dataset_are_accepted(tmp_path):
    from transformers import TrainingArguments

    model, processor = tiny_model("llava", lora=True)
    args = TrainingArguments(output_dir=str(tmp_path / "o"), max_steps=1, report_to="none", disable_tqdm=True,
                             per_device_train_batch_size=2)
    trainer = NPOTrainer(model=model, args=args, train_dataset=tiny_vqa_rows(2), processing_class=processor)
    assert isinstance(trainer.args, NPOConfig) and trainer.args.beta == 0.4
    trainer.train()
    # evaluation on plain rows uses the ordinary fine-tuning loss
    metrics = trainer.evaluate(eval_dataset=tiny_vqa_rows(2))
    assert metrics["eval_loss"] > 0


def test_every_config_renders_help_with_plain_hf_argument_parser():
    """Help texts are argparse format strings under HfArgumentParser: a bare '%' would crash `--help`."""
    from transformers import HfArgumentParser

    import unlearn_trainer.trainers as t

    configs = [getattr(t, n) for n in dir(t) if n.endswith("Config")]
    assert len(configs) >= 7
    for config in configs:
        assert "--learning_rate" in HfArgumentParser((config,)).format_help(), config.__name__
