"""SimNPO: simple negative preference optimization (Fan et al. 2024), NPO without the reference model.

L = forget_weight * -(2/beta) * mean_{D_f} log sigmoid(-(beta/|y|) log p_theta(y|I,x) - gamma)
    [+ retain_weight * NLL on D_r]                                                        (paper Eq. 4 + GradDiff)

The reward is the length-normalized log-probability (SimPO's), so no reference model is built, cached or run. The
gradient is GA's on the mean answer log-probability reweighted per sample by ``2 sigmoid(beta * mean_logp + gamma)``,
which fades as the answer becomes unlikely: the loss is bounded below by 0, unlike GA's.

Margin: the paper writes ``-(beta/|y|) log p - gamma``; its released TOFU code subtracts gamma before multiplying by
beta (a margin of ``beta * gamma``). They agree at the TOFU default gamma = 0; we follow the paper's equation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .. import losses
from ..citation import Citation
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["SimNPOConfig", "SimNPOTrainer"]

#: SimNPO on TOFU forget05 (the paper's QA-about-people benchmark; its code's README command): beta = 2.5, gamma = 0,
#: SimNPO term weighted 0.1375 ("npo_coeff") against a retain NLL of weight 1, full fine-tuning at lr 1e-5. (forget10:
#: beta 4.5, weight 0.125; MUSE News: beta 0.75, gamma 3, retain weight 0.1.)
PAPER_SETTINGS: dict[str, Any] = {
    "beta": 2.5, "gamma": 0.0, "forget_weight": 0.1375, "learning_rate": 1e-5, "retain_loss": "nll", "adapter": "full",
}


@dataclass
class SimNPOConfig(UnlearnConfig):
    """SimNPO. Defaults are the paper's TOFU forget05 settings (``paper_settings``): beta 2.5, gamma 0, forget weight
    0.1375 against the retain NLL (``retain_weight`` 1), lr 1e-5, full fine-tuning."""

    paper_settings: ClassVar[dict[str, Any]] = PAPER_SETTINGS
    paper_retain_term: ClassVar[str] = "the paper's retain NLL (GradDiff)"

    beta: float = paper_field(PAPER_SETTINGS, "beta", "Inverse temperature of the length-normalized reward "
                                                      "(TOFU forget05 2.5, forget10 4.5).")
    gamma: float = paper_field(PAPER_SETTINGS, "gamma", "Reward margin gamma (TOFU 0).")
    forget_weight: float = paper_field(
        PAPER_SETTINGS, "forget_weight", "Weight of the SimNPO term (the paper's npo_coeff: TOFU forget05 0.1375)."
    )
    learning_rate: float = paper_field(PAPER_SETTINGS, "learning_rate", "Paper (TOFU, full fine-tuning): 1e-5.")

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if self.forget_weight <= 0:
            raise ValueError(f"forget_weight must be > 0 (the SimNPO term is the method), got {self.forget_weight}.")


class SimNPOTrainer(UnlearnTrainer):
    config_class = SimNPOConfig
    method_name = "simnpo"
    citation = Citation(
        "SimNPO",
        "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        "Chongyu Fan, Jiancheng Liu, Licong Lin, Jinghan Jia, Ruiqi Zhang, Song Mei, Sijia Liu",
        "2024, arXiv:2410.07163",
        "https://arxiv.org/abs/2410.07163",
        "NPO without the reference model: a bounded loss on each forget answer's length-normalized log-probability "
        "with a margin, whose weight fades as the answer becomes unlikely.",
    )
    needs_reference = False

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        mean_logp = -losses.sequence_nll(self.forget_logits(model, forget), forget["labels"])  # log p(y) / |y|
        loss = losses.simnpo_loss(mean_logp, beta=self.args.beta, gamma=self.args.gamma)
        return self.args.forget_weight * loss, {"simnpo_loss": loss, "forget_nll": -mean_logp.mean()}
