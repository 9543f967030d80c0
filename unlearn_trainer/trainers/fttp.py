"""FTTP: Forget the Token and Pixel (token-level gradient ascent on the concept, descent on the rest).

The paper. Gradient ascent on whole forget answers also lowers the probability of the tokens that carry no
concept ("The", "main", "person"): the model's "Natural Knowledge" (fluency) collapses with the "Conceptual
Knowledge". FTTP splits each forget answer: GA on the tokens that spell the concept C (e.g. "Donald Trump")
and GD (plain NLL) on every other answer token of the same sample, so no retain set is needed (Eq. 7):

    L = E_{D_f} [ w_ga * sum_{s in C} log p(w_s | I, w_<s)  +  w_gd * sum_{s not in C} -log p(w_s | I, w_<s) ]

The paper measures the two kinds of knowledge with K_C = sum_{s in C} -1/log p(w_s) (Eq. 3) and
K_N = sum_{s not in C} -1/log p(w_s) (Eq. 5), per training sequence. (Its Stable Diffusion variant, with SAM
masks on pixels, is out of scope.)

Our defaults and where they come from. ``ga_weight=0.8``, ``gd_weight=0.5``: "The loss weights for GA and GD
are set to 0.8 and 0.5" (Appendix B; the sentence follows the SDM settings, and no other weights are given for
MLLMs). Token reduction: ``token_reduction="sum"`` as Eq. 7 is written (sums over the sample's tokens, a mean
over samples); "mean" divides each term by its own token count. Because the concept is usually a few tokens
and the rest of the answer many, "sum" gives GD more total weight than "mean". ``forget_loss_ceiling``
(per-token concept NLL; off by default) is our guard against unbounded GA, not in the paper. The paper's MLLM
training setup (LoRA, batch 2, Adam lr 3e-4, 10 steps, one image with several texts; 10-20 steps, 1-5 images
overall): lr, batch and steps are the config's defaults, LoRA is the model's choice. Logged terms: ``concept_logp`` (the GA term
before its weight), ``other_nll`` (the GD term), ``K_C`` and ``K_N`` (means over the batch's samples; K_C over
samples that have concept tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from ..data.collator import ForgetRetainCollator, VLMUnlearningCollator
from ..data.concepts import MISSING_CONCEPT_OPTIONS, ConceptForgetRetainCollator, ConceptMaskCollator
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["FTTPConfig", "FTTPTrainer"]


#: FTTP's MLLM settings (Eq. 7, App. B): GA 0.8 / GD 0.5, sums over tokens, no retain set, no guard on GA; LoRA,
#: Adam (AdamW with Trainer's default weight_decay=0 is Adam) lr 3e-4, batch 2, ten training steps.
PAPER_SETTINGS: dict[str, Any] = {
    "ga_weight": 0.8, "gd_weight": 0.5, "token_reduction": "sum", "forget_loss_ceiling": None,
    "learning_rate": 3e-4, "per_device_train_batch_size": 2, "max_steps": 10, "retain_loss": "none", "adapter": "lora",
}


@dataclass
class FTTPConfig(UnlearnConfig):
    """FTTP (Eq. 7). Defaults are the paper's (``PAPER_SETTINGS``): ``ga_weight=0.8``, ``gd_weight=0.5``, lr 3e-4,
    batch 2, 10 steps; no retain set needed (the base retain term stays available). Rows name their concept in
    ``concept_key`` (string or aliases)."""

    paper_settings: ClassVar[dict[str, Any]] = PAPER_SETTINGS

    ga_weight: float = paper_field(PAPER_SETTINGS, "ga_weight", "Weight of the GA term on concept tokens (paper: 0.8).")
    gd_weight: float = paper_field(
        PAPER_SETTINGS, "gd_weight", "Weight of the GD term on other answer tokens (paper: 0.5)."
    )
    concept_key: str = field(default="concepts", metadata={"help": "Row field with the concept string or aliases."})
    missing_concept: str = field(
        default="error",
        metadata={"help": "A forget answer without its concept: 'error' or 'gd' (train that row with GD only)."},
    )
    concept_whole_words: bool = field(
        default=True, metadata={"help": "Match concepts as whole words only (not inside longer words)."}
    )
    token_reduction: str = paper_field(
        PAPER_SETTINGS, "token_reduction", "'sum' over each sample's tokens (Eq. 7) or 'mean' per term."
    )
    forget_loss_ceiling: float | None = paper_field(
        PAPER_SETTINGS, "forget_loss_ceiling",
        "Per-token concept NLL (nats) above which a token stops being pushed (a guard the paper does not have); "
        "None (default, the paper) disables."
    )
    learning_rate: float = paper_field(PAPER_SETTINGS, "learning_rate", "Paper: 3e-4.")
    per_device_train_batch_size: int = paper_field(
        PAPER_SETTINGS, "per_device_train_batch_size", "Paper: batch size 2."
    )
    max_steps: int = paper_field(
        PAPER_SETTINGS, "max_steps", "Paper: 10 steps (overrides num_train_epochs; -1 to train by epochs)."
    )

    def __post_init__(self):
        super().__post_init__()
        if self.missing_concept not in MISSING_CONCEPT_OPTIONS:
            raise ValueError(f"missing_concept must be one of {MISSING_CONCEPT_OPTIONS}, got {self.missing_concept!r}.")
        if self.token_reduction not in ("sum", "mean"):
            raise ValueError(f"token_reduction must be 'sum' or 'mean', got {self.token_reduction!r}.")
        if self.ga_weight < 0 or self.gd_weight < 0:
            raise ValueError(f"ga_weight and gd_weight must be >= 0, got {self.ga_weight}, {self.gd_weight}.")


class FTTPTrainer(UnlearnTrainer):
    """FTTP trainer. Given ``processing_class=``, it collates forget rows with a :class:`ConceptMaskCollator`
    built from the config (retain and evaluation rows need no concept)."""

    config_class = FTTPConfig
    method_name = "fttp"
    citation = Citation(
        "FTTP (Forget the Token and Pixel)",
        "Forget the Token and Pixel: Rethinking Gradient Ascent for Concept Unlearning in Multimodal Generative Models",
        "Jiaqi Li, Chuanyi Zhang, Miaozeng Du, Hui Zhang, Yongrui Chen, Qianshan Wei, Junfeng Fang, Ruipeng Wang, "
        "Sheng Bi, Guilin Qi",
        "Findings of ACL 2025, pages 12179-12200",
        None,
        "gradient ascent on the answer tokens that spell the forgotten concept and "
        "gradient descent on the other answer tokens, so the model stays fluent without a retain set.",
    )

    def __init__(self, model=None, args: FTTPConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, **kwargs):
        if args is None:
            args = self.config_class(output_dir=f"{self.method_name}-unlearned")
        elif not isinstance(args, self.config_class):
            args = self._convert_args(args)
        if data_collator is None and processing_class is not None:
            data_collator = ConceptMaskCollator(
                processing_class, concept_key=args.concept_key, missing_concept=args.missing_concept,
                whole_words=args.concept_whole_words,
            )
        if isinstance(data_collator, ConceptMaskCollator):
            data_collator = ConceptForgetRetainCollator(data_collator)
        elif isinstance(data_collator, VLMUnlearningCollator) and not isinstance(data_collator, ForgetRetainCollator):
            raise ValueError("FTTP needs concept masks: pass a ConceptMaskCollator (or no data_collator and a "
                             "processing_class=, to build one from the config).")
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        if "concept_mask" not in forget:
            raise ValueError("FTTP forget batches need 'concept_mask': collate forget rows with ConceptMaskCollator.")
        logps, _ = losses.token_logprobs(self.forget_logits(model, forget), forget["labels"])
        concept, other = losses.fttp_token_masks(forget["labels"], forget["concept_mask"])
        loss, ga_term, gd_term = losses.fttp_objective(
            logps, concept, other, self.args.ga_weight, self.args.gd_weight, self.args.token_reduction,
            self.args.forget_loss_ceiling,
        )
        terms = {"concept_logp": ga_term, "other_nll": gd_term}
        with torch.no_grad():
            for name, mask in (("K_C", concept), ("K_N", other)):
                has = mask.any(-1)
                if has.any():
                    terms[name] = losses.knowledge_score(logps, mask)[has].mean()
        return loss, terms
