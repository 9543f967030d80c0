import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import answer_logprob, tiny_model, train_args

from unlearn_trainer import VLMUnlearningCollator, losses
from unlearn_trainer.data import model_inputs
from unlearn_trainer.data.collator import row_id_digest
from unlearn_trainer.data.reference_images import ReferenceImagePool, swap_in_reference_images
from unlearn_trainer.testing import tiny_images, tiny_model_and_processor, tiny_vqa_rows
from unlearn_trainer.trainers.viker import ViKeRConfig, ViKeRTrainer


# -- pure losses ---------------------------------------------------------------------------------------------
def test_divergences_hand_computed():
    r = torch.tensor([[0.5, 0.5, 0.0]])
    q_logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    # KL = 2 * 0.5 log(0.5/0.25); the zero entry of R contributes 0
    torch.testing.assert_close(losses.reference_divergence(r, q_logits, "kl"), torch.tensor([math.log(2)]))
    # M = (3/8, 3/8, 1/4): KL(R||M) = log(4/3), KL(Q||M) = 0.5 log(2/3) + 0.5 log 2 = 0.5 log(4/3)
    torch.testing.assert_close(losses.reference_divergence(r, q_logits, "jsd"), torch.tensor([0.75 * math.log(4 / 3)]))
    # cos = 0.25 / (sqrt(0.5) sqrt(0.375)) = 1/sqrt(3)
    torch.testing.assert_close(losses.reference_divergence(r, q_logits, "cosine"), torch.tensor([1 - 3**-0.5]))
    same = torch.log(r.clamp_min(1e-30))
    for kind in losses.VIKER_REGULARIZERS:
        assert abs(float(losses.reference_divergence(r, same, kind))) < 1e-6
    with pytest.raises(ValueError, match="Unknown ViKeR regularizer"):
        losses.reference_divergence(r, q_logits, "l2")


def test_entropy_and_key_tokens():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(losses.token_entropy(r), torch.tensor([0.0, math.log(2), math.log(4)]))
    assert losses.key_tokens(r, 0.5).tolist() == [False, True, True]
    assert losses.key_tokens(r, math.log(2) + 0.01).tolist() == [False, False, True]


def _batch(seed=0, V=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 6, V, generator=g)
    labels = torch.full((2, 6), -100)
    labels[0, 2:5] = torch.tensor([1, 4, 2])  # 3 answer tokens, predicted from positions 1..3
    labels[1, 4:6] = torch.tensor([6, 0])  # 2 answer tokens, predicted from positions 3..4
    positions = [(0, 1, 1), (0, 2, 4), (0, 3, 2), (1, 3, 6), (1, 4, 0)]  # (sample, logit position, target)
    reference = torch.softmax(2 * torch.randn(5, V, generator=g), -1)
    return logits, labels, positions, reference


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_proposition3_gradient_wrt_logits(reduction):
    """d L / d z_i = c_s [(onehot(y_i) - Q_i) - lam (R_i - Q_i)] = c_s sum_v (1{v=y_i} - lam R_i(v)) (e_v - Q_i)."""
    logits, labels, positions, reference = _batch()
    lam, V = 0.3, logits.shape[-1]
    z = logits.clone().requires_grad_(True)
    loss, ga, reg = losses.viker_loss(z, labels, reference, lam=lam, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, z)
    counts = {0: 3, 1: 2}
    expected = torch.zeros_like(logits)
    for n, (s, t, y) in enumerate(positions):
        q = torch.softmax(logits[s, t], -1)
        onehot = F.one_hot(torch.tensor(y), V).float()
        c = 1 / (2 * counts[s]) if reduction == "mean" else 1 / 2
        expected[s, t] = c * ((onehot - q) - lam * (reference[n] - q))
        weights = onehot - lam * reference[n]  # Proposition 3's reweighting of the token-level GA gradients
        reweighted = sum(weights[v] * (torch.eye(V)[v] - q) for v in range(V))
        torch.testing.assert_close(expected[s, t], c * reweighted)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(loss, ga + lam * reg)
    # the value: GA term = mean over samples of the reduced answer log-probs; regularizer = reduced KL
    logp = [torch.log_softmax(logits[s, t], -1)[y] for s, t, y in positions]
    kl = [losses.reference_divergence(reference[n], logits[s, t]) for n, (s, t, _) in enumerate(positions)]
    red = (lambda x, n: x / n) if reduction == "mean" else (lambda x, n: x)
    torch.testing.assert_close(ga, (red(sum(logp[:3]), 3) + red(sum(logp[3:]), 2)) / 2)
    torch.testing.assert_close(reg, (red(sum(kl[:3]), 3) + red(sum(kl[3:]), 2)) / 2)


