"""SGPVT: rotation, curriculum, damage boundary, attention-based top-K, visual-token sites of every family, the
teacher KL, caching, hook hygiene, and unlearning end to end."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import answer_logprob, tiny_model, train_args
from transformers.models.llama.modeling_llama import repeat_kv

import unlearn_trainer.trainers.sgpvt as sgpvt_trainer_module
from unlearn_trainer import VLMUnlearningCollator, losses
from unlearn_trainer.data import model_inputs
from unlearn_trainer.data.collator import row_id_digest
from unlearn_trainer.testing import TINY_FAMILIES, tiny_images, tiny_vqa_rows
from unlearn_trainer.trainers.sgpvt import SGPVTConfig, SGPVTTrainer
from unlearn_trainer.vision import count_hooks, get_adapter
from unlearn_trainer.vision import sgpvt as sg

IMAGE_FAMILIES = [f for f in sorted(TINY_FAMILIES) if f != "mllama"]


def _trainer(model, processor, tmp_path, rows=None, distant=3, **overrides):
    args = train_args(SGPVTConfig, tmp_path, **overrides)
    return SGPVTTrainer(model=model, args=args, forget_dataset=rows or tiny_vqa_rows(2), processing_class=processor,
                        distant_images=tiny_images(distant, seed=7) if distant else None)


def _hooks_after_warmup(model, processor):
    """Hooks on the model once transformers has installed its own (lazily, at the first forward pass)."""
    with torch.no_grad():
        model(**model_inputs(VLMUnlearningCollator(processor)(tiny_vqa_rows(1))))
    return count_hooks(model)


def _attn_configs(model):
    return [layer.self_attn.config for layer in get_adapter(model).language_model(model).layers]


# -- Eqs. 4-8 --------------------------------------------------------------------------------------------------
def test_rotation_hits_the_target_cosine_and_keeps_the_norm():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(64, 48, generator=g) * torch.linspace(0.01, 50.0, 64).unsqueeze(1)
    target = torch.linspace(-0.95, 0.99, 64)
    out = sg.rotate_to_cosine(v, target, torch.Generator().manual_seed(1))
    torch.testing.assert_close(F.cosine_similarity(v, out, dim=-1), target, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1) / v.norm(dim=-1), torch.ones(64), atol=1e-5, rtol=0)
    # seeded: same seed, same tokens; another seed, another direction at the same cosine
    torch.testing.assert_close(out, sg.rotate_to_cosine(v, target, torch.Generator().manual_seed(1)))
    other = sg.rotate_to_cosine(v, target, torch.Generator().manual_seed(2))
    assert not torch.allclose(other, out)
    # a scalar cosine; the end points are v and -v; a zero token has no direction and stays
    torch.testing.assert_close(F.cosine_similarity(v, sg.rotate_to_cosine(v, 0.3), dim=-1), torch.full((64,), 0.3),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(sg.rotate_to_cosine(v, 1.0), v, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sg.rotate_to_cosine(v, -1.0), -v, atol=1e-4, rtol=1e-5)
    zero = torch.zeros(2, 48)
    assert torch.equal(sg.rotate_to_cosine(zero, 0.5), zero)
    assert sg.rotate_to_cosine(v.bfloat16(), 0.5).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dimension"):
        sg.rotate_to_cosine(torch.ones(3, 1), 0.5)


def test_perturb_tokens_adds_gaussian_noise_of_sigma():
    v = torch.randn(200, 256, generator=torch.Generator().manual_seed(0)) * 10
    rotated = sg.rotate_to_cosine(v, 0.8, torch.Generator().manual_seed(3))
    # the noise is drawn after the rotation from the same generator: the rotation part is the same
    noisy = sg.perturb_tokens(v, 0.8, noise_std=0.01, generator=torch.Generator().manual_seed(3))
    noise = noisy - rotated
    assert abs(noise.std().item() - 0.01) < 5e-4 and abs(noise.mean().item()) < 5e-4
    assert torch.equal(sg.perturb_tokens(v, 0.8, 0.0, torch.Generator().manual_seed(3)), rotated)


def test_cosine_band_curriculum_values():
    s_min, T, eps = 0.2, 20, 0.05
    expected = {0: 0.6 + 0.4 * 0.9, 5: 0.6, 10: 0.6 - 0.4 * 0.9, 15: 0.6, 20: 0.96, 30: 0.24}
    for t, value in expected.items():
        assert sg.cosine_band(t, s_min, T, eps) == pytest.approx(value, abs=1e-12)
    assert sg.cosine_band(3, s_min, T, eps) == pytest.approx(0.6 + 0.36 * math.cos(2 * math.pi * 3 / 20))
    band = [sg.cosine_band(t, s_min, T, eps) for t in range(100)]
    assert all(s_min < s < 1 for s in band)
    assert min(band) == pytest.approx(s_min + eps * (1 - s_min)) and max(band) == pytest.approx(1 - eps * (1 - s_min))
    per_sample = sg.cosine_band(0, torch.tensor([0.2, -0.5]), T, eps)
    torch.testing.assert_close(per_sample, torch.tensor([0.96, 0.25 + 0.75 * 0.9]))
    for bad in (dict(period=0), dict(eps=0.5), dict(eps=-0.1)):
        with pytest.raises(ValueError):
            sg.cosine_band(0, 0.2, **bad)


def test_damage_boundary_is_mean_cosine():
    target = torch.tensor([1.0, 0.0])
    distant = torch.tensor([[1.0, 1.0], [0.0, 3.0], [-2.0, 0.0]])
    assert sg.damage_boundary(target, distant) == pytest.approx((math.sqrt(0.5) + 0.0 - 1.0) / 3)
    with pytest.raises(ValueError):
        sg.damage_boundary(target, torch.zeros(0, 2))


# -- Eq. 2 and top-K ---------------------------------------------------------------------------------------------
def test_topk_count_and_selection():
    assert [sg.topk_count(n, r) for n, r in [(16, 0.2), (4, 0.2), (10, 0.3), (100, 0.29), (576, 0.2), (3, 1.0)]] == [
        3, 1, 3, 29, 115, 3]
    assert sg.topk_count(0, 0.2) == 0
    with pytest.raises(ValueError):
        sg.topk_count(5, 0.0)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.7])
    assert sg.select_topk(scores, 0.4).tolist() == [1, 3]
    assert sg.select_topk(scores, 0.5, torch.tensor([True, False, True, True, True])).tolist() == [3, 4]
    assert sg.select_topk(torch.ones(5), 0.4).tolist() == [0, 1]  # ties: lower index


def _manual_scores(q, k, positions, valid, scaling):
    """Reference: HF's repeat_kv, per head softmax over allowed keys, mean over heads and queries."""
    k = repeat_kv(k.unsqueeze(0), q.shape[0] // k.shape[0])[0]
    rows = []
    for p in positions.tolist():
        logits = torch.einsum("hd,htd->ht", q[:, p], k) * scaling  # [H, T]
        allowed = valid.clone()
        allowed[p + 1:] = False
        rows.append(torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1))
    return torch.stack(rows).mean(dim=(0, 1))


