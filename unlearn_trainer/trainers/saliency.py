"""Saliency: MMUnlearner (Huo et al. 2025), gradient ascent restricted to a weight-saliency mask.

L = -m * L_f + L_r  (Eq. 3), m = 1[S(T) / S(P) >= beta]  (Eq. 7), S(D) = (grad L_D(theta_0))^2  (Eq. 4).
L_f is the forget VQA NLL, L_r the retain NLL (the base trainer's retain term). The mask is computed once, before
training, on the initial model (T = forget rows, P = ``preserve_dataset``) and gates only the forget gradient; the
retain gradient updates every trainable parameter. The mask machinery lives in :mod:`unlearn_trainer.saliency`
and is reusable by any trainer via ``saliency_mask=<path>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch.utils.data import ConcatDataset

from ..citation import Citation
from ..saliency import FISHER_MODES, check_checkpointing, compute_saliency_mask, set_trainable
from .base import PerFamily, UnlearnConfig, paper_field
from .ga import GATrainer

__all__ = ["SaliencyConfig", "SaliencyTrainer", "SUGGESTED_LEARNING_RATES"]

logger = logging.getLogger(__name__)

#: MMUnlearner's settings: beta = 1 (Eq. 7); L = -m L_f + L_r (Eq. 3, L_r the retain NLL); no guard on GA; vision
#: encoder + connector + LM trained in full (no adapter); 2 epochs, batch size 4, lr 2e-5 for LLaVA-1.5 and 1e-5 for
#: Qwen2-VL (App. B.3.6, Table 5).
PAPER_SETTINGS: dict[str, Any] = {
    "beta": 1.0, "forget_loss_ceiling": None, "learning_rate": PerFamily({"llava": 2e-5, "qwen2_vl": 1e-5}),
    "per_device_train_batch_size": 4, "num_train_epochs": 2.0, "retain_loss": "nll", "adapter": "full",
}
#: The paper's unlearning learning rates per model family (``PAPER_SETTINGS["learning_rate"]``).
SUGGESTED_LEARNING_RATES = dict(PAPER_SETTINGS["learning_rate"])


@dataclass
class SaliencyConfig(UnlearnConfig):
    """MMUnlearner. Defaults are the paper's (``PAPER_SETTINGS``): ``beta`` = 1, 2 epochs, batch size 4, learning
    rate None = the paper's for the model family (2e-5 LLaVA-1.5, 1e-5 Qwen2-VL; set when the trainer is built),
    vision encoder + connector + LM trained in full precision (``trainable_modules`` None keeps the model's own
    ``requires_grad``: all parameters of a plain model). Eq. 3 has a retain term: pass a retain set."""

    paper_settings: ClassVar[dict[str, Any]] = PAPER_SETTINGS
    paper_retain_term: ClassVar[str] = "L_r of Eq. 3"

    beta: float = paper_field(PAPER_SETTINGS, "beta", "Threshold on S(T)/S(P) (Eq. 7; the paper uses 1).")
    fisher_mode: str = field(
        default="dataset",
        metadata={"help": "'dataset' (Eq. 4: square of the set's mean-loss gradient), 'batch' (mean of squared "
                          "batch gradients, the authors' code) or 'sample' (empirical Fisher, per-row squares)."},
    )
    fisher_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size of the Fisher passes (default: per_device_train_batch_size)."}
    )
    saliency_eps: float = field(default=1e-30, metadata={"help": "S(P) is clamped to this before dividing."})
    saliency_cache_dir: str | None = field(
        default=None, metadata={"help": "Where Fisher diagonals and the mask are cached (default: output_dir/saliency)."}
    )
    trainable_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Regexes of parameter names to train in full (others frozen), e.g. 'multi_modal_projector' "
                          "'language_model'; None keeps requires_grad as it is."},
    )
    plot_saliency: bool = field(default=False, metadata={"help": "Also write a heatmap PNG of the mask (matplotlib)."})
    forget_loss_ceiling: float | None = paper_field(
        PAPER_SETTINGS, "forget_loss_ceiling",
        "Per-token forget NLL above which a sample stops being pushed (a guard, not in the paper); None (default, "
        "the paper) disables."
    )
    learning_rate: float | None = paper_field(
        PAPER_SETTINGS, "learning_rate",
        "Paper: 2e-5 for LLaVA-1.5, 1e-5 for Qwen2-VL; None (default): the paper's value for the model's family "
        "(LLaVA's when the paper gives none), set when the trainer is built."
    )
    num_train_epochs: float = paper_field(PAPER_SETTINGS, "num_train_epochs", "Paper: 2 epochs.")
    per_device_train_batch_size: int = paper_field(
        PAPER_SETTINGS, "per_device_train_batch_size", "Paper: batch size 4."
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if self.fisher_mode not in FISHER_MODES:
            raise ValueError(f"fisher_mode must be one of {FISHER_MODES}, got {self.fisher_mode!r}.")
        if self.fisher_batch_size is not None and self.fisher_batch_size < 1:
            raise ValueError(f"fisher_batch_size must be >= 1, got {self.fisher_batch_size}.")
        if not self.saliency_eps > 0:
            raise ValueError(f"saliency_eps must be > 0, got {self.saliency_eps}.")


def _as_rows(data):
    """The preserved set P as one dataset of rows: a list of datasets (P is a union of three sets, Eq. 6) is
    concatenated."""
    if isinstance(data, (list, tuple)) and data and not isinstance(data[0], dict):
        return ConcatDataset([part for part in data if part is not None])
    return data


class SaliencyTrainer(GATrainer):
    """MMUnlearner: GA's loss (``-L_f`` of Eq. 3, inherited from :class:`GATrainer`) with its gradient gated by the
    saliency mask. Extra argument ``preserve_dataset``: the preserved set P (Eq. 6), rows or a list of datasets of
    rows: text-only QA about the forget concepts, retain VQA, text-only QA about retain concepts. Defaults to
    ``retain_dataset`` (with a warning). Not needed if ``args.saliency_mask`` points to a saved mask."""

    config_class = SaliencyConfig
    method_name = "saliency"
    citation = Citation(
        "MMUnlearner (saliency-masked unlearning)",
        "MMUnlearner: Reformulating Multimodal Machine Unlearning in the Era of Multimodal Large Language Models",
        "Jiahao Huo, Yibo Yan, Xu Zheng, Yuanhuiyi Lyu, Xin Zou, Zhihua Wei, Xuming Hu",
        "Findings of ACL 2025, pages 7190-7206",
        None,
        "gradient ascent gated by a weight-saliency mask (Fisher saliency of the forget set over a "
        "preserved set), plus a retain loss that updates every trainable parameter.",
    )

    def __init__(self, *args, preserve_dataset: Sequence[dict] | Sequence[Sequence[dict]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        if a.retain_loss == "none":
            logger.warning(
                "SaliencyTrainer runs without a retain term (no retain_dataset, or retain_loss='none'): the loss is "
                "-m * L_f only and L_r of MMUnlearner Eq. 3 is dropped, so this is not the paper's objective (the "
                "model card lists it under deviations from the paper). Pass retain_dataset= to train Eq. 3."
            )
        check_checkpointing(a)
        if a.trainable_modules:
            set_trainable(self.model, a.trainable_modules)
            self._check_reference_is_frozen()  # a KL retain term under PEFT needs the non-adapter weights frozen
        model = self.accelerator.unwrap_model(self.model)
        if a.saliency_mask is not None:  # loaded and checked against the model's fingerprint by the base trainer
            self.saliency_mask = self._saliency_mask
        else:
            preserve = _as_rows(preserve_dataset)
            if preserve is None:
                if self.retain_dataset is None:
                    raise ValueError(
                        "SaliencyTrainer needs the preserved set P to compute its mask: pass preserve_dataset= "
                        "(text-only QA about the forget concepts, retain VQA and text-only retain QA; MMUnlearner "
                        "Eq. 6), or retain_dataset=, or a saved mask via saliency_mask=."
                    )
                logger.warning("preserve_dataset not given: the saliency uses retain_dataset as P; the paper's P also "
                               "has text-only QA about the forget and retain concepts (Eq. 6).")
                preserve = self.retain_dataset
            cache_dir = a.saliency_cache_dir or os.path.join(a.output_dir, "saliency")
            collator = self.data_collator
            self.saliency_mask = compute_saliency_mask(
                model, self.forget_dataset, preserve, collator.forget_collator,
                preserve_collator=collator.retain_collator, beta=a.beta, fisher_mode=a.fisher_mode,
                batch_size=a.fisher_batch_size or a.per_device_train_batch_size, eps=a.saliency_eps,
                cache_dir=cache_dir, progress=not a.disable_tqdm,
            )
            key = hashlib.sha256(json.dumps(self.saliency_mask.metadata, sort_keys=True).encode()).hexdigest()[:16]
            path = os.path.join(cache_dir, f"mask-{key}.safetensors")
            a.saliency_mask = self.saliency_mask.save(path)  # recorded in training_args.json
            stem = path[: -len(".safetensors")]
            with open(stem + ".report.json", "w") as f:
                json.dump(self.saliency_mask.report(), f, indent=1)
            if a.plot_saliency:
                self.saliency_mask.plot_heatmap(stem + ".heatmap.png")
        self.saliency_mask.check(model)
        # the base trainer's forget_gradient_context gates the forget pass with this mask
        self._saliency_mask, self._saliency_mask_path = self.saliency_mask, a.saliency_mask
        logger.info("Saliency mask (beta=%s):\n%s", a.beta, self.saliency_mask.table())
