"""Membership inference on answer tokens: does the model still treat the forget rows as training data?

Each attack gives every row a score, higher = more likely a member (seen in training), computed from the model's
log-probabilities of the row's **answer tokens only** (the collator's labels mask the prompt, the image tokens and
padding), with the row's images always passed, in float32:

- ``loss``: minus the mean answer-token NLL (the LOSS attack, Yeom et al. 2018).
- ``zlib``: minus the mean answer-token NLL (the log-perplexity) divided by the zlib entropy of the answer text,
  the length in bytes of ``zlib.compress`` of its UTF-8 (Carlini et al. 2021, "ratio of the log-perplexity and the
  zlib entropy"; bytes rather than bits changes no ranking; sign flipped so that higher = member).
- ``min_k``: Min-K% Prob (Shi et al. 2024): the mean log-probability of the k% least likely answer tokens.
- ``min_k_plus_plus``: Min-K%++ (Zhang et al. 2024): each token's log-probability standardised by the mean
  and standard deviation of ``log p(z | prefix)`` for ``z`` drawn from the model's own next-token distribution (an
  expectation over the vocabulary weighted by ``p``, not a uniform one), then the mean of the k% lowest.

Both Min-K variants use ``k = 0.2`` (the papers' default) and keep ``max(1, int(k * n))`` tokens of a row with
``n`` answer tokens (the papers' ``int(k * n)`` is 0 for answers under 5 tokens).

The attacks are summarised by ROC AUC over members vs. non-members (:func:`auc`), and an unlearned model is compared
with a model retrained without the forget set by MUSE's PrivLeak (:func:`privleak`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

from .._progress import progress_bar
from ..data.collator import VLMUnlearningCollator, model_inputs, to_device
from ..losses import shift
from .evaluator import _batches, _device, _eval_mode

__all__ = [
    "MIA_ATTACKS",
    "answer_token_statistics",
    "scores_from_statistics",
    "mia_scores",
    "auc",
    "mia_auc",
    "privleak",
]

MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def _model_dtype(model) -> torch.dtype | None:
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


@torch.no_grad()
def _answer_statistics(model, processor, rows: Sequence[dict], batch_size: int, progress: bool, desc: str,
                       distribution: bool, index_of: Sequence[int] | None = None) -> list[dict]:
    """Per row: answer-token log-probabilities, and with ``distribution`` the mean / std of ``log p`` under the
    model's next-token distribution at each answer position. One forward per batch, images passed. Errors name
    a row by ``index_of[position]`` (default its position): the caller's row number, never its text."""
    if len(rows) == 0:
        raise ValueError("No rows to score: give at least one row.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    collator = VLMUnlearningCollator(processor, return_index=False)
    index_of = list(range(len(rows))) if index_of is None else list(index_of)
    rows = [collator.normalize(row, index_of[i]) for i, row in enumerate(rows)]
    out: list[dict] = [{} for _ in rows]
    device, dtype = _device(model), _model_dtype(model)
    with _eval_mode(model, processor):
        chunks = progress_bar(list(_batches(rows, batch_size)), desc=desc, enabled=progress, unit="batch", leave=False)
        for positions in chunks:
            # errors name rows by their position in ``rows``, never by their text
            batch = to_device(collator([{**rows[i], "__index__": index_of[i]} for i in positions]), device, dtype)
            logits, targets, mask = shift(model(**model_inputs(batch)).logits, batch["labels"])
            counts = mask.sum(-1).tolist()
            # only the answer positions are expanded to the full vocabulary, in float32
            logp = torch.log_softmax(logits[mask].float(), dim=-1)  # [N, V], rows in batch order
            token_logp = logp.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
            if distribution:
                probs = logp.exp()
                mu = (probs * logp).sum(-1)
                var = (probs * (logp - mu.unsqueeze(-1)).square()).sum(-1)
                sigma = var.clamp_min(0).sqrt()
            start = 0
            for p, n in zip(positions, counts):
                if n == 0:
                    raise ValueError(f"row #{index_of[p]} has no answer tokens after tokenization; give it a non-empty answer.")
                stats = {"logprobs": token_logp[start : start + n].tolist()}
                if distribution:
                    stats["mu"] = mu[start : start + n].tolist()
                    stats["sigma"] = sigma[start : start + n].tolist()
                out[p] = stats
                start += n
    return out


def answer_token_statistics(model, processor, rows: Sequence[dict], batch_size: int = 32, progress: bool = False,
                            desc: str = "membership statistics") -> list[dict]:
    """Per row, what the attacks need: ``logprobs`` (log p of each answer token), ``mu`` and ``sigma`` (mean and
    std of ``log p(z | prefix)``, ``z ~ p(. | prefix)``, at each answer token: Min-K%++), ``zlib_bytes`` (length of
    the zlib-compressed answer). Holds numbers only, no text. Batched results equal row-by-row ones (left padding)."""
    stats = _answer_statistics(model, processor, rows, batch_size, progress, desc, distribution=True)
    normalize = VLMUnlearningCollator(processor, return_index=False).normalize
    for i, row in enumerate(rows):
        answer = normalize(row, i).get("answer")
        if not isinstance(answer, str) or not answer:
            raise ValueError(f"row #{i} has no 'answer' string; membership inference scores the answer.")
        stats[i]["zlib_bytes"] = len(zlib.compress(answer.encode("utf-8")))
    return stats


def _check_k(k: float) -> None:
    if not 0 < k <= 1:
        raise ValueError(f"k is the fraction of answer tokens Min-K% keeps, in (0, 1]; got {k}.")


def _check_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(attacks, str):
        attacks = (attacks,)
    unknown = [a for a in attacks if a not in MIA_ATTACKS]
    if unknown or not attacks:
        raise ValueError(f"Unknown membership-inference attack(s) {unknown}; choose from {list(MIA_ATTACKS)}.")
    return tuple(attacks)


def _lowest_mean(values: Sequence[float], k: float) -> float:
    keep = max(1, int(k * len(values)))
    return sum(sorted(values)[:keep]) / keep


def scores_from_statistics(statistics: Sequence[dict], attacks: Sequence[str] = MIA_ATTACKS,
                           k: float = 0.2) -> dict[str, list[float]]:
    """The attack scores (higher = member) of rows from their :func:`answer_token_statistics` (module docstring)."""
    attacks = _check_attacks(attacks)
    _check_k(k)
    scores: dict[str, list[float]] = {a: [] for a in attacks}
    for s in statistics:
        logps = s["logprobs"]
        mean_logp = sum(logps) / len(logps)
        for attack in attacks:
            if attack == "loss":
                value = mean_logp
            elif attack == "zlib":
                value = mean_logp / s["zlib_bytes"]
            elif attack == "min_k":
                value = _lowest_mean(logps, k)
            else:  # Min-K%++; a one-hot prediction has sigma 0: its standardised score is taken as 0
                z = [(lp - m) / sd if sd > 0 else 0.0 for lp, m, sd in zip(logps, s["mu"], s["sigma"])]
                value = _lowest_mean(z, k)
            scores[attack].append(float(value))
    return scores


def mia_scores(model, processor, rows: Sequence[dict], attacks: Sequence[str] = MIA_ATTACKS, k: float = 0.2,
               batch_size: int = 32, progress: bool = False) -> dict[str, list[float]]:
    """Per attack, one score per row, higher = more likely a member (see the module docstring)."""
    attacks = _check_attacks(attacks)
    _check_k(k)
    stats = answer_token_statistics(model, processor, rows, batch_size, progress)
    return scores_from_statistics(stats, attacks, k)


def _finite(name: str, values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name} is empty: an AUC needs at least one member and one non-member score.")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} has non-finite values at positions {bad[:10]}; drop those rows or fix the scores.")
    return values


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of telling members from non-members by score (higher = member): the probability that a random
    member outscores a random non-member, ties counting 1/2 (the Mann-Whitney U statistic / (n_m * n_n))."""
    from scipy.stats import mannwhitneyu

    members = _finite("member_scores", member_scores)
    nonmembers = _finite("nonmember_scores", nonmember_scores)
    u = mannwhitneyu(members, nonmembers, alternative="two-sided").statistic  # U of ``members``
    return float(u) / (len(members) * len(nonmembers))


def mia_auc(model, processor, members: Sequence[dict], nonmembers: Sequence[dict],
            attacks: Sequence[str] = MIA_ATTACKS, k: float = 0.2, batch_size: int = 32,
            progress: bool = False) -> dict[str, float]:
    """Per attack, the ROC AUC of ``members`` (e.g. forget rows) vs. ``nonmembers`` (rows the model never saw):
    0.5 means the attack cannot tell them apart; 1.0 that members are recognised."""
    attacks = _check_attacks(attacks)
    _check_k(k)
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError(f"mia_auc needs members and non-members; got {len(members)} member and {len(nonmembers)} "
                         f"non-member rows.")
    member = scores_from_statistics(answer_token_statistics(model, processor, members, batch_size, progress,
                                                            desc="membership: members"), attacks, k)
    nonmember = scores_from_statistics(answer_token_statistics(model, processor, nonmembers, batch_size, progress,
                                                               desc="membership: non-members"), attacks, k)
    return {a: auc(member[a], nonmember[a]) for a in attacks}


def privleak(auc_unlearned: float, auc_retrained: float) -> float:
    """MUSE's PrivLeak (Shi et al. 2024, criterion C3 "no privacy leakage"), in percent as MUSE reports it: 0 is ideal (the unlearned model
    leaks as much as the retrained one); negative = under-unlearning (forget rows still recognised), positive =
    over-unlearning.

    MUSE computes ``(AUC_unlearn - AUC_retrain) / AUC_retrain`` with its AUC of telling the *holdout* rows from the
    forget rows (its code labels forget rows 0), i.e. ``1 - `` the member-positive AUC that :func:`auc` and
    :func:`mia_auc` return. Given those, this is ``100 * (auc_retrained - auc_unlearned) / (1 - auc_retrained)``,
    the same number as MUSE's tables (its target models score about -100)."""
    for name, value in (("auc_unlearned", auc_unlearned), ("auc_retrained", auc_retrained)):
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be an AUC in [0, 1], got {value!r}.")
    if auc_retrained == 1.0:
        raise ValueError("auc_retrained is 1.0: the retrained model recognises every forget row, so PrivLeak "
                         "(normalised by the retrained model's holdout AUC, 1 - 1.0) is undefined; check that the "
                         "retrained model was really trained without the forget rows and the non-members are unseen.")
    return 100.0 * (auc_retrained - auc_unlearned) / (1.0 - auc_retrained)