def test_attention_scores_select_planted_image_keys_with_gqa():
    g = torch.Generator().manual_seed(0)
    hq, hkv, seq, d = 4, 2, 14, 8
    q = torch.randn(hq, seq, d, generator=g) * 0.1
    k = torch.randn(hkv, seq, d, generator=g) * 0.1
    u = F.normalize(torch.randn(d, generator=g), dim=0)
    image = torch.arange(2, 10)  # image tokens at 2..9, answer (queries) at 11, 12; 13 is padding
    queries = torch.tensor([11, 12])
    q[:2, queries] = u  # heads 0 and 1 (which share key head 0) look for u
    k[0, 4] = 6 * u  # planted in key head 0: found by heads 0, 1
    k[0, 7] = 5 * u
    k[1, 8] = 9 * u  # planted in key head 1, which no query head aligned with u reads
    k[0, 13] = 50 * u  # a padding key: must be masked
    valid = torch.ones(seq, dtype=torch.bool)
    valid[13] = False
    scores = sg.attention_scores(q, k, queries, valid, scaling=d**-0.5)
    torch.testing.assert_close(scores, _manual_scores(q, k, queries, valid, d**-0.5))
    assert scores[13] == 0
    assert sg.select_topk(scores[image], 0.25).add(2).tolist() == [4, 7]
    # causality: a key after the query position gets nothing from that query
    late = sg.attention_scores(q, k, torch.tensor([9]), valid, scaling=d**-0.5)
    assert (late[10:] == 0).all() and late[:10].sum() == pytest.approx(1.0)
    # sliding window and soft-capping
    windowed = sg.attention_scores(q, k, queries, valid, d**-0.5, sliding_window=6)
    assert (windowed[:6] == 0).all()
    capped = sg.attention_scores(q, k, queries, valid, d**-0.5, softcap=0.5)
    assert capped[4] < scores[4]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma3"])
