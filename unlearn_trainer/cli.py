"""The helpers each ``examples/run_<method>.py`` ``main()`` calls in order: :func:`parse_args`,
:func:`load_model_and_processor`, :func:`load_data`, :func:`lora_config`, :func:`unlearning_eval_callback`,
:func:`reference_model` and :func:`model_card_kwargs` (the trainer's arguments), :func:`checkpoint_to_resume`,
then :func:`report` after training and saving. :func:`run_method` is the same sequence in one call.

Every example parses ``(ScriptArguments, <Method>Config, trl.ModelConfig)`` with TRL's ``TrlParser``, as TRL's own
scripts do: ``--config file.yaml`` reads options from a YAML file (the command line wins over it), the model, LoRA
and quantization options are TRL's ``ModelConfig`` (``get_peft_config``, ``get_quantization_config``), and
``--help`` lists the data options, the method's own options, the model's, then ``TrainingArguments``. With no
``--model_name_or_path`` it runs the offline ToyWorld demo: the cached memorizing model, the 10% forget split
and the method's defaults scaled to that world (``demo_defaults``); any argument given on the command line
wins over those defaults. With ``--model_name_or_path`` it loads a real model (``from_pretrained``) and a
dataset given by ``--dataset`` (a registered loader name, a local ``datasets.save_to_disk`` folder, a JSON /
JSONL file, or a Hub dataset name).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .data.benchmarks import BenchmarkData
from .vision.adapters import language_model_lora_targets

__all__ = ["ScriptArguments", "MODEL_DEFAULTS", "build_parser", "parse_args", "load_model_and_processor", "load_data",
           "data_split", "lora_config", "probe_data", "retrained_model", "load_saved_model", "parse_steps",
           "unlearning_eval_callback", "reference_model", "model_card_kwargs", "checkpoint_to_resume", "report",
           "run_method"]


@dataclass
class ScriptArguments:
    """Data and evaluation options shared by every example (the model's are TRL's ``ModelConfig``)."""

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
    processor_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to --model_name_or_path."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Only for models you trust; off by default."})
    unlearning_eval_steps: int | None = field(default=None, metadata={"help": "Also run the unlearning evaluation every N steps."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Cap rows per evaluation split."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation length for evaluation."})
    probes: str = field(
        default="cheap",
        metadata={"help": "Robustness probes run before and after unlearning (robustness.json / .md, the card's "
                          "Robustness table): 'cheap' (mia,paraphrase,mc), 'all', 'none' or a comma list of mia, "
                          "paraphrase, shift, mc, forget_quality, relearning, quantization."},
    )
    retrained_model: str | None = field(
        default=None,
        metadata={"help": "A model trained without the forget set (folder or Hub id) for forget quality, PrivLeak "
                          "and the relearning baseline. ToyWorld: its retrained model for the split, when cached "
                          "or with --build_retrained true."},
    )
    build_retrained: bool = field(default=False, metadata={"help": "ToyWorld: build the retrained model for the "
                                                                   "split if it is not cached (minutes)."})
    relearn_steps: str = field(default="0,5,10,20", metadata={"help": "Relearning probe: the fine-tuning step counts "
                                                                      "at which recall is measured."})
    probe_before: bool = field(default=True, metadata={"help": "Also probe the model before unlearning (false: "
                                                               "after only, for sweeps that all start from one model)."})


# Our defaults for TRL's ModelConfig fields (TRL's own: no LoRA, r=16, alpha=32, dropout 0.05, float32, no nested
# quantization, task type CAUSAL_LM): LoRA r=8 on the language model, the checkpoint's dtype, QLoRA's NF4 with double
# quantization (Dettmers et al. 2023), and a plain LoraConfig (no task type: the model is a VLM, not a causal LM).
MODEL_DEFAULTS = dict(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0, dtype="auto",
                      use_bnb_nested_quant=True, lora_task_type=None)


_HELP = {"model_name_or_path": "Hub id or local path of the VLM; unset: the offline ToyWorld demo model.",
         "dtype": "Load the model in this dtype ('auto': the checkpoint's).",  # TRL's help names TRL's default
         "lora_target_modules": "Modules to adapt (names or one regex); unset: the language model's attention and "
                                "MLP projections (unlearn_trainer.language_model_lora_targets)."}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Option defaults shown, the example's docstring kept as written."""


