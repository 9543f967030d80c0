"""The retrained ("oracle") ToyWorld model: the full model's recipe without the forget identities (issue 14)."""

import json

import pytest
from transformers import AutoProcessor, LlavaForConditionalGeneration, Trainer

from unlearn_trainer.evaluation.evaluator import evaluate_rows
from unlearn_trainer.toyworld import ToyWorld
from unlearn_trainer.toyworld import __main__ as toyworld_cli
from unlearn_trainer.toyworld.full_model import (
    BUILD_COMPLETE_MARKER,
    FullModelSpec,
    build_retrained_model,
    eval_rows,
    full_model_dir,
    load_full_model,
    load_retrained_model,
    ratio_tag,
    retrained_model_dir,
)


def _name_recall(path, world, identities):
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    keep = set(identities)
    rows = [r for r in world.train_rows() if r["kind"] == "name" and r["identity"] in keep]
    metrics, _ = evaluate_rows(model, processor, eval_rows(rows), max_new_tokens=16, batch_size=32)
    return metrics["name_recall"]


def test_retrained_model_lacks_the_forget_identities_and_keeps_the_rest(small_toyworld):
    world, ratio = small_toyworld.world, small_toyworld.ratio
    forget = world.forget_identities(ratio)
    retain = [i for i in range(world.num_identities) if i not in forget]
    # the full model memorized everyone; the retrained one never saw the forget identities
    assert _name_recall(small_toyworld.full_dir, world, forget) >= 0.9
    assert _name_recall(small_toyworld.full_dir, world, retain) >= 0.9
    assert _name_recall(small_toyworld.retrained_dir, world, forget) <= 0.25
    assert _name_recall(small_toyworld.retrained_dir, world, retain) >= 0.9


def test_retrained_model_is_the_full_recipe_without_the_forget_rows(small_toyworld, monkeypatch):
    world, spec, ratio = small_toyworld.world, small_toyworld.spec, small_toyworld.ratio
    monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(small_toyworld.cache))
    assert small_toyworld.full_dir == full_model_dir(world, spec)
    assert small_toyworld.retrained_dir == retrained_model_dir(world, spec, ratio)
    assert small_toyworld.retrained_dir.name == full_model_dir(world, spec).name + "-retrain-forget25"
    with open(small_toyworld.retrained_dir / BUILD_COMPLETE_MARKER) as f:
        report = json.load(f)
    forget = set(world.forget_identities(ratio))
    assert report["train_rows"] == len([r for r in world.train_rows() if r["identity"] not in forget])
    assert report["retrained_without"] == "forget25" and report["forget_identities"] == len(forget)
    assert report["spec"] == json.load(open(small_toyworld.full_dir / BUILD_COMPLETE_MARKER))["spec"]
    assert not any(name in json.dumps(report) for name in world.name_words())  # counts only, no names

    def no_training(self, *a, **k):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(Trainer, "train", no_training)
    assert build_retrained_model(world, spec, ratio, progress=False) == small_toyworld.retrained_dir
    model, processor = load_retrained_model(world, spec, ratio, build=False)
    full, full_processor = load_full_model(world, spec, build=False)
    # same tokenizer (same corpus) and architecture as the full model
    assert processor.tokenizer.get_vocab() == full_processor.tokenizer.get_vocab()
    assert model.config.text_config.to_dict() == full.config.text_config.to_dict()
    with pytest.raises(FileNotFoundError, match="--retrained forget15"):
        load_retrained_model(world, spec, 0.15, build=False)
    with pytest.raises(ValueError, match="ratio"):
        retrained_model_dir(world, spec, 1.5)


SMALL = dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2, vision_hidden_size=32,
             vision_layers=1, epochs=1, batch_size=32, image_size=16)


def test_damaged_retrained_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(tmp_path))
    world = ToyWorld(num_identities=8, family_size=4, train_views=1, heldout_views=1, num_unseen=0, image_size=16)
    spec = FullModelSpec(**SMALL)
    path = build_retrained_model(world, spec, 0.25, progress=False, verify=False)
    assert (path / "model.safetensors").exists() and not list(tmp_path.glob("*partial*"))
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_retrained_model(world, spec, 0.25, build=False)
    model, _ = load_retrained_model(world, spec, 0.25, progress=False)  # rebuilt, with a warning
    assert model.config.text_config.hidden_size == 32
    assert not full_model_dir(world, spec).exists()  # the retrained build does not need the full model


def test_cli_path_names_the_retrained_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(tmp_path))
    toyworld_cli.main(["path", "--retrained", "forget10"])
    assert capsys.readouterr().out.strip() == str(retrained_model_dir(ratio=0.10))
    assert retrained_model_dir(ratio=0.10).name.endswith("-retrain-forget10")
    assert [ratio_tag(r) for r in (0.05, 0.10, 0.15)] == ["forget05", "forget10", "forget15"]
    with pytest.raises(SystemExit):
        toyworld_cli.main(["build", "--retrained", "forget99"])
