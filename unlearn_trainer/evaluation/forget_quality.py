"""TOFU's truth ratio and forget quality (Maini et al. 2024): how an unlearned model's answers to the forget
questions compare with those of a model retrained without the forget set.

Truth ratio of a row (TOFU's "Truth Ratio"): with ``P(a | q)^(1/|a|)`` the length-normalised probability of answer ``a``
(``|a|`` its answer tokens; scored with the row's images, answer tokens only, in float32),

    R_truth = mean over perturbed answers â of P(â | q)^(1/|â|)  /  P(ã | q)^(1/|ã|)

where ``ã`` is the paraphrased answer (row field ``paraphrased_answer``, else ``answer``) and the perturbed answers
are wrong answers of the same form (row field ``perturbed_answers``). Below 1: the model prefers the true answer.
We follow the paper's arithmetic mean of the perturbed probabilities; TOFU's released code averages their
log-probabilities instead (a geometric mean), which gives a slightly lower ratio when perturbed answers differ.

Forget quality (TOFU's "Forget Quality"): the p-value of the two-sample Kolmogorov-Smirnov test between the truth ratios of
the forget rows under the unlearned model and under the retrained model; high (near 1) = indistinguishable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .mia import _answer_statistics

__all__ = ["truth_ratios", "forget_quality"]


def _perturbed(row: dict, index: int) -> list[str]:
    answers = row.get("perturbed_answers") if isinstance(row, dict) else None
    if isinstance(answers, str) or not answers or not all(isinstance(a, str) and a for a in answers):
        raise ValueError(f"row #{index} has no usable 'perturbed_answers': the truth ratio needs a list of one or more "
                         f"non-empty wrong answers per row (TOFU's perturbed answers). Add them or drop the row.")
    return list(answers)


def _truth_answer(row: dict, index: int) -> str:
    answer = row.get("paraphrased_answer") or row.get("answer")
    if not isinstance(answer, str) or not answer:
        raise ValueError(f"row #{index} has neither 'paraphrased_answer' nor 'answer'; the truth ratio compares the "
                         f"perturbed answers with one of them.")
    return answer


def truth_ratios(model, processor, rows: Sequence[dict], batch_size: int = 32, progress: bool = False) -> list[float]:
    """TOFU's truth ratio of each row (module docstring): perturbed over paraphrased length-normalised probability."""
    if len(rows) == 0:
        raise ValueError("No rows for the truth ratio: give at least one row.")
    from ..data.collator import VLMUnlearningCollator

    normalize = VLMUnlearningCollator(processor, return_index=False).normalize
    flat, owners = [], []  # per row: the paraphrased answer first, then its perturbed answers
    for i, row in enumerate(rows):
        row = normalize(row, i)  # a TRL-layout row's prompt and images, read as training reads them
        answers = [_truth_answer(row, i), *_perturbed(row, i)]
        for answer in answers:
            flat.append({**row, "answer": answer})
            owners.append(i)
    stats = _answer_statistics(model, processor, flat, batch_size, progress, "truth ratios", distribution=False,
                                index_of=owners)
    per_row: list[list[float]] = [[] for _ in rows]
    for owner, s in zip(owners, stats):
        per_row[owner].append(sum(s["logprobs"]) / len(s["logprobs"]))  # log of P(a|q)^(1/|a|)
    ratios = []
    for true_logp, *perturbed_logps in per_row:
        top = max(perturbed_logps)  # log of the mean of exp(), computed stably
        log_mean = top + math.log(sum(math.exp(v - top) for v in perturbed_logps) / len(perturbed_logps))
        ratios.append(math.exp(log_mean - true_logp))
    return ratios


def forget_quality(unlearned_truth_ratios: Sequence[float], retrained_truth_ratios: Sequence[float]) -> float:
    """TOFU's forget quality: the p-value of ``scipy.stats.ks_2samp`` (two-sided) between the forget rows' truth
    ratios under the unlearned and under the retrained model; 1 = same distribution."""
    from scipy.stats import ks_2samp

    for name, values in (("unlearned_truth_ratios", unlearned_truth_ratios),
                         ("retrained_truth_ratios", retrained_truth_ratios)):
        if len(values) == 0:
            raise ValueError(f"{name} is empty: forget quality compares two non-empty sets of truth ratios.")
        bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
        if bad:
            raise ValueError(f"{name} has non-finite values at positions {bad[:10]}; recompute them or drop those rows.")
    return float(ks_2samp([float(v) for v in unlearned_truth_ratios], [float(v) for v in retrained_truth_ratios]).pvalue)
