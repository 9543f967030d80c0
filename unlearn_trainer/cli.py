"""The helpers each ``examples/run_<method>.py`` ``main()`` calls in order: :func:`parse_args`,
:func:`load_model_and_processor`, :func:`load_data`, :func:`lora_config`, :func:`unlearning_eval_callback`,
:func:`reference_model` and :func:`model_card_kwargs` (the trainer's arguments), :func:`checkpoint_to_resume`,
then :func:`report` after training and saving. :func:`run_method` is the same sequence in one call.

Every example parses ``(ScriptArguments, <Method>Config)`` with ``HfArgumentParser``. With no
``--model_name_or_path`` it runs the offline ToyWorld demo: the cached memorizing model, the 10% forget split
and the method's defaults scaled to that world (``demo_defaults``); any argument given on the command line
wins over those defaults. With ``--model_name_or_path`` it loads a real model (``from_pretrained``) and a
dataset given by ``--dataset`` (a registered loader name, a local ``datasets.save_to_disk`` folder, a JSON /
JSONL file, or a Hub dataset name).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .data.benchmarks import BenchmarkData
from .vision.adapters import LANGUAGE_MODEL_LORA_TARGETS

__all__ = ["ScriptArguments", "parse_args", "load_model_and_processor", "load_data", "data_split", "lora_config",
           "unlearning_eval_callback", "reference_model", "model_card_kwargs", "checkpoint_to_resume", "report",
           "run_method"]


@dataclass
class ScriptArguments:
    """Model, data, LoRA and evaluation options shared by every example."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local path of the VLM; unset: the offline ToyWorld demo model."}
    )
    processor_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to the model's."})
    dataset: str = field(
        default="toyworld",
        metadata={"help": "'toyworld', a registered benchmark (mllmu_bench[:path], clear[:path], mmubench:path with "
                          "forget_split = comma-separated concepts), a local save_to_disk folder, a .json/.jsonl file, "
                          "or a Hub dataset name."},
    )
    forget_split: str = field(
        default="forget10", metadata={"help": "ToyWorld: forget05 / forget10 / forget15; otherwise a split name."}
    )
    retain_split: str | None = field(default="retain", metadata={"help": "Retain split name; 'none' for no retain set."})
    image_column: str = field(default="image", metadata={"help": "Column holding the image (real datasets)."})
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the answer."})
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (the reference is the disabled adapter)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default=LANGUAGE_MODEL_LORA_TARGETS, metadata={"help": "Regex of the modules to adapt (language model only)."}
    )
    torch_dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: 4-bit base model (needs the [bnb] extra)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit base model (needs the [bnb] extra)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Only for models you trust; off by default."})
    unlearning_eval_steps: int | None = field(default=None, metadata={"help": "Also run the unlearning evaluation every N steps."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Cap rows per evaluation split."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation length for evaluation."})


