import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import answer_logprob, train_args
from peft import get_peft_model

from unlearn_trainer import NPOConfig, NPOTrainer, VLMUnlearningCollator, losses
from unlearn_trainer.saliency import (
    SaliencyMask,
    _Target,
    compute_saliency_mask,
    fisher_diagonal,
    masks_from_scores,
    parameter_group,
    saliency_ratio,
    saliency_targets,
    set_trainable,
)
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.trainers.ga import GATrainer
from unlearn_trainer.trainers.saliency import SaliencyConfig, SaliencyTrainer, _as_rows

CONNECTOR_AND_LM = ["multi_modal_projector|merger", "language_model"]


def preserved_rows():
    """P of Eq. 6 in miniature: VQA rows of other images plus text-only QA."""
    return tiny_vqa_rows(3, seed=7) + tiny_vqa_rows(3, with_images=False)


# -- the Fisher diagonal on a model small enough to differentiate by hand ----------------------------------------
class LinearLM(torch.nn.Module):
    """logits = W E[x]: the gradient of the CE of label y wrt W is (softmax(W h) - e_y) h^T, h = E[x]."""

    def __init__(self, vocab=5, dim=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(vocab, dim, generator=g))
            self.head.weight.copy_(torch.randn(vocab, dim, generator=g))
        self.emb.weight.requires_grad_(False)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.head(self.emb(input_ids)))


def linear_collator(rows):
    ids = torch.tensor([[r["x"], r["y"]] for r in rows])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([[-100, r["y"]] for r in rows])}


def test_fisher_diagonal_matches_hand_computed_gradients(capsys):
    model = LinearLM()
    rows = [{"x": 0, "y": 1}, {"x": 2, "y": 4}, {"x": 3, "y": 0}]
    W, E = model.head.weight.detach(), model.emb.weight.detach()
    grads = []
    for r in rows:
        h = E[r["x"]]
        p = torch.softmax(W @ h, dim=0)
        grads.append(torch.outer(p - torch.nn.functional.one_hot(torch.tensor(r["y"]), 5).float(), h))
    g = torch.stack(grads)
    expected = {
        "dataset": g.mean(0).square(),  # Eq. 4: (grad of the set's mean loss)^2
        "batch": ((g[0] + g[1]) / 2).square().add(g[2].square()).div(2),  # batches {0, 1} and {2}
        "sample": g.square().mean(0),  # empirical Fisher
    }
    for mode, want in expected.items():
        got = fisher_diagonal(model, rows, linear_collator, mode=mode, batch_size=2, progress=(mode == "batch"))
        assert set(got) == {"head.weight"}  # only the trainable parameter; the frozen embedding has no saliency
        torch.testing.assert_close(got["head.weight"], want, rtol=1e-5, atol=1e-8)
    assert "2/2" in capsys.readouterr().err  # progress bar over the 2 batches
    assert not model.emb.weight.requires_grad and model.head.weight.grad is None


def test_ratio_threshold_and_guarded_division():
    s_t = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 1e-3, 1e-35])
    s_p = torch.tensor([0.0, 1.0, 0.0, 2.0, 1.0, 1.0, 0.0])
    ratio = saliency_ratio(s_t, s_p, eps=1e-30)
    assert ratio[0] == 0 and ratio[1] == 0  # 0/0 and 0/x: no forget saliency, ratio 0
    assert ratio[2] == pytest.approx(1e30)  # x/0 divides by eps
    assert ratio[3] == 1 and ratio[4] == 3 and ratio[5] == pytest.approx(1e-3)
    layout = {"p": _Target("p", "param", (7,))}
    mask = masks_from_scores(layout, {"p": s_t}, {"p": s_p}, beta=1.0)["p"]
    assert mask.tolist() == [False, False, True, True, True, False, False]  # >= beta; 1e-35/eps < 1
    mask3 = masks_from_scores(layout, {"p": s_t}, {"p": s_p}, beta=3.0)["p"]
    assert mask3.tolist() == [False, False, True, False, True, False, False]
    with pytest.raises(ValueError, match="beta"):
        masks_from_scores(layout, {"p": s_t}, {"p": s_p}, beta=0.0)
    with pytest.raises(ValueError, match="eps"):
        saliency_ratio(s_t, s_p, eps=0.0)


