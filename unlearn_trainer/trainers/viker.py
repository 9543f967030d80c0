"""ViKeR: Visual-Guided Key-Token Regularization (Cai et al.), gradient ascent regularized token by token.

For each forget sample (I, x, y) the frozen pre-unlearning model theta_full sees the same question x and answer
prefix y_<i with k irrelevant reference images I'_1..I'_k instead of I, and the average is the target
distribution of every answer position (Eq. 4)::

    R_i(v) = (1/k) sum_j p_full(v | I'_j, x, y_<i)            Q_i(v) = p_theta(v | I, x, y_<i)
    L = mean_samples red_i[ log Q_i(y_i) + lam * D(R_i || Q_i) ]            (Eq. 5, D = KL by default)

``red_i`` is the per-sample reduction over answer tokens shared by both terms: "mean" (default, the package's
convention, so ``lam=0`` is exactly ``GATrainer``) or "sum" (the paper's Eq. 5 scale; the same direction,
``n_s`` times larger per sample). With either, the gradient w.r.t. token i's logits is
``c_s * sum_v (1{v=y_i} - lam R_i(v)) (e_v - Q_i) = c_s * ((onehot(y_i) - Q_i) - lam (R_i - Q_i))``:
Proposition 3, the GA gradient reweighted per vocabulary entry (tested exactly).

R depends only on theta_full, so it is computed once per forget sample (k reference rows collated by the
trainer's collator, answer positions checked token by token against the forget sample's) and cached.

Cache format (``cache_top_k``): a full-vocabulary R per answer token is 4V bytes (LLaVA-1.5, V=32064: 125 KiB;
Qwen2-VL, V=151936: 594 KiB per token). The default keeps the top-k probabilities (float32) and ids (int32) and
the remainder mass r = 1 - sum(top-k) as one "tail" bucket: 8k + 16 bytes per token with the exact entropy and
the target id (k=128: 1,040 B, 120x less than dense for LLaVA, 580x for Qwen2-VL). At loss time the remainder
is spread over the other tokens in proportion to the current, detached Q, which makes KL(R~||Q) equal the KL
of the (k+1)-bin coarsenings: a lower bound of the exact KL with ``KL_exact - KL_sparse = r * KL(R_tail/r ||
Q_tail/Q(tail)) >= 0`` and a logit-gradient error ``||R - R~||_1 <= 2r``. ``cache_top_k=None`` (or any k with
2k >= V, where sparse would not be smaller) stores the exact R: 4V + 12 bytes per token. The bucket is the default
because a uniform spread of r overestimates the KL on heavy-tailed R; cache sizes and the accuracy of each k are
measured in benchmarks/README.md ("Method notes", ViKeR). For an untrained reference model (R uniform) use
``cache_top_k=None``.

JSD ("jsd", ~2x the cost of KL, same quality in the paper) and cosine ("cosine": 1 - cos(R, Q)) use the same
completed R~. Key tokens (Definition 2) are those with H(R_i) >= ``key_token_entropy_threshold`` (nats); when
it is set their fraction is logged. Logged terms: ``ga_term`` (mean log-probability of the forget answers),
``reg_<regularizer>``, ``ref_tail_mass`` (mean remainder r, sparse cache) and ``key_token_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import losses
from ..citation import Citation
from ..data.collator import ForgetRetainCollator, row_name
from ..data.reference_images import ReferenceImagePool, swap_in_reference_images
from .base import UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["ViKeRConfig", "ViKeRTrainer", "ReferenceDistribution"]


#: ViKeR's settings (Sec. 5, App. A.4): k = 5, lam = 0.05 for MLLMU 10% (0.5 for MLLMU 15%, 10 for CLEAR), KL, the
#: same reference images for every sample; Eq. 5 has no retain term; LoRA r=8, alpha=16 on the language model (vision
#: tower and projector frozen), AdamW, lr 5e-6, batch 2, 1 epoch. No guard on GA.
PAPER_SETTINGS: dict[str, Any] = {
    "lam": 0.05, "num_reference_images": 5, "regularizer": "kl", "reference_sampling": "fixed",
    "forget_loss_ceiling": None, "learning_rate": 5e-6, "per_device_train_batch_size": 2, "num_train_epochs": 1.0,
    "retain_loss": "none", "adapter": "lora", "lora_r": 8, "lora_alpha": 16,
}


@dataclass
class ViKeRConfig(UnlearnConfig):
    """ViKeR. Defaults are the paper's (``PAPER_SETTINGS``): k = 5; lam = 0.05 for MLLMU 10% (0.5 for MLLMU 15%, 10
    for CLEAR); lr 5e-6, batch 2, 1 epoch, AdamW; LoRA r=8, alpha=16 on the language model (a model choice)."""

    paper_settings: ClassVar[dict[str, Any]] = PAPER_SETTINGS

    lam: float = paper_field(
        PAPER_SETTINGS, "lam", "Regularization strength (0.05 MLLMU forget10, 0.5 forget15, 10 CLEAR)."
    )
    num_reference_images: int = paper_field(
        PAPER_SETTINGS, "num_reference_images", "k reference images averaged in R_i (Eq. 4)."
    )
    regularizer: str = paper_field(PAPER_SETTINGS, "regularizer", "D(R||Q): 'kl' (paper), 'jsd' or 'cosine'.")
    cache_top_k: int | None = field(
        default=128,
        metadata={"help": "Cache R as top-k probs + ids + tail mass; None caches the full distribution (exact)."},
    )
    reference_sampling: str = paper_field(
        PAPER_SETTINGS, "reference_sampling",
        "'fixed': the same k reference images for every sample (paper); 'per_sample': seeded draw."
    )
    reference_seed: int = field(default=0, metadata={"help": "Seed of the choice of reference images."})
    key_token_entropy_threshold: float | None = field(
        default=None, metadata={"help": "Log the fraction of answer tokens with H(R_i) >= this (nats); None: off."}
    )
    token_reduction: str = field(
        default="mean",
        metadata={"help": "Per-sample reduction over answer tokens of both terms: 'mean' (package) or 'sum' (paper)."},
    )
    forget_loss_ceiling: float | None = paper_field(
        PAPER_SETTINGS, "forget_loss_ceiling",
        "Per-token forget NLL (nats) above which a sample's GA gradient stops (a guard the paper does not have); "
        "None (default, the paper) disables."
    )
    learning_rate: float = paper_field(PAPER_SETTINGS, "learning_rate", "Paper: 5e-6.")
    per_device_train_batch_size: int = paper_field(
        PAPER_SETTINGS, "per_device_train_batch_size", "Paper: batch size 2."
    )
    num_train_epochs: float = paper_field(PAPER_SETTINGS, "num_train_epochs", "Paper: 1 epoch.")

    def __post_init__(self):
        super().__post_init__()
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}.")
        if self.num_reference_images < 1:
            raise ValueError(f"num_reference_images must be >= 1, got {self.num_reference_images}.")
        if self.regularizer not in losses.VIKER_REGULARIZERS:
            raise ValueError(f"regularizer must be one of {losses.VIKER_REGULARIZERS}, got {self.regularizer!r}.")
        if self.cache_top_k is not None and self.cache_top_k < 1:
            raise ValueError(f"cache_top_k must be >= 1 or None (exact), got {self.cache_top_k}.")
        if self.reference_sampling not in ("fixed", "per_sample"):
            raise ValueError(f"reference_sampling must be 'fixed' or 'per_sample', got {self.reference_sampling!r}.")
        if self.token_reduction not in ("mean", "sum"):
            raise ValueError(f"token_reduction must be 'mean' or 'sum', got {self.token_reduction!r}.")


@dataclass
class ReferenceDistribution:
    """R_i for the n answer tokens of one forget sample, kept on the CPU.

    Exact: ``probs [n, V]`` (``ids``/``remainder`` None). Sparse: ``probs [n, k]`` float32, ``ids [n, k]`` int32,
    ``remainder [n]``. ``entropy [n]`` is H(R_i) of the exact distribution; ``targets [n]`` the answer tokens."""

    probs: torch.Tensor
    ids: torch.Tensor | None
    remainder: torch.Tensor | None
    entropy: torch.Tensor
    targets: torch.Tensor

    @property
    def nbytes(self) -> int:
        tensors = (self.probs, self.ids, self.remainder, self.entropy, self.targets)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class ViKeRTrainer(UnlearnTrainer):
    """ViKeR (Eq. 5). Extra argument: ``reference_images`` (list of images, or rows / a ``datasets.Dataset``
    with an image column; ``reference_image_column`` names it if it is not ``image``/``images``)."""

    config_class = ViKeRConfig
    method_name = "viker"
    citation = Citation(
        "ViKeR (Visual-Guided Key-Token Regularization)",
        "Visual-Guided Key-Token Regularization for Multimodal Large Language Model Unlearning",
        "Chengyi Cai, Zesheng Ye, Peike Li, Bo Han, Jianzhong Qi, Feng Liu",
        "venue and year not stated in the paper text",
        None,
        "gradient ascent regularised toward the original model's "
        "token distributions given irrelevant reference images, which focuses unlearning on the key tokens.",
    )
    needs_reference = True

    def __init__(self, *args, reference_images=None, reference_image_column: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference_pool = ReferenceImagePool(
            reference_images,
            num_reference_images=self.args.num_reference_images,
            seed=self.args.reference_seed,
            sampling=self.args.reference_sampling,
            image_column=reference_image_column,
        )
        columns = getattr(self.forget_dataset, "column_names", None)
        if columns is not None and not {"image", "images"} & set(columns):
            raise ValueError(f"The forget set has no 'image' or 'images' column (columns: {columns}); ViKeR swaps each "
                             f"forget row's image for reference images, so forget rows need one image.")

    # -- the objective -------------------------------------------------------------------------------------
    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        refs = self.cached_reference("viker_reference", model, forget, self._reference_distributions)
        logits = self.forget_logits(model, forget)
        _, targets, mask = losses.shift(logits, forget["labels"])
        for b, ref in enumerate(refs):
            if not torch.equal(ref.targets, targets[b][mask[b]].cpu()):
                raise RuntimeError(f"The cached reference of forget sample {int(forget['sample_index'][b])} does not "
                                   f"match its answer tokens; the collator's output changed between steps.")
        device = logits.device
        if refs[0].ids is None:
            reference = torch.cat([r.probs for r in refs]).to(device)
        else:
            reference = tuple(torch.cat([getattr(r, k) for r in refs]).to(device) for k in ("probs", "ids", "remainder"))
        loss, ga_term, reg_term = losses.viker_loss(
            logits, forget["labels"], reference, lam=self.args.lam, regularizer=self.args.regularizer,
            reduction=self.args.token_reduction, ceiling=self.args.forget_loss_ceiling,
        )
        terms = {"ga_term": ga_term, f"reg_{self.args.regularizer}": reg_term}
        if refs[0].remainder is not None:
            terms["ref_tail_mass"] = torch.cat([r.remainder for r in refs]).mean()
        if self.args.key_token_entropy_threshold is not None:
            entropy = torch.cat([r.entropy for r in refs])
            terms["key_token_fraction"] = (entropy >= self.args.key_token_entropy_threshold).float().mean()
        return loss, terms

    # -- the reference-image distributions R_i (Eq. 4) -----------------------------------------------------
    def reference_batch(self, sample_index: int) -> dict:
        """The k reference rows of forget sample ``sample_index`` (its image swapped), collated like training."""
        row = self.forget_dataset[int(sample_index)]
        rows = swap_in_reference_images(row, self.reference_pool.images_for(int(sample_index)), index=int(sample_index))
        return ForgetRetainCollator.forget_part(self.data_collator)(rows)

    def _reference_distributions(self, ref_model, batch) -> list[ReferenceDistribution]:
        if batch.get("sample_index") is None:
            raise ValueError("ViKeR needs 'sample_index' in forget batches to find each row's reference inputs; use "
                             "VLMUnlearningCollator (return_index=True) or add it in your collator.")
        targets = batch["labels"][:, 1:]
        mask = targets.ne(losses.IGNORE_INDEX)
        out = []
        for b, s in enumerate(batch["sample_index"].tolist()):
            expected = targets[b][mask[b]].cpu()
            out.append(self._reference_distribution(ref_model, int(s), expected))
        return out

    def _reference_distribution(self, ref_model, sample_index: int, expected: torch.Tensor) -> ReferenceDistribution:
        ref_batch = self._prepare_inputs(self.reference_batch(sample_index))
        logits = self.forward_logits(ref_model, ref_batch)
        shifted, targets, mask = losses.shift(logits, ref_batch["labels"])
        for j in range(mask.shape[0]):
            got = targets[j][mask[j]].cpu()
            if not torch.equal(got, expected):
                name = row_name(self.forget_dataset[sample_index], sample_index)
                raise ValueError(
                    f"Forget {name}: with reference image {self.reference_pool.indices_for(sample_index)[j]} the answer "
                    f"tokenizes to {got.tolist()} instead of {expected.tolist()}; the answer must not depend on the image."
                )
        probs = F.softmax(shifted[mask].float(), dim=-1).view(mask.shape[0], len(expected), -1).mean(0)  # Eq. 4
        entropy = losses.token_entropy(probs).cpu()
        top_k = self.args.cache_top_k
        if top_k is None or 2 * top_k >= probs.shape[-1]:  # sparse would not be smaller than dense
            return ReferenceDistribution(probs.cpu(), None, None, entropy, expected)
        values, ids, remainder = losses.sparse_topk_reference(probs, top_k)
        return ReferenceDistribution(values.cpu(), ids.to(torch.int32).cpu(), remainder.cpu(), entropy, expected)

    def reference_cache_nbytes(self) -> int:
        """Bytes held by the cached reference-image distributions R."""
        return sum(r.nbytes for r in self._ref_cache["viker_reference"].values())
