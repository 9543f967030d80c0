import pytest
from transformers import Trainer

from unlearn_trainer.toyworld import ToyWorld
from unlearn_trainer.toyworld.full_model import (
    BUILD_COMPLETE_MARKER,
    FullModelSpec,
    build_full_model,
    eval_rows,
    full_model_dir,
    load_full_model,
)

SMALL = dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2, vision_hidden_size=32,
             vision_layers=1, epochs=1, batch_size=32)


@pytest.fixture
def small_world():
    return ToyWorld(num_identities=8, family_size=4, train_views=1, heldout_views=1, num_unseen=4)


def test_build_is_cached_versioned_and_atomic(tmp_path, monkeypatch, small_world):
    monkeypatch.setenv("UNLEARN_TRAINER_CACHE", str(tmp_path))
    spec = FullModelSpec(**SMALL)
    path = build_full_model(small_world, spec, progress=False, verify=False)
    assert path == full_model_dir(small_world, spec) and path.parent == tmp_path
    assert small_world.fingerprint() in path.name and spec.fingerprint() in path.name
    assert (path / BUILD_COMPLETE_MARKER).exists() and (path / "model.safetensors").exists()
    assert not list(path.glob("*.bin")) and not list(tmp_path.glob("*partial*"))

    def no_training(self, *a, **k):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(Trainer, "train", no_training)
    assert build_full_model(small_world, spec, progress=False) == path
    model, processor = load_full_model(small_world, spec, build=False)
    assert model.config.text_config.hidden_size == 32
    # names are several tokens in the saved tokenizer
    name = small_world.identities[0].name
    assert len(processor.tokenizer.tokenize(name)) >= 3

    # another world or spec is another folder: the cached model is never taken for it
    other = ToyWorld(num_identities=8, family_size=4, train_views=1, heldout_views=1, seed=1)
    assert full_model_dir(other, spec) != path
    assert full_model_dir(small_world, FullModelSpec(**{**SMALL, "epochs": 2})) != path
    with pytest.raises(FileNotFoundError, match="toyworld build"):
        load_full_model(other, spec, build=False)
    # an interrupted build leaves no complete-looking folder and no partial folder
    with pytest.raises(AssertionError):
        build_full_model(other, spec, progress=False)
    assert not (full_model_dir(other, spec) / BUILD_COMPLETE_MARKER).exists()
    assert not list(tmp_path.glob("*partial*"))


def test_eval_rows_fields(small_world):
    rows = {r["kind"]: r for r in eval_rows(small_world.train_rows())}
    assert rows["profession"]["expected"] == rows["profession"]["attributes"]["profession"]
    assert rows["text_city"]["expected"] == rows["text_city"]["attributes"]["city"]
    assert rows["open"]["private"][0] == rows["open"]["name"]
    assert rows["mc"]["mc_template"].format(option="x") == "this is x ."
    assert rows["describe"]["concepts"] == []


def test_eval_splits_robustness(small_world):
    from unlearn_trainer.toyworld.full_model import EVAL_SPLITS, ROBUSTNESS_SPLITS, eval_splits

    splits = eval_splits(small_world, 0.25, splits=ROBUSTNESS_SPLITS)
    assert set(splits) == set(ROBUSTNESS_SPLITS) and not set(ROBUSTNESS_SPLITS) & set(EVAL_SPLITS)
    assert all(splits[name] for name in ROBUSTNESS_SPLITS), [n for n in ROBUSTNESS_SPLITS if not splits[n]]
    para = {r["kind"]: r for r in splits["paraphrase_forget"]}
    assert para["city"]["expected"] == para["city"]["attributes"]["city"]
    assert para["open"]["private"][0] == para["open"]["name"]
    assert all(r["shift"] == "crop" for r in splits["shift_crop_retain"])
    assert {r["identity"] for r in splits["unseen"]} == set(small_world.unseen_identities)
    with pytest.raises(KeyError, match="paraphrase_forget"):
        eval_splits(small_world, 0.25, splits=("no_such_split",))
