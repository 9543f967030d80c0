"""IdkDPO: DPO with a refusal as the chosen answer and the forget answer as the rejected one, plus the retain NLL.

DPO (Rafailov et al. 2023, Eq. 7) as TOFU / open-unlearning's "IdkDPO" and CLEAR's "DPO" baseline use it for
unlearning, on per-sequence log-probabilities (sums over answer tokens):

    L = -mean_{D_f} log sigmoid(beta * ((log p(r|I,x) - log p_ref(r|I,x)) - (log p(y|I,x) - log p_ref(y|I,x))))
        + retain_weight * NLL on D_r

with r the row's refusal (``data.refusals``: the same seeded choice as IdkNLL) and y its forget answer. The
reference log-probabilities of r and y are constant: computed once per forget row and cached (the reference is the
adapter-disabled model under LoRA, else a frozen copy). ``beta`` = 0.1 is open-unlearning's DPO setting for TOFU
(configs/trainer/DPO.yaml, with its GradDiff retain NLL). open-unlearning scales the loss by 2/beta (NPO's form);
we keep DPO's unscaled loss, which TRL's DPOTrainer also computes (so its gradient is beta/2 times theirs: tune the
learning rate, not the formula). The chosen and rejected answers share their image and question, which run once
(:mod:`.shared_prompt`); the objective is one trainable pass over the prompt and both answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from ..data.refusals import build_refusal_collator
from ..vision.adapters import is_checkpointing, is_fsdp_sharded
from .base import UnlearnTrainer, paper_field
from .idk_nll import RefusalConfig, refusal_batch
from .shared_prompt import shared_prompt_logprobs, shared_prompt_reason

logger = logging.getLogger(__name__)

__all__ = ["IdkDPOConfig", "IdkDPOTrainer"]


@dataclass
class IdkDPOConfig(RefusalConfig):
    """IdkDPO: DPO (refusal chosen, forget answer rejected) + the retain NLL. ``beta`` = 0.1, open-unlearning's TOFU
    setting (``paper_settings``)."""

    paper_settings: ClassVar[dict[str, Any]] = {"beta": 0.1, "retain_loss": "nll"}
    paper_retain_term: ClassVar[str] = "the retain NLL (GradDiff pairing)"

    beta: float = paper_field(paper_settings, "beta", "Inverse temperature of DPO (default 0.1, open-unlearning).")

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")


class IdkDPOTrainer(UnlearnTrainer):
    """IdkDPO trainer; the refusal pool is ``args.refusals``."""

    config_class = IdkDPOConfig
    method_name = "idk_dpo"
    citation = Citation(
        "IdkDPO (DPO toward refusals)",
        "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        "Rafael Rafailov, Archit Sharma, Eric Mitchell, Stefano Ermon, Christopher D. Manning, Chelsea Finn",
        "NeurIPS 2023, arXiv:2305.18290 (as the TOFU / CLEAR unlearning baseline)",
        "https://arxiv.org/abs/2305.18290",
        "direct preference optimisation with a refusal as the preferred answer and the forget answer as the "
        "dispreferred one, relative to the original model, with the retain NLL.",
    )
    needs_reference = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = build_refusal_collator(self.data_collator, self.args.refusals, self.args.refusal_seed,
                                                    self.processing_class)

    def unlearning_passes(self, model, inputs):
        """DPO couples the chosen and the rejected answer (its weight depends on both), so one backward of both full
        forwards would hold both sequences' activations (1.2-1.5x SFT memory, measured). Three ways, one gradient:

        - Both answers follow the same image and question, so by default they run as one pass: the prompt once,
          each answer continued from its key/value cache (:mod:`.shared_prompt`; the prompt's activations once plus
          both answers', ~SFT memory, and about one forward of the sequence instead of two).
        - Under gradient checkpointing (no cache) a backward keeps only each layer's input, so both full forwards
          and one backward of the joint loss cost little memory: one pass.
        - Otherwise (PaliGemma's bidirectional prompt, FSDP, padding inside sequences; see
          :func:`~.shared_prompt.shared_prompt_reason`), two passes: the rejected answer's log-probability is first
          read without gradient, then the chosen pass backpropagates the DPO loss through the chosen answer and the
          rejected pass backpropagates ``w * (log p(y) - sg(log p(y)))`` (value 0) with DPO's exact weight
          ``w = beta * sigmoid(-beta * margin)``: the same gradient, one pass's activations at a time (exact when
          the two forwards of the rejected answer agree, i.e. without dropout)."""
        forget, refusal = inputs["forget"], refusal_batch(inputs)
        reason = shared_prompt_reason(model, [refusal, forget])
        joint = reason is not None and is_checkpointing(model) and not is_fsdp_sharded(model)
        self._log_path_once(reason, joint)
        if reason is None or joint:
            def one_pass():
                with self.forget_gradient_context(model):
                    if joint:
                        chosen = losses.sequence_logprob(self.forward_logits(model, refusal), refusal["labels"])
                        rejected = losses.sequence_logprob(self.forward_logits(model, forget), forget["labels"])
                    else:
                        chosen, rejected = shared_prompt_logprobs(model, [refusal, forget])
                loss, terms, _ = self._dpo(model, chosen, rejected, forget, refusal)
                return loss, terms

            return [one_pass]
        state = {}

        def chosen_pass():
            with torch.no_grad():
                rejected = losses.sequence_logprob(self.forward_logits(model, forget), forget["labels"])
            chosen = losses.sequence_logprob(self.forget_logits(model, refusal), refusal["labels"])
            loss, terms, state["margin"] = self._dpo(model, chosen, rejected.to(chosen.device), forget, refusal)
            return loss, terms

        def rejected_pass():
            rejected = losses.sequence_logprob(self.forget_logits(model, forget), forget["labels"])
            weight = self.args.beta * torch.sigmoid(-self.args.beta * state["margin"].to(rejected.device))
            return (weight * (rejected - rejected.detach())).mean(), {}

        return [chosen_pass, rejected_pass]

    def _dpo(self, model, chosen, rejected, forget, refusal):
        """DPO's loss, its logged terms and the (detached) margin, from the policy's log-probabilities."""
        ref_chosen = self._cached_logp("idk_dpo_ref_chosen", model, refusal).to(chosen.device)
        ref_rejected = self._cached_logp("idk_dpo_ref_rejected", model, forget).to(chosen.device)
        loss = losses.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=self.args.beta)
        margin = ((chosen - ref_chosen) - (rejected - ref_rejected)).detach()
        return loss, {"dpo_loss": loss, "chosen_log_ratio": (chosen - ref_chosen).mean(),
                      "rejected_log_ratio": (rejected - ref_rejected).mean()}, margin

    def _log_path_once(self, reason: str | None, joint: bool) -> None:
        if getattr(self, "_logged_path", False):
            return
        self._logged_path = True
        if reason is None:
            logger.info("IdkDPO: the refusal and the forget answer continue one forward of the shared prompt.")
        elif joint:
            logger.info("IdkDPO: gradient checkpointing: both answers' forwards, one backward of the joint loss.")
        else:
            logger.info("IdkDPO: chosen and rejected answers in two passes (%s).", reason)

    def _cached_logp(self, name: str, model, batch: dict) -> torch.Tensor:
        return torch.stack(self.cached_reference(name, model, batch, self._ref_logp))

    def _ref_logp(self, ref_model, batch):
        return list(losses.sequence_logprob(self.forward_logits(ref_model, batch), batch["labels"]).unbind(0))
