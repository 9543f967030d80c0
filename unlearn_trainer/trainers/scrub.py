"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): a student moves away from its teacher (the
original model) on the forget set and stays with it on the retain set, in alternating steps (Algorithm 1).

max-step (forget batch):  L = -d(x_f),        d(x) = KL(p_teacher(.|x) || p_student(.|x)) per answer token
min-step (retain batch):  L = alpha * d(x_r) + gamma * NLL(y_r | x_r)
The paper alternates by epoch (a pass of max-steps over D_f, then one of min-steps over D_r; max-steps only in the
first ``msteps`` epochs). Here by optimizer step: steps form cycles of ``max_steps_per_cycle`` max-steps followed by
``min_steps_per_cycle`` min-steps, and after ``max_cycles`` cycles (the paper's msteps; None: never) every step is
a min-step (:func:`scrub_phase`). Every micro-batch of one optimizer step is in the same phase, so gradient
accumulation within a phase is exact. The teacher is the adapter-disabled model under LoRA, a frozen copy otherwise.

The teacher's answer-token distributions depend only on the row, so they are cached per forget and per retain row
(``cache_reference``): exactly, as the input of the teacher's output head at the answer tokens (``[n, D]`` on the
CPU in the model's dtype; the teacher logits are that head applied again, one small matmul per step instead of a
teacher forward). A model whose output head's input does not give its logits (a final soft-cap) caches the
answer-token logits ``[n, V]`` instead. ``cache_reference=False`` runs the teacher forward every step.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from ..vision.adapters import unwrap_model
from ..vision.hooks import capture
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["SCRUBConfig", "SCRUBTrainer", "TeacherAnswerTokens", "scrub_phase"]

logger = logging.getLogger(__name__)


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


@dataclass
class TeacherAnswerTokens:
    """The teacher on one row's n answer tokens, cached on the CPU: ``values`` is the input of its output head
    ``[n, D]`` (the logits are ``head(values)``) or, with ``is_logits``, the logits ``[n, V]``; ``targets [n]`` are
    the answer tokens, checked at every use."""

    values: torch.Tensor
    is_logits: bool
    targets: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.targets))


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
            teacher = self.teacher_logits(model, forget, "forget")
            kl = losses.scrub_kl(self.forget_logits(model, forget), teacher, forget["labels"], T)
            return -kl, {"scrub_forget_kl": kl}
        retain = inputs["retain"]
        teacher = self.teacher_logits(model, retain, "retain")
        logits = self.forward_logits(model, retain)
        kl = losses.scrub_kl(logits, teacher, retain["labels"], T)
        nll = losses.nll_loss(logits, retain["labels"])
        return self.args.alpha * kl + self.args.gamma * nll, {"scrub_retain_kl": kl, "retain_nll": nll}

    # -- the teacher ---------------------------------------------------------------------------------------
    def teacher_logits(self, model, batch: dict, part: str) -> torch.Tensor:
        """The teacher's logits on ``batch``: ``[N, V]`` at its answer tokens from the per-row cache, or the
        full ``[B, T, V]`` of a teacher forward with ``cache_reference=False`` (or no ``sample_index``)."""
        if not self.args.cache_reference or batch.get("sample_index") is None:  # a teacher forward every call
            return torch.stack(self.cached_reference(f"scrub_teacher_{part}", model, batch,
                                                     lambda ref, b: list(self.forward_logits(ref, b))))
        rows = self.cached_reference(f"scrub_teacher_{part}", model, batch, self._teacher_rows)
        targets = batch["labels"][:, 1:]
        mask = targets.ne(losses.IGNORE_INDEX)
        if not torch.equal(torch.cat([r.targets for r in rows]), targets[mask].cpu()):  # one check per batch
            b = next(b for b, r in enumerate(rows) if not torch.equal(r.targets, targets[b][mask[b]].cpu()))
            raise RuntimeError(f"The cached teacher of {part} sample {int(batch['sample_index'][b])} does not match "
                               f"its answer tokens: the collator's output changed between steps (set "
                               f"cache_reference=False).")
        device = batch["labels"].device
        with torch.no_grad(), self._teacher_head(model) as head:
            if not any(r.is_logits for r in rows):  # one transfer and one matmul for the batch
                return head(torch.cat([r.values for r in rows]).to(device)).detach()
            return torch.cat([r.values.to(device) if r.is_logits else head(r.values.to(device)) for r in rows])

    @contextlib.contextmanager
    def _teacher_head(self, model):
        """The teacher's output head: the frozen copy's; under PEFT the shared head itself when it is a frozen
        leaf module (no adapter on it: the same with the adapter disabled), else inside :meth:`reference`."""
        if self._ref_model is None:
            head = unwrap_model(model).get_output_embeddings()
            if not list(head.children()) and not any(p.requires_grad for p in head.parameters()):
                yield head
                return
        with self.reference(model) as ref:
            yield unwrap_model(ref).get_output_embeddings()

    def _teacher_rows(self, ref, batch: dict) -> list[TeacherAnswerTokens]:
        """One teacher forward; per row, the output head's input at the answer tokens, verified to give the
        forward's logits there (else the logits themselves)."""
        head = unwrap_model(ref).get_output_embeddings()
        with capture(head, "input") as box:
            logits = self.forward_logits(ref, batch)
        _, targets, mask = losses.shift(logits, batch["labels"])
        answer = losses.answer_positions(batch["labels"])
        states = box.value
        # FSDP: a head called outside the root module's forward would see sharded weights; cache the logits
        exact = (not self.is_fsdp_enabled and states is not None and states.shape[:2] == answer.shape
                 and self._head_reproduces(head, states[answer], logits[:, :-1][mask]))
        out = []
        for b in range(logits.shape[0]):
            values = states[b][answer[b]] if exact else logits[b, :-1][mask[b]]
            out.append(TeacherAnswerTokens(values.cpu(), not exact, targets[b][mask[b]].cpu()))
        return out

    def _head_reproduces(self, head, states: torch.Tensor, logits: torch.Tensor) -> bool:
        again = head(states).float()
        eps = torch.finfo(logits.dtype).eps
        scale = float(logits.detach().abs().max()) if logits.numel() else 1.0
        ok = bool(torch.allclose(again, logits.float(), rtol=8 * eps, atol=8 * eps * max(scale, 1.0)))
        if not ok and not getattr(self, "_warned_head", False):
            self._warned_head = True
            logger.warning("SCRUB: the output head's input does not reproduce the model's logits (e.g. a final "
                           "logit soft-cap); caching the teacher's answer-token logits instead (V values per token).")
        return ok

    def reference_cache_nbytes(self) -> int:
        """Bytes held by the cached teacher answer tokens (forget and retain rows, CPU)."""
        return sum(r.nbytes for part in ("forget", "retain") for r in self._ref_cache[f"scrub_teacher_{part}"].values())
