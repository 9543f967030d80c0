"""Pure tensor functions for unlearning objectives. No model, no trainer: every function is checked in tests
against hand-computed values and gradient identities from the papers.

Conventions: ``logits`` are ``[B, T, V]`` from a causal LM, ``labels`` are ``[B, T]`` with -100 on every
position that is not an answer token (prompt, image tokens, padding). Functions shift internally, so the
logits at position t score the label at t+1. Per-sample reductions come first (mean over a sample's answer
tokens, or sum for sequence log-probabilities), then a mean over samples: a batch of 2 and two accumulated
batches of 1 give the same gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "shift",
    "token_logprobs",
    "sequence_logprob",
    "sequence_nll",
    "masked_mean_per_sample",
    "stop_above",
    "ga_loss",
    "nll_loss",
    "npo_loss",
    "npo_weight",
    "token_kl",
    "kl_retain_loss",
    "VIKER_REGULARIZERS",
    "token_entropy",
    "key_tokens",
    "sparse_topk_reference",
    "densify_sparse_reference",
    "reference_divergence",
    "viker_loss",
    "fttp_token_masks",
    "fttp_objective",
    "fttp_loss",
    "knowledge_score",
    "teacher_kl_loss",
]


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align causal-LM logits with next-token labels: ``(logits[:, :-1], targets[:, 1:], mask)``."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree in [B, T].")
    logits = logits[:, :-1]
    targets = labels[:, 1:]
    mask = targets.ne(IGNORE_INDEX)
    return logits, targets, mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token, ``[B, T-1]`` (0 where masked), and the answer-token mask."""
    from trl.trainer.utils import selective_log_softmax  # TRL's memory-lean log_softmax + gather, in float32

    logits, targets, mask = shift(logits, labels)
    return selective_log_softmax(logits.float(), targets.masked_fill(~mask, 0), row_mask=mask), mask


def _require_tokens(mask: torch.Tensor) -> torch.Tensor:
    counts = mask.sum(-1)
    if (counts == 0).any():
        rows = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"Sample(s) at batch position {rows} have no answer tokens (all labels are -100).")
    return counts


