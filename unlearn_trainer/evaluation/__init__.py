"""Evaluation of unlearning: text metrics, generation-based evaluation of splits, robustness probes (proof of
forgetting) and the training callback."""

from . import metrics
from .benchmark_scoring import score_predictions
from .callback import UnlearningEvalCallback, plot_tradeoff
from .evaluator import evaluate_rows, evaluate_splits, format_table, generate_answers, option_loglikelihoods
from .forget_quality import forget_quality, truth_ratios
from .mia import MIA_ATTACKS, answer_token_statistics, auc, mia_auc, mia_scores, privleak
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
    "MIA_ATTACKS",
    "answer_token_statistics",
    "mia_scores",
    "auc",
    "mia_auc",
    "privleak",
    "truth_ratios",
    "forget_quality",
    "PROBES",
    "CHEAP_PROBES",
    "ProbeData",
    "run_probes",
    "robustness_table",
]
