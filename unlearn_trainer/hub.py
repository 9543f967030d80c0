"""Model cards and Hub publishing for unlearned models.

:meth:`UnlearnTrainer.save_model` writes the card (``README.md``: ``huggingface_hub.ModelCard.from_template`` with
``templates/model_card.md``) next to the adapter or model; :meth:`UnlearnTrainer.push_to_hub` uploads the adapter (or
model), its processor and the card, and nothing else from the output folder: the evaluation outputs hold the model's generated answers to forget
questions, so they, checkpoints, logs, results and pickles stay local. Trainer's per-checkpoint push
(``hub_strategy="every_save"``) goes through the same allow-list (:func:`push_checkpoint_to_hub`). The card states
the method (with its paper), every hyperparameter, what was forgotten (counts and one opaque digest of the row ids,
never a name, id, question, answer or attribute), the before/after evaluation, and the limits of unlearning.
Repos are created private by default (``UnlearnConfig.hub_private_repo``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from accelerate.utils import is_peft_model

from .citation import Citation

__all__ = [
    "Citation",
    "DEMO_BASE_MODEL",
    "DEMO_MODEL_CONFIG_KEY",
    "card_tags",
    "base_model_info",
    "hyperparameters",
    "effective_mixed_precision",
    "forgotten_summary",
    "forget_set_digest",
    "public_base_model_name",
    "publish_adapter_configs",
    "render_model_card",
    "write_model_card",
    "upload_allow_patterns",
    "push_trainer_to_hub",
    "push_checkpoint_to_hub",
]

DEMO_BASE_MODEL = "ToyWorld tiny LLaVA (offline demo)"
# The config attribute the ToyWorld builder and loader set on the demo model (``unlearn_trainer.toyworld``): a card
# names such a model's base as the demo.
DEMO_MODEL_CONFIG_KEY = "unlearn_trainer_toyworld_demo"
#: Trainer.push_to_hub's own ignore patterns (private files and checkpoint folders), kept for ours.
_IGNORE_PATTERNS = ["_*", "checkpoint-*"]
logger = logging.getLogger(__name__)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
#: A folder of the Hub cache: ``.../models--<org>--<name>/snapshots/<revision>``.
_HUB_CACHE = re.compile(r"models--([^/\\]+)[/\\]snapshots(?:[/\\]|$)")
#: Forget-split names that are a benchmark's ratio (``forget10``, ``forget_05``, ``5``), never forget-set content.
_RATIO_SPLIT = re.compile(r"[A-Za-z_]*\d+")


# -- what the card is made of --------------------------------------------------------------------------------------
def _unwrap(trainer):
    return trainer.accelerator.unwrap_model(trainer.model)


def _active_peft_config(model):
    adapter = getattr(model, "active_adapter", "default")
    adapter = adapter[0] if isinstance(adapter, (list, tuple)) else adapter
    return model.peft_config.get(adapter) or next(iter(model.peft_config.values()))


def card_tags(method_name: str, adapter: bool, lora: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """Hub tags: ``unlearning``, the method, ``vision-language``, ``peft`` (and ``lora``) for an adapter, then
    ``extra``; first occurrence wins."""
    tags = ["unlearning", method_name, "vision-language"] + (["peft"] if adapter else []) + (["lora"] if lora else [])
    return list(dict.fromkeys([*tags, *extra]))


def _method_names(trainer_cls: type) -> set[str]:
    """The names of every method (a trainer class declaring a ``citation``) among the subclasses of the base trainer
    at the root of ``trainer_cls``'s hierarchy (the class that first declares ``method_name``)."""
    root = next(c for c in reversed(trainer_cls.__mro__) if "method_name" in vars(c))
    names, todo = set(), [root]
    while todo:
        cls = todo.pop()
        if vars(cls).get("citation") is not None:
            names.add(cls.method_name)
        todo.extend(cls.__subclasses__())
    return names


def _citation(trainer) -> Citation | None:
    """The paper of the trainer's method: the ``citation`` its class declares (``None``: no paper declared)."""
    return getattr(type(trainer), "citation", None)