def build_parser(config_cls, script_args_cls=None, description: str | None = None):
    """TRL's ``TrlParser`` over ``(script_args_cls, config_cls, ModelConfig)`` with our defaults, a short usage line,
    ``description`` first and the options in groups: data, the method's own, model (``ModelConfig``), training."""
    from transformers import TrainingArguments
    from trl import ModelConfig, TrlParser

    script_args_cls = script_args_cls or ScriptArguments
    method = config_cls.__name__.removesuffix("Config")
    parser = TrlParser((script_args_cls, config_cls, ModelConfig), formatter_class=_HelpFormatter,
                       description=description or (config_cls.__doc__ or "").strip().split("\n\n")[0],
                       usage="%(prog)s [--config FILE.yaml] [--option VALUE ...]  (a YAML file's values are defaults; "
                             "the command line wins)")
    parser.set_defaults(**MODEL_DEFAULTS)
    training = {f.name for f in dataclasses.fields(TrainingArguments)}
    sections = [(f"data and evaluation ({script_args_cls.__name__})",
                 {f.name for f in dataclasses.fields(script_args_cls)}),
                (f"{method} ({config_cls.__name__}, without TrainingArguments)",
                 {f.name for f in dataclasses.fields(config_cls)} - training),
                ("model, LoRA and quantization (trl.ModelConfig)", {f.name for f in dataclasses.fields(ModelConfig)}),
                ("training (transformers.TrainingArguments)", training)]
    options = parser._optionals
    groups = [parser.add_argument_group(title) for title, _ in sections]
    for action in list(options._group_actions):
        if action.help:  # help texts are plain text ("10%"), not argparse format strings
            action.help = re.sub(r"%(?!\()", "%%", action.help)
        action.help = _HELP.get(action.dest, action.help)
        for group, (_, names) in zip(groups, sections):
            if action.dest in names:
                options._group_actions.remove(action)
                group._group_actions.append(action)
                break
    return parser