def test_lam_zero_is_ga_and_proposition2_for_normal_tokens():
    logits, labels, positions, reference = _batch(seed=1)
    z = logits.clone().requires_grad_(True)
    loss, _, _ = losses.viker_loss(z, labels, reference, lam=0.0)
    ga = losses.ga_loss(losses.sequence_nll(z, labels))
    torch.testing.assert_close(loss, ga)
    torch.testing.assert_close(torch.autograd.grad(loss, z)[0], torch.autograd.grad(ga, z)[0])
    # Proposition 2: R_i = delta(y_i) (a normal token) scales the GA gradient by (1 - lam), 0 elsewhere
    onehot = torch.stack([F.one_hot(torch.tensor(y), logits.shape[-1]).float() for _, _, y in positions])
    z = logits.clone().requires_grad_(True)
    g_viker = torch.autograd.grad(losses.viker_loss(z, labels, onehot, lam=0.4)[0], z)[0]
    g_ga = torch.autograd.grad(losses.ga_loss(losses.sequence_nll(z, labels)), z)[0]
    torch.testing.assert_close(g_viker, 0.6 * g_ga)


def test_ga_ceiling_stops_only_the_ga_gradient():
    logits, labels, _, reference = _batch(seed=2)
    z = logits.clone().requires_grad_(True)
    loss, ga, reg = losses.viker_loss(z, labels, reference, lam=0.5, ceiling=0.0)  # every sample is over
    (grad,) = torch.autograd.grad(loss, z)
    z2 = logits.clone().requires_grad_(True)
    (grad_reg,) = torch.autograd.grad(0.5 * losses.viker_loss(z2, labels, reference, lam=1.0)[2], z2)
    torch.testing.assert_close(grad, grad_reg)
    assert float(ga.detach()) < 0


def test_sparse_reference_kl_against_exact():
    g = torch.Generator().manual_seed(3)
    V = 40
    r = torch.softmax(3 * torch.randn(6, V, generator=g), -1)
    q_logits = torch.randn(6, V, generator=g)
    logq = torch.log_softmax(q_logits, -1)
    exact = losses.reference_divergence(r, q_logits)
    previous = None
    for k in (1, 4, 16, V):
        values, ids, rem = losses.sparse_topk_reference(r, k)
        torch.testing.assert_close(rem, 1 - values.sum(-1))
        dense = losses.densify_sparse_reference(values, ids, rem, logq)
        torch.testing.assert_close(dense.sum(-1), torch.ones(6))
        z = q_logits.clone().requires_grad_(True)
        sparse = losses.reference_divergence(dense, z)
        in_k = torch.zeros_like(r, dtype=torch.bool).scatter(-1, ids, True)
        q = logq.exp()
        q_tail = q.masked_fill(in_k, 0).sum(-1)
        if k < V:
            # value = KL of the (k+1)-bin coarsening: top-k tokens and one tail bucket (hand formula)
            bucket = (values * (values.log() - logq.gather(-1, ids))).sum(-1) + torch.xlogy(rem, rem) - rem * q_tail.log()
            torch.testing.assert_close(sparse, bucket, atol=1e-5, rtol=1e-5)
            # chain rule of KL: exact - sparse = r * KL(normalised tails) >= 0
            r_tail = r.masked_fill(in_k, 0)
            gap = (torch.xlogy(r_tail, r_tail / rem.unsqueeze(-1)) - r_tail * (logq - q_tail.log().unsqueeze(-1))).sum(-1)
            torch.testing.assert_close(exact - sparse, gap, atol=1e-5, rtol=1e-4)
        assert (exact - sparse >= -1e-6).all()
        # gradient w.r.t. the logits is Q - R~, within 2r (L1) of the exact Q - R
        (grad,) = torch.autograd.grad(sparse.sum(), z)
        torch.testing.assert_close(grad, q - dense)
        err = (grad - (q - r)).abs().sum(-1)
        assert (err <= 2 * rem + 1e-6).all()
        if previous is not None:
            assert float(err.sum()) <= previous + 1e-6  # more tokens kept, smaller error
        previous = float(err.sum())
        # the loss accepts the sparse triple directly and gives the same regularizer
        labels = torch.full((1, 7), -100)
        labels[0, 1:] = torch.arange(6)
        padded = torch.cat([q_logits, torch.zeros(1, V)]).unsqueeze(0)
        _, _, reg_tuple = losses.viker_loss(padded, labels, (values, ids, rem), lam=1.0)
        torch.testing.assert_close(reg_tuple, sparse.mean())
    torch.testing.assert_close(sparse, exact)  # k = V is exact