def _trainer_tags(trainer, extra: Sequence[str] = ()) -> list[str]:
    model = _unwrap(trainer)
    adapter = is_peft_model(model)
    lora = adapter and "LORA" in str(getattr(_active_peft_config(model), "peft_type", ""))
    # a model reused across trainers carries every method's tag: keep only this trainer's method
    other_methods = _method_names(type(trainer)) - {trainer.method_name}
    model_tags = [t for t in getattr(model, "model_tags", None) or [] if t not in other_methods]
    return card_tags(trainer.method_name, adapter, lora, [*extra, *model_tags])


def _is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not os.path.exists(name)


def _hub_id_of(name: str) -> str | None:
    """The Hub id of a model named by its id or by its folder in the Hub cache (``models--org--name/snapshots/...``)."""
    if _is_hub_id(name):
        return name
    cached = _HUB_CACHE.search(name)
    return cached.group(1).replace("--", "/") if cached else None


def public_base_model_name(name: str | None, finetuned_from: str | None = None) -> str | None:
    """How a saved file may name the base model: its Hub id when known (``finetuned_from`` if that is a Hub id, the
    name itself, or the id of a Hub-cache folder), otherwise only the folder name, never a local path."""
    if finetuned_from and _is_hub_id(finetuned_from):
        return finetuned_from
    if not name:
        return name
    return _hub_id_of(name) or Path(name).name


def base_model_info(model) -> tuple[str, str | None, bool]:
    """``(display name, Hub id or None, is the ToyWorld demo)`` of the model an adapter/unlearning started from.

    Local paths are reduced to their last component (a card must not reveal a home directory)."""
    base = model.get_base_model() if is_peft_model(model) else model
    name = str(getattr(base, "name_or_path", "") or getattr(getattr(base, "config", None), "_name_or_path", "") or "")
    if getattr(getattr(base, "config", None), DEMO_MODEL_CONFIG_KEY, None):
        return DEMO_BASE_MODEL, None, True
    hub_id = _hub_id_of(name) if name else None
    if hub_id:
        return hub_id, hub_id, False
    if name:
        return f"local model `{Path(name).name}`", None, False
    return "a model built in memory (no `name_or_path`)", None, False


def _public(value: Any) -> Any:
    """A value as it may appear on a public card: local paths are cut to their last component."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value and (
        os.path.isabs(value) or value.startswith("~") or (os.sep in value and os.path.exists(value))
    ):
        return f".../{Path(value).name}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_public(v) for v in items]
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    return getattr(value, "value", value)  # enums (lr_scheduler_type, optim, peft_type) by value


def hyperparameters(trainer) -> dict[str, dict[str, Any]]:
    """Every setting that defines the run: ``{"method": ..., "training": ..., "adapter": ...}``.

    ``method`` holds every field the trainer's config adds to ``TrainingArguments`` (the shared unlearning fields and
    the method's own); ``training`` the optimisation settings and the steps actually trained; ``adapter`` the PEFT
    config and the trainable-parameter count (empty for a full model)."""
    from transformers import TrainingArguments

    args = trainer.args
    base_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    method = {f.name: _public(getattr(args, f.name)) for f in dataclasses.fields(args) if f.name not in base_fields}
    per_device, accum, world = args.per_device_train_batch_size, args.gradient_accumulation_steps, args.world_size
    training: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": _public(args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "optim": _public(args.optim),
        "max_grad_norm": args.max_grad_norm,
    }
    if args.max_steps > 0:
        training["max_steps"] = args.max_steps
    else:
        training["num_train_epochs"] = args.num_train_epochs
    training.update({
        "steps_trained": trainer.state.global_step,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accum,
        "num_processes": world,
        "total_train_batch_size": per_device * accum * world,
        "seed": args.seed,
        "precision": _precision(trainer),
        "gradient_checkpointing": args.gradient_checkpointing,
    })
    adapter: dict[str, Any] = {}
    model = _unwrap(trainer)
    if is_peft_model(model):
        config = _active_peft_config(model).to_dict()
        keys = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "bias",
                "modules_to_save", "use_rslora", "use_dora", "init_lora_weights", "layers_to_transform",
                "rank_pattern", "alpha_pattern", "task_type")
        adapter = {k: _public(config[k]) for k in keys if k in config and config[k] not in (None, [], {}, "")}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    share = f"{trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3g}%)"
    (adapter if adapter else training)["trainable_parameters"] = share
    return {"method": method, "training": training, "adapter": adapter}


def effective_mixed_precision(accelerator) -> str:
    """The mixed precision that really runs: ``"no"``, ``"fp16"``, ``"bf16"`` or ``"fp8"``. Accelerate keeps
    ``mixed_precision="fp16"`` on CPU but runs no autocast there (``native_amp`` is False); under DeepSpeed the
    engine's own ``fp16`` / ``bf16`` sections decide."""
    from accelerate.utils import DistributedType

    mixed = str(getattr(accelerator, "mixed_precision", "no") or "no")
    distributed = getattr(accelerator, "distributed_type", None)
    if distributed == DistributedType.DEEPSPEED:
        plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
        config = getattr(plugin, "deepspeed_config", None) or {}
        enabled = {name: (config.get(name) or {}).get("enabled") for name in ("bf16", "fp16")}
        if config and "auto" not in enabled.values():
            return next((name for name in ("bf16", "fp16") if enabled[name] is True), "no")
        return mixed
    if mixed != "no" and distributed != DistributedType.MEGATRON_LM and not getattr(accelerator, "native_amp", False):
        return "no"
    return mixed


