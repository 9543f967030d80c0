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
    "ga_loss",
    "nll_loss",
    "npo_loss",
    "npo_weight",
    "token_kl",
    "kl_retain_loss",
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
    logits, targets, mask = shift(logits, labels)
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.masked_fill(~mask, 0).reshape(-1),
        reduction="none",
    )
    return (-flat).view(targets.shape).masked_fill(~mask, 0.0), mask


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


def ga_loss(per_sample_nll: torch.Tensor, ceiling: float | None = None) -> torch.Tensor:
    """Gradient ascent: ``-mean(NLL)``. Samples whose NLL is above ``ceiling`` stop contributing gradient
    (their value is kept for logging), so GA cannot run away to infinity."""
    nll = per_sample_nll
    if ceiling is not None:
        nll = torch.where(nll.detach() > ceiling, nll.detach(), nll)
    return -nll.mean()


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
