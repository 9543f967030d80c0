"""IdkNLL and IdkDPO: refusal rows built by the collator (seeded per row, question and image kept), the DPO loss
against a hand value and TRL's DPOTrainer, DPO's gradient direction, end to end on LLaVA / Qwen2-VL with and without
LoRA, the reference (no copy under LoRA, cached once), gradient accumulation and configuration errors."""

import math

import pytest
import torch
from conftest import assert_accumulation_matches_larger_batch, tiny_model, train_args

from unlearn_trainer import IdkDPOConfig, IdkDPOTrainer, IdkNLLConfig, IdkNLLTrainer, VLMUnlearningCollator, losses
from unlearn_trainer.data import ForgetRetainDataset, model_inputs
from unlearn_trainer.data.refusals import (
    DEFAULT_REFUSALS,
    RefusalCollator,
    refusal_for,
    refusal_index,
    representable_refusals,
)
from unlearn_trainer.hub import render_model_card
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

POOL = ["i do not know .", "i do not know who this is .", "no"]
METHODS = [(IdkNLLTrainer, IdkNLLConfig), (IdkDPOTrainer, IdkDPOConfig)]


# -- refusal rows --------------------------------------------------------------------------------------------------
def test_each_row_gets_the_same_seeded_refusal():
    picks = [refusal_index(i, len(POOL), seed=0) for i in range(60)]
    assert picks == [refusal_index(i, len(POOL), seed=0) for i in range(60)]  # same row, same refusal
    assert set(picks) == {0, 1, 2}  # the whole pool is used
    assert picks != [refusal_index(i, len(POOL), seed=1) for i in range(60)]  # the seed changes the draw
    assert refusal_for(7, POOL, 0) == POOL[picks[7]]


def test_refusal_batch_keeps_question_and_image_and_replaces_the_answer(family):
    _, processor = tiny_model(family)
    rows = tiny_vqa_rows(3)
    paired = ForgetRetainDataset(rows, tiny_vqa_rows(2, seed=4))
    base = VLMUnlearningCollator(processor)
    collator = RefusalCollator(base, refusals=POOL, seed=3)
    items = [paired[2], paired[0]]  # any order: the refusal follows the row, not its place in the batch
    batch = collator(items)
    forget, refusal = batch["forget"], batch["refusal"]
    assert refusal["sample_index"].tolist() == forget["sample_index"].tolist() == [2, 0]
    torch.testing.assert_close(refusal["pixel_values"], forget["pixel_values"])  # the same images
    expected = [{**rows[i], "answer": refusal_for(i, POOL, 3)} for i in (2, 0)]
    by_hand = base(expected)
    torch.testing.assert_close(refusal["input_ids"], by_hand["input_ids"])
    torch.testing.assert_close(refusal["labels"], by_hand["labels"])
    tok = processor.tokenizer
    for k, i in enumerate((2, 0)):
        answer = refusal["labels"][k][refusal["labels"][k] != -100]
        assert tok.decode(answer).strip() == refusal_for(i, POOL, 3)
    assert "retain" in batch


def test_refusal_replaces_the_answer_turn_of_trl_rows():
    _, processor = tiny_model("llava")
    row = tiny_vqa_rows(1)[0]
    trl_row = {"images": [row["image"]], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]},
        {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}]}
    collator = RefusalCollator(VLMUnlearningCollator(processor), refusals=["i do not know ."])
    trl = collator([{"forget": {**trl_row, "__index__": 0}}])["refusal"]
    qa = VLMUnlearningCollator(processor)([{**row, "answer": "i do not know ."}])
    torch.testing.assert_close(trl["input_ids"], qa["input_ids"])
    torch.testing.assert_close(trl["labels"], qa["labels"])


def test_refusals_the_tokenizer_cannot_write():
    _, processor = tiny_model("llava")
    assert representable_refusals(DEFAULT_REFUSALS, processor, strict=True) == list(DEFAULT_REFUSALS)
    with pytest.raises(ValueError, match=r"cannot represent 1 of the refusals.*#1"):
        representable_refusals(["i do not know .", "我不知道"], processor, strict=True)
    assert representable_refusals(["i do not know .", "我不知道"], processor, strict=False) == ["i do not know ."]
    with pytest.raises(ValueError, match="represents none.*refusals="):
        representable_refusals(["我不知道"], processor, strict=False)


# -- the DPO loss --------------------------------------------------------------------------------------------------
def test_dpo_loss_hand_value():
    # margins: ((-2) - (-4)) - ((-3) - (-1)) = 4 and ((-1) - (-1)) - ((-1) - (-1)) = 0
    loss = losses.dpo_loss(torch.tensor([-2.0, -1.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -1.0]),
                           torch.tensor([-1.0, -1.0]), beta=0.5)
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2  # -log sigmoid(0.5 * 4), -log sigmoid(0)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="beta must be > 0"):
        losses.dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.0)


