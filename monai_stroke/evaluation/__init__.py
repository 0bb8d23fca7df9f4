"""Evaluation: metrics from scikit-learn, decision thresholds, collapse check, figures and report files."""

from __future__ import annotations

from monai_stroke.evaluation.metrics import (
    METRIC_NAMES,
    binary_metrics,
    choose_threshold,
    is_collapsed,
    prediction_spread,
)
from monai_stroke.evaluation.report import evaluate_predictions, write_evaluation

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "choose_threshold",
    "is_collapsed",
    "prediction_spread",
    "evaluate_predictions",
    "write_evaluation",
]
