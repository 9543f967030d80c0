"""The base of every unlearning trainer: forget/retain plumbing, the reference model, caches, guards, logging.

A method subclasses :class:`UnlearnTrainer` as its docstring's "Adding a method" block says: it overrides its
single forget loss (``unlearning_loss``) or its several trainable passes (``unlearning_passes``), and declares its
name, citation, reference use and paper settings. Everything else (retain term, one backward per pass so that only
one pass's activations are alive, reference model without a second copy under PEFT, per-sample reference caches,
non-finite guard, logging of every term, gradient accumulation) lives here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from accelerate.utils import DistributedType, is_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

from .. import losses
from ..citation import Citation
from ..data.collator import (
    ForgetRetainCollator,
    ForgetRetainDataset,
    VLMUnlearningCollator,
    dataset_columns,
    model_inputs,
)

__all__ = ["Citation", "UnlearnConfig", "UnlearnTrainer", "NonFiniteLossError", "PerFamily", "paper_default",
           "paper_field"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when an unlearning loss becomes NaN or infinite; training stops before any update is applied."""


class PerFamily(dict):
    """A paper setting that the paper gives per model family: ``{model_type: value}``, keyed by the ``model_type`` of
    the model's config or of its language model's (``text_config``); the first entry is the paper's main model."""

    def resolve(self, model) -> tuple[str | None, Any]:
        """``(family, value)`` for ``model``; ``(None, first value)`` when the paper gives no value for its family."""
        config = getattr(model, "config", None)
        for cfg in (config, getattr(config, "text_config", None)):
            family = getattr(cfg, "model_type", None)
            if family in self:
                return family, self[family]
        return None, next(iter(self.values()))


def paper_default(settings: dict, name: str) -> Any:
    """The dataclass default of field ``name`` from a method's paper settings: the paper's value, or ``None`` (resolved
    for the model's family when the trainer is built) when the paper gives one per model family."""
    value = settings[name]
    return None if isinstance(value, PerFamily) else value


def paper_field(settings: dict, name: str, help: str):
    """A config field whose default is the paper's setting ``name`` (:func:`paper_default`), with its help text."""
    return field(default=paper_default(settings, name), metadata={"help": help})


def _fmt(value: Any) -> str:
    """A setting as a card shows it: 5e-6, 0.001, 1.0."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return f"{value:.1f}"
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m.group(1).lstrip('+')}{m.group(2)}", f"{value:g}")
    return str(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


@dataclass
class UnlearnConfig(TrainingArguments):
    """Training arguments shared by every unlearning method (a ``transformers.TrainingArguments``).

    Retain term: ``retain_loss`` is ``"nll"`` (GradDiff: fine-tuning loss on the retain set), ``"kl"``
    (``KL(p_theta || p_ref)`` on retain answer tokens) or ``"none"``; left unset it is ``"nll"`` when a retain
    set is given and ``"none"`` otherwise. Both run over answer tokens only.

    ``paper_settings`` (class attribute) is the ONE place where a method states its paper's settings; its config's
    field defaults are taken from it (:func:`paper_default`) and :meth:`UnlearnTrainer.paper_deviations` compares a
    run against it. Keys: config fields (a :class:`PerFamily` where the paper gives one value per model family; the
    field then defaults to ``None``, resolved from the model when the trainer is built), and the structural keys
    ``retain_loss`` ("none": the paper has no retain set; "nll": its objective has a retain NLL), ``adapter``
    ("lora" or "full"), ``lora_r`` and ``lora_alpha``. A key that is absent is a setting the paper does not fix.
    """

    paper_settings: ClassVar[dict[str, Any]] = {}
    #: How a deviation reads for a setting the paper does not have (paper value None), by field name.
    paper_notes: ClassVar[dict[str, str]] = {"forget_loss_ceiling": "a guard the paper does not have"}
    #: The name of the paper's retain term, for the deviation "no retain set: <term> dropped".
    paper_retain_term: ClassVar[str] = "the paper's retain NLL"

    retain_loss: str | None = field(
        default=None, metadata={"help": "'nll', 'kl' or 'none'; default: 'nll' if a retain set is given."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain term."})
    cache_reference: bool = field(
        default=True,
        metadata={"help": "Compute reference-model quantities once per sample and cache them (False: every step)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: unlearning rows carry images and metadata the collator needs."}
    )
    pairing_seed: int = field(
        default=0, metadata={"help": "Seed of the forget-to-retain row pairing (a fresh retain order every "
                                     "ceil(|retain|/|forget|) epochs, so that training walks the whole retain set)."}
    )
    # Any method: gate the forget-loss gradient by a saved weight-saliency mask (MMUnlearner Eq. 3).
    saliency_mask: str | None = field(
        default=None,
        metadata={"help": "Path to a saliency mask (safetensors from unlearn_trainer.saliency): the forget-loss "
                          "gradient reaches only the parameter entries it selects; the retain gradient is not masked. It must "
                          "have been computed on this model's weights (fingerprint checked at init)."},
    )
    backward_per_pass: bool = field(
        default=True,
        metadata={"help": "Backpropagate each trainable forward pass (forget, retain, guidance, ...) as soon as its "
                          "loss exists, so only one pass's activations are in memory; same gradients as one backward "
                          "of the sum. False: one backward of the summed loss. Always one backward under DeepSpeed."},
    )
    # Hub (unlearn_trainer.hub): an unlearned model derives from private data, so its repo is private unless asked.
    hub_private_repo: bool | None = field(
        default=True, metadata={"help": "Create the Hub repo private (default True; False: public)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss not in (None, "nll", "kl", "none"):
            raise ValueError(f"retain_loss must be 'nll', 'kl' or 'none', got {self.retain_loss!r}.")
        if self.retain_weight < 0:
            raise ValueError(f"retain_weight must be >= 0, got {self.retain_weight}.")
        if self.push_to_hub and self.hub_strategy in ("checkpoint", "all_checkpoints"):
            # Those strategies upload whole checkpoint folders: training_args.bin (a pickle holding hub_token),
            # optimizer / RNG pickles and trainer state, past the upload allow-list of unlearn_trainer.hub.
            raise ValueError(
                f"hub_strategy={str(getattr(self.hub_strategy, 'value', self.hub_strategy))!r} uploads whole "
                f"checkpoint folders (training_args.bin holds hub_token), which unlearn_trainer never publishes: use "
                f"hub_strategy='every_save' (the adapter or model, processor and card at each save) or 'end', and "
                f"resume from the local checkpoint folders."
            )
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs == 0):
            # Trainer does not read 0 as "no training": it still runs a step and the trainer saves a new adapter.
            what = "max_steps=0" if self.max_steps == 0 else "num_train_epochs=0"
            raise ValueError(
                f"{what} does not mean 'evaluate only': an unlearning trainer would still take a training step and "
                f"write a new adapter and model card. To evaluate a model (or one with a saved adapter loaded) without "
                f"unlearning, call unlearn_trainer.evaluation.evaluate_splits(model, processor, {{split: rows}}) (or "
                f"evaluate_rows / generate_answers) instead of a trainer. To unlearn, set max_steps > 0, or leave it "
                f"at -1 to train for num_train_epochs."
            )


def _zero3_enabled() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _give_collators_the_position_limit(collator, model) -> None:
    """Tell the row collators the model's position limit (text config ``max_position_embeddings``), so that a row
    longer than the model's positions is an error naming it, not tokens trained at positions the model lacks."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text_config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return
    for name in ("forget_collator", "retain_collator", "guidance_collator"):
        inner = getattr(collator, name, None)
        if isinstance(inner, VLMUnlearningCollator) and getattr(inner, "max_positions", None) is None:
            inner.max_positions = limit


def _trainable_outside_adapter(model) -> list[str]:
    """Names of the trainable parameters of a PEFT model that its adapter-disabled forward still uses: all but the
    tuner layers' adapter weights (``adapter_layer_names``: LoRA A/B, DoRA magnitudes, ...), prompt-learning
    encoders and the trained copies of auxiliary wrappers (``modules_to_save``, trainable tokens), whose
    ``original_module`` serves the disabled forward."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    adapter: set[int] = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for name in module.adapter_layer_names:
                part = getattr(module, name, None)
                if isinstance(part, torch.nn.Module):
                    adapter.update(id(p) for p in part.parameters())
        elif isinstance(module, AuxiliaryTrainingWrapper):
            original = {id(p) for p in module.original_module.parameters()}
            adapter.update(id(p) for p in module.parameters() if id(p) not in original)
    prompt = getattr(model, "prompt_encoder", None)
    if isinstance(prompt, torch.nn.Module):
        adapter.update(id(p) for p in prompt.parameters())
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in adapter]


def _is_bnb_4bit_linear(module: torch.nn.Module) -> bool:
    return any(c.__name__ == "Linear4bit" and c.__module__.startswith("bitsandbytes") for c in type(module).__mro__)


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """Run ``module`` in eval mode (no dropout), then give every submodule back its own training flag."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    for m, mode in modes:
        if mode and _is_bnb_4bit_linear(m):
            # bitsandbytes repacks a 4-bit weight in place for CPU inference when it runs in eval mode without
            # gradients; training's backward then fails on the repacked leaf. It has no dropout: keep its flag.
            m.training = True
    try:
        yield
    finally:
        for m, mode in modes:  # parents first: train(mode) also resets the children, fixed in turn after it
            if m.training != mode:
                m.train(mode)


class _UnlearnCallback(TrainerCallback):
    """The base trainer's hooks into the training loop: re-check the reference at train start (the trainable set may
    have changed since construction) and rotate the retain rows at every epoch start."""

    def __init__(self, trainer: "UnlearnTrainer", paired: ForgetRetainDataset):
        self.trainer, self.paired = trainer, paired

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._check_reference_is_frozen()

    def on_epoch_begin(self, args, state, control, **kwargs):
        # Trainer passes no epoch number; state.epoch is the epochs done so far (fractional when resuming mid-epoch),
        # so its floor is the epoch starting now. accelerate's DataLoaderShard.set_epoch forwards to the dataset only
        # in a single process (not under a distributed sampler), hence this call.
        self.paired.set_epoch(math.floor(state.epoch + 1e-9))