def test_lora_masks_follow_base_weight_channels():
    # W is [out=3, in=4]; row sums of S_T / S_P decide B's rows, column sums A's columns
    s_t = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [5, 0, 1, 0]])
    s_p = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    # rows: 2/4, 0/4, 6/4 -> [F, F, T]; columns: 6/3, 0/3, 1/3, 1/3 -> [T, F, F, F]
    for fan_in_fan_out, (st, sp) in [(False, (s_t, s_p)), (True, (s_t.T, s_p.T))]:
        layout = {"B": _Target("W", "lora_B", (3, 2), fan_in_fan_out), "A": _Target("W", "lora_A", (2, 4), fan_in_fan_out)}
        m = masks_from_scores(layout, {"W": st}, {"W": sp}, beta=1.0)
        assert m["B"].tolist() == [[False, False], [False, False], [True, True]]
        assert m["A"].tolist() == [[True, False, False, False]] * 2


def test_lora_saliency_is_the_fisher_of_the_wrapped_base_weight():
    base, processor = tiny_model_and_processor("qwen2_vl")
    collator = VLMUnlearningCollator(processor)
    forget, preserve = tiny_vqa_rows(2), preserved_rows()
    name = "model.language_model.layers.1.self_attn.v_proj.weight"
    weight = {name: dict(base.named_parameters())[name]}
    s_t = fisher_diagonal(base, forget, collator, targets=weight, progress=False)[name]
    s_p = fisher_diagonal(base, preserve, collator, targets=weight, progress=False)[name]

    peft_model = get_peft_model(copy.deepcopy(base), lora_config_for(base))
    targets, layout = saliency_targets(peft_model)
    prefix = "base_model.model.model.language_model.layers.1.self_attn.v_proj."
    assert layout[prefix + "lora_B.default.weight"].source == prefix + "base_layer.weight"
    assert all(not t.startswith(prefix + "lora_") for t in targets)  # adapters have no saliency of their own
    mask = compute_saliency_mask(peft_model, forget, preserve, collator, progress=False)
    rows = saliency_ratio(s_t.sum(1), s_p.sum(1)) >= 1
    cols = saliency_ratio(s_t.sum(0), s_p.sum(0)) >= 1
    assert 0 < int(rows.sum()) < rows.numel() and 0 < int(cols.sum()) < cols.numel()  # a non-trivial selection
    assert torch.equal(mask.masks[prefix + "lora_B.default.weight"], rows[:, None].expand(-1, 8))
    assert torch.equal(mask.masks[prefix + "lora_A.default.weight"], cols[None, :].expand(8, -1))
    assert mask.metadata["lora_saliency"].startswith("base-weight channel ratio")


def test_mask_errors_name_the_problem():
    model, processor = tiny_model_and_processor("llava")
    collator = VLMUnlearningCollator(processor)
    forget, preserve = tiny_vqa_rows(2), preserved_rows()
    with pytest.raises(ValueError, match="selects no trainable parameter entry"):
        compute_saliency_mask(model, forget, preserve, collator, beta=1e38, progress=False)
    mask = compute_saliency_mask(model, forget, preserve, collator, progress=False)
    assert set(mask.masks) == {n for n, _ in model.named_parameters()}
    mask.check(model)
    # the pitfall: a mask keyed by base-model names applied to the PEFT-wrapped model
    peft_model = get_peft_model(copy.deepcopy(model), lora_config_for(model))
    with pytest.raises(ValueError, match="names a trainable parameter.*PEFT-wrapped"):
        mask.check(peft_model)
    empty = SaliencyMask({n: torch.zeros_like(m) for n, m in mask.masks.items()}, {"beta": 1.0})
    with pytest.raises(ValueError, match="selects no entry of any trainable parameter"):
        empty.check(model)
    partial = SaliencyMask({n: m for n, m in mask.masks.items() if "lm_head" not in n})
    with pytest.raises(ValueError, match="1 trainable parameter.*no mask entry.*lm_head"):
        partial.check(model)
    with pytest.raises(ValueError, match="match no parameter"):
        set_trainable(model, ["no_such_module"])


