"""GA: gradient ascent on the forget answers (baseline), with the GA+GD and GA+KL variants.

L = -mean_{D_f} NLL(y | I, x)   [+ retain_weight * (NLL on D_r | KL(p_theta || p_ref) on D_r)]
GA is unbounded; ``forget_loss_ceiling`` stops the gradient of samples already pushed past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import losses
from ..citation import Citation
from .base import UnlearnConfig, UnlearnTrainer

__all__ = ["GAConfig", "GATrainer"]

_VARIANTS = {"ga": "none", "ga_gd": "nll", "ga_kl": "kl"}


@dataclass
class GAConfig(UnlearnConfig):
    """Gradient ascent. ``variant``: "ga" (forget only), "ga_gd" (GradDiff: + retain NLL), "ga_kl"
    (KL_Min: + KL to the reference on retain); it sets ``retain_loss``."""

    variant: str | None = field(default=None, metadata={"help": "'ga', 'ga_gd' or 'ga_kl' (sets retain_loss)."})
    forget_loss_ceiling: float | None = field(
        default=20.0,
        metadata={"help": "Per-token forget NLL (nats) above which a sample stops being pushed; None disables."},
    )

    def __post_init__(self):
        if self.variant is not None:
            if self.variant not in _VARIANTS:
                raise ValueError(f"GA variant must be one of {sorted(_VARIANTS)}, got {self.variant!r}.")
            self.retain_loss = _VARIANTS[self.variant]
        super().__post_init__()


class GATrainer(UnlearnTrainer):
    config_class = GAConfig
    method_name = "ga"
    citation = Citation(
        "GA (gradient ascent)",
        "Knowledge Unlearning for Mitigating Privacy Risks in Language Models",
        "Joel Jang, Dongkeun Yoon, Sohee Yang, Sungmin Cha, Moontae Lee, Lajanugen Logeswaran, Minjoon Seo",
        "ACL 2023 (the usual reference for the gradient-ascent baseline)",
        "https://arxiv.org/abs/2210.01504",
        "the standard unlearning baseline: maximise the negative log-likelihood of the forget "
        "answers; optionally with a retain term (GradDiff: NLL on the retain set; KL_Min: KL to the original model).",
    )

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        nll = losses.sequence_nll(self.forget_logits(model, forget), forget["labels"])
        loss = losses.ga_loss(nll, ceiling=self.args.forget_loss_ceiling)
        return loss, {"forget_nll": nll.mean()}
