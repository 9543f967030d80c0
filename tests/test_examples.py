import json
import runpy
import sys
from pathlib import Path

import pytest

from unlearn_trainer import GAConfig, GATrainer, NPOConfig
from unlearn_trainer.cli import ScriptArguments, parse_args, run_method
from unlearn_trainer.testing import tiny_model_and_processor, tiny_vqa_rows

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def saved_model_and_data(tmp_path):
    import datasets

    model, processor = tiny_model_and_processor("llava")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string")})
    ds = datasets.DatasetDict({
        "forget": datasets.Dataset.from_list(tiny_vqa_rows(2), features=features),
        "retain": datasets.Dataset.from_list(tiny_vqa_rows(3, seed=2), features=features),
    })
    ds.save_to_disk(str(tmp_path / "data"))
    return tmp_path


def test_run_method_on_a_real_model_path(saved_model_and_data):
    root = saved_model_and_data
    out = root / "out"
    argv = ["--model_name_or_path", str(root / "model"), "--dataset", str(root / "data"), "--forget_split", "forget",
            "--retain_split", "retain", "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--output_dir", str(out), "--max_new_tokens", "4", "--disable_tqdm", "true"]
    trainer, _ = run_method(GATrainer, GAConfig, demo_defaults={"learning_rate": 123.0}, argv=argv)
    assert trainer.args.learning_rate != 123.0  # demo defaults apply only without --model_name_or_path
    assert trainer.args.retain_loss == "nll"
    assert (out / "adapter_model.safetensors").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "ga" and set(results["evaluation"]) == {"before", "after"}
    assert "| forget |" in (out / "unlearning_eval.md").read_text()


def test_demo_defaults_apply_without_a_model_and_command_line_wins():
    script, config = parse_args(NPOConfig, {"learning_rate": 7e-4, "max_steps": 11}, argv=["--max_steps", "3"])
    assert script.model_name_or_path is None and script.dataset == "toyworld"
    assert config.learning_rate == 7e-4 and config.max_steps == 3
    assert config.output_dir == "outputs/npo-toyworld-forget10"


def test_bad_split_names_are_clear(saved_model_and_data):
    from unlearn_trainer.cli import load_data

    args = ScriptArguments(model_name_or_path="x", dataset=str(saved_model_and_data / "data"), forget_split="nope")
    with pytest.raises(ValueError, match="Split 'nope' not in"):
        load_data(args)
    with pytest.raises(ValueError, match="forget05"):
        load_data(ScriptArguments(forget_split="forget99"))


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("run_*.py")))
def test_every_example_documents_help(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model_name_or_path", "--dataset", "--forget_split", "--use_lora", "--output_dir"):
        assert option in text