def test_probed_attention_equals_the_models_eager_attention(family):
    """q/k captured at the attention function (after norms and RoPE / M-RoPE) give exactly the model's own
    attention probabilities, without eager attention in the other layers."""
    model, processor = tiny_model(family)
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(2))
    answer = batch["labels"] != -100
    image = get_adapter(model).image_token_mask(model, batch["input_ids"])
    configs, hooks = _attn_configs(model), _hooks_after_warmup(model, processor)
    mine = {layer: sg.text_to_image_attention(model, batch, answer, layer=layer) for layer in (0, 1)}
    assert _attn_configs(model) == configs and all(c is o for c, o in zip(_attn_configs(model), configs))
    assert count_hooks(model) == hooks and not sg._ACTIVE_PROBES
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = model(**model_inputs(batch), output_attentions=True, use_cache=False).attentions
    for layer in (0, 1):
        for b in range(2):
            expected = attentions[layer][b][:, answer[b]].mean(dim=(0, 1))[image[b]]
            torch.testing.assert_close(mine[layer][b], expected, atol=1e-6, rtol=1e-5)
    assert sg.resolve_layer(model, None) == 1 and sg.resolve_layer(model, -2) == 0
    with pytest.raises(ValueError, match="out of range"):
        sg.resolve_layer(model, 2)


def test_probe_is_undone_when_the_forward_raises():
    model, processor = tiny_model("llava")
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(1))
    configs, hooks = _attn_configs(model), _hooks_after_warmup(model, processor)
    layer0 = get_adapter(model).language_model(model).layers[0]

    def boom(module, args):
        raise KeyError("boom")

    handle = layer0.register_forward_pre_hook(boom)
    try:
        with pytest.raises(KeyError, match="boom"):
            sg.capture_attention_states(model, batch, [1])
    finally:
        handle.remove()
    assert all(c is o for c, o in zip(_attn_configs(model), configs))
    assert count_hooks(model) == hooks and not sg._ACTIVE_PROBES


# -- where tokens live -------------------------------------------------------------------------------------------
def test_dependency_maps_rows_to_image_tokens():
    llava, p = tiny_model("llava")
    dep = sg.TokenSite(llava).dependency(llava, VLMUnlearningCollator(p)(tiny_vqa_rows(1)))
    assert torch.equal(dep, torch.eye(16, dtype=torch.bool))
    qwen, p = tiny_model("qwen2_vl")
    dep = sg.TokenSite(qwen).dependency(qwen, VLMUnlearningCollator(p)(tiny_vqa_rows(1)))
    assert dep.shape == (4, 16) and (dep.sum(1) == 4).all() and (dep.sum(0) == 1).all()  # 2x2 merge, a partition
    internvl, p = tiny_model("internvl")
    dep = sg.TokenSite(internvl).dependency(internvl, VLMUnlearningCollator(p)(tiny_vqa_rows(1)))
    assert dep.shape == (4, 17) and not dep[:, 0].any() and dep[:, 1:].any(0).all()  # the class token feeds nothing
    # an image token's attention is split among the rows that feed it
    lifted = sg.lift_token_scores(torch.tensor([0.4, 0.1]), torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]]).bool())
    torch.testing.assert_close(lifted, torch.tensor([0.2, 0.25, 0.0, 0.05]))