# -- reference images ----------------------------------------------------------------------------------------
def test_reference_pool_is_seeded_and_documented():
    images = tiny_images(9, seed=4)
    pool = ReferenceImagePool(images, num_reference_images=5, seed=1)
    expected = torch.randperm(9, generator=torch.Generator().manual_seed(1))[:5].tolist()
    assert pool.indices_for(0) == pool.indices_for(7) == expected
    assert all(a is images[i] for a, i in zip(pool.images_for(3), expected))
    assert ReferenceImagePool(images[:5], num_reference_images=5, seed=1).indices_for(0) == [0, 1, 2, 3, 4]
    per = ReferenceImagePool(images, num_reference_images=5, seed=1, sampling="per_sample")
    draws = [per.indices_for(i) for i in range(6)]
    again = ReferenceImagePool(images, num_reference_images=5, seed=1, sampling="per_sample")
    assert draws == [again.indices_for(i) for i in range(6)]
    assert all(len(set(d)) == 5 for d in draws) and len({tuple(d) for d in draws}) > 1


def test_reference_pool_accepts_rows_and_datasets_and_errors():
    import datasets

    images = tiny_images(5, seed=6)
    rows = [{"id": f"ref-{i}", "image": im} for i, im in enumerate(images)]
    assert ReferenceImagePool(rows, num_reference_images=5).images_for(0) == images
    ds = datasets.Dataset.from_list([{"picture": im, "id": str(i)} for i, im in enumerate(images)],
                                    features=datasets.Features({"picture": datasets.Image(), "id": datasets.Value("string")}))
    got = ReferenceImagePool(ds, num_reference_images=5, image_column="picture").images_for(0)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got, images))
    with pytest.raises(ValueError, match="no 'image' or 'images' column"):
        ReferenceImagePool(ds, num_reference_images=5)
    with pytest.raises(ValueError, match="needs num_reference_images=5 reference images but .* only 3"):
        ReferenceImagePool(images[:3], num_reference_images=5)
    with pytest.raises(ValueError, match=rf"Reference row #2 \(id digest {row_id_digest('ref-2')}\) has 0 images") as err:
        ReferenceImagePool(rows[:2] + [{"id": "ref-2", "image": None}] + rows[3:], num_reference_images=5)
    assert "ref-2" not in str(err.value)
    with pytest.raises(ValueError, match="needs reference images"):
        ReferenceImagePool(None, num_reference_images=5)
    forget = tiny_vqa_rows(1)[0]
    swapped = swap_in_reference_images(forget, images[:2])
    assert [r["image"] for r in swapped] == images[:2]
    assert all(r["question"] == forget["question"] and r["answer"] == forget["answer"] for r in swapped)
    # without its position the row is named by its id digest alone, never by the id
    with pytest.raises(ValueError, match=rf"Forget row with id digest {row_id_digest('row-0')} has no image") as err:
        swap_in_reference_images(dict(forget, image=None), images)
    assert "row-0" not in str(err.value)
    with pytest.raises(ValueError, match=rf"Forget row #3 \(id digest {row_id_digest('row-0')}\) has 2 images"):
        swap_in_reference_images({**forget, "image": None, "images": images[:2]}, images, index=3)