def test_fisher_is_cached_and_reloaded_without_recomputation(tmp_path):
    model, processor = tiny_model_and_processor("qwen2_vl")
    collator = VLMUnlearningCollator(processor)
    forget, preserve = tiny_vqa_rows(2), preserved_rows()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    kw = dict(cache_dir=str(tmp_path), progress=False, batch_size=3)
    first = compute_saliency_mask(model, forget, preserve, collator, **kw)
    assert len(calls) == 3 and len(list(tmp_path.glob("fisher-*.safetensors"))) == 2  # 1 + 2 batches
    calls.clear()
    again = compute_saliency_mask(model, forget, preserve, collator, **kw)
    assert calls == []
    assert all(torch.equal(first.masks[k], again.masks[k]) for k in first.masks)
    # a different beta reuses the cached Fisher diagonals too
    stricter = compute_saliency_mask(model, forget, preserve, collator, beta=4.0, **kw)
    assert calls == [] and stricter.num_selected < first.num_selected
    # changing one preserved answer recomputes S(P) only; changing a weight recomputes both
    edited = preserve[:-1] + [dict(preserve[-1], answer="the sky is red .")]
    compute_saliency_mask(model, forget, edited, collator, **kw)
    assert len(calls) == 2
    calls.clear()
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    compute_saliency_mask(model, forget, preserve, collator, **kw)
    assert len(calls) == 3


def test_report_fractions_are_consistent_and_heatmap_is_written(tmp_path):
    assert parameter_group("base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_A.default.weight") \
        == ("language_model", 1, "self_attn.q_proj")
    assert parameter_group("model.visual.merger.mlp.0.weight") == ("connector", None, "mlp.0")
    assert parameter_group("model.visual.blocks.0.attn.qkv.bias") == ("vision", 0, "attn.qkv")
    assert parameter_group("model.vision_tower.encoder.layers.1.mlp.fc1.weight") == ("vision", 1, "mlp.fc1")
    model, processor = tiny_model_and_processor("qwen2_vl")
    mask = compute_saliency_mask(model, tiny_vqa_rows(2), preserved_rows(), VLMUnlearningCollator(processor),
                                 progress=False)
    rep = mask.report()
    total = rep["total"]
    assert total["selected"] == sum(int(m.sum()) for m in mask.masks.values()) > 0
    assert total["total"] == sum(p.numel() for p in model.parameters())
    for group in ("by_component", "by_layer", "by_module", "by_parameter"):
        assert sum(c["selected"] for c in rep[group].values()) == total["selected"], group
        assert sum(c["total"] for c in rep[group].values()) == total["total"], group
        for c in rep[group].values():
            assert c["fraction"] == pytest.approx(c["selected"] / c["total"])
    assert set(rep["by_component"]) == {"vision", "connector", "language_model", "lm_head"}
    assert {"vision.0", "vision.1", "language_model.0", "language_model.1"} <= set(rep["by_layer"])
    table = mask.table()
    assert "language_model.1" in table and f"{100 * total['fraction']:.2f}%" in table.splitlines()[-1]
    png = mask.plot_heatmap(str(tmp_path / "heat" / "mask.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = SaliencyMask.load(mask.save(str(tmp_path / "mask.safetensors")))
    assert saved.metadata["beta"] == 1.0 and all(torch.equal(saved.masks[k], v) for k, v in mask.masks.items())


def test_mask_gates_only_the_forget_gradient(tmp_path):
    """Eq. 3 in one backward: unmasked entries get exactly the retain gradient, masked ones forget + retain."""
    model, processor = tiny_model_and_processor("llava")
    args = train_args(SaliencyConfig, tmp_path, forget_loss_ceiling=None)
    trainer = SaliencyTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2),
                              retain_dataset=tiny_vqa_rows(2, seed=3), preserve_dataset=preserved_rows(),
                              processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    params = dict(model.named_parameters())

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}

    total = grads(trainer.compute_loss(model, batch))
    forget = grads(-losses.sequence_nll(trainer.forward_logits(model, batch["forget"]), batch["forget"]["labels"]).mean())
    retain = grads(losses.nll_loss(trainer.forward_logits(model, batch["retain"]), batch["retain"]["labels"]))
    removed = 0
    for n, m in trainer.saliency_mask.masks.items():
        assert torch.equal(total[n][~m], retain[n][~m]), n
        torch.testing.assert_close(total[n][m], forget[n][m] + retain[n][m], rtol=1e-5, atol=1e-7, msg=n)
        removed += int((forget[n][~m] != 0).sum())
    assert removed > 0  # the gate did remove forget gradient
    assert 0 < trainer.saliency_mask.fraction < 1


