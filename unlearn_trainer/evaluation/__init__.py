"""Evaluation of unlearning: text metrics (``metrics``) and, with a model, generation-based evaluation."""

from . import metrics

__all__ = ["metrics"]
