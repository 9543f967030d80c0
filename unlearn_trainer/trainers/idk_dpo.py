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
learning rate, not the formula). Both forwards (chosen, rejected) are one trainable pass: the loss couples them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from ..data.refusals import build_refusal_collator
from .base import UnlearnTrainer, paper_field
from .idk_nll import RefusalConfig, refusal_batch

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
        """DPO couples the chosen and the rejected answer (its weight depends on both), so one backward of both
        would hold both forwards' activations (1.2-1.5x SFT memory, measured). Instead: the rejected answer's
        log-probability is first read without gradient (a forward without activations kept), then the chosen pass
        backpropagates the DPO loss through the chosen answer and the rejected pass backpropagates
        ``w * (log p(y) - sg(log p(y)))`` (value 0) with DPO's exact weight ``w = beta * sigmoid(-beta * margin)``:
        the same gradient as the joint loss, one pass's activations at a time (exact when the two forwards of the
        rejected answer agree, i.e. without dropout)."""
        forget, refusal = inputs["forget"], refusal_batch(inputs)
        state = {}

        def chosen_pass():
            with torch.no_grad():
                state["rejected"] = losses.sequence_logprob(self.forward_logits(model, forget), forget["labels"])
            chosen = losses.sequence_logprob(self.forget_logits(model, refusal), refusal["labels"])
            ref_chosen = self._cached_logp("idk_dpo_ref_chosen", model, refusal).to(chosen.device)
            ref_rejected = self._cached_logp("idk_dpo_ref_rejected", model, forget).to(chosen.device)
            rejected = state["rejected"].to(chosen.device)
            loss = losses.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=self.args.beta)
            state["margin"] = ((chosen - ref_chosen) - (rejected - ref_rejected)).detach()
            return loss, {"dpo_loss": loss, "chosen_log_ratio": (chosen - ref_chosen).mean(),
                          "rejected_log_ratio": (rejected - ref_rejected).mean()}

        def rejected_pass():
            rejected = losses.sequence_logprob(self.forget_logits(model, forget), forget["labels"])
            weight = self.args.beta * torch.sigmoid(-self.args.beta * state["margin"].to(rejected.device))
            return (weight * (rejected - rejected.detach())).mean(), {}

        return [chosen_pass, rejected_pass]

    def _cached_logp(self, name: str, model, batch: dict) -> torch.Tensor:
        return torch.stack(self.cached_reference(name, model, batch, self._ref_logp))

    def _ref_logp(self, ref_model, batch):
        return list(losses.sequence_logprob(self.forward_logits(ref_model, batch), batch["labels"]).unbind(0))
