"""Classification metrics, decision thresholds and the collapse check, all computed by scikit-learn.

Positive class = lesion (infarction or hemorrhage). The paper's F1 values are not the harmonic mean of its
precision and recall (P 0.7784, R 0.7390, F1 0.8088), so they were probably a class-weighted average: we
report the binary F1 as ``f1`` and also ``f1_macro`` and ``f1_weighted`` so a reader can compare like with like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "choose_threshold",
    "prediction_spread",
    "is_collapsed",
]

#: Column order of every metrics table (metrics.csv, atl_table.csv).
METRIC_NAMES: tuple[str, ...] = (
    "precision",
    "recall",
    "specificity",
    "f1",
    "f1_macro",
    "f1_weighted",
    "average_precision",
    "accuracy",
    "auc",
)


def _as_arrays(y_true: Sequence[float], y_prob: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_prob has {p.size}")
    if t.size and not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("y_true must hold 0/1 labels")
    return t.astype(int), p


def binary_metrics(y_true: Sequence[float], y_prob: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` plus counts, for probabilities thresholded at ``threshold``.

    Metrics that are undefined on the given labels (AUC and AP with one class only) are ``nan`` rather than an
    exception, so a small validation split does not stop training; ``n_positive``/``n_negative`` say why.

    Args:
        y_true: 0/1 ground truth.
        y_prob: predicted probability of the positive class.
        threshold: a prediction is positive when ``prob >= threshold``.
    """
    t, p = _as_arrays(y_true, y_prob)
    pred = (p >= threshold).astype(int)
    both_classes = t.size > 0 and 0 < t.sum() < t.size
    tn, fp, fn, tp = skm.confusion_matrix(t, pred, labels=[0, 1]).ravel() if t.size else (0, 0, 0, 0)
    out = {
        "precision": skm.precision_score(t, pred, zero_division=0),
        "recall": skm.recall_score(t, pred, zero_division=0),
        "specificity": tn / (tn + fp) if (tn + fp) else math.nan,
        "f1": skm.f1_score(t, pred, zero_division=0),
        "f1_macro": skm.f1_score(t, pred, average="macro", labels=[0, 1], zero_division=0),
        "f1_weighted": skm.f1_score(t, pred, average="weighted", labels=[0, 1], zero_division=0),
        "average_precision": skm.average_precision_score(t, p) if both_classes else math.nan,
        "accuracy": skm.accuracy_score(t, pred) if t.size else math.nan,
        "auc": skm.roc_auc_score(t, p) if both_classes else math.nan,
    }
    out = {k: float(v) for k, v in out.items()}
    out.update(
        threshold=float(threshold),
        n=int(t.size),
        n_positive=int(t.sum()),
        n_negative=int(t.size - t.sum()),
        tp=int(tp),
        fp=int(fp),
        tn=int(tn),
        fn=int(fn),
    )
    return out


def choose_threshold(y_true: Sequence[float], y_prob: Sequence[float], rule: str = "youden") -> float:
    """Decision threshold chosen on validation predictions.

    Args:
        y_true: 0/1 ground truth of the validation set.
        y_prob: predicted probabilities.
        rule: ``"youden"`` maximises sensitivity + specificity - 1 on the ROC curve; ``"f1"`` maximises the
            binary F1; ``"fixed"`` returns 0.5. With a single class present the threshold falls back to 0.5.
    """
    t, p = _as_arrays(y_true, y_prob)
    if rule == "fixed" or t.size == 0 or t.sum() in (0, t.size):
        return 0.5
    if rule == "youden":
        fpr, tpr, thresholds = skm.roc_curve(t, p)
        finite = np.isfinite(thresholds)
        j = tpr[finite] - fpr[finite]
        return float(np.clip(thresholds[finite][int(np.argmax(j))], 0.0, 1.0))
    if rule == "f1":
        precision, recall, thresholds = skm.precision_recall_curve(t, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        return float(thresholds[int(np.argmax(f1))])
    raise ValueError(f"unknown threshold rule {rule!r}; use 'youden', 'f1' or 'fixed'")


def prediction_spread(y_prob: Sequence[float], quantiles: tuple[float, float] = (0.02, 0.98)) -> float:
    """Width of the central range of the predicted probabilities (default: 2nd to 98th percentile)."""
    p = np.asarray(y_prob, dtype=float).ravel()
    if p.size == 0:
        return 0.0
    lo, hi = np.quantile(p, quantiles)
    return float(hi - lo)


def is_collapsed(y_prob: Sequence[float], min_spread: float = 0.3) -> bool:
    """Whether a model's predictions barely spread - the paper's fig. 13 (all within 0.4-0.65: no learning).

    Args:
        y_prob: predicted probabilities on a held-out set.
        min_spread: the smallest 2nd-98th percentile width of a model that learned something. The paper's
            collapsed model spans 0.25; a model separating two classes spans most of [0, 1].
    """
    return prediction_spread(y_prob) < min_spread