@pytest.mark.parametrize("lora", [False, True], ids=["full-chosen-modules", "lora"])
def test_saliency_trainer_unlearns_and_leaves_unmasked_entries(family, lora, tmp_path):
    model, processor = tiny_model_and_processor(family)
    forget = tiny_vqa_rows(4)
    before = answer_logprob(model, processor, forget)
    extra = {} if lora else {"trainable_modules": CONNECTOR_AND_LM}
    args = train_args(SaliencyConfig, tmp_path, max_steps=8, learning_rate=1e-1 if lora else 5e-3, plot_saliency=True,
                      **extra)
    trainer = SaliencyTrainer(model=model, args=args, forget_dataset=forget, preserve_dataset=preserved_rows(),
                              processing_class=processor, peft_config=lora_config_for(model) if lora else None)
    model = trainer.model
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = trainer.saliency_mask
    trainer.train()
    after = answer_logprob(model, processor, forget)
    assert after < before - 0.3, (before, after)
    moved = 0
    for n, p in model.named_parameters():
        if n not in mask.masks:  # frozen: the vision tower in full mode, the base model under LoRA
            assert not p.requires_grad and torch.equal(p, start[n]), n
            continue
        m = mask.masks[n]
        assert torch.equal(p[~m], start[n][~m]), n  # no retain set: unmasked entries get no gradient at all
        moved += int((p[m] != start[n][m]).sum())
    assert moved > 0
    vision = "vision_tower" if family == "llava" else "visual.blocks"
    assert any(vision in n for n in start) and not any(vision in n for n in mask.masks)
    assert (tmp_path / "out" / "saliency").is_dir() and list((tmp_path / "out" / "saliency").glob("mask-*.heatmap.png"))
    assert trainer.args.saliency_mask.endswith(".safetensors")
    assert all("forget_nll" in h for h in trainer.state.log_history if "loss" in h)


def test_npo_with_a_saved_mask_gets_no_forget_gradient_outside_it(tmp_path):
    model, processor = tiny_model_and_processor("qwen2_vl")
    model = get_peft_model(model, lora_config_for(model))
    forget = tiny_vqa_rows(2)
    mask = compute_saliency_mask(model, forget, preserved_rows(), VLMUnlearningCollator(processor), progress=False)
    path = mask.save(str(tmp_path / "mask.safetensors"))
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = NPOTrainer(model=model, args=train_args(NPOConfig, tmp_path, saliency_mask=path, learning_rate=1e-1),
                         forget_dataset=forget, processing_class=processor)
    trainer.train()
    moved = 0
    for n, p in model.named_parameters():
        if n in start:
            m = mask.masks[n]
            assert torch.equal(p[~m], start[n][~m]), n
            moved += int((p[m] != start[n][m]).sum())
    assert moved > 0 and trainer._saliency_mask.num_selected == mask.num_selected
    # the same mask on the unwrapped base model (other names, other fingerprint) fails loudly before training
    base, _ = tiny_model_and_processor("qwen2_vl")
    with pytest.raises(ValueError, match="other weights.*parameter names differ"):
        NPOTrainer(model=base, args=train_args(NPOConfig, tmp_path, saliency_mask=path), forget_dataset=forget,
                   processing_class=processor)
    # reentrant checkpointing recomputes the forward without the gate: refused before training, for any method
    reentrant = train_args(NPOConfig, tmp_path, saliency_mask=path, gradient_checkpointing=True,
                           gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="non-reentrant activation checkpointing"):
        NPOTrainer(model=model, args=reentrant, forget_dataset=forget, processing_class=processor)


