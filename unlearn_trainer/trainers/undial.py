"""UNDIAL: unlearning by self-distillation on adjusted logits (Dong et al. 2024).

For every forget answer token y_i the frozen pre-unlearning model's logits z_i, with the target token's logit lowered
by a fixed gamma, give the distribution the model is distilled toward::

    P_i = softmax(z_ref,i - gamma * onehot(y_i))            Q_i = p_theta(. | I, x, y_<i)
    L = mean_samples mean_i KL(P_i || Q_i)                   [+ retain_weight * retain term]

KL(P||Q) is the paper's cross-entropy minus the constant entropy of P: the same gradient, ``Q_i - P_i`` w.r.t. the
logits. The target is fixed, so the loss is bounded below by 0 and its minimum is a model that still speaks: only the
answer token loses probability, and every other token keeps its odds relative to the others (at the start the
gradient lowers y_i's logit and raises the others in proportion to their probability, so their ranking holds).

P depends only on the reference, so it is computed once per forget sample and cached (``cache_reference=False``
recomputes it every step: one more no-grad forward per step). A dense P is 4V bytes per answer token (LLaVA-1.5,
V=32064: 125 KiB; Qwen2-VL, V=151936: 594 KiB), 17 GB for 1,000 thirty-token answers on Qwen2-VL, so the cache
keeps, per token, the lowered target token and the ``cache_top_k - 1`` most probable others (float32 probabilities,
int32 ids) plus the remaining mass r as one tail bucket, spread at loss time in proportion to the current, detached Q
(ViKeR's sparse cache, :func:`losses.densify_sparse_reference`): 8k + 8 bytes per token (k=128: ~1 KiB), exact
value and gradient on the kept tokens, a logit-gradient error of at most 2r in L1 and a KL that is a lower bound
(the KL of the (k+1)-bin coarsening). Outside the answer token P is the reference scaled by a constant, so while
the student's tail keeps the reference's shape (at the start: exactly) the completed tail is exact.
``cache_top_k=None`` (or 2k >= V) caches P exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import losses
from ..citation import Citation
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["UNDIALConfig", "UNDIALTrainer", "AdjustedTargets"]

#: UNDIAL: the target logit lowered by gamma = 10 (the adjustment strength open-unlearning's UNDIAL configuration uses
#: for the paper's method; the paper reports UNDIAL stable across strengths); self-distillation on the forget set only
#: (no retain term in the objective). Checked against the authors' own setup notes (open-unlearning
#: community/methods/UNDIAL/README.md, by the paper's authors): Llama-2 7B with LoRA r=8, alpha=16, lr 1e-4 (searched
#: over 1e-5..3e-4), effective batch 32, strength "typically 3, 10 or 30", no retain set. The paper's PDF itself was
#: not available offline; where its text differs, it wins.
PAPER_SETTINGS: dict[str, Any] = {"gamma": 10.0, "retain_loss": "none"}


@dataclass
class UNDIALConfig(UnlearnConfig):
    """UNDIAL. ``gamma`` (the amount subtracted from the answer token's reference logit) defaults to 10; the paper's
    objective has no retain term (a retain set adds one, listed on the card as a deviation)."""

    paper_settings: ClassVar[dict[str, Any]] = PAPER_SETTINGS

    gamma: float = paper_field(PAPER_SETTINGS, "gamma", "Amount subtracted from the answer token's reference logit.")
    cache_top_k: int | None = field(
        default=128,
        metadata={"help": "Cache each adjusted distribution as the target token + the top-(k-1) others + tail mass; "
                          "None caches the full distribution (exact)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0 (the target token's logit is lowered by it), got {self.gamma}.")
        if self.cache_top_k is not None and self.cache_top_k < 2:
            raise ValueError(f"cache_top_k must be >= 2 (the target token and at least one other) or None (exact), "
                             f"got {self.cache_top_k}.")


@dataclass
class AdjustedTargets:
    """P_i for the n answer tokens of one forget sample, on the CPU. Exact: ``probs [n, V]`` (``ids``/``remainder``
    None). Sparse: ``probs [n, k]`` float32, ``ids [n, k]`` int32, ``remainder [n]``. ``tokens [n]``: the answer."""

    probs: torch.Tensor
    ids: torch.Tensor | None
    remainder: torch.Tensor | None
    tokens: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.probs, self.ids, self.remainder, self.tokens)
                   if t is not None)


class UNDIALTrainer(UnlearnTrainer):
    config_class = UNDIALConfig
    method_name = "undial"
    citation = Citation(
        "UNDIAL",
        "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        "Yijiang River Dong, Hongzhou Lin, Mikhail Belkin, Ramon Huerta, Ivan Vulić",
        "NAACL 2025, arXiv:2402.10052",
        "https://arxiv.org/abs/2402.10052",
        "self-distillation toward the original model's own token distributions with the answer token's logit "
        "lowered by a fixed amount: a bounded loss that removes the answer and keeps the rest of the distribution.",
    )
    needs_reference = True

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        targets = self.cached_reference("undial_targets", model, forget, self._adjusted_targets)
        logits = self.forget_logits(model, forget)
        _, answer, mask = losses.shift(logits, forget["labels"])
        index = forget.get("sample_index")
        for b, t in enumerate(targets):
            if not torch.equal(t.tokens, answer[b][mask[b]].cpu()):
                row = int(index[b]) if index is not None else b
                raise RuntimeError(f"The cached UNDIAL targets of forget sample {row} do not match its answer tokens; "
                                   f"the collator's output changed between steps.")
        if targets[0].ids is None:
            adjusted = torch.cat([t.probs for t in targets]).to(logits.device)
        else:
            adjusted = tuple(torch.cat([getattr(t, k) for t in targets]).to(logits.device)
                             for k in ("probs", "ids", "remainder"))
        loss, target_prob = losses.undial_loss(logits, forget["labels"], adjusted)
        terms = {"undial_kl": loss, "forget_token_prob": target_prob}
        if targets[0].remainder is not None:
            terms["target_tail_mass"] = torch.cat([t.remainder for t in targets]).mean()
        return loss, terms

    def _adjusted_targets(self, ref_model, batch) -> list[AdjustedTargets]:
        shifted, answer, mask = losses.shift(self.forward_logits(ref_model, batch), batch["labels"])
        top_k = self.args.cache_top_k
        out = []
        for b in range(mask.shape[0]):
            tokens = answer[b][mask[b]]
            probs = losses.undial_targets(shifted[b][mask[b]], tokens, self.args.gamma)
            if top_k is None or 2 * top_k >= probs.shape[-1]:  # sparse would not be smaller than dense
                out.append(AdjustedTargets(probs.cpu(), None, None, tokens.cpu()))
                continue
            values, ids, remainder = losses.sparse_topk_keeping(probs, tokens, top_k)
            out.append(AdjustedTargets(values.cpu(), ids.to(torch.int32).cpu(), remainder.cpu(), tokens.cpu()))
        return out

    def reference_cache_nbytes(self) -> int:
        """Bytes held by the cached adjusted target distributions."""
        return sum(t.nbytes for t in self._ref_cache["undial_targets"].values())