def test_pre_projector_rows_go_through_the_projector():
    """Replacing one pre-projector row of LLaVA changes exactly that image token at the language model's input."""
    model, processor = tiny_model("llava")
    batch = VLMUnlearningCollator(processor)(tiny_vqa_rows(2))
    pre, post = sg.TokenSite(model, "pre_projector"), sg.TokenSite(model, "post_projector")
    with torch.no_grad():
        rows = pre.rows(model, batch)
        before = post.rows(model, batch)
        changed = rows.clone()
        changed[5] = sg.rotate_to_cosine(rows[5:6], 0.5, torch.Generator().manual_seed(0))[0]
        with pre.replace(model, changed):
            after = post.rows(model, batch)
        with pre.replace(model, rows):
            same = post.rows(model, batch)
    diff = (after - before).abs().sum(-1) > 0
    assert diff.nonzero().flatten().tolist() == [5]
    torch.testing.assert_close(same, before)
    with pytest.raises(ValueError, match="replacement rows"), torch.no_grad(), pre.replace(model, rows[:3]):
        model(**model_inputs(batch))


# -- the loss ----------------------------------------------------------------------------------------------------
def test_teacher_kl_loss_values_and_gradient():
    student = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.5, 3.0], [9.0, 9.0, 9.0]]], requires_grad=True)
    teacher = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[-100, -100, 1, 2]])  # answer tokens at 2, 3: scored by logits at 1, 2
    loss = losses.teacher_kl_loss(student, teacher, labels)
    expected = 0.0
    for t in (1, 2):
        p, q = torch.softmax(teacher[0, t].detach(), -1), torch.softmax(student[0, t].detach(), -1)
        expected += float((p * (p.log() - q.log())).sum()) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = student.grad[0]
    for t in (1, 2):  # d KL(p || q) / d z_q = (q - p) / n
        torch.testing.assert_close(grad[t], (torch.softmax(student[0, t], -1) - torch.softmax(teacher[0, t], -1)) / 2)
    assert (grad[0] == 0).all() and (grad[3] == 0).all() and teacher.grad is None
    assert losses.teacher_kl_loss(teacher, teacher, labels).item() == pytest.approx(0.0, abs=1e-7)


# -- the trainer -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sgpvt_forget_logprob_drops(family, lora, tmp_path):
    model, processor = tiny_model(family, lora)
    forget = tiny_vqa_rows(4)
    before = answer_logprob(model, processor, forget)
    trainer = _trainer(model, processor, tmp_path, rows=forget, max_steps=8, learning_rate=1e-1 if lora else 5e-3)
    trainer.train()
    after = answer_logprob(model, processor, forget)
    assert after < before - 0.3, (before, after)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all({"ga_term", "kl_term", "s_t", "s_min"} <= set(h) for h in logged)
    # step 0: the student is the reference and both see the same perturbed tokens, so the KL is exactly 0
    assert abs(logged[0]["kl_term"]) < 1e-6 and logged[-1]["kl_term"] > 1e-4
    samples = trainer._ref_cache["sgpvt_sample"]
    assert sorted(samples) == [0, 1, 2, 3]
    for step, h in enumerate(logged):
        band = [sg.cosine_band(step, s.s_min) for s in samples.values()]
        assert min(band) - 1e-6 <= h["s_t"] <= max(band) + 1e-6


