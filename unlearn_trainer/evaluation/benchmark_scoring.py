"""The public benchmarks' own scoring rules, applied to generated answers (no model needed).

Rows name their rule in ``benchmark_metric`` (set by the loaders of :mod:`unlearn_trainer.data.benchmarks`, whose
``SCORING_RULES`` describes each rule and where it comes from); :func:`score_predictions` groups rows by kind,
rule and modality and scores each group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..data.collator import row_name
from .metrics import first_letter_choice, rouge_l

__all__ = ["score_predictions"]


def _acc_first_letter(preds: list[str], rows: list[dict]) -> float:
    hits = 0
    for pred, row in zip(preds, rows):
        letters = "abcdefgh"[: len(row["options"])]
        hits += first_letter_choice(pred, letters) == row["answer_letter"].strip().lower()
    return hits / len(rows)


def _acc_substring(preds: list[str], rows: list[dict]) -> float:
    return sum(row["answer"].lower() in pred.lower() for pred, row in zip(preds, rows)) / len(rows)


def _rouge_l_stemmed(key: str) -> Callable[[list[str], list[dict]], float]:
    return lambda preds, rows: rouge_l(preds, [r["answer"] for r in rows], stemmed=True)[key]


_METRICS: dict[str, Callable[[list[str], list[dict]], float]] = {
    "acc_first_letter": _acc_first_letter,
    "acc_substring": _acc_substring,
    "rougeL_f_stemmed": _rouge_l_stemmed("rougeL_f_stemmed"),
    "rougeL_r_stemmed": _rouge_l_stemmed("rougeL_r_stemmed"),
}


def score_predictions(rows: Sequence[dict], predictions: Sequence[str]) -> dict[str, float]:
    """The benchmarks' own metrics of generated answers (e.g. from ``evaluate_rows``), one key per group.

    Rows are grouped by ``kind``, ``benchmark_metric`` and ``modality`` (if present); the key names all three,
    e.g. ``classification_acc_first_letter_image`` or ``caption_rougeL_r_stemmed``. Rows without a
    ``benchmark_metric`` are skipped. Fractions in [0, 1].
    """
    if isinstance(predictions, str) or len(rows) != len(predictions):
        raise ValueError(f"need one prediction per row: {len(rows)} rows, {len(predictions)} predictions")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        metric = row.get("benchmark_metric")
        if not metric:
            continue
        if metric not in _METRICS:
            raise ValueError(f"{row_name(row, i)} has unknown benchmark_metric {metric!r}; known: {sorted(_METRICS)}")
        key = f"{row.get('kind', 'row')}_{metric}" + (f"_{row['modality']}" if row.get("modality") else "")
        groups.setdefault((key, metric), []).append(i)
    return {key: _METRICS[metric]([predictions[i] for i in idx], [rows[i] for i in idx])
            for (key, metric), idx in groups.items()}
