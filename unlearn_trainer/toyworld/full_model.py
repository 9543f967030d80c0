"""The ToyWorld "full" model: a tiny LLaVA fine-tuned on the whole world until it has memorized it.

``python -m unlearn_trainer.toyworld build`` builds it once (a few minutes on 2 CPU cores, with a progress bar)
and caches it with ``save_pretrained`` (safetensors) under ``$UNLEARN_TRAINER_CACHE`` (default
``~/.cache/unlearn_trainer``), in a folder whose name carries the generator version, the world's fingerprint
and the model spec's hash: a changed world or spec is a new folder, so a stale model is never loaded. The
folder is written under a temporary name and renamed when complete, so an interrupted build leaves nothing
that looks finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .world import GENERATOR_VERSION, ToyWorld

__all__ = [
    "FullModelSpec",
    "MODEL_VERSION",
    "BUILD_COMPLETE_MARKER",
    "cache_root",
    "full_model_dir",
    "build_full_model",
    "load_full_model",
    "eval_rows",
    "eval_splits",
]

logger = logging.getLogger(__name__)

MODEL_VERSION = "tinyllava-1"
# Written last into the build folder (with the build report): a folder without it is an unfinished build.
BUILD_COMPLETE_MARKER = "toyworld_build.json"


@dataclass
class FullModelSpec:
    """Size and training recipe of the full model (measured: ~1.3 M parameters, memorizes in minutes)."""

    image_size: int = 32
    patch_size: int = 4
    vision_hidden_size: int = 64
    vision_layers: int = 2
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 4
    epochs: float = 14.0
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    seed: int = 0

    def fingerprint(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARN_TRAINER_CACHE", Path.home() / ".cache" / "unlearn_trainer"))


def full_model_dir(world: ToyWorld | None = None, spec: FullModelSpec | None = None) -> Path:
    world, spec = world or ToyWorld(), spec or FullModelSpec()
    return cache_root() / f"{GENERATOR_VERSION}-{world.fingerprint()}-{MODEL_VERSION}-{spec.fingerprint()}"


def _fresh_model(world: ToyWorld, spec: FullModelSpec):
    from ..testing import tiny_model_and_processor

    return tiny_model_and_processor(
        "llava",
        seed=spec.seed,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        vision_hidden_size=spec.vision_hidden_size,
        vision_layers=spec.vision_layers,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        num_kv_heads=spec.num_kv_heads,
        corpus=world.corpus(),
        subword_words=world.name_words(),
    )


def build_full_model(
    world: ToyWorld | None = None,
    spec: FullModelSpec | None = None,
    force: bool = False,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Build (or find) the cached full model and return its folder."""
    from transformers import Trainer, TrainingArguments

    from ..data.collator import VLMUnlearningCollator

    world, spec = world or ToyWorld(), spec or FullModelSpec()
    target = full_model_dir(world, spec)
    if (target / BUILD_COMPLETE_MARKER).exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        model, processor = _fresh_model(world, spec)
        rows = world.train_rows()
        args = TrainingArguments(
            output_dir=str(work / "trainer"),
            num_train_epochs=spec.epochs,
            per_device_train_batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, int(spec.warmup_ratio * spec.epochs * len(rows) / spec.batch_size)),
            weight_decay=0.0,
            seed=spec.seed,
            data_seed=spec.seed,
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            remove_unused_columns=False,
            disable_tqdm=not progress,
            dataloader_pin_memory=False,
        )
        collator = VLMUnlearningCollator(processor, label_end_of_turn=True, return_index=False)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        trainer.train()
        model.eval()
        _mark_as_demo(model)
        report = {"world": world.fingerprint(), "spec": dataclasses.asdict(spec), "train_rows": len(rows),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "train_runtime_s": trainer.state.log_history[-1].get("train_runtime")}
        if verify:
            report["memorization"] = memorization_report(model, processor, world)
        model.save_pretrained(work, safe_serialization=True)
        processor.save_pretrained(work)
        shutil.rmtree(work / "trainer", ignore_errors=True)
        with open(work / BUILD_COMPLETE_MARKER, "w") as f:
            json.dump(report, f, indent=1)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def memorization_report(model, processor, world: ToyWorld) -> dict:
    """Name recall and attribute accuracy of the full model on training and held-out views (all identities)."""
    from ..evaluation.evaluator import evaluate_rows

    all_ids = list(range(len(world.identities)))
    rows = {
        "train_views": [r for r in world.train_rows() if r["kind"] in ("name", "profession", "city", "open")],
        "heldout_views": [r for r in _heldout_rows(world, all_ids) if r["kind"] in ("name", "profession", "city")],
        "text": [r for r in world.train_rows() if r["image"] is None],
        "describe": [r for r in world.train_rows() if r["kind"] == "describe"],
        "mc": [r for r in world.train_rows() if r["kind"] == "mc"],
    }
    out = {}
    for name, split in rows.items():
        metrics, _ = evaluate_rows(model, processor, eval_rows(split), is_well_formed=world.is_well_formed,
                                   max_new_tokens=24, batch_size=64)
        out[name] = {k: round(v, 4) for k, v in metrics.items()}
    return out


