"""Evaluation of unlearning: text metrics, generation-based evaluation of splits, robustness probes (proof of
forgetting) and the training callback."""

from . import metrics
from .benchmark_scoring import score_predictions
from .callback import UnlearningEvalCallback, plot_tradeoff
from .evaluator import evaluate_rows, evaluate_splits, format_table, generate_answers, option_loglikelihoods
from .robustness import CHEAP_PROBES, PROBES, ProbeData, robustness_table, run_probes

__all__ = [
    "metrics",
    "score_predictions",
    "UnlearningEvalCallback",
    "plot_tradeoff",
    "evaluate_rows",
    "evaluate_splits",
    "format_table",
    "generate_answers",
    "option_loglikelihoods",
    "PROBES",
    "CHEAP_PROBES",
    "ProbeData",
    "run_probes",
    "robustness_table",
]