def parse_args(config_cls, demo_defaults: dict | None = None, argv=None, script_args_cls=None,
               description: str | None = None):
    """``(script_args, config, model_args)`` as TRL's scripts: ``script_args_cls`` (default :class:`ScriptArguments`;
    a subclass may add a method's own inputs), the method's config and TRL's ``ModelConfig``, from the command line
    and ``--config file.yaml``. Precedence: command line, YAML file, demo defaults (only when no model is given),
    our defaults (``MODEL_DEFAULTS``, no checkpoints, ``report_to`` none), the dataclasses' own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    in_yaml = _config_file_keys(argv)
    probe = build_parser(config_cls, script_args_cls, description)
    script_args, _, model_args = probe.parse_args_and_config(args=argv + _needs_output_dir(argv, in_yaml),
                                                             return_remaining_strings=True)[:3]
    # No checkpoints unless asked; --save_steps alone asks (it would otherwise be ignored under save_strategy "no").
    asked = any(a.startswith("--save_steps") for a in argv) or "save_steps" in in_yaml
    defaults = {"output_dir": f"outputs/{config_cls.__name__.replace('Config', '').lower()}-{_dataset_tag(script_args)}",
                "report_to": "none", "logging_steps": 10, "save_strategy": "steps" if asked else "no"}
    if model_args.model_name_or_path is None:
        defaults.update(demo_defaults or {})
    parser = build_parser(config_cls, script_args_cls, description)
    parser.set_defaults(**defaults)
    return tuple(parser.parse_args_and_config(args=argv))


def _config_file_keys(argv) -> set[str]:
    """The option names a ``--config`` YAML file sets (TrlParser reads the file itself)."""
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return set()
    import yaml

    with open(argv[argv.index("--config") + 1]) as f:
        config = yaml.safe_load(f)
    return set(config) if isinstance(config, dict) else set()


def _needs_output_dir(argv, in_yaml=()):
    given = any(a.startswith("--output_dir") for a in argv) or "output_dir" in in_yaml
    return [] if given else ["--output_dir", "unused"]


def _dataset_tag(script_args) -> str:
    name = os.path.basename(os.path.normpath(script_args.dataset)).split(".")[0] or "data"
    return f"{name}-{script_args.forget_split}" if name == "toyworld" else name


def load_model_and_processor(model_args, script_args: ScriptArguments | None = None):
    """``(model, processor, is_demo)``: the ToyWorld full model, or ``from_pretrained`` of the model of
    ``model_args`` (TRL's ``ModelConfig``; quantized by ``get_quantization_config``)."""
    script_args = script_args or ScriptArguments()
    if model_args.model_name_or_path is None:
        if model_args.load_in_4bit or model_args.load_in_8bit:
            raise ValueError("--load_in_4bit / --load_in_8bit quantize a model given by --model_name_or_path; the "
                             "ToyWorld demo model is not quantized.")
        from .toyworld.full_model import load_full_model

        model, processor = load_full_model()
        return model, processor, True
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"trust_remote_code": script_args.trust_remote_code, "revision": model_args.model_revision,
              "dtype": "auto" if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit or model_args.load_in_8bit:
        import importlib.util

        from trl import get_quantization_config

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError("--load_in_4bit / --load_in_8bit need bitsandbytes: pip install 'unlearn-trainer[bnb]'")
        # 4-bit computes in the model's dtype ('auto': bitsandbytes' float32 default)
        compute_dtype = None if model_args.dtype in (None, "auto") else model_args.dtype
        kwargs["quantization_config"] = get_quantization_config(dataclasses.replace(model_args, dtype=compute_dtype))
        if torch.cuda.is_available():  # each process loads its quantized copy onto its own GPU (TRL 1.x dropped
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # get_kbit_device_map; same map)
    model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **kwargs)
    processor = AutoProcessor.from_pretrained(
        script_args.processor_name_or_path or model_args.model_name_or_path,
        trust_remote_code=script_args.trust_remote_code, revision=model_args.model_revision,
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


def lora_config(model_args, model=None):
    """TRL's ``get_peft_config`` of ``model_args`` (``--use_peft``, ``--lora_r``, ...), or None for full training;
    without ``--lora_target_modules``, LoRA on the language model of ``model``'s family
    (:func:`~unlearn_trainer.language_model_lora_targets`)."""
    from trl import get_peft_config

    if model_args.use_peft and not model_args.lora_target_modules:
        model_args = dataclasses.replace(model_args, lora_target_modules=language_model_lora_targets(model))
    return get_peft_config(model_args)


def parse_steps(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,5,10,20"`` -> ``(0, 5, 10, 20)`` (``--relearn_steps``)."""
    if not isinstance(value, str):
        return tuple(int(v) for v in value)
    try:
        steps = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--relearn_steps {value!r}: expected comma-separated step counts, e.g. 0,5,10,20.") from None
    if not steps or any(s < 0 for s in steps):
        raise ValueError(f"--relearn_steps {value!r}: expected non-negative step counts, e.g. 0,5,10,20.")
    return steps


def probe_data(script_args: ScriptArguments, data: BenchmarkData):
    """The robustness probes' rows (:class:`~unlearn_trainer.evaluation.robustness.ProbeData`): ToyWorld's own
    (never-seen people, paraphrases, image shifts...), otherwise what the evaluation splits have (``forget``,
    ``retain``, a never-seen split named ``unseen`` or ``nonmember``, ``paraphrase_*``, ``shift_*``, ``mc_*``)."""
    from .evaluation.robustness import ProbeData

    if "world" in data.extras:
        from .toyworld.full_model import probe_data as toyworld_probe_data

        return toyworld_probe_data(data.extras["world"], data.extras["ratio"], max_rows=script_args.max_eval_rows)
    splits = data.eval_splits
    forget = next((splits[k] for k in splits if k == "forget"), None) or \
        next((splits[k] for k in splits if "forget" in k), [])
    retain = splits.get("retain") or next((splits[k] for k in splits if "retain" in k), None)
    never_seen = splits.get("unseen") or splits.get("nonmember")
    return ProbeData.from_rows(list(forget), None if retain is None else list(retain),
                               None if never_seen is None else list(never_seen), splits=splits,
                               max_rows=script_args.max_eval_rows)


_RETRAINED_PROBES = ("mia", "forget_quality", "relearning")


def retrained_model(script_args: ScriptArguments, data: BenchmarkData, probes, progress: bool = True):
    """``(model, processor)`` trained without the forget set, or None: ``--retrained_model`` (a saved model), or
    for ToyWorld its retrained model for the split when cached (or ``--build_retrained true``). Loaded only when a
    chosen probe uses it (MIA's PrivLeak, forget quality, the relearning baseline)."""
    import logging

    if not any(p in _RETRAINED_PROBES for p in probes):
        return None
    if script_args.retrained_model:
        model, processor = load_saved_model(script_args.retrained_model, None, script_args)
        return model, processor
    if "world" not in data.extras:
        return None
    from .toyworld import full_model

    loader = getattr(full_model, "load_retrained_model", None)
    if loader is None:
        return None
    try:
        return loader(data.extras["world"], ratio=data.extras["ratio"], build=script_args.build_retrained,
                      progress=progress)
    except FileNotFoundError:
        logging.getLogger(__name__).warning(
            "No cached ToyWorld retrained model for %s: forget quality and PrivLeak are skipped. Build it with "
            "--build_retrained true (minutes) or `python -m unlearn_trainer.toyworld build`.", script_args.forget_split)
        return None


def load_saved_model(model: str | None, adapter: str | None = None, script_args: ScriptArguments | None = None):
    """``(model, processor)`` of a saved model (folder or Hub id; None: the ToyWorld demo model), with the PEFT
    ``adapter`` (folder) on top if given. Clear errors for a missing folder and an adapter made for another base."""
    script_args = script_args or ScriptArguments()
    for what, path in (("--model", model), ("--adapter", adapter)):
        if path and (os.path.sep in path or path.startswith(".")) and not os.path.exists(path):
            raise FileNotFoundError(f"{what} {path}: no such folder. Pass a saved model folder (save_pretrained) or "
                                    f"a Hub id{' for --model' if what == '--model' else ''}.")
    if model is not None and os.path.isdir(model) and not os.path.exists(os.path.join(model, "config.json")):
        hint = " It holds an adapter: pass it as --adapter and its base as --model." \
            if os.path.exists(os.path.join(model, "adapter_config.json")) else ""
        raise FileNotFoundError(f"--model {model}: no config.json in that folder, so it is not a saved model.{hint}")
    if adapter is not None and not os.path.exists(os.path.join(adapter, "adapter_config.json")):
        raise FileNotFoundError(f"--adapter {adapter}: no adapter_config.json in that folder (a PEFT adapter saved "
                                f"by save_pretrained / the examples' output_dir).")
    from trl import ModelConfig

    loaded, processor, _ = load_model_and_processor(ModelConfig(model_name_or_path=model, dtype="auto"), script_args)
    if adapter is None:
        return loaded, processor
    from peft import PeftModel

    try:
        loaded = PeftModel.from_pretrained(loaded, adapter)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"--adapter {adapter} does not fit --model {model or 'the ToyWorld demo model'}: "
                         f"{str(err).splitlines()[0][:300]}. Pass the base model the adapter was trained on (its "
                         f"adapter_config.json names it in base_model_name_or_path).") from err
    loaded.eval()
    return loaded, processor


def unlearning_eval_callback(script_args: ScriptArguments, config, processor, data: BenchmarkData):
    """The before/after unlearning evaluation on the data's evaluation splits (``unlearning_eval.*`` in
    ``output_dir``) and the robustness probes of ``--probes`` (``robustness.*``); pass it in ``callbacks=`` and give
    it to :func:`report` after training."""
    from .evaluation import UnlearningEvalCallback, score_predictions
    from .evaluation.robustness import parse_probes

    probes = parse_probes(script_args.probes)
    pdata = probe_data(script_args, data) if probes else None
    retrained = retrained_model(script_args, data, probes, progress=not getattr(config, "disable_tqdm", False))
    probe_kwargs = {"relearn_steps": parse_steps(script_args.relearn_steps)}
    if retrained is not None and pdata is not None and "world" in data.extras and not script_args.retrained_model:
        # ToyWorld's own retrained model: its numbers are kept next to it, for every later run on the same rows
        from .evaluation.robustness import ProbeResultCache
        from .toyworld.full_model import retrained_model_dir

        folder = retrained_model_dir(data.extras["world"], ratio=data.extras["ratio"])
        probe_kwargs["retrained_cache"] = ProbeResultCache.for_data(
            folder, pdata.capped(script_args.max_eval_rows), relearn_steps=probe_kwargs["relearn_steps"],
            max_new_tokens=script_args.max_new_tokens)
    return UnlearningEvalCallback(processor, data.eval_splits, eval_steps=script_args.unlearning_eval_steps,
                                  output_dir=config.output_dir, is_well_formed=data.is_well_formed,
                                  max_new_tokens=script_args.max_new_tokens,
                                  row_metrics=score_predictions if data.scoring else None,
                                  probes=probes, probe_data=pdata, retrained=retrained,
                                  probe_kwargs=probe_kwargs, probe_before=script_args.probe_before)


def reference_model(model_args, script_args: ScriptArguments, trainer_cls, config, peft_config):
    """``ref_model=`` for the trainer: under DeepSpeed ZeRO-3 without LoRA, a method that uses the frozen model
    (or a KL retain term) gets a second load of the model (ZeRO-3 partitions the model as it loads, so it cannot
    be copied); otherwise None (the trainer builds its reference itself)."""
    if peft_config is not None or not (trainer_cls.needs_reference or config.retain_loss == "kl"):
        return None
    from transformers.integrations import is_deepspeed_zero3_enabled

    return load_model_and_processor(model_args, script_args)[0] if is_deepspeed_zero3_enabled() else None


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
    """On the main process: ``results.json`` (the evaluation and the probes before and after) in ``output_dir`` and
    the before/after tables on the console."""
    if not trainer.is_world_process_zero():
        return
    output_dir = trainer.args.output_dir
    summary = {"method": trainer.method_name, "dataset": script_args.dataset,
               "forget_split": script_args.forget_split, "demo": is_demo,
               "evaluation": {h["label"]: h["metrics"] for h in callback.history},
               "robustness": callback.robustness}
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    from .hub import forget_split_label

    # a log line may not name the forgotten: mmubench's forget_split is the list of concept names
    split = forget_split_label(script_args.dataset, script_args.forget_split) or "forget split withheld"
    print(f"\n{trainer.method_name} on {script_args.dataset} ({split}):")
    print(callback.table())
    if callback.robustness:
        print(f"\nRobustness (probes before and after; robustness.json):\n{callback.robustness_table()}")
    print(f"\nadapter, model card (README.md), results and plot written to {output_dir}/")


def run_method(trainer_cls, config_cls, demo_defaults: dict | None = None, argv=None,
               trainer_kwargs: Callable[[ScriptArguments, BenchmarkData, object, object], dict] | None = None,
               script_args_cls=None, description: str | None = None):
    """What an ``examples/run_<method>.py`` ``main()`` does, in one call, for any trainer class (tests, own
    trainers): parse, load, build the trainer, train, save, report. Returns ``(trainer, evaluation callback)``."""
    script_args, config, model_args = parse_args(config_cls, demo_defaults, argv, script_args_cls, description)
    model, processor, is_demo = load_model_and_processor(model_args, script_args)
    data = load_data(script_args)
    peft_config = lora_config(model_args, model)
    callback = unlearning_eval_callback(script_args, config, processor, data)
    extra = trainer_kwargs(script_args, data, model, processor) if trainer_kwargs else {}
    if "ref_model" not in extra:
        extra["ref_model"] = reference_model(model_args, script_args, trainer_cls, config, peft_config)
    trainer = trainer_cls(model=model, args=config, forget_dataset=data.forget, retain_dataset=data.retain,
                          processing_class=processor, peft_config=peft_config, callbacks=[callback],
                          model_card_kwargs=model_card_kwargs(script_args), **extra)
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    report(trainer, callback, script_args, is_demo)
    return trainer, callback