# -- trainer -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_forget_logprob_drops(family, lora, tmp_path):
    model, processor = tiny_model(family, lora)
    forget = tiny_vqa_rows(4)
    before = answer_logprob(model, processor, forget)
    args = train_args(ViKeRConfig, tmp_path, max_steps=8, learning_rate=1e-1 if lora else 5e-3,
                      cache_top_k=8 if lora else None, key_token_entropy_threshold=4.5)
    trainer = ViKeRTrainer(model=model, args=args, forget_dataset=forget, processing_class=processor,
                           reference_images=tiny_images(6, seed=11))
    trainer.train()
    after = answer_logprob(model, processor, forget)
    assert after < before - 0.3, (before, after)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"ga_term", "reg_kl", "key_token_fraction"} <= set(h) for h in logged)
    assert all(("ref_tail_mass" in h) == lora for h in logged)
    assert all(0 <= h["key_token_fraction"] <= 1 for h in logged)


def test_key_token_fraction_is_logged_from_the_reference_entropy(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    trainer = ViKeRTrainer(model=model, args=train_args(ViKeRConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                           processing_class=processor, reference_images=tiny_images(5, seed=12))
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]]))
    _, terms = trainer.unlearning_loss(model, batch)
    assert "key_token_fraction" not in terms
    entropy = torch.cat([trainer._ref_cache["viker_reference"][s].entropy for s in (0, 1)])
    threshold = float(entropy.median())
    trainer.args.key_token_entropy_threshold = threshold
    _, terms = trainer.unlearning_loss(model, batch)
    fraction = float(terms["key_token_fraction"])
    assert 0 < fraction < 1
    assert fraction == pytest.approx(float((entropy >= threshold).float().mean()))


def _spy(method, calls):
    def wrapped(ref, sample_index, expected):
        calls.append(sample_index)
        return method(ref, sample_index, expected)

    return wrapped


def test_reference_computed_once_per_sample(tmp_path):
    for cache, expected_calls in [(True, 2), (False, 6)]:
        model, processor = tiny_model("llava", lora=True)
        args = train_args(ViKeRConfig, tmp_path, max_steps=-1, num_train_epochs=3, cache_reference=cache)
        trainer = ViKeRTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor,
                               reference_images=tiny_images(5, seed=2))
        calls = []
        trainer._reference_distribution = _spy(trainer._reference_distribution, calls)
        trainer.train()
        assert trainer.state.global_step == 3
        assert len(calls) == expected_calls, calls
        assert sorted(set(calls)) == [0, 1]


def test_reference_uses_the_reference_images_not_the_forget_image(family, tmp_path):
    model, processor = tiny_model(family, lora=True)
    forget = tiny_vqa_rows(2)
    refs = tiny_images(7, seed=21)
    trainer = ViKeRTrainer(model=model, args=train_args(ViKeRConfig, tmp_path, max_steps=1, cache_top_k=None,
                                                        learning_rate=0.0),
                           forget_dataset=forget, processing_class=processor, reference_images=refs)
    batches = []
    original = trainer.reference_batch
    trainer.reference_batch = lambda s: batches.append((s, original(s))) or batches[-1][1]
    trainer.train()
    chosen = [refs[i] for i in trainer.reference_pool.indices_for(0)]
    expected_pixels = processor.image_processor(images=chosen, return_tensors="pt")["pixel_values"]
    forget_pixels = processor.image_processor(images=[forget[0]["image"]], return_tensors="pt")["pixel_values"]
    collator = VLMUnlearningCollator(processor)
    assert sorted(s for s, _ in batches) == [0, 1]
    for _, batch in batches:
        torch.testing.assert_close(batch["pixel_values"], expected_pixels)
        per_image = batch["pixel_values"].view(len(chosen), *forget_pixels.shape)
        assert not any(torch.allclose(p, forget_pixels, atol=1e-3) for p in per_image)
    # R equals an independent computation: the base model, k swapped rows, softmax averaged at answer positions
    base, _ = tiny_model_and_processor(family)
    for s in (0, 1):
        rows = [dict(forget[s], image=im) for im in chosen]
        b = collator(rows)
        with torch.no_grad():
            logits = base(**model_inputs(b)).logits
        shifted, _, mask = losses.shift(logits, b["labels"])
        n = int(mask[0].sum())
        expected = torch.softmax(shifted[mask], -1).view(len(chosen), n, -1).mean(0)
        cached = trainer._ref_cache["viker_reference"][s]
        torch.testing.assert_close(cached.probs, expected, atol=1e-5, rtol=1e-4)
        own = collator([forget[s]])
        with torch.no_grad():
            own_logits = base(**model_inputs(own)).logits
        sh, _, m = losses.shift(own_logits, own["labels"])
        assert not torch.allclose(torch.softmax(sh[m], -1), expected, atol=1e-4)
        assert cached.nbytes == n * (4 * expected.shape[-1] + 12)


