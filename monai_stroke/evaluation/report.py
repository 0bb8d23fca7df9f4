"""Write an evaluation to disk: ``metrics.json``, ``metrics.csv``, ``roc.png``, ``probability_histogram.png``."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monai_stroke.evaluation.figures import probability_histogram_figure, roc_figure, save_figure
from monai_stroke.evaluation.metrics import METRIC_NAMES, binary_metrics, is_collapsed, prediction_spread
from monai_stroke.utils.atomic import write_json_atomic, write_text_atomic

__all__ = ["evaluate_predictions", "write_evaluation"]


def evaluate_predictions(
    groups: Mapping[str, tuple[Sequence[float], Sequence[float]]], threshold: float | Mapping[str, float] = 0.5
) -> dict[str, dict[str, Any]]:
    """Metrics per group (e.g. ``{"slice/any": (y, p), "patient/any": (y, p)}``) at the decision threshold."""
    results = {}
    for name, (y_true, y_prob) in groups.items():
        thr = threshold[name] if isinstance(threshold, Mapping) else threshold
        m = binary_metrics(y_true, y_prob, thr)
        m["prediction_spread"] = prediction_spread(y_prob)
        m["collapsed"] = bool(is_collapsed(y_prob))
        results[name] = m
    return results


def write_evaluation(
    out_dir: str | os.PathLike,
    groups: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    threshold: float | Mapping[str, float] = 0.5,
    info: Mapping[str, Any] | None = None,
    class_names: tuple[str, str] = ("negative", "positive"),
    predictions: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Compute and write the metrics and figures of one evaluation.

    Args:
        out_dir: folder receiving ``metrics.json``, ``metrics.csv``, ``roc.png``, ``probability_histogram.png``
            (first group) and ``probability_histogram_<group>.png`` for the others, plus ``predictions.csv``.
        groups: name -> (y_true, y_prob). The first group is the headline one.
        threshold: decision threshold (one for all, or per group), normally the one chosen on validation.
        info: extra fields for ``metrics.json`` (task, checkpoint, model identity, ...).
        class_names: names of the negative and positive class for the figures.
        predictions: optional per-sample table written as ``predictions.csv``.
    """
    out = Path(out_dir)
    results = evaluate_predictions(groups, threshold)
    payload = {"info": dict(info or {}), "metrics": results, "f1_note": (
        "f1 is the binary F1 of the positive (lesion) class; f1_macro and f1_weighted are the class averages "
        "(the paper's F1 appears to be class-weighted)."
    )}
    write_json_atomic(out / "metrics.json", _finite(payload))
    table = pd.DataFrame(
        [{"group": g, **{k: r[k] for k in (*METRIC_NAMES, "threshold", "n", "n_positive", "collapsed")}}
         for g, r in results.items()]
    )
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.4f")
    write_text_atomic(out / "metrics.csv", buf.getvalue())
    if predictions is not None:
        buf = io.StringIO()
        predictions.to_csv(buf, index=False, float_format="%.5f")
        write_text_atomic(out / "predictions.csv", buf.getvalue())
    save_figure(roc_figure(groups, title="ROC"), out / "roc.png")
    for i, (name, (y_true, y_prob)) in enumerate(groups.items()):
        thr = threshold[name] if isinstance(threshold, Mapping) else threshold
        fig = probability_histogram_figure(y_true, y_prob, thr, title=name, class_names=class_names)
        save_figure(fig, out / ("probability_histogram.png" if i == 0 else f"probability_histogram_{_safe(name)}.png"))
    return payload


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _finite(obj: Any) -> Any:
    # JSON has no NaN; null says "undefined on these labels"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj
