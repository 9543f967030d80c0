"""The base of every unlearning trainer: forget/retain plumbing, the reference model, caches, guards, logging.

A method subclasses :class:`UnlearnTrainer`, sets ``needs_reference`` if its objective uses the frozen
model, and implements ``unlearning_loss(model, inputs) -> (loss, terms)``; a method whose objective needs
several trainable forward passes (PUBG's guidance pass, SGPVT's distillation pass) yields them one by one from
``method_passes`` instead. Everything else (retain term, one backward per pass so that only one pass's
activations are alive, reference model without a second copy under PEFT, per-sample reference caches,
non-finite guard, logging of every term, gradient accumulation) lives here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainingArguments

from .. import losses
from ..data.collator import ForgetRetainCollator, ForgetRetainDataset, VLMUnlearningCollator, model_inputs

__all__ = ["UnlearnConfig", "UnlearnTrainer", "NonFiniteLossError", "is_peft_model"]


class NonFiniteLossError(RuntimeError):
    """Raised when an unlearning loss becomes NaN or infinite; training stops before any update is applied."""


@dataclass
class UnlearnConfig(TrainingArguments):
    """Training arguments shared by every unlearning method (a ``transformers.TrainingArguments``).

    Retain term: ``retain_loss`` is ``"nll"`` (GradDiff: fine-tuning loss on the retain set), ``"kl"``
    (``KL(p_theta || p_ref)`` on retain answer tokens) or ``"none"``; left unset it is ``"nll"`` when a retain
    set is given and ``"none"`` otherwise. Both run over answer tokens only.
    """

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
    pairing_seed: int = field(default=0, metadata={"help": "Seed of the forget-to-retain row pairing."})
    # Any method: gate the forget-loss gradient by a saved weight-saliency mask (MMUnlearner Eq. 3).
    saliency_mask: str | None = field(
        default=None,
        metadata={"help": "Path to a saliency mask (safetensors from unlearn_trainer.saliency): the forget-loss "
                          "gradient reaches only the parameter entries it selects; the retain gradient is not masked."},
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


def is_peft_model(model) -> bool:
    """True for a PEFT model (its reference is itself with the adapter disabled)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class UnlearnTrainer(Trainer):
    """A ``transformers.Trainer`` that unlearns ``forget_dataset`` while (optionally) keeping ``retain_dataset``.

    Batches are ``{"forget": model_input, "retain": model_input}``. Subclasses implement
    :meth:`unlearning_loss`. Plain batches (e.g. from ``eval_dataset``) use the parent's loss.
    """

    config_class = UnlearnConfig
    method_name = "base"
    #: True if the method's objective uses the frozen pre-unlearning model.
    needs_reference = False
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
        **kwargs,
    ):
        if args is None:
            args = self.config_class(output_dir=f"{self.method_name}-unlearned")
        elif not isinstance(args, self.config_class):
            args = self._convert_args(args)
        if forget_dataset is None:
            forget_dataset = train_dataset
        elif train_dataset is not None and train_dataset is not forget_dataset:
            raise ValueError("Pass the forget set as forget_dataset= or train_dataset=, not both.")
        if forget_dataset is None or len(forget_dataset) == 0:
            raise ValueError("The forget set is empty: pass forget_dataset= with at least one row to unlearn.")
        if peft_config is not None:
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
            model = get_peft_model(model, peft_config)
        self._check_processor_matches_model(model, processing_class)
        if args.retain_loss is None:
            args.retain_loss = "nll" if retain_dataset is not None else "none"
        if args.retain_loss != "none" and retain_dataset is None:
            raise ValueError(f"retain_loss={args.retain_loss!r} needs a retain set: pass retain_dataset=.")

        self.forget_dataset, self.retain_dataset = forget_dataset, retain_dataset
        paired = ForgetRetainDataset(
            forget_dataset, retain_dataset if args.retain_loss != "none" else None, seed=args.pairing_seed
        )
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass processing_class= (the model's processor) or a data_collator=.")
            data_collator = VLMUnlearningCollator(processing_class)
        if not isinstance(data_collator, ForgetRetainCollator):
            data_collator = ForgetRetainCollator(data_collator)

        self._ref_model = None
        if self.uses_reference(args) and not is_peft_model(model):
            if ref_model is None and _zero3_enabled():
                # ZeRO-3 partitions parameters as the model loads: a deepcopy holds empty shards (as TRL, refuse).
                raise ValueError(
                    f"{type(self).__name__} needs a frozen reference model, and under DeepSpeed ZeRO-3 the model cannot "
                    f"be copied: pass ref_model= (a second from_pretrained of the same checkpoint, loaded after the "
                    f"training arguments), or train a LoRA adapter (peft_config=: the reference is then the model with "
                    f"its adapter disabled)."
                )
            self._ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self._ref_model.requires_grad_(False).eval()
        elif ref_model is not None and is_peft_model(model):
            raise ValueError("With a PEFT model the reference is the model with its adapter disabled; drop ref_model=.")

        self._ref_cache: dict[str, dict[int, Any]] = defaultdict(dict)
        self._terms: dict[str, list[float]] = defaultdict(list)
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
        if self._ref_model is not None:
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
        # Hub tags on the model itself, so that PEFT's card update in save_pretrained keeps them (unlearn_trainer.hub).
        if hasattr(self.model, "add_model_tags"):
            from ..hub import card_tags

            self.model.add_model_tags(card_tags(self.method_name, adapter=is_peft_model(self.model)))

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

    def uses_reference(self, args: UnlearnConfig | None = None) -> bool:
        """Whether this run needs the frozen reference model (the method's objective or a KL retain term)."""
        args = args or self.args
        return self.needs_reference or args.retain_loss == "kl"

    # -- reference model -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reference(self, model):
        """Context giving the frozen pre-unlearning model: the adapter-disabled PEFT model (no copy) or the
        frozen copy. Use under ``torch.no_grad()``."""
        if self._ref_model is not None:
            yield self._ref_model
            return
        unwrapped = self.accelerator.unwrap_model(model)
        if not is_peft_model(unwrapped):
            raise RuntimeError(
                f"{type(self).__name__} needs a reference model but none was built; this is a bug in the method "
                f"(set needs_reference = True)."
            )
        with unwrapped.disable_adapter():
            yield model

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

            return forget_gradient_gate(self, model)
        return contextlib.nullcontext()

    def retain_term(self, model, retain: dict) -> torch.Tensor:
        logits = self.forward_logits(model, retain)
        if self.args.retain_loss == "kl":
            return losses.kl_retain_loss(logits, self.reference_logits(model, retain), retain["labels"])
        return losses.nll_loss(logits, retain["labels"])

    # -- the method's objective ----------------------------------------------------------------------------
    def unlearning_loss(self, model, inputs: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the method's forget objective and its named terms for logging. ``inputs`` has "forget"
        (and "retain" if a retain set is used; the base adds the retain term itself). A method that yields its
        passes from :meth:`method_passes` instead gets their sum here."""
        if type(self).method_passes is not UnlearnTrainer.method_passes:
            return self.sum_passes(self.method_passes(model, inputs))
        raise NotImplementedError(f"{type(self).__name__} must implement unlearning_loss(model, inputs).")

    def method_passes(self, model, inputs: dict) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """Yield ``(loss, terms)`` for each trainable forward pass of the method's objective; the objective is the
        sum of the yielded losses. Default: one pass, :meth:`unlearning_loss`. A method with several passes
        yields each as soon as it is computed: the training step backpropagates it before the next pass runs."""
        yield self.unlearning_loss(model, inputs)

    def unlearning_passes(self, model, inputs: dict) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """The method's passes, then the retain pass (``retain_weight * retain term``) if a retain set is used."""
        yield from self.method_passes(model, inputs)
        retain = inputs.get("retain")
        if retain is not None and self.args.retain_loss != "none":
            r = self.retain_term(model, retain)
            yield self.args.retain_weight * r, {f"retain_{self.args.retain_loss}": r}

    @staticmethod
    def sum_passes(passes) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sum of the passes' losses and the union of their terms (for a single backward, or evaluation)."""
        total, terms = None, {}
        for loss, t in passes:
            total = loss if total is None else total + loss
            terms.update(t)
        return total, terms

    def _record_terms(self, terms: dict) -> None:
        for k, v in terms.items():
            self._terms[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "forget" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        loss, terms = self.sum_passes(self.unlearning_passes(model, inputs))
        self._check_finite(loss, terms, inputs["forget"])
        self._record_terms(terms)
        if return_outputs:
            return loss, {"terms": terms}
        return loss

    def _backward_per_pass(self, inputs) -> bool:
        return (
            self.args.backward_per_pass
            and isinstance(inputs, dict) and "forget" in inputs
            and self.accelerator.distributed_type != DistributedType.DEEPSPEED  # DeepSpeed: one backward per step
            and self.args.n_gpu <= 1  # nn.DataParallel averages one loss over replicas
            and type(self).compute_loss is UnlearnTrainer.compute_loss  # a subclass's own loss keeps the default
            and not str(self.args.optim).lower().endswith("lomo")  # LOMO optimisers update inside backward
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One unlearning step, backpropagating each trainable pass before the next one runs.

        Peak activation memory is then that of the largest pass instead of the sum of all passes (GA+GD, PUBG,
        SGPVT and any method with a retain set run two or more trainable passes). The gradient is the same as
        one backward of the summed loss; each pass is checked for NaN/inf before its backward and the optimizer
        step only runs after the whole step, so a non-finite pass still stops training before any update.
        """
        if not self._backward_per_pass(inputs):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        total = torch.zeros((), device=self.args.device)
        terms_all: dict[str, Any] = {}
        with self.compute_loss_context_manager():
            for loss, terms in self.unlearning_passes(model, inputs):
                self._check_finite(loss, terms, inputs["forget"])
                # detach the logged terms now: nothing of this pass's graph outlives its backward
                terms_all.update({k: v.detach() if torch.is_tensor(v) else v for k, v in terms.items()})
                scaled = loss / self.current_gradient_accumulation_steps
                self.accelerator.backward(scaled)
                total += scaled.detach()
                del loss, terms, scaled
        self._record_terms(terms_all)
        return total

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

            from ..hub import write_model_card

            output_dir = output_dir or self.args.output_dir
            pickled = os.path.join(output_dir, "training_args.bin")
            if os.path.exists(pickled):
                os.remove(pickled)
            with open(os.path.join(output_dir, "training_args.json"), "w") as f:
                f.write(self.args.to_json_string())
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

    # -- logging -------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._terms and "loss" in logs:
            for k, vals in self._terms.items():
                mean = torch.tensor(sum(vals) / len(vals), device=self.args.device)
                if self.accelerator.num_processes > 1:
                    mean = self.accelerator.reduce(mean, reduction="mean")
                logs[k] = round(float(mean), 6)
            self._terms.clear()
        super().log(logs, start_time)
