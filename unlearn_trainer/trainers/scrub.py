"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): a student moves away from its teacher (the
original model) on the forget set and stays with it on the retain set, in alternating steps (Algorithm 1).

max-step (forget batch):  L = -d(x_f),        d(x) = KL(p_teacher(.|x) || p_student(.|x)) per answer token
min-step (retain batch):  L = alpha * d(x_r) + gamma * NLL(y_r | x_r)
The paper alternates by epoch (a pass of max-steps over D_f, then one of min-steps over D_r; max-steps only in the
first ``msteps`` epochs). Here by optimizer step: steps form cycles of ``max_steps_per_cycle`` max-steps followed by
``min_steps_per_cycle`` min-steps, and after ``max_cycles`` cycles (the paper's msteps; None: never) every step is
a min-step (:func:`scrub_phase`). Every micro-batch of one optimizer step is in the same phase, so gradient
accumulation within a phase is exact. The teacher is the adapter-disabled model under LoRA, a frozen copy otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import losses
from ..citation import Citation
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["SCRUBConfig", "SCRUBTrainer", "scrub_phase"]


def scrub_phase(step: int, max_steps_per_cycle: int, min_steps_per_cycle: int, max_cycles: int | None) -> str:
    """"max" or "min" for optimizer step ``step`` (0-based): the first ``max_steps_per_cycle`` steps of every cycle of
    ``max_steps_per_cycle + min_steps_per_cycle`` are max-steps, while fewer than ``max_cycles`` cycles are done."""
    cycle, position = divmod(step, max_steps_per_cycle + min_steps_per_cycle)
    in_max_phase = max_cycles is None or cycle < max_cycles
    return "max" if in_max_phase and position < max_steps_per_cycle else "min"


@dataclass
class SCRUBConfig(UnlearnConfig):
    """SCRUB. Paper settings (the authors' released configuration): ``alpha`` = 0.001 (retain KL weight),
    ``gamma`` = 0.99 (retain task-loss weight), distillation temperature ``kd_temperature`` = 4, ``max_cycles``
    (msteps) = 2 max phases. The cycle lengths in steps are this package's mapping of the paper's epochs."""

    paper_settings: ClassVar[dict[str, Any]] = {"alpha": 0.001, "gamma": 0.99, "kd_temperature": 4.0, "max_cycles": 2}
    paper_retain_term: ClassVar[str] = "the min-steps' retain KL + NLL"

    alpha: float = paper_field(paper_settings, "alpha", "Weight of KL(teacher || student) on retain (paper 0.001).")
    gamma: float = paper_field(paper_settings, "gamma", "Weight of the retain answer NLL in min-steps (paper 0.99).")
    kd_temperature: float = paper_field(paper_settings, "kd_temperature",
                                        "Softmax temperature T of the KL terms, scaled by T^2 (paper 4).")
    max_steps_per_cycle: int = field(default=1, metadata={"help": "Max-steps (forget) at the start of each cycle."})
    min_steps_per_cycle: int = field(default=1, metadata={"help": "Min-steps (retain) that end each cycle."})
    max_cycles: int | None = paper_field(
        paper_settings, "max_cycles",
        "Cycles that start with max-steps (the paper's msteps, 2); later steps are all min-steps. None: every cycle.")

    def __post_init__(self):
        super().__post_init__()
        for name in ("alpha", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        if self.max_steps_per_cycle < 1 or self.min_steps_per_cycle < 0:
            raise ValueError(f"max_steps_per_cycle must be >= 1 and min_steps_per_cycle >= 0, got "
                             f"{self.max_steps_per_cycle} and {self.min_steps_per_cycle}.")
        if self.max_cycles is not None and self.max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1 or None (max-steps in every cycle), got {self.max_cycles}.")


class SCRUBTrainer(UnlearnTrainer):
    config_class = SCRUBConfig
    method_name = "scrub"
    citation = Citation(
        "SCRUB",
        "Towards Unbounded Machine Unlearning",
        "Meghdad Kurmanji, Peter Triantafillou, Jamie Hayes, Eleni Triantafillou",
        "NeurIPS 2023, arXiv:2302.09880",
        "https://arxiv.org/abs/2302.09880",
        "a student leaves its teacher (the original model) on the forget set (max-steps on the KL) and stays with it "
        "on the retain set (min-steps on KL + task loss), alternating.",
    )
    needs_reference = True
    retain_in_objective = True

    def phase(self) -> str:
        """The phase of the current optimizer step ("max": forget batch; "min": retain batch)."""
        a = self.args
        return scrub_phase(self.state.global_step, a.max_steps_per_cycle, a.min_steps_per_cycle, a.max_cycles)

    def unlearning_loss(self, model, inputs):
        T = self.args.kd_temperature
        if self.phase() == "max":
            forget = inputs["forget"]
            kl = losses.scrub_kl(self.forget_logits(model, forget), self.reference_logits(model, forget),
                                 forget["labels"], T)
            return -kl, {"scrub_forget_kl": kl}
        retain = inputs["retain"]
        logits = self.forward_logits(model, retain)
        kl = losses.scrub_kl(logits, self.reference_logits(model, retain), retain["labels"], T)
        nll = losses.nll_loss(logits, retain["labels"])
        return self.args.alpha * kl + self.args.gamma * nll, {"scrub_retain_kl": kl, "retain_nll": nll}