def parse_args(config_cls, demo_defaults: dict | None = None, argv=None, script_args_cls=None):
    """Parse ``(script_args_cls, config_cls)``; demo defaults apply when no model is given. ``script_args_cls``
    (default :class:`ScriptArguments`) may be a subclass that adds a method's own inputs (e.g. a split name)."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((script_args_cls or ScriptArguments, config_cls))
    for action in parser._actions:  # help texts are plain text ("10%"), not argparse format strings
        if action.help:
            action.help = re.sub(r"%(?!\()", "%%", action.help)
    script_args = parser.parse_args_into_dataclasses(args=argv + _needs_output_dir(argv), return_remaining_strings=True)[0]
    # No checkpoints unless asked; --save_steps alone asks (it would otherwise be ignored under save_strategy "no").
    save_strategy = "steps" if any(a.startswith("--save_steps") for a in argv) else "no"
    defaults = {"output_dir": f"outputs/{config_cls.__name__.replace('Config', '').lower()}-{_dataset_tag(script_args)}",
                "report_to": "none", "logging_steps": 10, "save_strategy": save_strategy}
    if script_args.model_name_or_path is None:
        defaults.update(demo_defaults or {})
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)


def _needs_output_dir(argv):
    return [] if any(a.startswith("--output_dir") for a in argv) else ["--output_dir", "unused"]


def _dataset_tag(script_args) -> str:
    name = os.path.basename(os.path.normpath(script_args.dataset)).split(".")[0] or "data"
    return f"{name}-{script_args.forget_split}" if name == "toyworld" else name


def load_model_and_processor(script_args: ScriptArguments):
    """``(model, processor, is_demo)``: the ToyWorld full model, or ``from_pretrained`` of a real model."""
    if script_args.load_in_4bit and script_args.load_in_8bit:
        raise ValueError("Pass one of --load_in_4bit and --load_in_8bit, not both.")
    if script_args.model_name_or_path is None:
        if script_args.load_in_4bit or script_args.load_in_8bit:
            raise ValueError("--load_in_4bit / --load_in_8bit quantize a model given by --model_name_or_path; the "
                             "ToyWorld demo model is not quantized.")
        from .toyworld.full_model import load_full_model

        model, processor = load_full_model()
        return model, processor, True
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"trust_remote_code": script_args.trust_remote_code}
    if script_args.torch_dtype != "auto":
        kwargs["dtype"] = getattr(torch, script_args.torch_dtype)
    else:
        kwargs["dtype"] = "auto"
    if script_args.load_in_4bit or script_args.load_in_8bit:
        import importlib.util

        from transformers import BitsAndBytesConfig

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError("--load_in_4bit / --load_in_8bit need bitsandbytes: pip install 'unlearn-trainer[bnb]'")
        # QLoRA's recipe (Dettmers et al. 2023): NF4 with double quantization, computing in the model's dtype.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=script_args.load_in_4bit, load_in_8bit=script_args.load_in_8bit,
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"] if kwargs["dtype"] != "auto" else None,
        )
        if torch.cuda.is_available():  # each process loads its quantized copy onto its own GPU (as TRL does)
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForImageTextToText.from_pretrained(script_args.model_name_or_path, **kwargs)
    processor = AutoProcessor.from_pretrained(
        script_args.processor_name_or_path or script_args.model_name_or_path,
        trust_remote_code=script_args.trust_remote_code,
    )
    return model, processor, False


def _toyworld_data(script_args: ScriptArguments) -> BenchmarkData:
    from .toyworld import ToyWorld
    from .toyworld.full_model import eval_splits

    ratios = {"forget05": 0.05, "forget10": 0.10, "forget15": 0.15}
    if script_args.forget_split not in ratios:
        raise ValueError(f"ToyWorld forget_split must be one of {sorted(ratios)}, got {script_args.forget_split!r}.")
    world = ToyWorld()
    ratio = ratios[script_args.forget_split]
    splits = world.splits(ratio)
    evals = eval_splits(world, ratio)
    if script_args.max_eval_rows:
        evals = {k: v[: script_args.max_eval_rows] for k, v in evals.items()}
    retain = None if (script_args.retain_split in (None, "none")) else splits["retain_train"]
    return BenchmarkData(
        name="toyworld",
        forget=splits["forget_train"],
        retain=retain,
        eval_splits=evals,
        is_well_formed=world.is_well_formed,
        extras={"world": world, "splits": splits, "ratio": ratio},
    )


def _rename_columns(rows, script_args):
    mapping = {script_args.image_column: "image", script_args.question_column: "question",
               script_args.answer_column: "answer"}
    if all(k == v for k, v in mapping.items()):
        return rows
    return rows.rename_columns({k: v for k, v in mapping.items() if k != v})


def load_data(script_args: ScriptArguments) -> BenchmarkData:
    """Forget / retain rows and evaluation splits for the chosen dataset."""
    if script_args.dataset == "toyworld":
        return _toyworld_data(script_args)
    from .data.benchmarks import BENCHMARKS, load_benchmark

    if script_args.dataset.partition(":")[0] in BENCHMARKS:  # mllmu_bench, clear[:path], mmubench:path
        return load_benchmark(script_args.dataset, script_args.forget_split, script_args.retain_split,
                              script_args.max_eval_rows)
    import datasets

    path = script_args.dataset
    if os.path.isdir(path):
        ds = datasets.load_from_disk(path)
    elif path.endswith((".json", ".jsonl")):
        ds = datasets.load_dataset("json", data_files={"train": path})
    else:
        ds = datasets.load_dataset(path)
    if not isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"{path!r} has no named splits; expected splits such as {script_args.forget_split!r}.")
    if script_args.forget_split not in ds:
        raise ValueError(f"Split {script_args.forget_split!r} not in {path!r} (has {sorted(ds)}).")
    forget = _rename_columns(ds[script_args.forget_split], script_args)
    retain = None
    if script_args.retain_split not in (None, "none"):
        if script_args.retain_split not in ds:
            raise ValueError(f"Split {script_args.retain_split!r} not in {path!r} (has {sorted(ds)}).")
        retain = _rename_columns(ds[script_args.retain_split], script_args)
    n = script_args.max_eval_rows or 200
    evals = {"forget": [forget[i] for i in range(min(n, len(forget)))]}
    if retain is not None:
        evals["retain"] = [retain[i] for i in range(min(n, len(retain)))]
    return BenchmarkData(name=path, forget=forget, retain=retain, eval_splits=evals, extras={"dataset": ds})


def data_split(script_args: ScriptArguments, data: BenchmarkData, name: str):
    """Rows of another split of the run's dataset (a method input such as ViKeR's reference images): a ToyWorld
    split (``forget_train``, ``distant``, ``text_forget``...), a split of the local / Hub dataset (columns renamed
    as for the forget set), or a benchmark's evaluation split."""
    if "splits" in data.extras:  # ToyWorld
        splits = data.extras["splits"]
    elif "dataset" in data.extras:
        ds = data.extras["dataset"]
        if name not in ds:
            raise ValueError(f"Split {name!r} not in {script_args.dataset!r} (has {sorted(ds)}).")
        split = ds[name]  # rename the columns it has (a reference-image split may hold images only)
        mapping = {script_args.image_column: "image", script_args.question_column: "question",
                   script_args.answer_column: "answer"}
        mapping = {k: v for k, v in mapping.items() if k != v and k in split.column_names}
        return split.rename_columns(mapping) if mapping else split
    else:  # a registered benchmark: its evaluation splits
        splits = data.eval_splits
    if name not in splits:
        raise ValueError(f"Split {name!r} not in {script_args.dataset!r} (has {sorted(splits)}).")
    return splits[name]