def test_sparse_cache_is_the_top_k_of_the_exact_one(tmp_path):
    caches = {}
    for top_k in (None, 8):
        model, processor = tiny_model("qwen2_vl", lora=True)
        trainer = ViKeRTrainer(model=model, args=train_args(ViKeRConfig, tmp_path, max_steps=1, cache_top_k=top_k),
                               forget_dataset=tiny_vqa_rows(2), processing_class=processor,
                               reference_images=tiny_images(5, seed=8))
        trainer.train()
        caches[top_k] = trainer._ref_cache["viker_reference"]
        n_tokens = sum(len(r.targets) for r in caches[top_k].values())
        per_token = 8 * 8 + 16 if top_k else 4 * len(processor.tokenizer) + 12
        assert trainer.reference_cache_nbytes() == n_tokens * per_token
    for s, exact in caches[None].items():
        sparse = caches[8][s]
        values, ids = exact.probs.topk(8, dim=-1)
        torch.testing.assert_close(sparse.probs, values)
        assert torch.equal(sparse.ids.long(), ids)
        torch.testing.assert_close(sparse.remainder, 1 - values.sum(-1))
        torch.testing.assert_close(sparse.entropy, exact.entropy)


def test_viker_input_errors(tmp_path):
    model, processor = tiny_model("llava", lora=True)
    args = train_args(ViKeRConfig, tmp_path, max_steps=1)
    with pytest.raises(ValueError, match="needs num_reference_images=5 reference images but .* only 4"):
        ViKeRTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor,
                     reference_images=tiny_images(4))
    with pytest.raises(ValueError, match="needs reference images"):
        ViKeRTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor)
    trainer = ViKeRTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2, with_images=False),
                           processing_class=processor, reference_images=tiny_images(5))
    with pytest.raises(ValueError, match=rf"Forget row #0 \(id digest {row_id_digest('row-0')}\) has no image") as err:
        trainer.train()
    assert "row-0" not in str(err.value)
    import datasets

    no_images = datasets.Dataset.from_list([{"id": "q0", "question": "who is this person ?", "answer": "i do not know ."}])
    with pytest.raises(ValueError, match="forget set has no 'image' or 'images' column"):
        ViKeRTrainer(model=model, args=args, forget_dataset=no_images, processing_class=processor,
                     reference_images=tiny_images(5))
    for bad in [dict(regularizer="l1"), dict(lam=-1.0), dict(num_reference_images=0), dict(cache_top_k=0),
                dict(token_reduction="max"), dict(reference_sampling="random")]:
        with pytest.raises(ValueError):
            train_args(ViKeRConfig, tmp_path, **bad)
    defaults = ViKeRConfig(output_dir=str(tmp_path / "d"), report_to="none")
    assert (defaults.lam, defaults.num_reference_images, defaults.regularizer) == (0.05, 5, "kl")


@pytest.mark.parametrize("regularizer", ["jsd", "cosine"])
def test_other_regularizers_train(regularizer, tmp_path):
    model, processor = tiny_model("llava", lora=True)
    trainer = ViKeRTrainer(model=model, args=train_args(ViKeRConfig, tmp_path, max_steps=2, regularizer=regularizer,
                                                        lam=1.0, learning_rate=1e-1),
                           forget_dataset=tiny_vqa_rows(2), processing_class=processor,
                           reference_images=tiny_images(5, seed=3))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all(f"reg_{regularizer}" in h and h[f"reg_{regularizer}"] >= 0 for h in logged)
    assert any(h[f"reg_{regularizer}"] > 0 for h in logged)
