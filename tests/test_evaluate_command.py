"""``python -m unlearn_trainer.evaluate``: a saved adapter or full model evaluated without training gives the
training callback's numbers on the same model; clear errors for a missing folder and an adapter of another base."""

import json

import pytest
from conftest import save_forget_retain, save_tiny_llava

from unlearn_trainer import GAConfig, GATrainer
from unlearn_trainer.cli import run_method
from unlearn_trainer.evaluate import main as evaluate_main

PROBE_ARGS = ["--probes", "relearning", "--relearn_steps", "0,1"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    save_tiny_llava(root)
    save_forget_retain(root, forget_rows=4, retain_rows=3)
    return root


def _train(root, out, *extra):
    argv = ["--model_name_or_path", str(root / "model"), "--dataset", str(root / "data"), "--forget_split", "forget",
            "--retain_split", "retain", "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--learning_rate", "0.05", "--output_dir", str(out), "--max_new_tokens", "4", "--disable_tqdm", "true",
            *PROBE_ARGS, *extra]
    return run_method(GATrainer, GAConfig, argv=argv)[1]


def _evaluate(root, out, *model_args):
    return evaluate_main([*model_args, "--dataset", str(root / "data"), "--forget_split", "forget",
                          "--retain_split", "retain", "--max_new_tokens", "4", "--disable_tqdm", "true",
                          "--output_dir", str(out), *PROBE_ARGS])


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_evaluate_a_saved_model_matches_the_callback(saved, tmp_path, kind):
    trained = tmp_path / "trained"
    callback = _train(saved, trained, *(["--use_peft", "false"] if kind == "full" else []))
    after = callback.history[-1]["metrics"]
    assert after != callback.history[0]["metrics"]  # training changed the model: the base's numbers would differ
    model_args = ["--model", str(saved / "model"), "--adapter", str(trained)] if kind == "adapter" else \
        ["--model", str(trained)]
    result = _evaluate(saved, tmp_path / "eval", *model_args)
    for split, metrics in after.items():
        for metric, value in metrics.items():
            assert result["evaluation"][split][metric] == pytest.approx(value, abs=1e-4), (split, metric)
    ours, theirs = result["robustness"]["relearning"], callback.robustness["after"]["relearning"]
    assert ours.keys() == theirs.keys() and "step1_forget_heldout_rougeL_f" in ours
    assert all(ours[k] == pytest.approx(theirs[k], abs=1e-4) for k in ours if isinstance(ours[k], float))
    out = tmp_path / "eval"
    for name in ("evaluation.json", "evaluation.md", "evaluation.png", "robustness.json", "robustness.md"):
        assert (out / name).exists(), name
    saved_json = json.loads((out / "evaluation.json").read_text())
    assert saved_json["history"][0]["label"] == "evaluated"
    assert "| forget |" in (out / "evaluation.md").read_text()
    assert "| relearning | step0_forget_heldout_rougeL_f |" in (out / "robustness.md").read_text()


def test_clear_errors_for_missing_folders_and_an_adapter_of_another_base(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="--model .*no such folder"):
        _evaluate(saved, tmp_path / "e1", "--model", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="--adapter .*no adapter_config.json"):
        _evaluate(saved, tmp_path / "e2", "--model", str(saved / "model"), "--adapter", str(saved / "model"))
    trained = tmp_path / "trained"
    _train(saved, trained, "--probes", "none")
    with pytest.raises(FileNotFoundError, match="pass it as --adapter"):
        _evaluate(saved, tmp_path / "e3", "--model", str(trained))
    other = save_tiny_llava(tmp_path / "other", hidden_size=48, intermediate_size=96)
    with pytest.raises(ValueError, match="does not fit --model .*base_model_name_or_path"):
        _evaluate(saved, tmp_path / "e4", "--model", str(other), "--adapter", str(trained))


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--help"])
    text = capsys.readouterr().out
    assert all(f"--{name}" in text for name in ("model", "adapter", "probes", "retrained_model", "output_dir"))
