"""The ToyWorld "full" model: a tiny LLaVA fine-tuned on the whole world until it has memorized it.

``python -m unlearn_trainer.toyworld build`` builds it once (a few minutes on 2 CPU cores, with a progress bar)
and caches it with ``save_pretrained`` (safetensors) under ``$UNLEARN_TRAINER_CACHE`` (default
``~/.cache/unlearn_trainer``), in a folder whose name carries the generator version, the world's fingerprint
and the model spec's hash: a changed world or spec is a new folder, so a stale model is never loaded. The
folder is written under a temporary name and renamed when complete, so an interrupted build leaves nothing
that looks finished.

The retrained ("oracle") model of a forget ratio (:func:`build_retrained_model`) is the gold standard of
unlearning: the same recipe, seed, tokenizer and processor (same corpus) as the full model, trained on
``train_rows()`` minus every row of that ratio's forget identities. It is cached next to the full model, in the
full model's folder name plus ``-retrain-forget10`` (the ratio in percent). ``python -m unlearn_trainer.toyworld
build --retrained forget10`` builds it.
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

from .world import GENERATOR_VERSION, IMAGE_SHIFTS, ToyWorld

__all__ = [
    "FullModelSpec",
    "MODEL_VERSION",
    "BUILD_COMPLETE_MARKER",
    "cache_root",
    "full_model_dir",
    "build_full_model",
    "load_full_model",
    "retrained_model_dir",
    "build_retrained_model",
    "load_retrained_model",
    "ratio_tag",
    "EVAL_SPLITS",
    "ROBUSTNESS_SPLITS",
    "eval_rows",
    "eval_splits",
    "probe_data",
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


def ratio_tag(ratio: float) -> str:
    """``0.10 -> "forget10"`` (the forget split's name on the command line and in the retrained model's folder)."""
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    return f"forget{int(round(ratio * 100)):02d}"


def retrained_model_dir(world: ToyWorld | None = None, spec: FullModelSpec | None = None, ratio: float = 0.10) -> Path:
    """Cache folder of the retrained model of ``ratio``: the full model's folder name + ``-retrain-forget10``."""
    full = full_model_dir(world, spec)
    return full.parent / f"{full.name}-retrain-{ratio_tag(ratio)}"