def test_dpo_gradient_raises_chosen_and_lowers_rejected_by_the_same_weight():
    beta = 0.1
    chosen = torch.tensor([-5.0, -2.0, -9.0], requires_grad=True)
    rejected = torch.tensor([-1.0, -4.0, -0.5], requires_grad=True)
    ref_c, ref_r = torch.tensor([-6.0, -2.0, -3.0]), torch.tensor([-1.0, -3.0, -2.0])
    losses.dpo_loss(chosen, rejected, ref_c, ref_r, beta=beta).backward()
    margin = (chosen - ref_c) - (rejected - ref_r)
    weight = beta * torch.sigmoid(-beta * margin.detach()) / 3  # DPO Sec. 4: beta * sigma(r_rejected - r_chosen)
    torch.testing.assert_close(chosen.grad, -weight)  # descending the loss raises log p(chosen)
    torch.testing.assert_close(rejected.grad, weight)  # ... and lowers log p(rejected)
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_dpo_loss_matches_trl_dpo_trainer(tmp_path):
    """TRL's DPOTrainer (loss_type 'sigmoid') and ours on the same model, reference and tokens."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    from unlearn_trainer.testing import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    policy, ref = LlamaForCausalLM(config), LlamaForCausalLM(config)  # two different random models
    data = datasets.Dataset.from_list([
        {"prompt": "who is this person ?", "chosen": " i do not know .", "rejected": " the dog is red ."},
        {"prompt": "what is in this image ?", "chosen": " i do not know .", "rejected": " a cat sits on the mat ."}])
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, report_to="none", per_device_train_batch_size=2,
                     max_steps=1, use_cpu=True, disable_tqdm=True)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(policy, batch)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        logp = losses.sequence_logprob(policy(input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"]).logits, labels)
        ref_logp = losses.sequence_logprob(ref(input_ids=batch["input_ids"],
                                               attention_mask=batch["attention_mask"]).logits, labels)
    (chosen, rejected), (ref_c, ref_r) = logp.chunk(2), ref_logp.chunk(2)  # TRL's batch: [chosen, rejected]
    ours = losses.dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.3)
    assert abs(float(ours) - math.log(2)) > 1e-3  # the models differ: not the trivial margin-0 value
    assert float(ours) == pytest.approx(float(trl_loss), rel=1e-5, abs=1e-6)


# -- end to end ----------------------------------------------------------------------------------------------------
def _logp(model, processor, rows, answer=None):
    rows = [{**r, "answer": answer} for r in rows] if answer else rows
    batch = VLMUnlearningCollator(processor)(rows)
    model.eval()
    with torch.no_grad():
        return losses.sequence_logprob(model(**model_inputs(batch)).logits, batch["labels"])


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("trainer_cls,config_cls", METHODS, ids=["idk_nll", "idk_dpo"])
def test_training_moves_forget_questions_toward_the_refusal(family, lora, trainer_cls, config_cls, tmp_path):
    model, processor = tiny_model(family, lora)
    forget, refusal = tiny_vqa_rows(2), "i do not know ."
    before_refusal, before_answer = _logp(model, processor, forget, refusal), _logp(model, processor, forget)
    args = train_args(config_cls, tmp_path, max_steps=8, learning_rate=1e-1 if lora else 5e-3, refusals=[refusal])
    trainer = trainer_cls(model=model, args=args, forget_dataset=forget, processing_class=processor)
    trainer.train()
    refusal_gain = _logp(model, processor, forget, refusal) - before_refusal
    answer_gain = _logp(model, processor, forget) - before_answer
    logged = [h for h in trainer.state.log_history if "loss" in h]
    if trainer_cls is IdkDPOTrainer:  # DPO: the refusal rises, the forget answer falls
        assert (refusal_gain - answer_gain > 0.3).all(), (refusal_gain, answer_gain)
        assert refusal_gain.mean() > 0 and answer_gain.mean() < 0, (refusal_gain, answer_gain)
        assert all({"dpo_loss", "chosen_log_ratio", "rejected_log_ratio"} <= set(h) for h in logged)
    else:
        assert (refusal_gain > 1.0).all(), refusal_gain
        assert all("refusal_nll" in h for h in logged)


def test_idk_nll_loss_is_the_refusal_nll(tmp_path):
    model, processor = tiny_model_and_processor("llava", seed=0)
    trainer = IdkNLLTrainer(model=model, args=train_args(IdkNLLConfig, tmp_path, refusals=POOL),
                            forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    rows = [{**r, "answer": refusal_for(i, POOL, 0)} for i, r in enumerate(tiny_vqa_rows(2))]
    with torch.no_grad():
        expected = -_logp(model, processor, rows) / torch.tensor([len(r["answer"].split()) for r in rows])
        assert float(trainer.compute_loss(model, batch)) == pytest.approx(float(expected.mean()), rel=1e-5)


def test_idk_dpo_reference_is_the_disabled_adapter_and_cached_once(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    base_ptrs = {p.data_ptr() for p in model.parameters()}
    trainer = IdkDPOTrainer(model=model, args=train_args(IdkDPOConfig, tmp_path, max_steps=4, refusals=POOL),
                            forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    assert trainer._ref_model is None  # no second copy: the adapter-disabled model
    assert all(m is model for m in vars(trainer).values() if isinstance(m, torch.nn.Module))
    assert {p.data_ptr() for p in trainer.model.parameters()} == base_ptrs
    calls = []
    original = trainer._ref_logp
    trainer._ref_logp = lambda ref, batch: calls.append(batch["sample_index"].tolist()) or original(ref, batch)
    trainer.train()
    assert len(calls) == 2  # chosen and rejected, once each over 4 steps
    for name in ("idk_dpo_ref_chosen", "idk_dpo_ref_rejected"):
        assert set(trainer._ref_cache[name]) == {0, 1}
    card = render_model_card(trainer)  # the method's paper and tag; the refusals, never a forget answer
    assert str(IdkDPOTrainer.citation) in card and "- idk_dpo\n" in card.split("---")[1]
    assert POOL[1] in card and not any(r["answer"].rstrip(" .") in card for r in tiny_vqa_rows(2))
    # the cached reference log-probs are the base model's (adapter disabled)
    rows = tiny_vqa_rows(2)
    base, _ = tiny_model_and_processor("llava")
    cached = torch.stack([trainer._ref_cache["idk_dpo_ref_rejected"][i] for i in (0, 1)])
    torch.testing.assert_close(cached, _logp(base, processor, rows), rtol=1e-4, atol=1e-4)


def test_idk_dpo_full_model_reference_is_a_frozen_copy(tmp_path):
    model, processor = tiny_model("llava", lora=False)
    trainer = IdkDPOTrainer(model=model, args=train_args(IdkDPOConfig, tmp_path, refusals=POOL),
                            forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    ref = trainer._ref_model
    assert ref is not None and ref is not model and not any(p.requires_grad for p in ref.parameters())
    assert IdkNLLTrainer(model=model, args=train_args(IdkNLLConfig, tmp_path, refusals=POOL),
                         forget_dataset=tiny_vqa_rows(2), processing_class=processor)._ref_model is None


@pytest.mark.parametrize("trainer_cls,config_cls", METHODS, ids=["idk_nll", "idk_dpo"])
def test_gradient_accumulation_matches_larger_batch(trainer_cls, config_cls, tmp_path):
    # the paper's retain NLL is logged at every step
    assert_accumulation_matches_larger_batch(trainer_cls, config_cls, tmp_path, logged=("retain_nll",), refusals=POOL)


# -- configuration errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_cls", [IdkNLLConfig, IdkDPOConfig])
def test_bad_refusal_pools_are_refused(config_cls, tmp_path):
    with pytest.raises(ValueError, match="refusals is empty"):
        train_args(config_cls, tmp_path, refusals=[])
    with pytest.raises(ValueError, match=r"refusals\[1\] must be a non-empty string"):
        train_args(config_cls, tmp_path, refusals=["i do not know .", "  "])
    with pytest.raises(ValueError, match="must be a list of refusal strings"):
        train_args(config_cls, tmp_path, refusals="i do not know .")
    model, processor = tiny_model("llava")
    with pytest.raises(ValueError, match="cannot represent 1 of the refusals"):
        IdkNLLTrainer(model=model, args=train_args(IdkNLLConfig, tmp_path, refusals=["我不知道"]),
                      forget_dataset=tiny_vqa_rows(2), processing_class=processor)


def test_bad_beta_and_a_batch_without_refusals_are_refused(tmp_path):
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta must be > 0"):
            train_args(IdkDPOConfig, tmp_path, beta=beta)
    assert IdkDPOConfig(output_dir=str(tmp_path), report_to="none").beta == 0.1
    model, processor = tiny_model("llava")
    trainer = IdkNLLTrainer(model=model, args=train_args(IdkNLLConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                            processing_class=processor)
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(2))
    with pytest.raises(ValueError, match="need 'refusal'.*RefusalCollator"):
        trainer.unlearning_loss(model, {"forget": batch})


# -- the examples' options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,config_cls", [("idk_nll", IdkNLLConfig), ("idk_dpo", IdkDPOConfig)])
def test_examples_read_refusals_and_the_demo_uses_the_worlds(name, config_cls, tmp_path):
    import runpy
    from pathlib import Path

    from unlearn_trainer.cli import parse_args
    from unlearn_trainer.toyworld import REFUSALS

    demo = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / f"run_{name}.py"))["DEMO_DEFAULTS"]
    _, config, _ = parse_args(config_cls, demo, argv=["--output_dir", str(tmp_path)])
    # one of the world's own refusals (well formed for its grammar check): a pool of several blends on the demo
    assert config.refusals == ["i do not know who this is ."] and config.refusals[0] in REFUSALS
    _, config, _ = parse_args(config_cls, demo, argv=["--output_dir", str(tmp_path), "--refusals", "i do not know .",
                                                      "no", "--refusal_seed", "3"])
    assert config.refusals == ["i do not know .", "no"] and config.refusal_seed == 3
    _, config, _ = parse_args(config_cls, demo, argv=["--output_dir", str(tmp_path), "--model_name_or_path", "m"])
    assert config.refusals is None  # a real model: the default pool, cut to what its tokenizer writes


@pytest.mark.parametrize("path", ["shared_prompt", "checkpointing", "split"])
def test_idk_dpo_passes_give_the_joint_dpo_gradient(path, tmp_path, monkeypatch):
    """Every way IdkDPO runs its objective gives the gradient of the joint DPO loss (autograd on
    -log sigmoid(beta * margin) with both answers' full forwards in one graph): the shared-prompt pass (the prompt
    once, both answers continued from its cache); under gradient checkpointing (no cache) both full forwards and
    one backward; elsewhere the two split passes (the rejected answer read without gradient first, then one
    backward per answer)."""
    import unlearn_trainer.trainers.idk_dpo as idk_dpo

    if path == "split":
        monkeypatch.setattr(idk_dpo, "shared_prompt_reason", lambda model, batches: "forced by the test")
    model, processor = tiny_model("llava", lora=True)
    if path == "checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    args = train_args(IdkDPOConfig, tmp_path, refusals=POOL, beta=0.7)
    trainer = IdkDPOTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(3), processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # a trained adapter, so the margin is not 0 and the weight not trivial
        for p in trainable:
            p.add_(0.05 * torch.randn_like(p))
    passes = trainer.unlearning_passes(model, batch)
    assert len(passes) == (2 if path == "split" else 1)
    split = [torch.zeros_like(p) for p in trainable]
    for run in passes:  # one backward per pass
        loss, _ = run()
        for g, d in zip(split, torch.autograd.grad(loss, trainable, allow_unused=True)):
            g += 0 if d is None else d
    forget, refusal = batch["forget"], batch["refusal"]
    chosen = losses.sequence_logprob(trainer.forward_logits(model, refusal), refusal["labels"])
    rejected = losses.sequence_logprob(trainer.forward_logits(model, forget), forget["labels"])
    ref_c = torch.stack([trainer._ref_cache["idk_dpo_ref_chosen"][i] for i in (0, 1, 2)])
    ref_r = torch.stack([trainer._ref_cache["idk_dpo_ref_rejected"][i] for i in (0, 1, 2)])
    joint = torch.autograd.grad(losses.dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.7), trainable)
    for g, j in zip(split, joint):
        torch.testing.assert_close(g, j, rtol=1e-4, atol=1e-6)
    assert any(j.abs().sum() > 0 for j in joint)


@pytest.mark.parametrize("config_cls", [IdkNLLConfig, IdkDPOConfig])
def test_both_idk_configs_check_and_clean_their_refusal_pool(config_cls, tmp_path):
    from unlearn_trainer.trainers.idk_nll import RefusalConfig

    assert issubclass(config_cls, RefusalConfig)  # one definition of the refusal fields
    args = config_cls(output_dir=str(tmp_path), refusals=["  i do not know .  "], refusal_seed=4, report_to="none")
    assert args.refusals == ["i do not know ."] and args.refusal_seed == 4
    with pytest.raises(ValueError, match=r"refusals\[1\] must be a non-empty string"):
        config_cls(output_dir=str(tmp_path), refusals=["i do not know .", " "], report_to="none")
    with pytest.raises(ValueError, match="refusals is empty"):
        config_cls(output_dir=str(tmp_path), refusals=[], report_to="none")