def _precision(trainer) -> str:
    """What ran, not what was asked: the active mixed precision and the dtype of the trained (and frozen) weights."""
    model = _unwrap(trainer)
    dtypes = {True: set(), False: set()}
    for p in model.parameters():
        if p.is_floating_point():
            dtypes[p.requires_grad].add(str(p.dtype).replace("torch.", ""))
    weights = f"{', '.join(sorted(dtypes[True])) or 'no'} trained weights"
    if dtypes[False] and dtypes[False] != dtypes[True]:
        weights += f", {', '.join(sorted(dtypes[False]))} frozen weights"
    return f"{effective_mixed_precision(trainer.accelerator)} mixed precision; {weights}"


def _column(rows, key: str) -> list | None:
    """One field of every row, or None if no row has it; a ``datasets.Dataset`` is read by column (no image
    decoding)."""
    if rows is None:
        return None
    names = getattr(rows, "column_names", None)
    if names is not None:
        return list(rows[key]) if key in names else None
    values = [row.get(key) if isinstance(row, dict) else None for row in (rows[i] for i in range(len(rows)))]
    return values if any(v not in (None, "", []) for v in values) else None


def _unique(values) -> list:
    return list(dict.fromkeys(v for v in values if v not in (None, "")))


def forget_set_digest(row_ids) -> str:
    """The forget set's opaque fingerprint on the card: the first 12 hex characters of the SHA-256 of its distinct
    row ids, sorted and joined by newlines. A data owner recomputes it from the ids to check which set was forgotten;
    the card never lists the ids themselves (concept-folder ids carry a person's name)."""
    text = "\n".join(sorted({str(v) for v in row_ids}))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def forgotten_summary(trainer) -> dict[str, Any]:
    """What the trainer was asked to forget, as counts and one opaque digest only.

    The number of rows, the :func:`forget_set_digest` of their ``id`` fields (None if no row has one), and the
    numbers of distinct identities (``identity_id``) and concepts (the config's ``concept_key``, default
    ``concepts``). Names, ids, questions, answers and attributes never leave this function: for identity unlearning
    a concept, and a concept-folder row id, is the person's name."""
    rows = trainer.forget_dataset
    concept_key = getattr(trainer.args, "concept_key", "concepts")
    concepts = _column(rows, concept_key)
    groups = None
    if concepts is not None:
        groups = _unique(tuple(c) if isinstance(c, (list, tuple)) else (c,) for c in concepts if c)
    row_ids = _unique(str(v) for v in (_column(rows, "id") or []))
    retain = trainer.retain_dataset
    return {
        "rows": len(rows),
        "ids": len(row_ids),
        "digest": forget_set_digest(row_ids) if row_ids else None,
        "identities": len(_unique(str(v) for v in (_column(rows, "identity_id") or []))),
        "concepts": None if groups is None else len(groups),
        "retain_rows": 0 if retain is None else len(retain),
        # RMU / SCRUB: the retain rows enter the method's own objective, not the base's retain term
        "retain_loss": "own" if getattr(trainer, "retain_in_objective", False) else trainer.args.retain_loss,
        "retain_weight": trainer.args.retain_weight,
    }