def _heldout_rows(world: ToyWorld, identities):
    rows = []
    for i in identities:
        for kind in ("name", "profession", "city"):
            for v in range(world.heldout_views):
                rows.append(world._row(world.identities[i], kind, v, True, world.render(i, v, heldout=True)))
    return rows


def load_full_model(world: ToyWorld | None = None, spec: FullModelSpec | None = None, build: bool = True,
                    progress: bool = True):
    """``(model, processor)`` of the full model, building it first if it is missing, and rebuilding it (with a
    warning naming the folder) if the cached files cannot be loaded (truncated, corrupted)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    world, spec = world or ToyWorld(), spec or FullModelSpec()
    path = full_model_dir(world, spec)
    if not (path / BUILD_COMPLETE_MARKER).exists():
        if not build:
            raise FileNotFoundError(f"No ToyWorld full model at {path}; run `python -m unlearn_trainer.toyworld build`.")
        path = build_full_model(world, spec, progress=progress)
    try:
        model = LlavaForConditionalGeneration.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
    except Exception as err:  # the cache is ours: a damaged copy is rebuilt, never half-loaded
        if not build:
            raise ValueError(
                f"The cached ToyWorld full model at {path} cannot be loaded ({type(err).__name__}: {err}). Delete "
                f"that folder and run `python -m unlearn_trainer.toyworld build`."
            ) from err
        logger.warning("The cached ToyWorld full model at %s cannot be loaded (%s: %s); rebuilding it.", path,
                       type(err).__name__, err)
        path = build_full_model(world, spec, force=True, progress=progress)
        model = LlavaForConditionalGeneration.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
    _mark_as_demo(model)  # also for a model cached before the builder wrote the mark
    return model, processor


def _mark_as_demo(model) -> None:
    """Mark the model's config as the ToyWorld demo (saved in its ``config.json``), so that a model card names its
    base as the demo (:func:`unlearn_trainer.hub.base_model_info`)."""
    from ..hub import DEMO_MODEL_CONFIG_KEY

    setattr(model.config, DEMO_MODEL_CONFIG_KEY, MODEL_VERSION)


def eval_rows(rows):
    """Add the evaluation fields the generic evaluator reads (``expected``, ``private``, multiple-choice scoring)."""
    out = []
    for r in rows:
        r = dict(r)
        kind = r.get("kind", "")
        attr = kind.replace("text_", "")
        if attr in ("profession", "city"):
            r["expected"] = r["attributes"][attr]
        if kind == "open":
            r["private"] = [r["name"], r["attributes"]["profession"], r["attributes"]["city"]]
        if kind == "mc":
            r["mc_question"] = "who is this person ?"
            r["mc_template"] = "this is {option} ."
        if kind == "describe":
            r["concepts"] = []
        out.append(r)
    return out


EVAL_SPLITS = ("forget", "generalization", "retain", "proximal", "text_forget", "text_retain", "describe",
               "mc_forget", "mc_retain")


def eval_splits(world: ToyWorld, ratio: float = 0.10, splits=EVAL_SPLITS) -> dict[str, list[dict]]:
    """The evaluation splits of a forget ratio, with evaluation fields added."""
    all_splits = world.splits(ratio)
    return {name: eval_rows(all_splits[name]) for name in splits}
