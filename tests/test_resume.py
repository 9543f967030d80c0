"""Resuming from a checkpoint continues the same run: a run stopped after checkpoint-k and resumed from it ends with
the weights and loss logs of an uninterrupted run (LoRA and full-parameter; LLaVA and Qwen2-VL, whose checkpoints
transformers 5 writes under converted key names), and the example scripts pass --resume_from_checkpoint through."""

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_forget_retain, save_tiny_llava, train_args
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from unlearn_trainer import GAConfig, GATrainer, NPOConfig, NPOTrainer
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MAX_STEPS, SAVE_STEPS = 4, 3  # 2 steps per epoch: checkpoint-3 is mid-epoch, so resuming also skips a seen batch


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Snapshot(TrainerCallback):
    """The trainable weights when a step of ``step`` (the global step before it) begins or ends."""

    def __init__(self, step: int, at: str):
        self.step, self.at, self.weights = step, at, None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.at == "begin" and state.global_step == self.step and self.weights is None:
            self.weights = trainable(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.at == "end" and state.global_step == self.step:
            self.weights = trainable(model)


def npo_run(family, lora, out, resume=None, callback=None):
    model, processor = tiny_model_and_processor(family)
    args = train_args(NPOConfig, out.parent, output_dir=str(out), max_steps=MAX_STEPS, save_strategy="steps",
                      save_steps=SAVE_STEPS, learning_rate=5e-3)
    trainer = NPOTrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(4),
                         retain_dataset=tiny_vqa_rows(6, seed=2), processing_class=processor,
                         peft_config=lora_config_for(model) if lora else None, callbacks=[callback] if callback else None)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def train_logs(trainer, after_step=0):
    return [{k: v for k, v in h.items() if k != "epoch"} for h in trainer.state.log_history
            if "loss" in h and h["step"] > after_step]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_resumed_run_equals_the_uninterrupted_run(family, lora, tmp_path):
    at_checkpoint = Snapshot(SAVE_STEPS, "end")
    full = npo_run(family, lora, tmp_path / "full", callback=at_checkpoint)
    checkpoint = tmp_path / "full" / f"checkpoint-{SAVE_STEPS}"
    assert checkpoint.is_dir()
    before = trainable(tiny_model_and_processor(family)[0]) if not lora else None

    on_resume = Snapshot(SAVE_STEPS, "begin")
    resumed = npo_run(family, lora, tmp_path / "resumed", resume=str(checkpoint), callback=on_resume)

    # the resumed trainer starts from the checkpoint's weights, not the base model's
    assert on_resume.weights is not None and on_resume.weights.keys() == at_checkpoint.weights.keys()
    for name, value in at_checkpoint.weights.items():
        torch.testing.assert_close(on_resume.weights[name], value, rtol=0, atol=0, msg=name)
    if before is not None:  # full-parameter: the checkpoint really differs from the base weights
        assert any(not torch.equal(before[n], v) for n, v in at_checkpoint.weights.items())

    # ... and ends where the uninterrupted run ended, with the same step count and the same logged losses
    assert resumed.state.global_step == full.state.global_step == MAX_STEPS
    assert len(train_logs(resumed, SAVE_STEPS)) == MAX_STEPS - SAVE_STEPS
    assert train_logs(resumed, SAVE_STEPS) == train_logs(full, SAVE_STEPS)
    end_full, end_resumed = trainable(full.model), trainable(resumed.model)
    assert end_full.keys() == end_resumed.keys()
    for name, value in end_full.items():
        torch.testing.assert_close(end_resumed[name], value, rtol=0, atol=0, msg=name)


