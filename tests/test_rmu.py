"""RMU (WMDP Sec. 5): the activation losses against hand values and the paper's fixed point, the steered layer and its
early stop, which tokens each term covers, which parameters train, end to end on LLaVA / Qwen2-VL with and without
LoRA, gradient accumulation, bad configurations and the example."""

import json
import runpy
from pathlib import Path

import pytest
import torch
from conftest import save_forget_retain, save_tiny_llava, tiny_model, train_args
from peft import LoraConfig, get_peft_model

from unlearn_trainer import RMUConfig, RMUTrainer, losses
from unlearn_trainer.data import model_inputs
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.trainers.rmu import rmu_layers, rmu_lora_targets
from unlearn_trainer.vision.adapters import get_adapter

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _trainer(model, processor, tmp_path, forget=2, retain=2, **overrides):
    args = train_args(RMUConfig, tmp_path, **{"max_steps": 2, **overrides})
    return RMUTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(forget),
                      retain_dataset=tiny_vqa_rows(retain, seed=5), processing_class=processor)


# -- losses --------------------------------------------------------------------------------------------------------
def test_activation_loss_hand_values_and_zero_gradient_at_the_target():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [9.0, 9.0]]], requires_grad=True)  # B=1, T=3, D=2
    target = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[True, True, False]])
    loss = losses.rmu_activation_loss(hidden, target, mask)
    # token 0: (0 + 4)/2 = 2; token 1: (4 + 0)/2 = 2; token 2 masked -> mean 2
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    expected = 2 * (hidden.detach() - target) / (2 * 2) * mask[..., None]  # 2 (h - t) / (D n_s B)
    torch.testing.assert_close(hidden.grad, expected)
    at_target = target.expand(1, 3, 2).clone().requires_grad_(True)
    losses.rmu_activation_loss(at_target, target, mask).backward()
    assert torch.count_nonzero(at_target.grad) == 0  # the paper's fixed point: h = c u


def test_control_vector_is_a_seeded_scaled_unit_vector():
    v = losses.rmu_control_vector(64, 6.5, seed=3)
    assert v.norm().item() == pytest.approx(6.5) and (v >= 0).all()  # u ~ U[0,1)^d normalised, as the authors
    torch.testing.assert_close(v, losses.rmu_control_vector(64, 6.5, seed=3))
    assert not torch.allclose(v, losses.rmu_control_vector(64, 6.5, seed=4))


def test_answer_positions_are_the_positions_that_predict_answer_tokens():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, 10]])
    expected = torch.tensor([[False, True, True, False, False], [True, True, True, True, False]])
    assert torch.equal(losses.answer_positions(labels), expected)


# -- the steered layer ---------------------------------------------------------------------------------------------
def test_layer_from_the_papers_depth_fraction():
    model, _ = tiny_model_and_processor("llava", num_layers=32, hidden_size=16, intermediate_size=16)
    args = RMUConfig(output_dir="unused", report_to="none")
    assert rmu_layers(model, args) == (7, [5, 6, 7])  # Zephyr-7B: layer 7 of 32, layers 5-7 train
    small, _ = tiny_model_and_processor("llava")  # 2 layers: round(0.4375) = 0
    assert rmu_layers(small, args) == (0, [0])
    args.layer = 5
    with pytest.raises(ValueError, match=r"2 decoder layers \(0..1\)"):
        rmu_layers(small, args)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_layer_activations_are_the_layers_output_and_the_forward_stops_there(family, tmp_path):
    model, processor = tiny_model_and_processor(family, num_layers=3)
    trainer = _trainer(model, processor, tmp_path, layer=1)
    batch = trainer.data_collator([trainer.train_dataset[0]])["forget"]
    lm_head_calls = []
    handle = model.lm_head.register_forward_hook(lambda *a: lm_head_calls.append(1))
    hidden = trainer.layer_activations(model, batch)
    handle.remove()
    assert not lm_head_calls  # stopped at layer 1: no logits
    with torch.no_grad():
        states = model(**model_inputs(batch), output_hidden_states=True).hidden_states
    torch.testing.assert_close(hidden.detach(), states[2])  # hidden_states[0] is the embeddings


