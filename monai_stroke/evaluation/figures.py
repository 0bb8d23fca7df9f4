"""Figures of an evaluation: ROC curve (paper fig. 14) and predicted-probability histograms (fig. 13)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from monai_stroke.utils.atomic import atomic_path  # noqa: E402

__all__ = ["roc_figure", "probability_histogram_figure", "save_figure"]


def roc_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "ROC") -> plt.Figure:
    """ROC curves with their AUC in the legend.

    Args:
        curves: name -> (y_true, y_prob); each name becomes one curve.
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    for name, (y_true, y_prob) in curves.items():
        t = np.asarray(y_true, dtype=int)
        if t.size == 0 or t.min() == t.max():
            continue  # ROC is undefined with one class
        fpr, tpr, _ = skm.roc_curve(t, np.asarray(y_prob, dtype=float))
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def probability_histogram_figure(
    y_true: Sequence[float],
    y_prob: Sequence[float],
    threshold: float | None = None,
    title: str = "predicted probability",
    class_names: tuple[str, str] = ("negative", "positive"),
) -> plt.Figure:
    """Histogram of predicted probabilities per true class; a collapsed model shows one narrow lump."""
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_prob, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    bins = np.linspace(0, 1, 41)
    for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
        ax.hist(p[t == cls], bins=bins, alpha=0.6, color=colour, label=f"{class_names[cls]} (n={(t == cls).sum()})")
    if threshold is not None:
        ax.axvline(threshold, c="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set(xlim=(0, 1), xlabel="predicted probability of the positive class", ylabel="count", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Save a figure as PNG atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
