"""Relearning and quantization attacks (issue 14) on a small ToyWorld model that has memorized its world.

The memorizing model is built once per module (about 10 s) under a temporary ``UNLEARN_TRAINER_CACHE``. Its sizes
are multiples of 64 because bitsandbytes' CPU 4-bit kernel needs them (see tests/test_quantized.py). The
quantization tests need bitsandbytes (``pip install 'unlearn-trainer[bnb]'``) and fail, not skip, without it.
"""

import logging
import sys
import types

import pytest
import torch
from peft import PeftModel, get_peft_model

from unlearn_trainer.evaluation import attacks, evaluate_splits
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor
from unlearn_trainer.toyworld import ToyWorld
from unlearn_trainer.toyworld.full_model import (
    FullModelSpec,
    _fresh_model,
    build_full_model,
    eval_rows,
    load_full_model,
)

SPEC = dict(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=4, num_kv_heads=2, vision_hidden_size=64,
            vision_layers=1, epochs=60, batch_size=16, learning_rate=3e-3)
EVAL = dict(max_new_tokens=24, eval_batch_size=32)


@pytest.fixture(scope="module")
def small_world_model(tmp_path_factory):
    """A memorizing ToyWorld model: ``.world .spec .full_dir`` (as conftest's ``small_toyworld``) plus the loaded
    ``.model`` / ``.processor`` and evaluation splits of forget ratio 0.25 (2 of 8 identities)."""
    world = ToyWorld(num_identities=8, family_size=4, train_views=1, heldout_views=1, num_unseen=0)
    spec = FullModelSpec(**SPEC)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNLEARN_TRAINER_CACHE", str(tmp_path_factory.mktemp("cache")))
        full_dir = build_full_model(world, spec, progress=False, verify=False)
        model, processor = load_full_model(world, spec, build=False)
    splits = world.splits(0.25)
    return types.SimpleNamespace(world=world, spec=spec, full_dir=full_dir, model=model, processor=processor,
                                 splits={k: eval_rows(splits[k]) for k in ("forget", "generalization", "retain")})


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_merged_copy_computes_the_adapted_model_and_leaves_it_alone():
    model, processor = tiny_model_and_processor("llava")
    model = get_peft_model(model, lora_config_for(model, init_lora_weights=False))  # non-zero adapter
    model.train()
    before = _params(model)
    batch = processor(text=["hello"], return_tensors="pt")
    with torch.no_grad():
        model.eval()
        adapted = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
        model.train()
        merged = attacks.merged_copy(model)
        out = merged(**batch).logits
    assert not torch.allclose(adapted, base, atol=1e-4)  # the adapter matters, so equality below means something
    torch.testing.assert_close(out, adapted, atol=1e-5, rtol=1e-5)
    assert not isinstance(merged, PeftModel) and not any("lora_" in n for n, _ in merged.named_modules())
    assert not merged.training
    # the caller's model keeps its adapter, its weights and its mode
    assert isinstance(model, PeftModel) and any("lora_A" in n for n, _ in model.named_modules())
    assert model.training
    after = _params(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_relearning_a_known_model_keeps_recall_and_step_0_is_the_model(small_world_model, caplog):
    s = small_world_model
    caplog.set_level(logging.INFO)
    before = _params(s.model)
    attack_rows = s.splits["forget"]
    result = attacks.relearning_attack(s.model, s.processor, attack_rows, s.splits, steps=(0, 5, 10), batch_size=4,
                                       is_well_formed=s.world.is_well_formed, **EVAL)
    assert list(result) == [0, 5, 10]
    reference, _ = evaluate_splits(s.model, s.processor, s.splits, is_well_formed=s.world.is_well_formed,
                                   max_new_tokens=24, batch_size=32)
    assert result[0] == reference
    assert reference["forget"]["name_recall"] == 1.0  # the model knows its training rows
    for step, metrics in result.items():
        for split in ("forget", "generalization"):  # the attack's rows and the forget identities' unseen pictures
            # what it knew stays known (the small model knows every training row, most held-out pictures)
            for metric in ("name_recall", "attribute_accuracy"):
                assert metrics[split][metric] >= reference[split][metric], (step, split, metric)
    after = _params(s.model)
    assert all(torch.equal(after[k], before[k]) for k in before)  # the attack trained a copy
    text = " ".join(r.getMessage() for r in caplog.records)  # log lines: counts, never a row's text
    assert "after 10 steps" in text and not any(c in text for r in s.splits["forget"] for c in r["concepts"])


@pytest.mark.parametrize("method", ["full", "lora"])
def test_relearning_teaches_an_untrained_model_its_rows_and_is_seeded(small_world_model, method, tmp_path,
                                                                       monkeypatch):
    """A model that never saw the world gains on the rows it is attacked with; the same seed gives the same
    numbers and another seed other ones (so the equality is not that of an attack that did nothing)."""
    s = small_world_model
    fresh, processor = _fresh_model(s.world, s.spec)
    rows = [r for r in s.splits["forget"] if r["kind"] == "name"]
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory
    run = dict(steps=(0, 5, 60), learning_rate=1e-2, batch_size=1, method=method, **EVAL)
    first = attacks.relearning_attack(fresh, processor, rows, {"attack": rows}, seed=0, **run)
    assert first[60]["attack"]["rougeL_f"] > first[0]["attack"]["rougeL_f"] + 0.3
    assert attacks.relearning_attack(fresh, processor, rows, {"attack": rows}, seed=0, **run) == first
    other = attacks.relearning_attack(fresh, processor, rows, {"attack": rows}, seed=1, **run)
    assert other[0] == first[0] and other[5] != first[5]  # another order of the rows (and LoRA init)
    assert list(tmp_path.iterdir()) == []


def _bnb_layers(model) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for module in model.modules():
        if type(module).__module__.startswith("bitsandbytes"):
            kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
    return kinds


def test_quantization_keeps_what_a_known_model_knows_with_bnb_layers(small_world_model, tmp_path, monkeypatch,
                                                                    caplog):
    s = small_world_model
    caplog.set_level(logging.INFO)
    seen = []
    real = attacks.evaluate_splits

    def spy(model, *args, **kwargs):
        layers = _bnb_layers(model)
        int8 = [m.weight for m in model.modules() if type(m).__name__ == "Linear8bitLt"]
        seen.append((layers, {w.dtype for w in int8}))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(attacks, "evaluate_splits", spy)
    monkeypatch.setattr(attacks.tempfile, "tempdir", str(tmp_path))
    result = attacks.quantization_attack(s.model, s.processor, s.splits, is_well_formed=s.world.is_well_formed, **EVAL)
    assert list(result) == ["8bit", "4bit"]
    reference, _ = real(s.model, s.processor, s.splits, is_well_formed=s.world.is_well_formed, max_new_tokens=24)
    for bits, metrics in result.items():
        for split in ("forget", "retain"):  # its training rows: known, and still known after rounding
            assert reference[split]["name_recall"] == 1.0 and metrics[split]["name_recall"] == 1.0, (bits, split)
        # held-out pictures: at most one row in eight changes (rounding moves borderline answers)
        assert abs(metrics["generalization"]["name_recall"] - reference["generalization"]["name_recall"]) <= 0.125
    (layers8, dtypes8), (layers4, _) = seen
    linear = sum(isinstance(m, torch.nn.Linear) for m in s.model.modules()) - 1  # all but lm_head
    assert layers8 == {"Linear8bitLt": linear} and dtypes8 == {torch.int8}
    assert layers4 == {"Linear4bit": linear}
    assert list(tmp_path.iterdir()) == []  # the temporary checkpoint is gone
    # no per-matmul bitsandbytes notes; our log lines hold counts, never a row's text
    assert not [r for r in caplog.records if r.name.startswith("bitsandbytes")]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "8-bit" in text and not any(c in text for r in s.splits["forget"] for c in r["concepts"])


def test_quantization_without_bitsandbytes_names_the_extra(small_world_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    with pytest.raises(ImportError, match=r"unlearn-trainer\[bnb\]"):
        attacks.quantization_attack(small_world_model.model, small_world_model.processor, small_world_model.splits)


def test_bad_arguments_are_named(small_world_model):
    s = small_world_model
    with pytest.raises(ValueError, match="method"):
        attacks.relearning_attack(s.model, s.processor, s.splits["forget"], s.splits, method="qlora")
    with pytest.raises(ValueError, match="steps"):
        attacks.relearning_attack(s.model, s.processor, s.splits["forget"], s.splits, steps=(-1, 5))
    with pytest.raises(ValueError, match="'retain' is empty"):
        attacks.relearning_attack(s.model, s.processor, s.splits["forget"], {**s.splits, "retain": []})
    with pytest.raises(ValueError, match="bits"):
        attacks.quantization_attack(s.model, s.processor, s.splits, bits=(2,))
