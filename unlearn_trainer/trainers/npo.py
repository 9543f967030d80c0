"""NPO: negative preference optimization (Zhang et al. 2024), the MLLMU-Bench / MMUnlearner / ViKeR baseline.

L = -(2/beta) * mean_{D_f} log sigmoid(-beta * (log p_theta(y|I,x) - log p_ref(y|I,x)))
on per-sequence log-probabilities. The reference log-probabilities are constant: computed once per forget
sample and cached (``cache_reference=False`` recomputes them every step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["NPOConfig", "NPOTrainer"]


@dataclass
class NPOConfig(UnlearnConfig):
    """NPO. ``beta`` = 0.4 as in MLLMU-Bench, MMUnlearner and ViKeR (``paper_settings``: the only NPO setting those
    papers share; the training hyperparameters are each paper's own)."""

    paper_settings: ClassVar[dict[str, Any]] = {"beta": 0.4}

    beta: float = paper_field(paper_settings, "beta", "Inverse temperature of NPO (paper default 0.4).")

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")


class NPOTrainer(UnlearnTrainer):
    config_class = NPOConfig
    method_name = "npo"
    citation = Citation(
        "NPO",
        "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "Ruiqi Zhang, Licong Lin, Yu Bai, Song Mei",
        "2024, arXiv:2404.05868",
        "https://arxiv.org/abs/2404.05868",
        "gradient ascent on each forget answer's sequence log-probability relative to the original model, "
        "reweighted so that answers already forgotten stop driving the update (a loss bounded below, unlike GA).",
    )
    needs_reference = True

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        policy = losses.sequence_logprob(self.forget_logits(model, forget), forget["labels"])
        ref = torch.stack(self.cached_reference("npo_ref_logp", model, forget, self._ref_logp)).to(policy.device)
        loss = losses.npo_loss(policy, ref, beta=self.args.beta)
        return loss, {"npo_loss": loss, "log_ratio": (policy - ref).mean()}

    def _ref_logp(self, ref_model, batch):
        return list(losses.sequence_logprob(self.forward_logits(ref_model, batch), batch["labels"]).unbind(0))
