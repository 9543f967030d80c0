"""Importing the package and building a (LoRA) trainer print nothing: no upstream start-up message (bitsandbytes'
CPU kernel notice via peft, DeepSpeed's accelerator notice via accelerate, peft's use of a deprecated transformers
property) reaches stdout or stderr.

The messages only appear where bitsandbytes / DeepSpeed are installed (the [dev] environment has both); elsewhere
these tests pass without exercising the filters."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BUILD_A_TRAINER = """
import tempfile
from unlearn_trainer import GAConfig, GATrainer
from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows

model, processor = tiny_model_and_processor("llava")
args = GAConfig(output_dir=tempfile.mkdtemp(), report_to="none", max_steps=1, disable_tqdm=True)
GATrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor,
          peft_config=lora_config_for(model))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_import_prints_nothing():
    result = _run("import unlearn_trainer")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_building_a_trainer_prints_nothing():
    result = _run(BUILD_A_TRAINER)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_only_the_two_messages_are_dropped():
    """The filters match one message each: other records of those loggers still pass."""
    import logging

    import unlearn_trainer  # noqa: F401  (installs the filters)

    def passes(logger, message):
        record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, (), None)
        return all(f.filter(record) for f in logging.getLogger(logger).filters)

    assert not passes("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community: "
                                                       "%s. Please make sure ...")
    assert passes("bitsandbytes.backends.cpu.ops", "some other bitsandbytes warning")
    assert passes("DeepSpeed", "Some other DeepSpeed warning")


def test_training_on_cpu_does_not_pin_memory(tmp_path):
    """Pinned memory is for copies to an accelerator; on CPU torch warned at every epoch of every run."""
    import warnings

    from unlearn_trainer import GAConfig, GATrainer
    from unlearn_trainer.testing import lora_config_for, tiny_model_and_processor, tiny_vqa_rows

    model, processor = tiny_model_and_processor("llava")
    args = GAConfig(output_dir=str(tmp_path), report_to="none", max_steps=1, disable_tqdm=True)
    trainer = GATrainer(model=model, args=args, forget_dataset=tiny_vqa_rows(2), processing_class=processor,
                        peft_config=lora_config_for(model))
    assert trainer.args.dataloader_pin_memory is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "pin_memory" in str(w.message)]