def test_a_checkpoint_that_does_not_match_the_model_is_refused(tmp_path):
    model, processor = tiny_model_and_processor("llava")
    checkpoint = tmp_path / "checkpoint-1"
    model.save_pretrained(checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    trainer = GATrainer(model=model, args=train_args(GAConfig, tmp_path), forget_dataset=tiny_vqa_rows(2),
                        processing_class=processor)
    with pytest.raises(RuntimeError, match="Cannot restore the weights of .*checkpoint-1") as error:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert "Missing: 1" in str(error.value) and trainer.state.global_step == 0


def test_load_best_model_at_end_restores_the_best_checkpoint(tmp_path):
    """Trainer's load_best_model_at_end has the same non-strict load: the best full-parameter checkpoint must load."""
    model, processor = tiny_model_and_processor("llava")
    forget = tiny_vqa_rows(4)
    best, last = Snapshot(1, "end"), Snapshot(2, "end")  # gradient ascent raises the forget loss: step 1 is best
    args = train_args(GAConfig, tmp_path, max_steps=2, save_strategy="steps", save_steps=1, eval_strategy="steps",
                      eval_steps=1, load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=False)
    trainer = GATrainer(model=model, args=args, forget_dataset=forget, eval_dataset=forget, processing_class=processor,
                        callbacks=[best, last])
    trainer.train()
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-1")
    end = trainable(trainer.model)
    assert any(not torch.equal(last.weights[n], v) for n, v in best.weights.items())  # the last step moved them
    for name, value in best.weights.items():
        torch.testing.assert_close(end[name], value, rtol=0, atol=0, msg=name)


@pytest.fixture
def saved_model_and_data(tmp_path):
    save_tiny_llava(tmp_path)
    save_forget_retain(tmp_path, forget_rows=4, retain_rows=3)
    return tmp_path


def test_example_resumes_from_the_latest_checkpoint(saved_model_and_data, monkeypatch):
    root, out = saved_model_and_data, saved_model_and_data / "out"
    steps_run = []
    training_step = GATrainer.training_step

    def counting_step(self, *args, **kwargs):
        steps_run.append(self.state.global_step)
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(GATrainer, "training_step", counting_step)

    def run_ga(*extra):
        argv = ["run_ga.py", "--model_name_or_path", str(root / "model"), "--dataset", str(root / "data"),
                "--forget_split", "forget", "--retain_split", "retain", "--use_peft", "false",
                "--per_device_train_batch_size", "2", "--max_steps", "4",
                "--save_steps", "2",  # alone: implies --save_strategy steps
                "--output_dir", str(out), "--max_new_tokens", "2", "--max_eval_rows", "1",
                "--disable_tqdm", "true", "--logging_steps", "1", *extra]
        monkeypatch.setattr(sys, "argv", argv)
        steps_run.clear()
        runpy.run_path(str(EXAMPLES / "run_ga.py"), run_name="__main__")
        return list(steps_run)

    assert run_ga() == [0, 1, 2, 3]
    for name in ("checkpoint-4", "model.safetensors"):  # "killed" after checkpoint-2: no later state on disk
        path = out / name
        path.unlink() if path.is_file() else shutil.rmtree(path)
    checkpoint_2 = (out / "checkpoint-2" / "trainer_state.json").read_text()
    assert run_ga("--resume_from_checkpoint", "True") == [2, 3]  # continues at step 3, keeps checkpoint-2
    assert (out / "checkpoint-2" / "trainer_state.json").read_text() == checkpoint_2
    assert (out / "checkpoint-4").is_dir() and (out / "model.safetensors").exists()
    # the first evaluation of a resumed run is of the checkpoint's weights: not labelled "before"
    labels = list(json.loads((out / "results.json").read_text())["evaluation"])
    assert labels == ["resumed", "after"]
    assert "| resumed | after |" in (out / "unlearning_eval.md").read_text()
    assert run_ga("--resume_from_checkpoint", str(out / "checkpoint-2")) == [2, 3]


def test_resume_true_without_a_checkpoint_is_clear(tmp_path):
    from unlearn_trainer.cli import checkpoint_to_resume

    config = GAConfig(output_dir=str(tmp_path), resume_from_checkpoint="True")
    with pytest.raises(ValueError, match="no checkpoint-\\* folder in --output_dir"):
        checkpoint_to_resume(config)
    assert checkpoint_to_resume(GAConfig(output_dir=str(tmp_path))) is None