def _eval_callback(trainer):
    from .evaluation.callback import UnlearningEvalCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, UnlearningEvalCallback) and callback.history:
            return callback
    return None


# -- rendering --------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_cell(v) for v in value) if value else "[]"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) if value else "{}"
    elif isinstance(value, str) and "`" not in value:
        text = f"`{value}`"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(values: dict[str, Any]) -> str:
    return "\n".join(["| name | value |", "|---|---|", *(f"| `{k}` | {_cell(v)} |" for k, v in values.items())])


def forget_split_label(dataset: str | None, forget_split: str | None) -> str | None:
    """How a card or a log line may name the forget split: by name only where the name cannot carry forget-set
    content (ToyWorld's and the benchmarks' ratios, a split of a saved / Hub dataset); for ``mmubench``, whose
    split is the list of forgotten concepts, only their number; otherwise nothing."""
    if not dataset or not forget_split:
        return None
    loader = dataset.partition(":")[0]
    if loader == "mmubench":
        count = len([c for c in str(forget_split).split(",") if c.strip()])
        return f"{count} forget concept{'s' if count != 1 else ''} (names withheld)"
    from .data.benchmarks import BENCHMARKS

    is_ratio = bool(_RATIO_SPLIT.fullmatch(str(forget_split)))
    if loader == "toyworld" or loader in BENCHMARKS:
        return f"forget split `{forget_split}`" if is_ratio else None
    # a split of a saved / JSON / Hub dataset: the name of a DatasetDict key, not a list of concepts
    return f"forget split `{forget_split}`" if "," not in str(forget_split) else None


def _dataset_text(dataset: str | None, forget_split: str | None) -> tuple[str | None, str | None]:
    """(card line, Hub dataset id for the metadata) for a dataset given as a name, Hub id or local path."""
    if not dataset:
        return None, None
    name, hub_id = f"`{dataset}`", None  # a registered loader name, e.g. mllmu_bench
    if dataset == "toyworld":
        name = "ToyWorld (the package's offline demo world)"
    elif ":" in dataset:  # loader:local_path
        name = f"`{dataset.partition(':')[0]}` (local copy)"
    elif "/" in dataset and _is_hub_id(dataset):
        hub_id = dataset
    elif os.sep in dataset or os.path.exists(dataset):
        name = f"local data `{Path(dataset).name}`"
    split = forget_split_label(dataset, forget_split)
    return f"- Data: {name}" + (f", {split}" if split else ""), hub_id


def _forgotten_text(summary: dict, dataset_line: str | None) -> str:
    if summary["digest"]:
        digest = (f"; forget-set digest `{summary['digest']}` (SHA-256 of the {summary['ids']} sorted distinct row "
                  f"ids, first 12 hex digits: `unlearn_trainer.hub.forget_set_digest`)")
    else:
        digest = " (the rows carry no `id` field, so no digest)"
    lines = [f"- Forget set: **{summary['rows']} rows**{digest}"]
    if summary["identities"]:
        lines.append(f"- Identities: **{summary['identities']}** (ids withheld)")
    if summary["concepts"] is not None:
        lines.append(f"- Concepts: **{summary['concepts']}** (names withheld)")
    if summary["retain_rows"] and summary["retain_loss"] == "own":
        lines.append(f"- Retain set: **{summary['retain_rows']} rows**, in the method's own objective (see the "
                     f"method's settings)")
    elif summary["retain_rows"]:
        lines.append(f"- Retain set: **{summary['retain_rows']} rows**, retain term `{summary['retain_loss']}` "
                     f"with weight {summary['retain_weight']:g}")
    else:
        lines.append("- Retain set: none")
    if dataset_line:
        lines.append(dataset_line)
    return "\n".join(lines)