def test_forget_term_covers_answer_positions_and_retain_term_every_token(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    trainer = _trainer(model, processor, tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    forget, retain = batch["forget"], batch["retain"]
    loss, terms = trainer._forget_pass(model, forget)
    hidden = trainer.layer_activations(model, forget)
    c_u = trainer.control_vector
    per_token = (hidden - c_u).pow(2).mean(-1)
    mask = losses.answer_positions(forget["labels"])
    assert mask.sum() < forget["attention_mask"].sum() / 2  # the prompt and image tokens are left out
    expected = torch.stack([per_token[b][mask[b]].mean() for b in range(2)]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # retain: every attended token, against the frozen model (equal to the model before any update: MSE 0)
    loss_r, terms_r = trainer._retain_pass_rmu(model, retain)
    assert loss_r.item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "layers.0.mlp.down_proj" in n).add_(0.05)
    with torch.no_grad(), trainer.reference(model) as ref:
        frozen = trainer.layer_activations(ref, retain)
    moved = trainer.layer_activations(model, retain).detach()
    att = retain["attention_mask"].bool()
    expected_r = torch.stack([(moved[b] - frozen[b]).pow(2).mean(-1)[att[b]].mean() for b in range(2)]).mean()
    assert trainer._retain_pass_rmu(model, retain)[1]["rmu_retain_mse"].item() == pytest.approx(
        expected_r.item(), rel=1e-5)
    assert trainer._retain_pass_rmu(model, retain)[0].item() == pytest.approx(1200 * expected_r.item(), rel=1e-5)


# -- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("lora", [False, True])
def test_rmu_trains_only_the_updated_layers(family, lora, tmp_path):
    model, processor = tiny_model_and_processor(family, num_layers=4)
    if lora:  # as the example configures it: LoRA on the updated layers' MLPs only
        args = RMUConfig(output_dir="unused", report_to="none", layer=2, num_updated_layers=2)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=rmu_lora_targets(model, args)))
        assert {n.split(".layers.")[1].split(".")[0] for n, _ in model.named_modules() if n.endswith("lora_A")} \
            == {"1", "2"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(model, processor, tmp_path, max_steps=3, layer=2, num_updated_layers=2, steering_coeff=20.0)
    assert trainer.updated_layers == [1, 2] and trainer.args.layer == 2
    if lora:
        assert trainer._ref_model is None  # the reference is the adapter-disabled model, no copy
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    lm = get_adapter(model).language_model_path
    assert changed and all(f"{lm}.layers.1.mlp." in n or f"{lm}.layers.2.mlp." in n for n in changed), changed
    if lora:
        assert all("lora_" in n for n in changed)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all({"rmu_forget_mse", "rmu_retain_mse"} <= set(h) for h in logged)
    assert logged[-1]["rmu_forget_mse"] < logged[0]["rmu_forget_mse"]  # activations move toward c u


def test_lora_elsewhere_is_frozen_and_lora_nowhere_near_is_an_error(tmp_path):
    model, processor = tiny_model("llava", lora=True)  # LoRA on every layer's projections
    _trainer(model, processor, tmp_path, layer=1, num_updated_layers=1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1.mlp." in n and "lora_" in n for n in trainable), trainable
    model, processor = tiny_model_and_processor("llava")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=r".*layers\.0\.self_attn\.q_proj"))
    with pytest.raises(ValueError, match="no parameter there is trainable"):
        _trainer(model, processor, tmp_path, layer=1, num_updated_layers=1)


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    results = []
    for batch, accumulation in ((2, 1), (1, 2)):
        model, processor = tiny_model_and_processor("llava", seed=0)
        trainer = _trainer(model, processor, tmp_path / str(batch), max_steps=1, per_device_train_batch_size=batch,
                           gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                           lr_scheduler_type="constant", max_grad_norm=0.0, steering_coeff=20.0)
        with torch.no_grad():  # the frozen reference differs from the model: the retain term has a gradient too
            next(p for n, p in model.named_parameters() if "layers.0.mlp.up_proj" in n).add_(0.05)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.train()
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    moved = [n for n in before if not torch.equal(results[0][n], before[n])]
    assert moved
    for n in moved:
        torch.testing.assert_close(results[0][n], results[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_bad_configuration_errors(tmp_path):
    for bad, match in (({"steering_coeff": 0.0}, "steering_coeff"), ({"alpha": -1.0}, "alpha"),
                       ({"layer": -1}, "layer must be"), ({"num_updated_layers": 0}, "num_updated_layers"),
                       ({"layer_fraction": 1.5}, "layer_fraction")):
        with pytest.raises(ValueError, match=match):
            train_args(RMUConfig, tmp_path, **bad)
    model, processor = tiny_model_and_processor("llava")
    with pytest.raises(ValueError, match="needs a retain set"):
        RMUTrainer(model=model, args=train_args(RMUConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                   processing_class=processor)
    with pytest.raises(ValueError, match="own retain term"):
        RMUTrainer(model=model, args=train_args(RMUConfig, tmp_path, retain_loss="kl"),
                   forget_dataset=tiny_vqa_rows(2), retain_dataset=tiny_vqa_rows(2), processing_class=processor)


def test_example_on_a_saved_model_puts_lora_on_the_updated_layers(tmp_path):
    model_dir, data_dir = save_tiny_llava(tmp_path), save_forget_retain(tmp_path, 2, 3)
    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--forget_split", "forget",
            "--retain_split", "retain", "--max_steps", "2", "--per_device_train_batch_size", "2", "--output_dir",
            str(out), "--max_new_tokens", "4", "--disable_tqdm", "true", "--layer", "1"]
    trainer = runpy.run_path(str(EXAMPLES / "run_rmu.py"))["main"](argv)
    lora = [n for n, _ in trainer.model.named_modules() if n.endswith("lora_A")]
    assert lora and all(".layers.0.mlp." in n or ".layers.1.mlp." in n for n in lora), lora
    assert json.loads((out / "results.json").read_text())["method"] == "rmu"
    assert (out / "adapter_model.safetensors").exists()


def test_card_names_the_retain_use_and_the_resolved_layer(tmp_path):
    from unlearn_trainer.hub import render_model_card

    model, processor = tiny_model_and_processor("llava")
    card = render_model_card(_trainer(model, processor, tmp_path))
    assert "- Retain set: **2 rows**, in the method's own objective" in card and "retain term `none`" not in card
    assert "| `layer_fraction` | 0.21875 |" in card and "| `layer` | 0 |" in card  # the resolved layer


def test_gradient_checkpointing_gives_the_same_update(tmp_path):
    """The capture hook (and its early stop) is gone before checkpointing recomputes layers in the backward."""
    results = []
    for checkpointing in (False, True):
        model, processor = tiny_model_and_processor("llava", num_layers=3)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer = _trainer(model, processor, tmp_path / str(checkpointing), layer=1, steering_coeff=20.0,
                           gradient_checkpointing=checkpointing, optim="sgd", learning_rate=0.5,
                           lr_scheduler_type="constant", max_grad_norm=0.0)
        trainer.train()
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert any(not torch.equal(results[1][n], before[n]) for n in before)
    for n in before:
        torch.testing.assert_close(results[0][n], results[1][n], msg=n)


def test_every_family_has_its_decoder_layers_and_lora_targets():
    import re

    from unlearn_trainer.testing import TINY_FAMILIES

    args = RMUConfig(output_dir="unused", report_to="none", layer=1, num_updated_layers=1)
    for family in sorted(TINY_FAMILIES):
        model, _ = tiny_model_and_processor(family, num_layers=3)
        layers = get_adapter(model).decoder_layers(model)
        assert len(layers) == 3, family
        pattern = rmu_lora_targets(model, args)
        matched = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
        mlp = {n for n, m in layers[1].mlp.named_modules() if isinstance(m, torch.nn.Linear)}
        lm = get_adapter(model).language_model_path
        assert {n.removeprefix(f"{lm}.layers.1.mlp.") for n in matched} == mlp, (family, matched)