def masked_mean_per_sample(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each sample's answer tokens, ``[B]``."""
    counts = _require_tokens(mask)
    return (values * mask).sum(-1) / counts


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of answer-token log-probabilities per sample, ``log p(y | I, x)``, ``[B]`` (NPO's quantity)."""
    logps, mask = token_logprobs(logits, labels)
    _require_tokens(mask)
    return logps.sum(-1)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over each sample's answer tokens, ``[B]``."""
    logps, mask = token_logprobs(logits, labels)
    return -masked_mean_per_sample(logps, mask)


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain fine-tuning / retain loss: mean over samples of the per-sample answer NLL."""
    return sequence_nll(logits, labels).mean()


def stop_above(values: torch.Tensor, measure: torch.Tensor, ceiling: float | None) -> torch.Tensor:
    """``values`` with the gradient stopped where ``measure > ceiling`` (values kept): the one GA ceiling of every
    method, per sample (:func:`ga_loss`, :func:`viker_loss`) or per token (:func:`fttp_objective`)."""
    if ceiling is None:
        return values
    return torch.where(measure.detach() > ceiling, values.detach(), values)


def ga_loss(
    per_sample_nll: torch.Tensor, ceiling: float | None = None, mean_token_nll: torch.Tensor | None = None
) -> torch.Tensor:
    """Gradient ascent: ``-mean(NLL)``. Samples whose mean token NLL is above ``ceiling`` stop contributing
    gradient (their value is kept for logging), so GA cannot run away to infinity. ``per_sample_nll`` is the
    sample's NLL as it enters the loss (mean or sum over its answer tokens); ``mean_token_nll`` (default:
    ``per_sample_nll``) is what the ceiling is compared with, so one ceiling means the same for both reductions."""
    measure = per_sample_nll if mean_token_nll is None else mean_token_nll
    return -stop_above(per_sample_nll, measure, ceiling).mean()


def npo_loss(policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.4) -> torch.Tensor:
    """NPO (Zhang et al. 2024): ``-(2/beta) * mean log sigmoid(-beta * (log p_theta(y) - log p_ref(y)))``
    on per-sequence log-probabilities (sums over answer tokens)."""
    if beta <= 0:
        raise ValueError(f"NPO beta must be > 0, got {beta}.")
    log_ratio = policy_logp - ref_logp.detach()
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def npo_weight(policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.4) -> torch.Tensor:
    """NPO's adaptive weight on the GA gradient: ``2 p^beta / (p^beta + p_ref^beta) = 2 sigmoid(beta * log ratio)``."""
    return 2.0 * torch.sigmoid(beta * (policy_logp - ref_logp))


def token_kl(
    p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Token-level ``KL(p || q) = sum_v p(v) (log p(v) - log q(v))`` for logits ``[..., V]``, shape ``[...]``
    (0 where ``mask`` is False)."""
    logp = F.log_softmax(p_logits.float(), dim=-1)
    logq = F.log_softmax(q_logits.float(), dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    if mask is not None:
        kl = kl.masked_fill(~mask, 0.0)
    return kl


def kl_retain_loss(policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """GA+KL / KL_Min retain term: ``KL(p_theta || p_ref)`` per answer token, mean per sample, mean over samples."""
    p, _, mask = shift(policy_logits, labels)
    q, _, _ = shift(ref_logits.detach(), labels)
    return masked_mean_per_sample(token_kl(p, q, mask), mask).mean()


# -- ViKeR (Visual-Guided Key-Token Regularization) -------------------------------------------------------------
VIKER_REGULARIZERS = ("kl", "jsd", "cosine")


def token_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of distributions ``[..., V]`` (``0 log 0 = 0``), shape ``[...]``."""
    probs = probs.float()
    return -torch.xlogy(probs, probs).sum(-1)


def key_tokens(reference: torch.Tensor, threshold: float) -> torch.Tensor:
    """ViKeR Definition 2: a token is a key token if ``H(R_i) >= threshold`` (nats). ``reference`` is ``[..., V]``."""
    return token_entropy(reference) >= threshold


def sparse_topk_reference(probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compress distributions ``[..., V]`` to their ``top_k`` probabilities, token ids and the remainder mass
    ``1 - sum(top_k)`` (``[...]``): the sparse cache of ViKeR's reference ``R_i``."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    values, ids = probs.float().topk(min(top_k, probs.shape[-1]), dim=-1)
    remainder = (1.0 - values.sum(-1)).clamp_min(0.0)
    return values, ids, remainder


def densify_sparse_reference(
    values: torch.Tensor, ids: torch.Tensor, remainder: torch.Tensor, q_logprobs: torch.Tensor
) -> torch.Tensor:
    """Dense ``R~ [..., V]`` from a sparse reference: the top-k probabilities at ``ids`` and the remainder mass
    spread over the other tokens in proportion to the (detached) policy ``Q``: ``R~(v) = r Q(v) / Q(tail)``.

    With this completion ``KL(R~ || Q)`` equals, in value and gradient, the KL between the (k+1)-bin coarsenings
    "top-k tokens + one tail bucket" of R and Q: ``sum_K R log(R/Q) + r log(r / Q(tail))``, a lower bound of
    the exact KL (``KL_exact - KL_bucket = r * KL(R_tail/r || Q_tail/Q(tail)) >= 0``); the gradient w.r.t.
    the logits is ``Q - R~``, off the exact ``Q - R`` by at most ``2r`` in L1.
    """
    logq = q_logprobs.detach().float()
    ids = ids.long()
    tail_logq = logq.scatter(-1, ids, float("-inf"))
    log_tail_mass = torch.logsumexp(tail_logq, dim=-1, keepdim=True)
    log_r = torch.log(remainder.float().clamp_min(0.0)).unsqueeze(-1)
    dense = torch.exp(log_r + tail_logq - log_tail_mass)  # 0 on the top-k ids (exp(-inf)) and where r = 0
    dense = torch.nan_to_num(dense, nan=0.0)  # r = 0 and an empty tail give -inf - -inf
    return dense.scatter(-1, ids, values.float())


def reference_divergence(reference: torch.Tensor, q_logits: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """ViKeR's token regularizer ``D(R_i || Q_i)`` for a fixed reference ``R [..., V]`` and policy logits
    ``[..., V]``, shape ``[...]``. ``kind``: "kl" (``sum R log(R/Q)``, Eq. 5), "jsd" (Jensen-Shannon,
    ``KL(R||M)/2 + KL(Q||M)/2`` with ``M = (R+Q)/2``) or "cosine" (``1 - cos(R, Q)``, a distance)."""
    r = reference.detach().float()
    logq = F.log_softmax(q_logits.float(), dim=-1)
    if kind == "kl":
        return (torch.xlogy(r, r) - r * logq).sum(-1)
    q = logq.exp()
    if kind == "jsd":
        log_m = torch.log(0.5 * (r + q))
        return 0.5 * (torch.xlogy(r, r) - r * log_m).sum(-1) + 0.5 * (q * (logq - log_m)).sum(-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(r, q, dim=-1)
    raise ValueError(f"Unknown ViKeR regularizer {kind!r}; choose one of {VIKER_REGULARIZERS}.")


def viker_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reference: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    lam: float,
    regularizer: str = "kl",
    reduction: str = "mean",
    ceiling: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ViKeR Eq. 5: ``L = GA + lam * D(R_i || Q_i)`` per answer token, one per-sample reduction for both terms.

    ``reference`` holds ``R_i`` for the N answer tokens of the batch, in row-major order (sample by sample,
    positions ascending, as ``labels != -100`` after the shift): a dense ``[N, V]`` tensor or the sparse
    ``(values [N, k], ids [N, k], remainder [N])`` of :func:`sparse_topk_reference`. ``reduction`` is the
    per-sample token reduction shared by both terms: "mean" over the sample's answer tokens (the package's
    convention; GA term = ``-NLL`` as in ``GATrainer``) or "sum" (the paper's Eq. 5 scale); then a mean over
    samples. Either way the gradient w.r.t. token i's logits is ``c_s * ((onehot(y_i) - Q_i) - lam (R_i - Q_i))
    = c_s * sum_v (1{v=y_i} - lam R_i(v)) (e_v - Q_i)`` (Proposition 3), with ``c_s = 1/(B n_s)`` or ``1/B``.
    ``ceiling``: samples whose mean answer NLL exceeds it stop receiving the GA gradient (the regularizer
    still acts). Returns ``(loss, ga_term, reg_term)`` with ``loss = ga_term + lam * reg_term``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    shifted, targets, mask = shift(logits, labels)
    counts = _require_tokens(mask)
    z = shifted[mask].float()  # [N, V]
    logq = F.log_softmax(z, dim=-1)
    token_logp = logq.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    if isinstance(reference, (tuple, list)):
        values, ids, remainder = (t.to(z.device) for t in reference)
        reference = densify_sparse_reference(values, ids, remainder, logq)
    if reference.shape != z.shape:
        raise ValueError(
            f"reference {tuple(reference.shape)} does not match the {z.shape[0]} answer tokens x {z.shape[1]} vocab "
            f"of the batch."
        )
    reg = reference_divergence(reference.to(z.device), z, regularizer)
    rows = mask.nonzero()[:, 0]

    def per_sample(x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(mask.shape[0], dtype=x.dtype, device=x.device).index_add(0, rows, x)
        return total / counts if reduction == "mean" else total

    nll = -per_sample(token_logp)
    ga_term = ga_loss(nll, ceiling, mean_token_nll=nll / counts if reduction == "sum" else None)  # mean log-probability
    reg_term = per_sample(reg).mean()
    return ga_term + lam * reg_term, ga_term, reg_term


# -- FTTP (Forget the Token and Pixel) -----------------------------------------------------------------------------
def fttp_token_masks(labels: torch.Tensor, concept_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted ``[B, T-1]`` masks of the concept answer tokens and of the other answer tokens. ``concept_mask``
    is ``[B, T]`` aligned with ``labels`` (True where the label token spells the concept)."""
    if concept_mask.shape != labels.shape:
        raise ValueError(f"concept_mask {tuple(concept_mask.shape)} and labels {tuple(labels.shape)} disagree.")
    answer = labels[:, 1:].ne(IGNORE_INDEX)
    concept = concept_mask[:, 1:].bool() & answer
    return concept, answer & ~concept


def fttp_objective(
    token_logps: torch.Tensor,
    concept: torch.Tensor,
    other: torch.Tensor,
    ga_weight: float = 0.8,
    gd_weight: float = 0.5,
    reduction: str = "sum",
    ceiling: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FTTP Eq. 7 on per-token log-probabilities ``[B, T-1]`` (see :func:`fttp_loss`)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    _require_tokens(concept | other)
    # concept tokens already pushed past the ceiling stop receiving the GA gradient
    ga = (stop_above(token_logps, -token_logps, ceiling) * concept).sum(-1)
    gd = -(token_logps * other).sum(-1)
    if reduction == "mean":
        ga = ga / concept.sum(-1).clamp_min(1)
        gd = gd / other.sum(-1).clamp_min(1)
    ga_term, gd_term = ga.mean(), gd.mean()
    return ga_weight * ga_term + gd_weight * gd_term, ga_term, gd_term


def fttp_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    concept_mask: torch.Tensor,
    ga_weight: float = 0.8,
    gd_weight: float = 0.5,
    reduction: str = "sum",
    ceiling: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FTTP Eq. 7: per sample ``w_ga * sum_{concept} log p(y_i) + w_gd * sum_{other} -log p(y_i)``, mean over
    samples. GA on the tokens that spell the concept, GD on the sample's other answer tokens.

    ``reduction``: "sum" over each sample's tokens (Eq. 7 as written) or "mean" (each term divided by its own
    token count; a sample without concept tokens contributes 0 to the GA term). ``ceiling``: concept tokens
    whose NLL exceeds it stop receiving the GA gradient (their value is kept). Returns ``(loss, ga_term,
    gd_term)`` with ``loss = ga_weight * ga_term + gd_weight * gd_term``; ``ga_term`` is a log-probability.
    """
    logps, _ = token_logprobs(logits, labels)
    concept, other = fttp_token_masks(labels, concept_mask)
    return fttp_objective(logps, concept, other, ga_weight, gd_weight, reduction, ceiling)


def knowledge_score(token_logps: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """FTTP's knowledge measure (Eq. 3 for K_C over concept tokens, Eq. 5 for K_N over the others): per sample
    ``sum_{mask} -1 / log p(y_i)``, ``[B]``; higher means the model assigns the tokens more probability.
    ``log p`` is clamped to ``<= -eps`` so a token with p = 1 in floating point gives ``1/eps``, not infinity."""
    logps = token_logps.detach().float().clamp(max=-eps)
    return (-1.0 / logps).masked_fill(~mask.bool(), 0.0).sum(-1)


# -- SGPVT (Self-Generated Proximal Visual Tokens) ----------------------------------------------------------------
def teacher_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SGPVT's retention stream (Eq. 11): ``KL(p_teacher || p_student)`` per answer token (teacher and student fed
    the same perturbed visual tokens), mean per sample, mean over samples. The teacher is constant (detached), so
    the gradient w.r.t. a student token's logits is ``(p_student - p_teacher) / (B n_s)``."""
    q, _, mask = shift(student_logits, labels)
    p, _, _ = shift(teacher_logits.detach(), labels)
    return masked_mean_per_sample(token_kl(p, q, mask), mask).mean()


# -- SimNPO (Simple Negative Preference Optimization) -------------------------------------------------------------
__all__ += ["simnpo_loss", "simnpo_weight"]


def simnpo_loss(mean_logp: torch.Tensor, beta: float = 2.5, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, Eq. 4): ``-(2/beta) * mean log sigmoid(-beta * mean_logp - gamma)`` with
    ``mean_logp = log p_theta(y|x) / |y|`` per sample ``[B]`` (the length-normalized log-probability; no reference
    model). Bounded below by 0; its gradient is GA's on ``mean_logp`` times :func:`simnpo_weight`."""
    if beta <= 0:
        raise ValueError(f"SimNPO beta must be > 0, got {beta}.")
    return -(2.0 / beta) * F.logsigmoid(-beta * mean_logp - gamma).mean()


def simnpo_weight(mean_logp: torch.Tensor, beta: float = 2.5, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO's per-sample weight on the GA gradient of ``mean_logp``: ``2 sigmoid(beta * mean_logp + gamma)``; it
    goes to 0 as the length-normalized log-probability falls (NPO's weight without the reference)."""
    return 2.0 * torch.sigmoid(beta * mean_logp + gamma)


# -- UNDIAL (self-distillation with adjusted logits) ---------------------------------------------------------------
__all__ += ["undial_targets", "sparse_topk_keeping", "undial_loss"]


def undial_targets(ref_logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """UNDIAL's target distributions ``softmax(z_ref - gamma * onehot(y))`` for reference logits ``[N, V]`` and
    answer tokens ``[N]``: the target token's logit lowered by ``gamma``, every other token's odds unchanged."""
    index = targets.long().unsqueeze(-1)
    adjusted = ref_logits.float().scatter_add(-1, index, torch.full(index.shape, -float(gamma), device=index.device))
    return F.softmax(adjusted, dim=-1)


def sparse_topk_keeping(probs: torch.Tensor, keep: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor]:
    """:func:`sparse_topk_reference` that always keeps the ids ``keep [N]`` (UNDIAL: the lowered target token, whose
    exact probability the objective is about): the ``top_k`` ids are ``keep`` plus the ``top_k - 1`` most probable
    others."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    probs = probs.float()
    scores = probs.scatter(-1, keep.long().unsqueeze(-1), 2.0)  # above any probability: always selected
    ids = scores.topk(min(top_k, probs.shape[-1]), dim=-1).indices
    values = probs.gather(-1, ids)
    return values, ids, (1.0 - values.sum(-1)).clamp_min(0.0)


def undial_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """UNDIAL: ``KL(P_i || Q_i)`` per answer token between the adjusted reference distribution ``P_i``
    (:func:`undial_targets`) and the student's ``Q_i``, mean over each sample's answer tokens, then over samples.

    ``targets`` holds ``P_i`` for the N answer tokens of the batch in row-major order: dense ``[N, V]`` or the sparse
    ``(values, ids, remainder)`` of :func:`sparse_topk_keeping` (the tail completed in proportion to the detached
    ``Q``, as :func:`densify_sparse_reference`). KL differs from the paper's cross-entropy by the constant entropy of
    ``P`` (same gradient, ``(Q_i - P_i) / (B n_s)`` w.r.t. token i's logits; 0 at the optimum). Returns
    ``(loss, target_prob)``: the loss and the student's mean probability of the answer tokens (detached, for
    logging)."""
    shifted, answer, mask = shift(logits, labels)
    counts = _require_tokens(mask)
    z = shifted[mask].float()
    logq = F.log_softmax(z, dim=-1)
    if isinstance(targets, (tuple, list)):
        values, ids, remainder = (t.to(z.device) for t in targets)
        targets = densify_sparse_reference(values, ids, remainder, logq)
    if targets.shape != z.shape:
        raise ValueError(f"UNDIAL targets {tuple(targets.shape)} do not match the {z.shape[0]} answer tokens x "
                         f"{z.shape[1]} vocab of the batch.")
    kl = reference_divergence(targets.to(z.device), z, "kl")
    rows = mask.nonzero()[:, 0]
    per_sample = torch.zeros(mask.shape[0], dtype=kl.dtype, device=kl.device).index_add(0, rows, kl) / counts
    target_prob = logq.detach().gather(-1, answer[mask].unsqueeze(-1)).exp().mean()
    return per_sample.mean(), target_prob

# -- IdkDPO (DPO with the refusal as chosen and the forget answer as rejected) -------------------------------------
__all__ += ["dpo_loss"]


def dpo_loss(policy_chosen_logp: torch.Tensor, policy_rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7), sigmoid form, on per-sequence log-probabilities (sums over answer tokens):
    ``-mean log sigmoid(beta * ((log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))))``; the reference
    terms are constants. TRL's ``DPOTrainer`` computes the same value (``loss_type="sigmoid"``) inside its step; it
    exposes no function on log-prob tensors. Its gradient is ``-beta * sigmoid(-beta * margin)`` times
    ``(grad log pi(y_c) - grad log pi(y_r))``: it raises the chosen answer and lowers the rejected one, by the same
    weight, which fades as the margin grows (DPO Sec. 4)."""
    if beta <= 0:
        raise ValueError(f"DPO beta must be > 0, got {beta}.")
    margin = (policy_chosen_logp - ref_chosen_logp.detach()) - (policy_rejected_logp - ref_rejected_logp.detach())
    return -F.logsigmoid(beta * margin).mean()


# -- RMU (Representation Misdirection for Unlearning) and SCRUB ---------------------------------------------------
__all__ += ["rmu_control_vector", "answer_positions", "rmu_activation_loss", "scrub_kl"]


def rmu_control_vector(hidden_size: int, steering_coeff: float, seed: int = 0) -> torch.Tensor:
    """RMU's target ``c * u`` ``[hidden_size]`` (float32): ``u`` a fixed random unit vector, drawn (as the WMDP
    authors' code does) uniformly from ``[0, 1)^d`` with a seeded generator and normalised."""
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return steering_coeff * u / u.norm()


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` mask of the positions whose hidden state predicts an answer token (``labels[:, t+1] != -100``), the
    positions the shifted losses score."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:].ne(IGNORE_INDEX)
    return mask


def rmu_activation_loss(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's forget and retain terms (WMDP Sec. 5): the squared distance of each hidden state ``[B, T, D]`` from
    ``target`` (``c * u`` ``[D]`` for forget, the frozen model's states ``[B, T, D]`` for retain), averaged over
    the hidden dimensions (MSE, as the authors' code and its c / alpha), over each sample's ``mask``ed tokens, then
    over samples. The gradient w.r.t. a token's state is ``2 (h - target) / (D n_s B)``: zero where ``h = target``."""
    counts = _require_tokens(mask)
    per_token = (hidden.float() - target.detach().float()).pow(2).mean(-1)
    return ((per_token * mask).sum(-1) / counts).mean()


def scrub_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """SCRUB's ``d(x; w_u) = KL(p_teacher || p_student)`` per answer token at ``temperature`` T (both softmaxes of
    logits / T, times T^2 as in knowledge distillation), mean per sample, mean over samples. The teacher is
    constant: the gradient w.r.t. a student token's logits is ``T (p_student^T - p_teacher^T) / (B n_s)``.
    ``teacher_logits`` is ``[B, T, V]`` like the student's, or ``[N, V]``: the teacher at the batch's N answer
    tokens only, in row-major order (as ``labels != -100`` after the shift), the form of a cached teacher."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    shifted, _, mask = shift(student_logits, labels)
    counts = _require_tokens(mask)
    if teacher_logits.dim() == student_logits.dim():
        teacher_logits = shift(teacher_logits, labels)[0][mask]
    if teacher_logits.shape != (int(counts.sum()), student_logits.shape[-1]):
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the {int(counts.sum())} answer "
                         f"tokens x {student_logits.shape[-1]} vocab of the batch.")
    kl = token_kl(teacher_logits.detach().float() / temperature, shifted[mask].float() / temperature)  # [N]
    per_sample = torch.zeros(mask.shape[0], dtype=kl.dtype, device=kl.device).index_add(0, mask.nonzero()[:, 0], kl)
    return temperature ** 2 * (per_sample / counts).mean()