def _evaluation_text(trainer) -> str:
    callback = _eval_callback(trainer)
    labelled = {h["label"]: h for h in callback.history} if callback else {}
    if not any(k in labelled for k in ("before", "after")):
        return ("Not evaluated: no `UnlearningEvalCallback` with a before/after evaluation was attached to the "
                "trainer. Evaluate the model on your own forget and retain data before use.")
    first = labelled.get("before") or labelled["after"]
    sizes = ", ".join(f"{split} ({int(m['n'])} rows)" if "n" in m else split for split, m in first["metrics"].items())
    steps = ", ".join(f"{k} at step {labelled[k]['step']}" for k in ("before", "after") if k in labelled)
    return (f"Generation-based evaluation by `unlearn_trainer.evaluation.UnlearningEvalCallback` ({steps}) on: "
            f"{sizes}.\n\n{callback.table()}\n\nThe goal is lower scores on the forget splits (the model no longer "
            f"reproduces what it was asked to forget) with unchanged scores on the retain splits.")


def _robustness_text(trainer) -> str:
    """The probes' table (probe and metric names and numbers; their notes are fixed texts, never row content)."""
    callback = _eval_callback(trainer)
    if callback is None or not callback.robustness:
        return ("Not probed: no robustness probes ran (`--probes`, or `probes=` of `UnlearningEvalCallback`). "
                "Recall on the forget questions alone does not show whether the forgotten comes back under "
                "relearning, quantization, paraphrase or membership inference; run "
                "`python -m unlearn_trainer.evaluate --probes all` on this model.")
    return (f"Proof-of-forgetting probes by `unlearn_trainer.evaluation.run_probes` "
            f"({', '.join(callback.robustness)}): membership-inference AUC (forget vs never-seen rows; 0.5 = "
            f"indistinguishable), PrivLeak (MUSE, %; 0 is ideal, negative = still recognised) and forget quality (TOFU's "
            f"KS p-value; high = like the retrained model) against a model retrained without the forget set, "
            f"recall under paraphrase, image shifts, relearning and quantization, multiple choice by letter and by "
            f"log-likelihood.\n\n{callback.robustness_table()}")


def _usage(adapter: bool, base_hub_id: str | None, demo: bool, repo: str) -> str:
    if not adapter:
        return (f'from transformers import AutoModelForImageTextToText, AutoProcessor\n\n'
                f'model = AutoModelForImageTextToText.from_pretrained("{repo}")\n'
                f'processor = AutoProcessor.from_pretrained("{repo}")')
    if demo:
        return ("from peft import PeftModel\nfrom unlearn_trainer.toyworld.full_model import load_full_model\n\n"
                "base, processor = load_full_model()  # the ToyWorld demo model, built offline on first use\n"
                f'model = PeftModel.from_pretrained(base, "{repo}")')
    base = f'"{base_hub_id}"' if base_hub_id else '"<the base model this adapter was trained on>"'
    return (f"from peft import PeftModel\nfrom transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f"base = AutoModelForImageTextToText.from_pretrained({base})\n"
            f'model = PeftModel.from_pretrained(base, "{repo}")\n'
            f'processor = AutoProcessor.from_pretrained("{repo}")')


def _versions(adapter: bool) -> str:
    import huggingface_hub
    import torch
    import transformers

    from ._version import __version__

    versions = [("unlearn_trainer", __version__), ("Transformers", transformers.__version__)]
    if adapter:
        import peft

        versions.append(("PEFT", peft.__version__))
    versions += [("PyTorch", torch.__version__), ("huggingface_hub", huggingface_hub.__version__)]
    return "\n".join(f"- {name} {version}" for name, version in versions)