def lora_config(script_args: ScriptArguments):
    """The ``LoraConfig`` of ``--use_lora`` (rank, alpha, dropout, target modules), or None for full training."""
    if not script_args.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=script_args.lora_r, lora_alpha=script_args.lora_alpha, lora_dropout=script_args.lora_dropout,
                      target_modules=script_args.lora_target_modules)


def unlearning_eval_callback(script_args: ScriptArguments, config, processor, data: BenchmarkData):
    """The before/after unlearning evaluation on the data's evaluation splits (``unlearning_eval.*`` in
    ``output_dir``); pass it in ``callbacks=`` and give it to :func:`report` after training."""
    from .evaluation import UnlearningEvalCallback, score_predictions

    return UnlearningEvalCallback(processor, data.eval_splits, eval_steps=script_args.unlearning_eval_steps,
                                  output_dir=config.output_dir, is_well_formed=data.is_well_formed,
                                  max_new_tokens=script_args.max_new_tokens,
                                  row_metrics=score_predictions if data.scoring else None)


def reference_model(script_args: ScriptArguments, trainer_cls, config, peft_config):
    """``ref_model=`` for the trainer: under DeepSpeed ZeRO-3 without LoRA, a method that uses the frozen model
    (or a KL retain term) gets a second load of the model (ZeRO-3 partitions the model as it loads, so it cannot
    be copied); otherwise None (the trainer builds its reference itself)."""
    if peft_config is not None or not (trainer_cls.needs_reference or config.retain_loss == "kl"):
        return None
    from transformers.integrations import is_deepspeed_zero3_enabled

    return load_model_and_processor(script_args)[0] if is_deepspeed_zero3_enabled() else None


def model_card_kwargs(script_args: ScriptArguments) -> dict:
    """The model card's defaults for ``model_card_kwargs=``: the dataset and forget split it was unlearned on (the
    card, written by ``save_model`` and uploaded privately by ``--push_to_hub``, never names the forgotten)."""
    return {"dataset": script_args.dataset, "forget_split": script_args.forget_split}


def checkpoint_to_resume(config) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``True`` for the latest ``checkpoint-*`` in
    ``--output_dir`` (as Hugging Face's example scripts); unset or ``False``: train from the start."""
    value = config.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false"):
        return None
    if str(value).lower() != "true":
        return value
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(config.output_dir) if os.path.isdir(config.output_dir) else None
    if last is None:
        raise ValueError(f"--resume_from_checkpoint True: no checkpoint-* folder in --output_dir {config.output_dir}. "
                         f"Pass the checkpoint folder itself, or write checkpoints with --save_strategy steps "
                         f"--save_steps N.")
    return last


def report(trainer, callback, script_args: ScriptArguments, is_demo: bool) -> None:
    """On the main process: ``results.json`` (the evaluation before and after) in ``output_dir`` and the
    before/after table on the console."""
    if not trainer.is_world_process_zero():
        return
    output_dir = trainer.args.output_dir
    summary = {"method": trainer.method_name, "dataset": script_args.dataset,
               "forget_split": script_args.forget_split, "demo": is_demo,
               "evaluation": {h["label"]: h["metrics"] for h in callback.history}}
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    from .hub import forget_split_label

    # a log line may not name the forgotten: mmubench's forget_split is the list of concept names
    split = forget_split_label(script_args.dataset, script_args.forget_split) or "forget split withheld"
    print(f"\n{trainer.method_name} on {script_args.dataset} ({split}):")
    print(callback.table())
    print(f"\nadapter, model card (README.md), results and plot written to {output_dir}/")


def run_method(trainer_cls, config_cls, demo_defaults: dict | None = None, argv=None,
               trainer_kwargs: Callable[[ScriptArguments, BenchmarkData, object, object], dict] | None = None,
               script_args_cls=None):
    """What an ``examples/run_<method>.py`` ``main()`` does, in one call, for any trainer class (tests, own
    trainers): parse, load, build the trainer, train, save, report. Returns ``(trainer, evaluation callback)``."""
    script_args, config = parse_args(config_cls, demo_defaults, argv, script_args_cls)
    model, processor, is_demo = load_model_and_processor(script_args)
    data = load_data(script_args)
    peft_config = lora_config(script_args)
    callback = unlearning_eval_callback(script_args, config, processor, data)
    extra = trainer_kwargs(script_args, data, model, processor) if trainer_kwargs else {}
    if "ref_model" not in extra:
        extra["ref_model"] = reference_model(script_args, trainer_cls, config, peft_config)
    trainer = trainer_cls(model=model, args=config, forget_dataset=data.forget, retain_dataset=data.retain,
                          processing_class=processor, peft_config=peft_config, callbacks=[callback],
                          model_card_kwargs=model_card_kwargs(script_args), **extra)
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    report(trainer, callback, script_args, is_demo)
    return trainer, callback