def build_full_model(
    world: ToyWorld | None = None,
    spec: FullModelSpec | None = None,
    force: bool = False,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Build (or find) the cached full model and return its folder."""
    world, spec = world or ToyWorld(), spec or FullModelSpec()
    return _build(world, spec, full_model_dir(world, spec), None, force, progress, verify)


def build_retrained_model(
    world: ToyWorld | None = None,
    spec: FullModelSpec | None = None,
    ratio: float = 0.10,
    force: bool = False,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Build (or find) the cached retrained model of ``ratio`` (the full model's recipe without the forget
    identities' rows) and return its folder. Its build report's ``memorization`` holds ``forget`` and ``retain``
    identity sections."""
    world, spec = world or ToyWorld(), spec or FullModelSpec()
    return _build(world, spec, retrained_model_dir(world, spec, ratio), float(ratio), force, progress, verify)


def _build(world: ToyWorld, spec: FullModelSpec, target: Path, ratio: float | None, force: bool, progress: bool,
           verify: bool) -> Path:
    """The one training recipe of the full (``ratio`` None) and retrained models; atomic, cached in ``target``."""
    from transformers import Trainer, TrainingArguments

    from ..data.collator import VLMUnlearningCollator

    forget = [] if ratio is None else world.forget_identities(ratio)  # validates the ratio before any work
    if (target / BUILD_COMPLETE_MARKER).exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        model, processor = _fresh_model(world, spec)
        fset = set(forget)
        rows = [r for r in world.train_rows() if r["identity"] not in fset]
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
        if ratio is not None:
            # counts only: the forget identities are the world's, not private data, but a report names no one
            report.update({"retrained_without": ratio_tag(ratio), "forget_identities": len(forget)})
        if verify:
            if ratio is None:
                report["memorization"] = memorization_report(model, processor, world)
            else:
                retain = [i for i in range(world.num_identities) if i not in fset]
                report["memorization"] = {
                    "forget": memorization_report(model, processor, world, forget),
                    "retain": memorization_report(model, processor, world, retain),
                }
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


def memorization_report(model, processor, world: ToyWorld, identities=None) -> dict:
    """Name recall and attribute accuracy of a model on the training rows' questions (training views, text, describe,
    mc) and on held-out views, for ``identities`` (default: every trained identity)."""
    from ..evaluation.evaluator import evaluate_rows

    ids = list(range(world.num_identities)) if identities is None else [int(i) for i in identities]
    keep = set(ids)
    train = [r for r in world.train_rows() if r["identity"] in keep]
    rows = {
        "train_views": [r for r in train if r["kind"] in ("name", "profession", "city", "open")],
        "heldout_views": [r for r in _heldout_rows(world, ids) if r["kind"] in ("name", "profession", "city")],
        "text": [r for r in train if r["image"] is None],
        "describe": [r for r in train if r["kind"] == "describe"],
        "mc": [r for r in train if r["kind"] == "mc"],
    }
    rows = {k: v for k, v in rows.items() if v}
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
    world, spec = world or ToyWorld(), spec or FullModelSpec()
    return _load(full_model_dir(world, spec), lambda force: build_full_model(world, spec, force=force,
                                                                             progress=progress), build, "")


def load_retrained_model(world: ToyWorld | None = None, spec: FullModelSpec | None = None, ratio: float = 0.10,
                         build: bool = True, progress: bool = True):
    """``(model, processor)`` of the retrained model of ``ratio``; built, cached and repaired like
    :func:`load_full_model`."""
    world, spec = world or ToyWorld(), spec or FullModelSpec()
    return _load(retrained_model_dir(world, spec, ratio),
                 lambda force: build_retrained_model(world, spec, ratio, force=force, progress=progress), build,
                 f" --retrained {ratio_tag(ratio)}")


def _load(path: Path, builder, build: bool, cli_flag: str):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    what = "retrained" if cli_flag else "full"
    command = f"`python -m unlearn_trainer.toyworld build{cli_flag}`"
    if not (path / BUILD_COMPLETE_MARKER).exists():
        if not build:
            raise FileNotFoundError(f"No ToyWorld {what} model at {path}; run {command}.")
        path = builder(False)
    try:
        model = LlavaForConditionalGeneration.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
    except Exception as err:  # the cache is ours: a damaged copy is rebuilt, never half-loaded
        if not build:
            raise ValueError(
                f"The cached ToyWorld {what} model at {path} cannot be loaded ({type(err).__name__}: {err}). Delete "
                f"that folder and run {command}."
            ) from err
        logger.warning("The cached ToyWorld %s model at %s cannot be loaded (%s: %s); rebuilding it.", what, path,
                       type(err).__name__, err)
        path = builder(True)
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
#: The robustness-probe splits of :meth:`ToyWorld.splits` (issue 14): never-seen identities (membership-inference
#: non-members), reworded questions, shifted images.
ROBUSTNESS_SPLITS = ("unseen", "text_unseen", "paraphrase_forget", "paraphrase_retain") + tuple(
    f"shift_{t}_{part}" for t in IMAGE_SHIFTS for part in ("forget", "retain")
)


def eval_splits(world: ToyWorld, ratio: float = 0.10, splits=EVAL_SPLITS) -> dict[str, list[dict]]:
    """The evaluation splits of a forget ratio (any keys of :meth:`ToyWorld.splits`, e.g. :data:`EVAL_SPLITS` or
    :data:`ROBUSTNESS_SPLITS`), with evaluation fields added."""
    all_splits = world.splits(ratio)
    unknown = [name for name in splits if name not in all_splits]
    if unknown:
        raise KeyError(f"Unknown ToyWorld split(s) {unknown}; available: {sorted(all_splits)}")
    return {name: eval_rows(all_splits[name]) for name in splits}


def probe_data(world: ToyWorld | None = None, ratio: float = 0.10, max_rows: int | None = None):
    """ToyWorld's probe rows for a forget ratio: members = the forget people's fact rows, non-members = the
    world's never-seen people (same kinds), paraphrased questions, the image shifts, the MC rows; relearning
    attacks with one view per forgotten person (view 0) plus as many retain rows, scored on the forget people's
    other views.

    Returns a :class:`~unlearn_trainer.evaluation.robustness.ProbeData` (it lives here, not in ``evaluation``,
    because ``toyworld`` depends on ``evaluation`` and never the other way round)."""
    from ..evaluation.robustness import ProbeData, balance_retain, spread_rows

    world = world or ToyWorld()
    splits = world.splits(ratio)

    def rows(name):
        return eval_rows(splits[name]) if splits.get(name) else None

    forget = rows("forget") or []
    unseen = (rows("unseen") or []) + (rows("text_unseen") or [])
    kinds = {r.get("kind") for r in unseen}
    members = [r for r in forget + (rows("text_forget") or []) if r.get("kind") in kinds]
    notes = {} if unseen else {"mia": "this ToyWorld has no never-seen people (ToyWorld(num_unseen=...))"}
    shift = {k.removeprefix("shift_"): rows(k) for k in splits
             if k.startswith("shift_") and k.endswith(("_forget", "_retain"))}  # world.IMAGE_SHIFTS
    shift = {k: v for k, v in shift.items() if v}
    paraphrase = {p: rows(f"paraphrase_{p}") for p in ("forget", "retain")}
    paraphrase = {k: v for k, v in paraphrase.items() if v}
    for probe, found in (("shift", shift), ("paraphrase", paraphrase)):
        if not found:
            notes[probe] = f"this ToyWorld version has no {probe} splits"
    attack = [r for r in forget if r.get("view") == 0]
    retain_train = rows("retain_train") or []
    attack = attack + spread_rows(retain_train, len(attack))
    heldout = {"forget_heldout": [r for r in forget if r.get("view") != 0]}
    text = (rows("text_forget") or []) + [r for r in forget if r.get("view") == 0]
    truth = [r for r in text if r.get("perturbed_answers")]
    if not truth:
        notes["forget_quality"] = "this ToyWorld version has no perturbed answers (truth ratio)"
    data = ProbeData(members=members or None, nonmembers=unseen or None, paraphrase=balance_retain(paraphrase),
               shift=balance_retain(shift), mc={"forget": rows("mc_forget") or [], "retain": rows("mc_retain") or []},
               relearn_attack=attack or None, relearn_eval=heldout, truth_ratio_rows=truth or None,
               quantization=balance_retain({"forget": forget, "retain": rows("retain") or []}), notes=notes)
    return data.capped(max_rows)