def _deviations_text(trainer) -> str:
    """The card's "Deviations from the paper" section: every way this run departs from the method's paper
    (:meth:`UnlearnTrainer.paper_deviations`), or that there is none."""
    citation = _citation(trainer)
    paper = f"the {citation.name} paper" if citation else "the method's paper"
    deviations = trainer.paper_deviations() if hasattr(trainer, "paper_deviations") else []
    if not deviations and not getattr(trainer.args, "paper_settings", None):
        return f"None recorded: `unlearn_trainer` records no settings of {paper} to compare this run with."
    if not deviations:
        return f"None: this run uses the settings of {paper} that `unlearn_trainer` records for it."
    lines = "\n".join(f"- {d}" for d in deviations)
    return (f"This run departs from the settings of {paper} as follows:"
            f"\n\n{lines}")


def _template() -> str:
    """The card's Jinja template, rendered by ``huggingface_hub.ModelCard.from_template``."""
    return (resources.files("unlearn_trainer") / "templates" / "model_card.md").read_text(encoding="utf-8")


def render_model_card(
    trainer,
    model_name: str | None = None,
    tags: str | Sequence[str] | None = None,
    license: str | None = None,
    language: str | Sequence[str] | None = None,
    finetuned_from: str | None = None,
    dataset: str | None = None,
    forget_split: str | None = None,
) -> str:
    """The model card (YAML front matter + Markdown) of an :class:`UnlearnTrainer`'s current model.

    Defaults for these arguments are the trainer's ``model_card_kwargs=`` (the examples pass ``dataset`` and
    ``forget_split``); explicit arguments win. ``finetuned_from`` overrides the detected base model; the license is
    the one given (the ToyWorld demo model is Apache-2.0, like this package) or left out. What was forgotten is
    given as counts and one digest only (:func:`forgotten_summary`); no option puts names on the card."""
    from huggingface_hub import ModelCard, ModelCardData

    from ._version import __version__

    defaults = dict(getattr(trainer, "model_card_kwargs", None) or {})
    given = dict(model_name=model_name, tags=tags, license=license, language=language, finetuned_from=finetuned_from,
                 dataset=dataset, forget_split=forget_split)
    if "include_concept_names" in defaults:
        raise ValueError("model_card_kwargs['include_concept_names'] was removed: a card never names the forgotten "
                         "(it gives counts and a digest of the row ids); drop the key.")
    kw = {**defaults, **{k: v for k, v in given.items() if v is not None}}

    model = _unwrap(trainer)
    adapter = is_peft_model(model)
    base_display, base_hub_id, demo = base_model_info(model)
    if kw.get("finetuned_from"):
        base_display = kw["finetuned_from"]
        base_hub_id = kw["finetuned_from"] if _is_hub_id(kw["finetuned_from"]) else None
        demo = False
    extra_tags = [kw["tags"]] if isinstance(kw.get("tags"), str) else list(kw.get("tags") or [])
    tags = _trainer_tags(trainer, extra_tags)
    dataset_line, dataset_hub_id = _dataset_text(kw.get("dataset"), kw.get("forget_split"))
    license = kw.get("license") or ("apache-2.0" if demo else None)
    metadata = ModelCardData(
        base_model=base_hub_id,
        library_name="peft" if adapter else "transformers",
        license=license,
        language=kw.get("language"),
        tags=tags,
        datasets=[dataset_hub_id] if dataset_hub_id else None,
        pipeline_tag="image-text-to-text",
    )

    args = trainer.args
    repo = trainer.hub_model_id or args.hub_model_id
    title = kw.get("model_name") or (repo or "").split("/")[-1] or Path(args.output_dir).name
    citation = _citation(trainer)
    method_display = trainer.method_name if citation is None else citation.name
    summary = forgotten_summary(trainer)
    params = hyperparameters(trainer)
    sections = [f"### Method ({type(args).__name__})\n\n{_table(params['method'])}",
                f"### Optimisation\n\n{_table(params['training'])}"]
    if params["adapter"]:
        sections.append(f"### Adapter (PEFT)\n\n{_table(params['adapter'])}")
    kind = "A LoRA adapter" if "lora" in tags else "A PEFT adapter" if adapter else "A model"
    base_ref = f"[{base_hub_id}](https://huggingface.co/{base_hub_id})" if base_hub_id else base_display
    card = ModelCard.from_template(
        metadata,
        template_str=_template(),
        title=title,
        summary=(f"{kind} for {base_ref}, unlearned with **{method_display}** "
                 f"(`{type(trainer).__name__}` from `unlearn_trainer`) to forget {summary['rows']} training rows."),
        method_display=method_display,
        method_summary=(citation.summary if citation
                        else f"the `{trainer.method_name}` objective of `{type(trainer).__name__}`."),
        citation=(str(citation) if citation
                  else "no paper is declared for this method (its trainer class has no `citation`)."),
        forgotten=_forgotten_text(summary, dataset_line),
        evaluation=_evaluation_text(trainer),
        robustness=_robustness_text(trainer),
        hyperparameters="\n\n".join(sections),
        deviations=_deviations_text(trainer),
        usage=_usage(adapter, base_hub_id, demo, repo or f"path/to/{title}"),
        demo_note=("- This is the ToyWorld demo: a 1-million-parameter LLaVA that memorised a synthetic world of "
                   "invented people. It is a toy to try the methods offline and says nothing about real models.\n"
                   if demo else ""),
        package_version=__version__,
        versions=_versions(adapter),
    )
    return str(card) + "\n"  # Jinja drops the template's final newline