def test_configuration_errors(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    with pytest.raises(ValueError, match="preserved set P"):
        SaliencyTrainer(model=model, args=train_args(SaliencyConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                        processing_class=processor)
    with pytest.raises(ValueError, match="beta"):
        train_args(SaliencyConfig, tmp_path, beta=0.0)
    with pytest.raises(ValueError, match="fisher_mode"):
        train_args(SaliencyConfig, tmp_path, fisher_mode="trace")
    with pytest.raises(ValueError, match="non-reentrant"):
        SaliencyTrainer(model=model, args=train_args(SaliencyConfig, tmp_path, gradient_checkpointing=True,
                                                     gradient_checkpointing_kwargs={"use_reentrant": True}),
                        forget_dataset=tiny_vqa_rows(2), preserve_dataset=preserved_rows(), processing_class=processor)
    cfg = SaliencyConfig(output_dir=str(tmp_path / "d"), report_to="none")
    # learning_rate None: the paper's for the model family (2e-5 LLaVA, 1e-5 Qwen2-VL), set when the trainer is built
    assert (cfg.beta, cfg.learning_rate, cfg.num_train_epochs, cfg.per_device_train_batch_size) == (1.0, None, 2.0, 4)
    assert cfg.fisher_mode == "dataset"


def test_saliency_loss_is_ga_and_preserved_parts_concatenate():
    # -L_f of MMUnlearner Eq. 3 is GA's forget term: one implementation, inherited
    assert SaliencyTrainer.unlearning_loss is GATrainer.unlearning_loss
    a, b = tiny_vqa_rows(2), tiny_vqa_rows(3, seed=1)
    rows = _as_rows([a, None, b])
    assert len(rows) == 5 and [rows[i] for i in range(5)] == a + b and list(rows) == a + b
    assert _as_rows(a) is a


@pytest.mark.parametrize("mode", ["dataset", "sample"])
def test_vision_side_mask_with_text_only_preserved_rows(mode):
    """MMUnlearner Table 2 trains the vision encoder (+ connector) only; P (Eq. 6) has text-only QA, whose batches
    never reach those parameters: they add a zero gradient (counted in the mean), they do not stop the Fisher pass."""
    model, processor = tiny_model_and_processor("llava")
    set_trainable(model, ["vision_tower", "multi_modal_projector"])
    collator = VLMUnlearningCollator(processor)
    text, vqa = tiny_vqa_rows(2, with_images=False), tiny_vqa_rows(2, seed=7)
    targets = saliency_targets(model)[0]
    assert targets and all("vision_tower" in n or "multi_modal_projector" in n for n in targets)
    zero = fisher_diagonal(model, text, collator, mode=mode, batch_size=2, progress=False)
    assert set(zero) == set(targets) and all(not v.any() for v in zero.values())
    both = fisher_diagonal(model, text + vqa, collator, mode=mode, batch_size=2, progress=False)
    alone = fisher_diagonal(model, vqa, collator, mode=mode, batch_size=2, progress=False)
    # text rows count in the set's mean: dataset mode squares a gradient halved (1/4), sample mode halves the mean
    scale = 0.25 if mode == "dataset" else 0.5
    for name in targets:
        assert torch.allclose(both[name], scale * alone[name], rtol=1e-4, atol=1e-12)
    mask = compute_saliency_mask(model, tiny_vqa_rows(2), text + vqa, collator, fisher_mode=mode, progress=False)
    assert set(mask.masks) == set(targets) and mask.num_selected > 0