class UnlearnTrainer(Trainer):
    """A ``transformers.Trainer`` that unlearns ``forget_dataset`` while (optionally) keeping ``retain_dataset``.

    Adding a method (one file, ``trainers/<method>.py``):

    - Override exactly one of
        - ``unlearning_loss(model, inputs) -> (loss, terms)``: the method's forget objective as one loss, or
        - ``unlearning_passes(model, inputs) -> [pass, ...]``: an objective made of several trainable forward
          passes (PUBG: forget + guidance; SGPVT: GA + one distillation pass per perturbation), a list of
          zero-argument callables each returning ``(loss, terms)``; the objective is the sum of their losses. The
          passes run in order and, in training, each is backpropagated before the next one runs, so that only one
          pass's activations are in memory.

      ``inputs`` is the batch ``{"forget": model_input, "retain": ...}`` (plus any key the method's collator adds);
      ``terms`` maps names to scalars, each logged as it is. Do not add the retain term: the base adds it (the
      config's ``retain_loss`` / ``retain_weight``) as its own pass.
    - Declare, as class attributes: ``method_name`` (its name and Hub tag), ``citation`` (a :class:`Citation`: the
      paper, display name and one-line objective shown on the model card), ``config_class`` (an
      :class:`UnlearnConfig` subclass whose ``paper_settings`` state the paper's settings once, its fields
      defaulting to them through :func:`paper_field`), ``needs_reference = True`` if the objective uses the
      frozen pre-unlearning model, and ``retain_in_objective = True`` if the objective uses ``inputs["retain"]``
      itself (the base then requires a retain set and adds no retain pass).
    - Call these helpers: :meth:`forget_logits` (the pass that unlearns, so that a saliency mask gates it),
      :meth:`forward_logits` (any other trainable pass), :meth:`reference` (context: the frozen model, under
      ``torch.no_grad()``), :meth:`reference_logits`, :meth:`cached_reference` (a per-sample reference quantity,
      computed once), and ``self.args`` / ``self.state`` as in any Trainer. ``losses`` holds the pure loss
      functions (GA, NPO, KL, ...).

    Everything else is the base's (private, or Trainer API): pairing the forget / retain rows, the retain pass, the
    reference model, one backward per pass, the non-finite guard, logging, saving and the model card. Plain batches
    (e.g. from ``eval_dataset``) use the parent's loss.
    """

    config_class = UnlearnConfig
    method_name = "base"
    #: The method's paper (titles, authors and venues as printed in the paper or in the reference lists that cite
    #: it; arXiv ids or URLs only where those texts give one). ``None``: the card says no paper is declared.
    citation: Citation | None = None
    #: True if the method's objective uses the frozen pre-unlearning model.
    needs_reference = False
    #: True if the method's objective itself uses the retain batch (RMU's retain activations, SCRUB's min-steps): a
    #: retain set is then required and paired with the forget rows, and the base adds no retain pass of its own
    #: (``retain_loss`` stays "none").
    retain_in_objective = False
    # Losses here are means over samples, not normalised by num_items_in_batch: Trainer divides by the
    # number of accumulation steps exactly once.
    loss_is_scaled_for_ga = False
    #: Defaults for the model card (unlearn_trainer.hub.render_model_card), e.g. {"dataset": ..., "forget_split": ...}.
    model_card_kwargs: dict | None = None

    def __init__(
        self,
        model=None,
        args: UnlearnConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        forget_dataset=None,
        retain_dataset=None,
        ref_model=None,
        peft_config=None,
        model_card_kwargs: dict | None = None,
        column_mapping: dict[str, str] | None = None,
        **kwargs,
    ):
        self.model_card_kwargs = model_card_kwargs
        args = self._unlearn_args(args)
        forget_dataset = self._forget_set(forget_dataset, train_dataset)
        self.paper_family = self._resolve_paper_settings(args, model)
        model = self._wrap_peft(model, peft_config, args)
        self._check_processor_matches_model(model, processing_class)
        paired, data_collator = self._pair_data(args, forget_dataset, retain_dataset, data_collator, processing_class,
                                                model, column_mapping)
        self._load_saliency_mask(args, model)
        self._ref_model = self._build_reference(args, model, ref_model)
        self._ref_cache: dict[str, dict[int, Any]] = defaultdict(dict)
        self._terms: dict[str, list[float]] = defaultdict(list)
        self._in_trainer_step = False  # set by compute_loss_context_manager
        if paired.retain is not None and args.dataloader_num_workers > 0 and args.dataloader_persistent_workers:
            logger.warning("dataloader_persistent_workers=True: the workers keep the forget/retain pairing of the "
                           "first epoch, so training uses only |forget| retain rows. Set it to False to walk the "
                           "whole retain set.")
        if args.dataloader_pin_memory and args.device.type == "cpu":
            # Pinned memory only helps copies to an accelerator; on CPU torch warns at every epoch that it is unused.
            args.dataloader_pin_memory = False
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=paired,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self._check_launch()
        self.add_callback(_UnlearnCallback(self, paired))  # (add_callback also attaches callbacks= to this trainer)
        self._check_reference_is_frozen()
        self._prepare_reference_for_backend()
        # Hub tags on the model itself, so that PEFT's card update in save_pretrained keeps them (unlearn_trainer.hub).
        if hasattr(self.model, "add_model_tags"):
            from ..hub import card_tags

            self.model.add_model_tags(card_tags(self.method_name, adapter=is_peft_model(self.model)))

    # -- construction steps (in __init__'s order) ----------------------------------------------------------
    def _unlearn_args(self, args: TrainingArguments | None) -> UnlearnConfig:
        """The method's config: its defaults, or ``args`` converted to it."""
        if args is None:
            return self.config_class(output_dir=f"{self.method_name}-unlearned")
        if not isinstance(args, self.config_class):
            return self._convert_args(args)
        return args

    @staticmethod
    def _forget_set(forget_dataset, train_dataset):
        """The forget set, given as ``forget_dataset=`` or (drop-in) ``train_dataset=``; refused if empty."""
        if forget_dataset is None:
            forget_dataset = train_dataset
        elif train_dataset is not None and train_dataset is not forget_dataset:
            raise ValueError("Pass the forget set as forget_dataset= or train_dataset=, not both.")
        if forget_dataset is None or len(forget_dataset) == 0:
            raise ValueError("The forget set is empty: pass forget_dataset= with at least one row to unlearn.")
        return forget_dataset

    @staticmethod
    def _wrap_peft(model, peft_config, args: UnlearnConfig):
        """``model`` with the ``peft_config`` adapter (QLoRA-prepared when quantized), or ``model`` itself."""
        if peft_config is None:
            return model
        from peft import get_peft_model
        from transformers import set_seed

        # The adapter's random initialisation follows args.seed (Trainer seeds only later, in its __init__), so
        # runs with the same seed start from the same adapter whatever the process count or RNG use before.
        set_seed(args.seed)
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            # QLoRA, as TRL does: freeze the quantized base, upcast its other weights to fp32, and make the
            # inputs require grad so that gradient checkpointing (if asked) still reaches the adapter.
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=args.gradient_checkpointing,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        return get_peft_model(model, peft_config)

    def _pair_data(self, args: UnlearnConfig, forget_dataset, retain_dataset, data_collator, processing_class,
                   model, column_mapping=None) -> tuple[ForgetRetainDataset, ForgetRetainCollator]:
        """Settle the retain term, pair each forget row with a retain row and wrap the collator for the pairs; check
        the columns of both sets now (not at the first batch), after ``column_mapping`` (``{dataset column: our
        column}``, handed to the row collators)."""
        if self.retain_in_objective:
            if retain_dataset is None:
                raise ValueError(f"{type(self).__name__} needs a retain set (its objective uses retain rows): pass "
                                 f"retain_dataset=.")
            if args.retain_loss not in (None, "none"):
                raise ValueError(f"{type(self).__name__} has its own retain term; leave retain_loss unset (got "
                                 f"{args.retain_loss!r}).")
            args.retain_loss = "none"
        if args.retain_loss is None:
            args.retain_loss = "nll" if retain_dataset is not None else "none"
        if args.retain_loss != "none" and retain_dataset is None:
            raise ValueError(f"retain_loss={args.retain_loss!r} needs a retain set: pass retain_dataset=.")

        self.forget_dataset, self.retain_dataset = forget_dataset, retain_dataset
        paired = ForgetRetainDataset(
            forget_dataset, retain_dataset if args.retain_loss != "none" or self.retain_in_objective else None,
            seed=args.pairing_seed
        )
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass processing_class= (the model's processor) or a data_collator=.")
            data_collator = VLMUnlearningCollator(processing_class, column_mapping=column_mapping)
        if not isinstance(data_collator, ForgetRetainCollator):
            data_collator = ForgetRetainCollator(data_collator)
        _give_collators_the_position_limit(data_collator, model)
        if column_mapping and not any(isinstance(c, VLMUnlearningCollator)
                                      for c in (data_collator.forget_collator, data_collator.retain_collator)):
            raise ValueError("column_mapping= renames columns for this package's collators; the given data_collator "
                             "reads rows its own way: rename the columns of the datasets instead.")
        for what, dataset, collator in (("forget_dataset", forget_dataset, data_collator.forget_collator),
                                        ("retain_dataset", paired.retain, data_collator.retain_collator)):
            if not isinstance(collator, VLMUnlearningCollator):
                continue  # a collator of the user's own: it reads its own rows
            if column_mapping:
                if collator.column_mapping not in (None, dict(column_mapping)):
                    raise ValueError(f"column_mapping={column_mapping!r} differs from the column_mapping of the given "
                                     f"data_collator ({collator.column_mapping!r}); give it in one place.")
                collator.column_mapping = dict(column_mapping)
            columns = dataset_columns(dataset) if dataset is not None else None
            if columns is not None:
                collator.check_columns(columns, what=f"The {what}")
        return paired, data_collator

    def _load_saliency_mask(self, args: UnlearnConfig, model) -> None:
        if args.saliency_mask is not None:
            # Checked now, on the weights about to be unlearned (not at the first step, which may follow a resume)
            from ..saliency import SaliencyMask, check_checkpointing

            check_checkpointing(args)
            self._saliency_mask = SaliencyMask.load(args.saliency_mask)
            self._saliency_mask.check_fingerprint(model, args.saliency_mask)
            self._saliency_mask_path = args.saliency_mask

    def _build_reference(self, args: UnlearnConfig, model, ref_model):
        """The frozen reference model when the run uses one and ``model`` is not a PEFT model (whose reference is
        itself with the adapter disabled); ``None`` otherwise."""
        if self._uses_reference(args) and not is_peft_model(model):
            if ref_model is None and _zero3_enabled():
                # ZeRO-3 partitions parameters as the model loads: a deepcopy holds empty shards (as TRL, refuse).
                raise ValueError(
                    f"{type(self).__name__} needs a frozen reference model, and under DeepSpeed ZeRO-3 the model cannot "
                    f"be copied: pass ref_model= (a second from_pretrained of the same checkpoint, loaded after the "
                    f"training arguments), or train a LoRA adapter (peft_config=: the reference is then the model with "
                    f"its adapter disabled)."
                )
            reference = ref_model if ref_model is not None else copy.deepcopy(model)
            reference.requires_grad_(False).eval()
            return reference
        if ref_model is not None and is_peft_model(model):
            raise ValueError("With a PEFT model the reference is the model with its adapter disabled; drop ref_model=.")
        return None

    def _prepare_reference_for_backend(self) -> None:
        """Shard / place the frozen reference copy as the training backend does the model (DeepSpeed, FSDP, plain)."""
        if self._ref_model is None:
            return
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            self._ref_model = prepare_deepspeed(self._ref_model, self.accelerator)
        elif self.is_fsdp_enabled:
            # As TRL's DPO/GRPO trainers: shard the frozen copy too (prepare_model would neither shard it nor move
            # it to the device under FSDP).
            from trl.models.utils import prepare_fsdp

            self._ref_model = prepare_fsdp(self._ref_model, self.accelerator)
        else:
            self._ref_model = self.accelerator.prepare_model(self._ref_model, evaluation_mode=True)

    # -- configuration -------------------------------------------------------------------------------------
    @classmethod
    def _convert_args(cls, args: TrainingArguments):
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and hasattr(args, f.name)}
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        # rows carry images and metadata that Trainer's column removal would drop
        values["remove_unused_columns"] = False
        if values.get("hub_private_repo") is None:  # unset in TrainingArguments: keep our private default
            values.pop("hub_private_repo", None)
        return cls.config_class(**{k: v for k, v in values.items() if k in known})

    @staticmethod
    def _resolve_paper_settings(args: UnlearnConfig, model) -> str | None:
        """Fill each per-family paper setting left ``None`` (the default) with the paper's value for ``model``'s family,
        so that ``args`` (and the card) show the value used; an explicit value is kept. Returns the family, or None
        when the method has no per-family setting or the paper gives none for this family."""
        family = None
        for name, value in type(args).paper_settings.items():
            if isinstance(value, PerFamily) and hasattr(args, name):
                family, resolved = value.resolve(model)
                if getattr(args, name) is None:
                    setattr(args, name, resolved)
        return family

    def paper_deviations(self) -> list[str]:
        """How this run departs from the method's paper (``args.paper_settings``): one short line per difference in
        a setting, the batch size, the training length, the retain term, the adapter or a guard; empty when none.
        Shown on the model card, so that a published model says what it is."""
        args = self.args
        settings = type(args).paper_settings
        out: list[str] = []
        structural = {"retain_loss", "adapter", "lora_r", "lora_alpha", "per_device_train_batch_size", "max_steps",
                      "num_train_epochs"}
        for name, paper in settings.items():
            if name in structural or not hasattr(args, name):
                continue
            value, where = getattr(args, name), ""
            if isinstance(paper, PerFamily):
                if self.paper_family is None:
                    out.append(f"{name} {_fmt(value)}: the paper gives none for this model family (its values: "
                               + ", ".join(f"{_fmt(v)} for {k}" for k, v in paper.items()) + ")")
                    continue
                paper, where = paper[self.paper_family], f" for {self.paper_family}"
            if paper is None and value is not None:
                out.append(f"{name} {_fmt(value)} ({args.paper_notes.get(name, 'not in the paper')})")
            elif not _same(value, paper) and isinstance(value, str) and max(len(value), len(str(paper))) > 60:
                out.append(f"{name} differs from the paper's")  # a prompt: the card's hyperparameters show it
            elif not _same(value, paper):
                out.append(f"{name} {_fmt(value)} (paper: {_fmt(paper)}{where})")
        if "per_device_train_batch_size" in settings:
            per_device, accum, world = args.per_device_train_batch_size, args.gradient_accumulation_steps, args.world_size
            total, paper = per_device * accum * world, settings["per_device_train_batch_size"]
            if total != paper:
                how = f" = {per_device} per device x {accum} accumulation x {world} processes" if total != per_device else ""
                out.append(f"train batch size {total}{how} (paper: {paper})")
        if "max_steps" in settings:
            if args.max_steps <= 0:
                out.append(f"num_train_epochs {_fmt(args.num_train_epochs)} (paper: {settings['max_steps']} steps)")
            elif args.max_steps != settings["max_steps"]:
                out.append(f"max_steps {args.max_steps} (paper: {settings['max_steps']})")
        elif "num_train_epochs" in settings:
            epochs = settings["num_train_epochs"]
            if args.max_steps > 0:
                out.append(f"max_steps {args.max_steps} (paper: {epochs:g} epoch{'s' if epochs != 1 else ''})")
            elif not _same(args.num_train_epochs, epochs):
                out.append(f"num_train_epochs {_fmt(args.num_train_epochs)} (paper: {_fmt(epochs)})")
        paper_retain, retain = settings.get("retain_loss"), args.retain_loss
        if paper_retain == "none" and retain != "none":
            out.append(f"retain {retain.upper()} term added (the paper has no retain set)")
        elif paper_retain is not None and paper_retain != "none" and retain == "none":
            out.append(f"no retain set: {args.paper_retain_term} dropped")
        elif paper_retain is not None and paper_retain != "none" and retain != paper_retain:
            out.append(f"retain {retain.upper()} term instead of {args.paper_retain_term}")
        if args.saliency_mask is not None and self.method_name != "saliency":
            out.append("forget gradient gated by a saliency mask (MMUnlearner's; not in this method's paper)")
        out.extend(self._adapter_deviations(settings))
        return out

    def _adapter_deviations(self, settings: dict) -> list[str]:
        if "adapter" not in settings:
            return []
        model = self.accelerator.unwrap_model(self.model)
        if not is_peft_model(model):
            return ["full-parameter training (paper: LoRA)"] if settings["adapter"] == "lora" else []
        config = model.peft_config[getattr(model, "active_adapter", "default")]
        kind = str(getattr(config.peft_type, "value", config.peft_type))
        kind = "LoRA" if kind.lower() == "lora" else kind
        if settings["adapter"] == "full":
            return [f"{kind} adapter (paper: full-parameter training)"]
        if kind != "LoRA":
            return [f"{kind} adapter (paper: LoRA)"]
        out = []
        for key, attr, label in (("lora_r", "r", "r"), ("lora_alpha", "lora_alpha", "alpha")):
            if key in settings and getattr(config, attr, None) != settings[key]:
                out.append(f"LoRA {label} {getattr(config, attr, None)} (paper: {settings[key]})")
        return out

    def _check_launch(self) -> None:
        """Fail when launched with several processes (torchrun / accelerate launch) that Trainer runs as independent
        single-process jobs: without GPUs, accelerate selects multi-CPU (gloo) training only with ``use_cpu=True``;
        otherwise every rank would unlearn alone on the whole forget set and write the same files."""
        import os

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1 and self.accelerator.num_processes == 1:
            raise RuntimeError(
                f"Launched with WORLD_SIZE={world_size} but Trainer runs a single process (no GPU found, so no "
                f"distributed backend was chosen). On CPU pass use_cpu=True (--use_cpu) to train with {world_size} "
                f"processes over gloo; on GPUs check that CUDA is visible."
            )
        self._check_precision()

    def _check_precision(self) -> None:
        """Refuse a mixed precision that accelerate would silently not run (fp16 on CPU trains in fp32), so that what
        the arguments, the logs and the model card say is what ran."""
        from ..hub import effective_mixed_precision

        asked = "fp16" if self.args.fp16 else "bf16" if self.args.bf16 else "no"
        if asked != "no" and effective_mixed_precision(self.accelerator) != asked:
            other = " use bf16=True with use_cpu=True for bf16 autocast on CPU," if asked == "fp16" else ""
            raise ValueError(
                f"{asked}=True but {asked} mixed precision does not run on this {self.accelerator.device.type} device: "
                f"accelerate would train in full precision. Drop --{asked} ({asked}=False),{other} or train on a "
                f"device that supports it."
            )

    @staticmethod
    def _check_processor_matches_model(model, processor) -> None:
        """Refuse a processor from another checkpoint or family (its tokens would index the wrong embeddings or
        the image placeholders would not be the model's: an IndexError deep in the forward pass otherwise)."""
        config = getattr(model, "config", None)
        tokenizer = getattr(processor, "tokenizer", processor)
        if config is None or tokenizer is None or not hasattr(tokenizer, "convert_tokens_to_ids"):
            return
        name = type(processor).__name__
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        rows = max(getattr(embeddings, "num_embeddings", 0) or 0,
                   getattr(config.get_text_config(), "vocab_size", 0) or 0)
        if rows and len(tokenizer) > rows:
            raise ValueError(
                f"The {name} (processing_class) has {len(tokenizer)} tokens but the model's vocabulary has {rows}: "
                f"they come from different checkpoints. Load the processor from the model's own checkpoint "
                f"(AutoProcessor.from_pretrained(<model>)), or call model.resize_token_embeddings(len(tokenizer)) if "
                f"you added tokens on purpose."
            )
        model_image_id = getattr(config, "image_token_id", None)
        if model_image_id is None:
            model_image_id = getattr(config, "image_token_index", None)
        tokens = {t for t in (getattr(processor, "image_token", None), getattr(tokenizer, "image_token", None)) if t}
        if model_image_id is None or not tokens:  # not a VLM with image placeholders, or a text-only processor
            return
        ids = {tokenizer.convert_tokens_to_ids(t): t for t in tokens}
        if model_image_id not in ids:
            raise ValueError(
                f"The {name} (processing_class) writes images as {sorted(tokens)} (token ids {sorted(ids)}) but the "
                f"{type(model).__name__} expects image token id {model_image_id} (its config.image_token_id): the "
                f"processor is not this model's. Load the processor from the model's own checkpoint "
                f"(AutoProcessor.from_pretrained(<model>))."
            )

    def _uses_reference(self, args: UnlearnConfig | None = None) -> bool:
        """Whether this run needs the frozen reference model (the method's objective or a KL retain term)."""
        args = args or self.args
        return self.needs_reference or args.retain_loss == "kl"

    # -- reference model -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reference(self, model):
        """Context giving the frozen pre-unlearning model: the adapter-disabled PEFT model (no copy) or the
        frozen copy, in eval mode (no dropout; each module's training flag is restored on exit). Use under
        ``torch.no_grad()``."""
        if self._ref_model is not None:
            with _eval_mode(self._ref_model):
                yield self._ref_model
            return
        # through torch.compile too (torch_compile=True): accelerate's is_peft_model does not see through it
        unwrapped = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        if not is_peft_model(unwrapped):
            raise RuntimeError(
                f"{type(self).__name__} needs a reference model but none was built; this is a bug in the method "
                f"(set needs_reference = True)."
            )
        with unwrapped.disable_adapter(), _eval_mode(model):
            yield model

    def _check_reference_is_frozen(self) -> None:
        """Refuse a run that uses the reference when it is a PEFT model with trainable parameters outside its adapter:
        the adapter-disabled model would move with every update while per-sample reference caches still fill."""
        model = self.accelerator.unwrap_model(self.model)
        if not self._uses_reference() or not is_peft_model(model):
            return
        moving = _trainable_outside_adapter(model)
        if moving:
            shown = ", ".join(moving[:3]) + (f" and {len(moving) - 3} more" if len(moving) > 3 else "")
            raise ValueError(
                f"{type(self).__name__} uses the reference model (with PEFT: the model with its adapter disabled), but "
                f"{len(moving)} parameter(s) outside the adapter are trainable ({shown}), so the reference would change "
                f"with every update. Freeze them (requires_grad_(False); Saliency: leave them out of trainable_modules; "
                f"LoraConfig: bias='none'), train whole modules as adapter copies with LoraConfig(modules_to_save=[...]), "
                f"or train without PEFT (the reference is then a frozen copy of the model)."
            )

    def reference_logits(self, model, batch: dict) -> torch.Tensor:
        with torch.no_grad(), self.reference(model) as ref:
            return self.forward_logits(ref, batch).detach()

    def cached_reference(self, name: str, model, batch: dict, compute: Callable[[Any, dict], list]) -> list:
        """Per-sample reference quantity, computed once and cached by ``batch["sample_index"]``.

        ``compute(ref_model, batch)`` runs under ``no_grad`` with the reference and returns one value per row.
        With ``cache_reference=False`` (or no sample index) it is recomputed every call.
        """
        index = batch.get("sample_index")
        cache = self._ref_cache[name]
        if self.args.cache_reference and index is not None:
            keys = [int(i) for i in index.tolist()]
            hit = all(k in cache for k in keys)
            if self.accelerator.num_processes > 1:
                # Several processes: a reference forward is collective (DDP buffer broadcast, FSDP / ZeRO-3 parameter
                # gathers), so a rank whose rows are cached computes anyway when another rank's are not (else: hang).
                hit = bool(self.accelerator.gather(torch.tensor([float(hit)], device=self.accelerator.device)).min())
            if hit:
                return [cache[k] for k in keys]
        with torch.no_grad(), self.reference(model) as ref:
            values = compute(ref, batch)
        if len(values) != batch["input_ids"].shape[0]:
            raise RuntimeError(f"reference quantity {name!r} returned {len(values)} values for a batch of "
                               f"{batch['input_ids'].shape[0]}.")
        values = [v.detach() if torch.is_tensor(v) else v for v in values]
        if self.args.cache_reference and index is not None:
            for k, v in zip(index.tolist(), values):
                cache[int(k)] = v
        return values

    # -- forward helpers -----------------------------------------------------------------------------------
    @staticmethod
    def forward_logits(model, batch: dict) -> torch.Tensor:
        """Logits of the model on a collated batch (labels and metadata are not passed to the model)."""
        return model(**model_inputs(batch), use_cache=False).logits

    def forget_logits(self, model, forget: dict) -> torch.Tensor:
        """Logits on a forget batch. Methods use this for the pass whose loss unlearns, so that gradient gating
        of the forget objective (e.g. a saliency mask, :meth:`forget_gradient_context`) applies to it only."""
        with self.forget_gradient_context(model):
            return self.forward_logits(model, forget)

    def forget_gradient_context(self, model):
        """Context under which the forget pass runs. With ``args.saliency_mask`` set, the forget pass's gradient
        reaches only the entries the mask selects (any method; the retain pass is outside); otherwise nothing."""
        if self.args.saliency_mask is not None:
            from ..saliency import forget_gradient_gate  # lazy: saliency is only imported by runs that use a mask

            return forget_gradient_gate(self._loaded_saliency_mask(), self.accelerator.unwrap_model(model))
        return contextlib.nullcontext()

    def _loaded_saliency_mask(self):
        """The mask at ``args.saliency_mask``: the one loaded at construction (or computed by SaliencyTrainer), loaded
        again only if the path changed since."""
        mask = getattr(self, "_saliency_mask", None)
        if mask is None or getattr(self, "_saliency_mask_path", None) != self.args.saliency_mask:
            from ..saliency import SaliencyMask, check_checkpointing

            check_checkpointing(self.args)
            mask = SaliencyMask.load(self.args.saliency_mask)
            self._saliency_mask, self._saliency_mask_path = mask, self.args.saliency_mask
        return mask

    # -- the method's objective (override one of the two) ------------------------------------------------------
    def unlearning_loss(self, model, inputs: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's forget objective as one loss, and its named terms for logging. ``inputs`` has "forget"
        (and "retain" if a retain set is used: the base adds the retain term itself). Override this, or
        :meth:`unlearning_passes` for an objective made of several trainable passes."""
        raise NotImplementedError(
            f"{type(self).__name__} must override unlearning_loss(model, inputs) (one forget loss) or "
            f"unlearning_passes(model, inputs) (several trainable passes)."
        )

    def unlearning_passes(self, model, inputs: dict) -> list[Callable[[], tuple[torch.Tensor, dict[str, Any]]]]:
        """The method's trainable forward passes, in order: zero-argument callables each returning ``(loss, terms)``;
        the objective is the sum of their losses. In training each pass is backpropagated before the next one runs.
        Default: the single pass :meth:`unlearning_loss`."""
        return [lambda: self.unlearning_loss(model, inputs)]

    # -- the training objective (private) -----------------------------------------------------------------------
    def _retain_term(self, model, retain: dict) -> torch.Tensor:
        logits = self.forward_logits(model, retain)
        if self.args.retain_loss == "kl":
            return losses.kl_retain_loss(logits, self.reference_logits(model, retain), retain["labels"])
        return losses.nll_loss(logits, retain["labels"])

    def _retain_pass(self, model, retain: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        term = self._retain_term(model, retain)
        return self.args.retain_weight * term, {f"retain_{self.args.retain_loss}": term}

    def _passes(self, model, inputs: dict) -> list[Callable[[], tuple[torch.Tensor, dict[str, Any]]]]:
        """The method's passes, then the retain pass (``retain_weight * retain term``) if a retain set is used."""
        passes = list(self.unlearning_passes(model, inputs))
        retain = inputs.get("retain")
        if retain is not None and self.args.retain_loss != "none":
            passes.append(lambda: self._retain_pass(model, retain))
        return passes

    def _record_terms(self, terms: dict) -> None:
        for k, v in terms.items():
            self._terms[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The unlearning objective: the sum of the method's passes and the retain pass.

        In Trainer's training step (which backpropagates the returned loss; :meth:`compute_loss_context_manager`)
        with one backward per pass (:meth:`_backward_per_pass`), every pass but the last is backpropagated here as
        soon as it exists, scaled as Trainer's ``training_step`` scales the returned loss, and the returned loss is
        the last pass's loss plus the detached others: Trainer's ``training_step`` then backpropagates the last pass
        and logs the total. Peak
        activation memory is that of the largest pass instead of the sum of all passes; the gradient is the same as
        one backward of the sum. Each pass is checked for NaN/inf before its backward, and the optimizer step only
        runs after the whole step, so a non-finite pass still stops training before any update.
        """
        if "forget" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        passes = self._passes(model, inputs)
        if not (self._in_trainer_step and torch.is_grad_enabled() and self._backward_per_pass(inputs)):
            total, terms = None, {}
            for run in passes:
                loss, pass_terms = run()
                total = loss if total is None else total + loss
                terms.update(pass_terms)
            self._check_finite(total, terms, inputs["forget"])
            self._record_terms(terms)
            return (total, {"terms": terms}) if return_outputs else total
        scale = self._gradient_accumulation_divisor(num_items_in_batch)
        done = torch.zeros((), device=self.args.device)
        terms_all: dict[str, Any] = {}
        *earlier, last = passes
        for run in earlier:
            loss = self._run_pass(run, inputs["forget"], terms_all)
            self.accelerator.backward(loss / scale)
            done += loss.detach()
            del loss
        loss = self._run_pass(last, inputs["forget"], terms_all)
        self._record_terms(terms_all)
        loss = loss + done  # the last pass (backpropagated by Trainer.training_step) + the detached earlier ones
        return (loss, {"terms": terms_all}) if return_outputs else loss

    def compute_loss_context_manager(self) -> contextlib.ExitStack:
        """Trainer's context around ``compute_loss`` in its steps, marking that a Trainer step computes the loss and
        backpropagates what :meth:`compute_loss` returns: only then does it backpropagate the earlier passes itself
        (a direct call keeps returning the whole objective's graph)."""
        stack = super().compute_loss_context_manager()
        self._in_trainer_step = True
        stack.callback(setattr, self, "_in_trainer_step", False)
        return stack

    def _run_pass(self, run, forget: dict, terms_all: dict) -> torch.Tensor:
        """Run one pass, check it is finite (before its backward) and keep its terms detached, so that nothing of
        the pass's graph outlives its backward."""
        loss, terms = run()
        self._check_finite(loss, terms, forget)
        terms_all.update({k: v.detach() if torch.is_tensor(v) else v for k, v in terms.items()})
        return loss

    def _gradient_accumulation_divisor(self, num_items_in_batch):
        """What Trainer's ``training_step`` divides the returned loss by before its backward (the accumulation
        steps, unless the loss is already scaled for them): the earlier passes get the same scale."""
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            scaled = ((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                      or self.compute_loss_func is not None)
        return 1 if scaled else getattr(self, "current_gradient_accumulation_steps", 1)

    def _backward_per_pass(self, inputs) -> bool:
        """Whether each pass gets its own backward; otherwise one backward of the sum, as Trainer does."""
        return (
            self.args.backward_per_pass
            and isinstance(inputs, dict) and "forget" in inputs
            and self.accelerator.distributed_type != DistributedType.DEEPSPEED  # DeepSpeed: one backward per step
            and self.args.n_gpu <= 1  # nn.DataParallel averages one loss over replicas
            and type(self).compute_loss is UnlearnTrainer.compute_loss  # a subclass's own loss keeps the default
            and not str(self.args.optim).lower().endswith("lomo")  # LOMO optimisers update inside backward
        )

    def _check_finite(self, loss: torch.Tensor, terms: dict, forget: dict) -> None:
        if torch.isfinite(loss).all():
            return
        bad = [k for k, v in terms.items() if torch.is_tensor(v) and not torch.isfinite(v).all()]
        index = forget.get("sample_index")
        rows = f" (forget rows {index.tolist()})" if index is not None else ""
        raise NonFiniteLossError(
            f"Non-finite unlearning loss at step {self.state.global_step}{rows}: {float(loss.detach())}; non-finite terms: "
            f"{bad or 'none (the sum overflowed)'}. Training stopped before applying the update. Lower the learning "
            f"rate or set a forget_loss_ceiling."
        )

    # -- resuming ------------------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore a full-parameter model's weights from a Trainer checkpoint through the model's own
        ``from_pretrained``, which maps the key names ``save_pretrained`` converted (transformers 5 saves LLaVA- and
        Qwen-VL-style checkpoints under their original Hub names; the parent's non-strict ``load_state_dict`` would
        match none and resume on the base weights). Adapters, DeepSpeed and FSDP keep the parent's loading."""
        model = self.model if model is None else model
        if not self._loads_full_weights(model, resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_full_weights(model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        """As :meth:`_load_from_checkpoint`, for ``load_best_model_at_end`` (the parent has the same non-strict load)."""
        if not self._loads_full_weights(self.model, self.state.best_model_checkpoint):
            return super()._load_best_model()
        self._load_full_weights(self.model, self.state.best_model_checkpoint)

    def _loads_full_weights(self, model, checkpoint: str | None) -> bool:
        import os

        from transformers import PreTrainedModel
        from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

        return (
            checkpoint is not None
            and isinstance(model, PreTrainedModel) and not is_peft_model(model)
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
            and any(os.path.isfile(os.path.join(checkpoint, name))
                    for name in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME))
        )

    @staticmethod
    def _load_full_weights(model, checkpoint: str) -> None:
        """Load ``checkpoint`` into ``model`` by key-renaming ``from_pretrained`` and a strict copy; raise naming the
        checkpoint and the keys if any parameter or buffer of the model was not matched (never resume silently
        from other weights)."""
        loaded, info = type(model).from_pretrained(checkpoint, dtype="auto", output_loading_info=True)
        state = loaded.state_dict()
        expected = model.state_dict()
        missing = sorted(set(info.get("missing_keys") or ()) | (set(expected) - set(state)))
        unexpected = sorted(set(info.get("unexpected_keys") or ()) | (set(state) - set(expected)))
        mismatched = sorted(str(m[0] if isinstance(m, tuple) else m) for m in info.get("mismatched_keys") or ())
        mismatched += sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or mismatched:
            def show(keys):
                return f"{len(keys)} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"

            raise RuntimeError(
                f"Cannot restore the weights of {checkpoint}: they do not match {type(model).__name__}. Missing: "
                f"{show(missing)}; unexpected: {show(unexpected)}; wrong shape: {show(mismatched)}. Load it into the "
                f"model this checkpoint was trained from (same architecture and size)."
            )
        model.load_state_dict(state, strict=True)
        del loaded, state

    # -- saving --------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model (the adapter only, for PEFT) as safetensors, with the training arguments as JSON
        instead of the parent's pickled ``training_args.bin`` and the model card as README.md
        (:mod:`unlearn_trainer.hub`); checkpoints for resuming keep Trainer's files."""
        # The parent would push (args.push_to_hub) before our card exists: save without pushing, push below.
        super().save_model(output_dir, _internal_call=True)
        # push_to_hub saves with output_dir=None; Trainer's checkpoints pass their own folder.
        final = not _internal_call or output_dir is None
        if final and self.args.should_save:
            import os

            from ..hub import publish_adapter_configs, write_model_card

            output_dir = output_dir or self.args.output_dir
            pickled = os.path.join(output_dir, "training_args.bin")
            if os.path.exists(pickled):
                os.remove(pickled)
            with open(os.path.join(output_dir, "training_args.json"), "w") as f:
                f.write(self.args.to_json_string())
            publish_adapter_configs(self, output_dir)  # the base model's Hub id or folder name, not a local path
            write_model_card(self, output_dir)  # after save_pretrained, which writes PEFT's own card
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def create_model_card(self, language: str | None = None, license: str | None = None,
                          tags: str | list[str] | None = None, model_name: str | None = None,
                          finetuned_from: str | None = None, tasks: str | list[str] | None = None,
                          dataset_tags: str | list[str] | None = None, dataset: str | list[str] | None = None,
                          dataset_args: str | list[str] | None = None, **card_kwargs) -> None:
        """Write this package's model card (method and paper, hyperparameters, what was forgotten, before/after
        evaluation; :func:`unlearn_trainer.hub.render_model_card`) to ``args.output_dir/README.md``, instead of
        Trainer's generic card. ``tasks``, ``dataset_tags`` and ``dataset_args`` are accepted and unused."""
        if not self.is_world_process_zero():
            return
        from ..hub import write_model_card

        write_model_card(self, self.args.output_dir, language=language, license=license, tags=tags,
                         model_name=model_name, finetuned_from=finetuned_from, dataset=dataset, **card_kwargs)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Upload the adapter (or model), its processor and this package's model card to ``args.hub_model_id``,
        in a private repo unless ``hub_private_repo=False``. Unlike Trainer, only those files are uploaded: the
        evaluation outputs (generated answers to forget questions), checkpoints and pickles stay local.
        ``kwargs`` go to :meth:`create_model_card`."""
        from ..hub import push_trainer_to_hub

        return push_trainer_to_hub(self, commit_message=commit_message, blocking=blocking, token=token,
                                   revision=revision, private=private, **kwargs)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer's per-checkpoint push, through this package's upload allow-list
        (:func:`unlearn_trainer.hub.push_checkpoint_to_hub`) instead of uploading the whole output folder."""
        from ..hub import push_checkpoint_to_hub

        push_checkpoint_to_hub(self, checkpoint_folder)

    # -- logging -------------------------------------------------------------------------------------------
    def add_callback(self, callback) -> None:
        super().add_callback(callback)
        self._attach_to_callbacks()

    def _attach_to_callbacks(self) -> None:
        """Hand this trainer to the callbacks that log through it (``UnlearningEvalCallback.attach_trainer``), so that
        their metrics go through :meth:`log` to every ``report_to`` integration, as ``Trainer.evaluate``'s do."""
        for callback in getattr(getattr(self, "callback_handler", None), "callbacks", []):
            if hasattr(callback, "attach_trainer"):
                callback.attach_trainer(self)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._terms and "loss" in logs:
            for k, vals in self._terms.items():
                mean = torch.tensor(sum(vals) / len(vals), device=self.args.device)
                if self.accelerator.num_processes > 1:
                    mean = self.accelerator.reduce(mean, reduction="mean")
                logs[k] = round(float(mean), 6)
            self._terms.clear()
        super().log(logs, start_time)