def test_perturbation_touches_only_selected_rows_at_cosine_s_t(tmp_path, monkeypatch):
    model, processor = tiny_model("qwen2_vl")
    trainer = _trainer(model, processor, tmp_path, rows=tiny_vqa_rows(2), noise_std=0.0, num_perturbations=2,
                       topk_ratio=0.3)
    seen, calls = [], {"forward": 0}
    replace = sg.TokenSite.replace

    def spy_replace(self, model, rows, shape=None):
        seen.append(rows.detach().clone())
        return replace(self, model, rows, shape)

    forward = trainer.forward_logits

    def count_forward(m, b):
        calls["forward"] += 1
        return forward(m, b)

    monkeypatch.setattr(sg.TokenSite, "replace", spy_replace)
    monkeypatch.setattr(trainer, "forward_logits", count_forward)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))
    trainer.compute_loss(model, batch)
    assert calls["forward"] == 1 + 2 * 2  # GA, then student + teacher per perturbation
    assert len(seen) == 4 and torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])  # teacher = student's
    assert not torch.equal(seen[0], seen[2])  # two different perturbations
    with torch.no_grad():
        rows = trainer.site.rows(model, batch["forget"])
    samples = [trainer._ref_cache["sgpvt_sample"][i] for i in range(2)]
    index = torch.cat([samples[0].selected, samples[1].selected + samples[0].num_rows])
    assert len(index) == 2 * 4 * sg.topk_count(1, 0.3)  # 4 image tokens; each selected token's 4 merged rows
    changed = (seen[0] - rows).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == index.tolist()
    for b, s in enumerate(samples):
        idx = s.selected + b * samples[0].num_rows
        cos = F.cosine_similarity(seen[0][idx], rows[idx], dim=-1)
        torch.testing.assert_close(cos, torch.full_like(cos, sg.cosine_band(0, s.s_min)), atol=1e-5, rtol=0)
        torch.testing.assert_close(seen[0][idx].norm(dim=-1), rows[idx].norm(dim=-1), atol=1e-4, rtol=1e-5)
        top_token = int(s.token_scores.argmax())  # the most attended image token's rows are the ones perturbed
        assert set((s.selected // 4).tolist()) == {top_token}


def test_attention_queries_are_the_concept_tokens_when_the_batch_marks_them(tmp_path, monkeypatch):
    from unlearn_trainer import ConceptMaskCollator

    model, processor = tiny_model("llava")
    rows = [dict(tiny_vqa_rows(2)[1], concepts="dog"), dict(tiny_vqa_rows(1)[0], concepts="mat")]
    trainer = SGPVTTrainer(model=model, args=train_args(SGPVTConfig, tmp_path, damage_boundary=0.5),
                           forget_dataset=rows, processing_class=processor,
                           data_collator=ConceptMaskCollator(processor))
    seen = []
    probe = sgpvt_trainer_module.text_to_image_attention

    def spy(m, batch, query_mask, layer=None):
        seen.append(query_mask.clone())
        return probe(m, batch, query_mask, layer)

    monkeypatch.setattr(sgpvt_trainer_module, "text_to_image_attention", spy)
    tok = processor.tokenizer
    with torch.no_grad():
        for i, word in enumerate(["dog", "mat"]):
            trainer.sample_info(model, i)
            batch = VLMUnlearningCollator(processor)([rows[i]])
            ids = batch["input_ids"][0][seen[-1][0]]
            assert tok.decode(ids).strip() == word  # the concept token only, not the whole answer
            assert seen[-1].sum() < (batch["labels"] != -100).sum()


def test_damage_boundary_computed_once_per_sample(tmp_path, monkeypatch):
    model, processor = tiny_model("llava", lora=True)
    calls = {"boundary": 0, "pooled": 0}
    boundary, pooled = sgpvt_trainer_module.damage_boundary, sg.TokenSite.pooled

    def spy_boundary(target, distant):
        calls["boundary"] += 1
        return boundary(target, distant)

    def spy_pooled(self, m, batch):
        calls["pooled"] += 1
        return pooled(self, m, batch)

    monkeypatch.setattr(sgpvt_trainer_module, "damage_boundary", spy_boundary)
    monkeypatch.setattr(sg.TokenSite, "pooled", spy_pooled)
    rows = tiny_vqa_rows(2)
    trainer = _trainer(model, processor, tmp_path, rows=rows, distant=3, max_steps=4, per_device_train_batch_size=1)
    trainer.train()
    assert calls == {"boundary": 2, "pooled": 2 + 3}  # 2 forget samples, 3 distant images once
    # the cached value is Eq. 3 on mean-pooled pre-projector features (class token dropped)
    adapter = get_adapter(model)
    collate = VLMUnlearningCollator(processor)

    def pool(row):
        with torch.no_grad():
            return torch.cat(adapter.vision_features(model, collate([row]))).mean(0)

    distant = torch.stack([pool(dict(rows[0], image=im)) for im in tiny_images(3, seed=7)])
    for i, row in enumerate(rows):
        expected = F.cosine_similarity(pool(row).unsqueeze(0), distant, dim=-1).mean().item()
        assert trainer._ref_cache["sgpvt_sample"][i].s_min == pytest.approx(expected, abs=1e-5)
    # a fixed boundary needs no distant images
    fixed = _trainer(model, processor, tmp_path, rows=rows, distant=0, damage_boundary=0.6, max_steps=1)
    fixed.train()
    assert {s.s_min for s in fixed._ref_cache["sgpvt_sample"].values()} == {0.6}


def test_no_hook_leaks_after_steps_and_after_an_error(tmp_path, monkeypatch):
    model, processor = tiny_model("llava", lora=True)
    hooks, configs = _hooks_after_warmup(model, processor), _attn_configs(model)
    trainer = _trainer(model, processor, tmp_path, max_steps=2)
    trainer.train()
    assert count_hooks(model) == hooks and all(c is o for c, o in zip(_attn_configs(model), configs))
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))
    forward = trainer.forward_logits

    def fail_in_teacher(m, b):  # the call inside the reference + replacement contexts
        if not torch.is_grad_enabled():
            raise RuntimeError("teacher failed")
        return forward(m, b)

    monkeypatch.setattr(trainer, "forward_logits", fail_in_teacher)
    with pytest.raises(RuntimeError, match="teacher failed"):
        trainer.compute_loss(model, batch)
    assert count_hooks(model) == hooks and all(c is o for c, o in zip(_attn_configs(model), configs))
    assert not sg._ACTIVE_PROBES
    assert all(not getattr(m, "disable_adapters", False) for m in model.modules() if hasattr(m, "lora_A"))


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_sgpvt_runs_on_every_image_token_family(family, tmp_path):
    model, processor = tiny_model(family, lora=True)
    rows = tiny_vqa_rows(3)
    collate = VLMUnlearningCollator(processor)
    site = sg.TokenSite(model)
    with torch.no_grad():  # the layout the trainer relies on: a batch's rows are its samples' rows in order
        together = site.rows(model, collate(rows))
        alone = torch.cat([site.rows(model, collate([r])) for r in rows])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    trainer = _trainer(model, processor, tmp_path, rows=rows[:2], max_steps=2, learning_rate=1e-2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(math.isfinite(h["loss"]) and "kl_term" in h for h in logged)
    assert logged[1]["kl_term"] > 0


def test_mllama_and_configuration_errors(tmp_path):
    model, processor = tiny_model("mllama")
    with pytest.raises(NotImplementedError, match="cross-attention"):
        _trainer(model, processor, tmp_path)
    with pytest.raises(NotImplementedError, match="cross-attention"):
        sg.TokenSite(model)
    llava, processor = tiny_model("llava")
    with pytest.raises(ValueError, match="distant_images"):
        _trainer(llava, processor, tmp_path, distant=0)
    for bad in (dict(perturb="middle"), dict(topk_ratio=0.0), dict(curriculum_eps=0.5), dict(num_perturbations=0),
                dict(lambda_k=-1.0), dict(damage_boundary=1.0), dict(curriculum_period=0)):
        with pytest.raises(ValueError):
            train_args(SGPVTConfig, tmp_path, **bad)
    no_image = [dict(tiny_vqa_rows(1, with_images=False)[0], id="blind")]
    trainer = _trainer(llava, processor, tmp_path, rows=no_image, max_steps=1)
    with pytest.raises(ValueError, match=rf"row #0 \(id digest {row_id_digest('blind')}\) has no image tokens") as err:
        trainer.train()
    assert "blind" not in str(err.value)