def write_model_card(trainer, output_dir: str | None = None, **kwargs) -> str:
    """Render the card (see :func:`render_model_card`) into ``output_dir/README.md``; returns the path."""
    output_dir = output_dir or trainer.args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_model_card(trainer, **kwargs))
    return path


# -- publishing -------------------------------------------------------------------------------------------------
def upload_allow_patterns(trainer, folder: str) -> list[str]:
    """The files of ``folder`` that a push publishes: the card, the adapter (every adapter of a PEFT model) or the
    model's safetensors and configs, and the files the processor writes. Everything else stays local."""
    model = _unwrap(trainer)
    names = ["README.md"]
    if is_peft_model(model):
        for adapter in model.peft_config:
            prefix = "" if adapter == "default" else f"{adapter}/"
            names += [f"{prefix}adapter_model.safetensors", f"{prefix}adapter_config.json"]
    else:
        names += ["config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                  "model-*-of-*.safetensors"]
    if trainer.processing_class is not None:
        with tempfile.TemporaryDirectory() as tmp:
            trainer.processing_class.save_pretrained(tmp)
            names += sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob("*") if p.is_file())
    if not any(any(Path(folder).glob(n)) for n in names if n.endswith(".safetensors")):  # a glob itself is truthy
        raise FileNotFoundError(f"No safetensors weights in {folder} to push; expected one of "
                                f"{[n for n in names if n.endswith('.safetensors')]}.")
    return list(dict.fromkeys(names))


def publish_adapter_configs(trainer, folder: str) -> None:
    """Rewrite ``base_model_name_or_path`` in the adapter configs of ``folder`` (PEFT records the local path the base
    model was loaded from) to :func:`public_base_model_name`: the Hub id when known, otherwise the folder name."""
    model = _unwrap(trainer)
    if not is_peft_model(model):
        return  # a full model's config.json records no path (transformers drops `_name_or_path` on save)
    finetuned_from = (getattr(trainer, "model_card_kwargs", None) or {}).get("finetuned_from")
    for adapter in model.peft_config:
        path = Path(folder) / ("" if adapter == "default" else adapter) / "adapter_config.json"
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        name = config.get("base_model_name_or_path")
        public = public_base_model_name(name, finetuned_from)
        if public != name:
            config["base_model_name_or_path"] = public
            path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")  # PEFT's own format


def _hf_api():
    try:
        from transformers.utils import hf_api
    except ImportError:  # older transformers: a plain client
        from huggingface_hub import HfApi

        return HfApi()
    return hf_api()


