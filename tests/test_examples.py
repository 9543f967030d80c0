import json
import runpy
import sys
from pathlib import Path

import pytest
from conftest import save_forget_retain, save_tiny_llava

from unlearn_trainer import GAConfig, GATrainer, NPOConfig
from unlearn_trainer.cli import ScriptArguments, parse_args, run_method
from unlearn_trainer.testing import tiny_model_and_processor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def saved_model_and_data(tmp_path):
    save_tiny_llava(tmp_path)
    save_forget_retain(tmp_path, forget_rows=2, retain_rows=3)
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
    script, config, model = parse_args(NPOConfig, {"learning_rate": 7e-4, "max_steps": 11}, argv=["--max_steps", "3"])
    assert model.model_name_or_path is None and script.dataset == "toyworld"
    assert config.learning_rate == 7e-4 and config.max_steps == 3
    assert config.output_dir == "outputs/npo-toyworld-forget10"
    # TRL's ModelConfig with our defaults: LoRA r=8 / alpha 16 / no dropout, the checkpoint's dtype, QLoRA's recipe
    assert (model.use_peft, model.lora_r, model.lora_alpha, model.lora_dropout) == (True, 8, 16, 0.0)
    assert model.dtype == "auto" and model.use_bnb_nested_quant and model.lora_task_type is None


def test_lora_config_targets_the_language_model_unless_given():
    from unlearn_trainer import language_model_lora_targets
    from unlearn_trainer.cli import lora_config

    model = tiny_model_and_processor("idefics3")[0]
    _, _, model_args = parse_args(NPOConfig, argv=["--model_name_or_path", "m", "--lora_r", "4"])
    peft_config = lora_config(model_args, model)
    assert peft_config.target_modules == language_model_lora_targets(model) and peft_config.r == 4
    assert peft_config.task_type is None and peft_config.lora_alpha == 16 and peft_config.lora_dropout == 0.0
    _, _, model_args = parse_args(NPOConfig, argv=["--model_name_or_path", "m", "--lora_target_modules", "q_proj",
                                                   "v_proj"])
    assert set(lora_config(model_args, model).target_modules) == {"q_proj", "v_proj"}
    _, _, model_args = parse_args(NPOConfig, argv=["--model_name_or_path", "m", "--use_peft", "false"])
    assert lora_config(model_args, model) is None


def test_an_example_reads_a_yaml_config_and_the_command_line_wins(tmp_path, monkeypatch):
    """``--config file.yaml`` (TRL's TrlParser): its values replace the defaults (the demo's too); the command line
    replaces them."""
    from unlearn_trainer import cli

    config_file = tmp_path / "npo.yaml"
    config_file.write_text("forget_split: forget05\nbeta: 0.7\nlearning_rate: 0.002\nmax_steps: 9\nlora_r: 4\n"
                           f"output_dir: {tmp_path / 'out'}\nsave_steps: 3\n")
    parsed = {}

    class Parsed(Exception):
        pass

    def load_model_and_processor(model_args, script_args):
        parsed.update(model=model_args, script=script_args)
        raise Parsed

    original = cli.parse_args
    monkeypatch.setattr(cli, "parse_args", lambda *a, **k: parsed.setdefault("all", original(*a, **k)))
    monkeypatch.setattr(cli, "load_model_and_processor", load_model_and_processor)
    main = runpy.run_path(str(EXAMPLES / "run_npo.py"))["main"]
    with pytest.raises(Parsed):
        main(["--config", str(config_file), "--max_steps", "5", "--beta", "0.5"])
    script, config, model = parsed["all"]
    assert script is parsed["script"] and model is parsed["model"]
    assert script.forget_split == "forget05" and model.lora_r == 4 and model.model_name_or_path is None
    assert config.learning_rate == 0.002  # the YAML file wins over the demo's 1e-3
    assert config.max_steps == 5 and config.beta == 0.5  # the command line wins over the YAML file
    assert config.output_dir == str(tmp_path / "out") and config.save_strategy == "steps" and config.save_steps == 3
    config_file.write_text("no_such_option: 1\n")
    with pytest.raises(ValueError, match="no_such_option"):
        main(["--config", str(config_file)])


def test_bad_split_names_are_clear(saved_model_and_data):
    from unlearn_trainer.cli import load_data

    args = ScriptArguments(dataset=str(saved_model_and_data / "data"), forget_split="nope")
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
    for option in ("--model_name_or_path", "--dataset", "--forget_split", "--use_peft", "--output_dir"):
        assert option in text
    # a short usage line, the example's description, then the groups: data, the method's own, model, training
    head = text.split("options:")[0]
    assert len(head.splitlines()[0]) < 160 and "--config FILE.yaml" in head.splitlines()[0]
    assert runpy.run_path(str(EXAMPLES / script))["__doc__"].splitlines()[0] in head
    titles = ["data and evaluation (", "Config, without TrainingArguments)", "(trl.ModelConfig)",
              "(transformers.TrainingArguments)"]
    positions = [text.index(title) for title in titles]
    assert positions == sorted(positions)
    def listed(option):  # where the option's own help entry is (the description may mention it too)
        return text.index(f"\n  {option} ")

    assert positions[0] < listed("--dataset") < positions[1] < listed("--retain_weight") < positions[2]
    assert positions[2] < listed("--lora_r") < positions[3] < listed("--learning_rate")
