"""Figures of a freeze-depth search: metrics per depth (paper fig. 15), prediction histograms per depth (fig. 13),
validation-loss curves (what halving decided on). The ROC of the chosen model (fig. 14) is
:func:`monai_stroke.evaluation.figures.roc_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["FIGURE_METRICS", "metrics_per_depth_figure", "histograms_per_depth_figure", "val_loss_figure"]

#: Metrics drawn per depth (the paper's fig. 15 shows these test metrics per freeze depth).
FIGURE_METRICS: tuple[str, ...] = ("auc", "accuracy", "average_precision", "precision", "recall", "f1")


def _label(row: Mapping[str, object]) -> str:
    text = str(row["theta"])
    if row.get("chosen"):
        text += " *"
    return text


def metrics_per_depth_figure(rows: Sequence[Mapping[str, object]], title: str = "test metrics per freeze depth"):
    """Grouped bars of :data:`FIGURE_METRICS` per depth; the chosen depth is starred, collapsed depths hatched.

    Args:
        rows: rows of ``atl_table.csv`` (``theta``, the metrics, ``collapsed``, ``chosen``, ``same_as``), in order.
        title: figure title.
    """
    rows = [r for r in rows if not r.get("same_as")]
    x = np.arange(len(rows))
    width = 0.8 / len(FIGURE_METRICS)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.05 * len(rows) + 1.5), 3.6), dpi=110)
    colours = plt.get_cmap("tab10").colors
    for i, name in enumerate(FIGURE_METRICS):
        values = [float(r.get(name)) if r.get(name) not in (None, "") else math.nan for r in rows]
        bars = ax.bar(x + (i - (len(FIGURE_METRICS) - 1) / 2) * width, values, width, label=name, color=colours[i])
        for bar, row in zip(bars, rows, strict=True):
            if row.get("collapsed"):
                bar.set_hatch("///")
                bar.set_alpha(0.55)
    ax.set_xticks(x, [_label(r) for r in rows], rotation=20, ha="right", fontsize=8)
    for tick, row in zip(ax.get_xticklabels(), rows, strict=True):
        if row.get("chosen"):
            tick.set_fontweight("bold")
        if row.get("collapsed"):
            tick.set_color("tab:red")
    ax.set(ylim=(0, 1.05), ylabel="test value", title=title)
    ax.axhline(0.5, c="grey", lw=0.6, ls=":")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.text(0.01, 0.01, "* chosen (argmin f); red/hatched: collapsed", fontsize=7, color="dimgrey")
    fig.tight_layout()
    return fig


def histograms_per_depth_figure(
    predictions: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    thresholds: Mapping[str, float] | None = None,
    collapsed: Mapping[str, bool] | None = None,
    class_names: tuple[str, str] = ("intact", "lesion"),
):
    """Small multiples: per depth the histogram of test probabilities per true class (paper fig. 13).

    A collapsed depth shows one narrow lump (the paper's all within 0.4-0.65); the band 0.4-0.65 is shaded for
    comparison.

    Args:
        predictions: depth -> (y_true, y_prob) on the test split.
        thresholds: depth -> decision threshold (dashed line).
        collapsed: depth -> collapse flag (red title).
        class_names: negative and positive class names.
    """
    names = list(predictions)
    cols = min(4, max(1, len(names)))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows + 0.4), dpi=110, squeeze=False)
    bins = np.linspace(0, 1, 26)
    for ax, name in zip(axes.flat, names, strict=False):
        y, p = (np.asarray(v, dtype=float) for v in predictions[name])
        ax.axvspan(0.4, 0.65, color="0.92", lw=0)
        for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
            ax.hist(p[y == cls], bins=bins, alpha=0.6, color=colour, label=f"{class_names[cls]} ({int((y == cls).sum())})")
        if thresholds and name in thresholds:
            ax.axvline(thresholds[name], c="k", ls="--", lw=0.8)
        flag = bool(collapsed and collapsed.get(name))
        ax.set_title(name + (" - collapsed" if flag else ""), fontsize=8, color="tab:red" if flag else "black")
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=6)
    fig.suptitle("test predicted probability per freeze depth (grey: 0.4-0.65)", fontsize=9)
    fig.tight_layout()
    return fig


def val_loss_figure(
    losses: Mapping[str, Sequence[float]], eliminated: Mapping[str, int] | None = None, chosen: str | None = None
):
    """Validation BCE loss per epoch and depth; depths halving eliminated end with an x.

    Args:
        losses: depth -> validation losses per epoch.
        eliminated: depth -> epochs it had when eliminated.
        chosen: the chosen depth (thick line).
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=110)
    for name, values in losses.items():
        epochs = np.arange(1, len(values) + 1)
        line = ax.plot(epochs, values, marker=".", lw=2.4 if name == chosen else 1.1, label=name,
                       ls="--" if name == "not_transfer" else "-")[0]
        if eliminated and name in eliminated:
            ax.plot(epochs[-1], values[-1], "x", color=line.get_color(), ms=8)
    ax.set(xlabel="epoch of the depth", ylabel="validation BCE loss", title="ATL: validation loss per depth")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