def _upload_allowed(trainer, folder: str, commit_message: str | None, token: str | None, blocking: bool,
                    revision: str | None, allowed: list[str] | None = None):
    """The package's only upload to the Hub: the files of ``folder`` that :func:`upload_allow_patterns` lists
    (``allowed``, when the caller already has that list), with Trainer's ignore patterns; final pushes and checkpoint
    pushes both come through here."""
    return _hf_api().upload_folder(
        repo_id=trainer.hub_model_id,
        folder_path=folder,
        commit_message=commit_message,
        token=token,
        run_as_future=not blocking,
        allow_patterns=allowed if allowed is not None else upload_allow_patterns(trainer, folder),
        ignore_patterns=list(_IGNORE_PATTERNS),
        revision=revision,
    )


def push_trainer_to_hub(trainer, commit_message: str | None = "End of training", blocking: bool = True,
                        token: str | None = None, revision: str | None = None, private: bool | None = None,
                        **card_kwargs):
    """``Trainer.push_to_hub`` with this package's card and an allow-list upload (see the module docstring).

    Creates the repo (private unless ``private=False`` / ``hub_private_repo=False``), saves the model into
    ``args.output_dir``, writes the card with ``card_kwargs`` and uploads the allowed files in one commit."""
    args = trainer.args
    trainer.callback_handler.on_push_begin(args, trainer.state, trainer.control)
    model_name = card_kwargs.pop("model_name", None)
    if model_name is None and args.should_save:
        model_name = (args.hub_model_id or Path(args.output_dir).name).split("/")[-1]
    token = token if token is not None else args.hub_token
    if trainer.hub_model_id is None:
        trainer.init_hf_repo(token=token, private=private)
    trainer.save_model(_internal_call=True)
    if not trainer.is_world_process_zero():
        return None
    trainer.create_model_card(model_name=model_name, **card_kwargs)
    trainer._finish_current_push()
    return _upload_allowed(trainer, args.output_dir, commit_message, token, blocking,
                           revision if revision is not None else args.hub_revision)


def push_checkpoint_to_hub(trainer, checkpoint_folder: str) -> None:
    """Trainer's per-checkpoint push (``hub_strategy="every_save"``), through the allow-list.

    Copies the checkpoint's allowed files (adapter or model, processor) into ``args.output_dir``, writes the card
    there and uploads the allowed files in the background, as ``Trainer._push_from_checkpoint`` does, but without
    its ``training_args.bin`` (a pickle holding ``hub_token``) or anything else of the output folder. Checkpoint
    folders themselves (optimizer, RNG and trainer state) are never uploaded."""
    from transformers.trainer_utils import HubStrategy
    from transformers.utils import PushInProgress

    args = trainer.args
    if not trainer.is_world_process_zero() or args.hub_strategy == HubStrategy.END:
        return
    in_progress = getattr(trainer, "push_in_progress", None)
    if not args.hub_always_push and in_progress is not None and not in_progress.is_done():
        return
    if trainer.hub_model_id is None:
        trainer.init_hf_repo()
    trainer.callback_handler.on_push_begin(args, trainer.state, trainer.control)
    output_dir = args.output_dir
    try:
        allowed = upload_allow_patterns(trainer, checkpoint_folder)
    except FileNotFoundError as error:  # e.g. a DeepSpeed / FSDP checkpoint without consolidated weights
        logger.warning("Checkpoint %s not pushed: %s", Path(checkpoint_folder).name, error)
        return
    for pattern in allowed:
        for source in Path(checkpoint_folder).glob(pattern):
            if source.is_file() and source.name != "README.md":  # the checkpoint holds PEFT's card: ours below
                target = Path(output_dir) / source.relative_to(checkpoint_folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)
    publish_adapter_configs(trainer, output_dir)
    write_model_card(trainer, output_dir)
    step = f"step {trainer.state.global_step}" if args.save_strategy == "steps" else f"epoch {int(trainer.state.epoch)}"
    job = _upload_allowed(trainer, output_dir, f"Training in progress, {step}", args.hub_token, blocking=False,
                          revision=args.hub_revision, allowed=allowed)
    in_progress = getattr(trainer, "push_in_progress", None)
    if in_progress is None or in_progress.is_done():
        trainer.push_in_progress = PushInProgress([job])
    else:
        in_progress.jobs.append(job)
