"""Attacks that try to bring forgotten knowledge back (issue 14): relearning and quantization.

Both work on a private copy of the model (:func:`merged_copy`), so the caller's model and adapter are never
changed, and both report :func:`~unlearn_trainer.evaluation.evaluator.evaluate_splits` metrics of the caller's
splits (the caller chooses and caps the rows; nothing is loaded here). Only metrics are returned and logged, never
rows or generated answers.

- :func:`relearning_attack`: fine-tune the copy with plain NLL on a few rows (e.g. one view per forgotten person)
  and evaluate after a few step counts; knowledge that was only hidden comes back within a few steps, knowledge
  that is gone has to be learned anew (compare with a retrained model under the same attack).
- :func:`quantization_attack`: evaluate the copy after 8-bit and 4-bit (NF4) bitsandbytes quantization; a small
  weight update that hid the knowledge can be rounded away.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence

import torch

from .._progress import progress_bar
from .._quiet import _DropMessage
from ..data.collator import VLMUnlearningCollator, model_inputs, to_device
from .evaluator import evaluate_splits

__all__ = ["merged_copy", "relearning_attack", "quantization_attack", "QUANTIZATION_CONFIGS"]

logger = logging.getLogger(__name__)

#: ``BitsAndBytesConfig`` arguments per bit width: LLM.int8() and QLoRA's NF4 (with double quantization).
QUANTIZATION_CONFIGS = {
    8: dict(load_in_8bit=True),
    4: dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
}

_BNB_MISSING = "The quantization attack needs bitsandbytes: pip install 'unlearn-trainer[bnb]'."


def merged_copy(model):
    """A deep copy of ``model`` in eval mode, with its PEFT adapter (if any) merged into the weights
    (``merge_and_unload``): a plain model that computes what the adapted model computes. ``model`` and its adapter
    are left untouched. Distributed / compile wrappers are removed first."""
    from accelerate.utils import extract_model_from_parallel, is_peft_model

    model = extract_model_from_parallel(model)
    if getattr(getattr(model, "config", None), "quantization_config", None) is not None or getattr(
        model, "is_quantized", False
    ):
        raise ValueError(
            "merged_copy needs a model with full-precision weights; this one is quantized (bitsandbytes). Load the "
            "base model without `quantization_config` and attach the adapter to it (PeftModel.from_pretrained)."
        )
    clone = copy.deepcopy(model)
    if is_peft_model(clone):
        clone = clone.merge_and_unload()
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def _eval(model, processor, eval_splits, is_well_formed, progress, desc, eval_kwargs):
    """Metrics only: the generated answers (about the forgotten, for forget splits) are dropped here."""
    metrics, _answers = evaluate_splits(model, processor, eval_splits, is_well_formed=is_well_formed,
                                        progress=progress, desc=desc, **eval_kwargs)
    return metrics


def _eval_kwargs(eval_kwargs: dict, seed: int) -> dict:
    """``evaluate_splits`` keyword arguments: ``eval_batch_size`` is its ``batch_size`` (``batch_size`` here is the
    attack's training batch), and generation is seeded with the attack's ``seed`` unless ``eval_seed`` is given."""
    kwargs = dict(eval_kwargs)
    if "eval_batch_size" in kwargs:
        kwargs["batch_size"] = kwargs.pop("eval_batch_size")
    kwargs["seed"] = kwargs.pop("eval_seed", seed)
    return kwargs


def _check_splits(eval_splits) -> None:
    if not isinstance(eval_splits, dict) or not eval_splits:
        raise ValueError("`eval_splits` must be a non-empty dict {split name: list of rows}.")
    for name, rows in eval_splits.items():
        if len(rows) == 0:
            raise ValueError(f"Evaluation split {name!r} is empty; remove it from `eval_splits`.")


def relearning_attack(
    model,
    processor,
    attack_rows: Sequence[dict],
    eval_splits: dict[str, Sequence[dict]],
    steps: Sequence[int] = (0, 5, 10, 20),
    learning_rate: float = 1e-3,
    batch_size: int = 8,
    method: str = "lora",
    seed: int = 0,
    is_well_formed: Callable[[str], bool] | None = None,
    max_new_tokens: int = 32,
    progress: bool = False,
    **eval_kwargs,
) -> dict[int, dict[str, dict[str, float]]]:
    """Fine-tune a copy of ``model`` on ``attack_rows`` and evaluate ``eval_splits`` after each count in ``steps``:
    ``{step: {split: metrics}}`` (step 0 is the model as given).

    The copy is :func:`merged_copy` (adapter merged). ``method="full"`` trains all its weights; ``"lora"`` a fresh
    LoRA adapter (r=8, alpha=16, :func:`~unlearn_trainer.language_model_lora_targets`) on it. Training is plain NLL
    on the answer tokens (and the end-of-turn token, so answers stop as in fine-tuning) of
    :class:`~unlearn_trainer.VLMUnlearningCollator` batches, AdamW at a constant ``learning_rate`` (no schedule, so
    the result after k steps does not depend on the largest count asked), no weight decay, batches of
    ``batch_size`` rows drawn by a ``seed``-ed shuffle, epoch after epoch. Nothing is written to disk.

    The default is ``"lora"``: at the default ``learning_rate`` it brings back what was only hidden while the rest
    of the model keeps working; full fine-tuning at 1e-3 overwrites the model (it then names the attack's people on
    every picture, so recall on held-out forget pictures says nothing), and LoRA needs no optimizer state for the
    base weights of a large model. ``"full"`` at 1e-4 is the stronger, slower alternative. Measured in
    benchmarks/README.md ("Relearning and quantization attacks").

    ``eval_kwargs`` go to :func:`~unlearn_trainer.evaluation.evaluate_splits` (``eval_batch_size`` is its batch size,
    ``eval_seed`` its generation seed, default ``seed``).
    """
    method = method.lower() if isinstance(method, str) else method
    if method not in ("full", "lora"):
        raise ValueError(f"`method` must be 'full' or 'lora', got {method!r}.")
    counts = sorted({int(s) for s in steps})
    if not counts or counts[0] < 0 or any(int(s) != s for s in steps):
        raise ValueError(f"`steps` must be non-negative whole step counts, e.g. (0, 5, 10, 20); got {tuple(steps)}.")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive, got {learning_rate}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    attack_rows = list(attack_rows)
    if counts[-1] > 0 and not attack_rows:
        raise ValueError("`attack_rows` is empty: give the rows to fine-tune on (e.g. one view per forgotten person).")
    _check_splits(eval_splits)
    eval_kwargs = {**_eval_kwargs(eval_kwargs, seed), "max_new_tokens": max_new_tokens}

    torch.manual_seed(seed)
    attacked = merged_copy(model)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        from ..vision.adapters import language_model_lora_targets

        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                            target_modules=language_model_lora_targets(attacked))
        attacked = get_peft_model(attacked, config)
    else:
        for p in attacked.parameters():
            p.requires_grad_(True)
    trainable = [p for p in attacked.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    collator = VLMUnlearningCollator(processor, label_end_of_turn=True, return_index=False)
    device = next(attacked.parameters()).device
    dtype = next(attacked.parameters()).dtype
    order = torch.Generator().manual_seed(seed)
    queue: list[int] = []

    results: dict[int, dict[str, dict[str, float]]] = {}
    done = 0
    bar = progress_bar(total=counts[-1], desc=f"relearning attack ({method})", enabled=progress, unit="step")
    try:
        for count in counts:
            attacked.train()
            while done < count:
                while len(queue) < batch_size:  # epoch after epoch, each a fresh seeded shuffle
                    queue += torch.randperm(len(attack_rows), generator=order).tolist()
                batch_rows, queue = [attack_rows[i] for i in queue[:batch_size]], queue[batch_size:]
                batch = to_device(collator(batch_rows), device, dtype)
                loss = attacked(**model_inputs(batch), labels=batch["labels"]).loss
                if not torch.isfinite(loss):
                    raise RuntimeError(f"The relearning attack's loss is {loss.item()} at step {done + 1}; lower "
                                       f"`learning_rate` (now {learning_rate}).")
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                done += 1
                bar.update(1)
            attacked.eval()
            results[count] = _eval(attacked, processor, eval_splits, is_well_formed, progress,
                                   f"relearning step {count}:", eval_kwargs)
            logger.info("Relearning attack (%s, lr %g): evaluated after %d steps.", method, learning_rate, count)
    finally:
        bar.close()
        del optimizer, attacked
    return results


def _bitsandbytes():
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ImportError(_BNB_MISSING) from err


@contextlib.contextmanager
def _no_int8_cast_notes():
    """bitsandbytes logs "MatMul8bitLt: inputs will be cast from ... to float16" on every 8-bit matmul of a
    non-fp16 model (hundreds of lines per evaluation); the cast is LLM.int8()'s design, not the user's to fix."""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    note = _DropMessage("MatMul8bitLt: inputs will be cast from")
    bnb_logger.addFilter(note)
    try:
        yield
    finally:
        bnb_logger.removeFilter(note)


def _is_bnb_layer(module) -> bool:
    return type(module).__module__.startswith("bitsandbytes")


def quantization_attack(
    model,
    processor,
    eval_splits: dict[str, Sequence[dict]],
    bits: Sequence[int] = (8, 4),
    is_well_formed: Callable[[str], bool] | None = None,
    progress: bool = False,
    **eval_kwargs,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate ``eval_splits`` on ``model`` (adapter merged, :func:`merged_copy`) quantized by bitsandbytes to each
    width in ``bits``: ``{"8bit": {split: metrics}, "4bit": {...}}``.

    The merged copy is saved (safetensors) to a temporary folder, deleted afterwards, and loaded back with
    ``BitsAndBytesConfig`` (:data:`QUANTIZATION_CONFIGS`: LLM.int8(), 4-bit NF4), on the model's device (bitsandbytes
    runs on CPU too). Every linear layer but the output head is quantized, as transformers does by default.
    ``eval_kwargs`` go to :func:`~unlearn_trainer.evaluation.evaluate_splits` (``eval_batch_size`` is its batch size).
    """
    bits = [int(b) for b in bits]
    unknown = [b for b in bits if b not in QUANTIZATION_CONFIGS]
    if unknown or not bits:
        raise ValueError(f"`bits` must be a non-empty choice of {sorted(QUANTIZATION_CONFIGS)}, got {bits}.")
    _check_splits(eval_splits)
    _bitsandbytes()
    from transformers import BitsAndBytesConfig

    eval_kwargs = _eval_kwargs(eval_kwargs, eval_kwargs.pop("seed", 0))
    merged = merged_copy(model)
    device, dtype, model_class = next(merged.parameters()).device, merged.dtype, type(merged)
    results: dict[str, dict[str, dict[str, float]]] = {}
    folder = tempfile.mkdtemp(prefix="unlearn_trainer_quantization_")
    try:
        merged.save_pretrained(folder, safe_serialization=True)
        del merged
        for b in progress_bar(bits, desc="quantization attack", enabled=progress, unit="width"):
            config = BitsAndBytesConfig(**QUANTIZATION_CONFIGS[b], **(
                {"bnb_4bit_compute_dtype": dtype} if b == 4 else {}))
            load = {"device_map": {"": device}} if device.type != "cpu" else {}
            quantized = model_class.from_pretrained(folder, quantization_config=config, dtype=dtype, **load)
            if not any(_is_bnb_layer(m) for m in quantized.modules()):
                raise RuntimeError(f"Loading the model with {b}-bit quantization left no bitsandbytes layer; this "
                                   f"model's linear layers are not quantizable by bitsandbytes.")
            quantized.eval()
            with _no_int8_cast_notes():
                results[f"{b}bit"] = _eval(quantized, processor, eval_splits, is_well_formed, progress, f"{b}-bit:",
                                           eval_kwargs)
            logger.info("Quantization attack: evaluated the %d-bit model.", b)
            del quantized
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results
