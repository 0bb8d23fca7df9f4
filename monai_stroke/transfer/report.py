"""The outputs of a freeze-depth search: the paper's table 4 for our data, the choice, figures, the chosen model.

Written by rank 0 when the plan is done (and rewritten, without training, when a finished search is run again):

- ``atl_table.csv`` - one row per depth, the control included: ``theta, init, same_as, epochs_trained,
  eliminated_at, val_losses`` (JSON list, one per epoch), ``f`` (paper eq. 2 over the depth's epochs), the best
  epoch and its validation loss and threshold, the test metrics of the best checkpoint at that threshold,
  ``prediction_spread, collapsed, chosen``;
- ``atl_choice.json`` - ``theta, f, w1, w2, search`` and what a reader needs to trust it (cost in epochs, the
  control, collapsed depths and why that matters);
- ``atl_metrics.png`` (fig. 15), ``atl_histograms.png`` (fig. 13), ``atl_roc.png`` (fig. 14: the chosen model
  against the control), ``atl_val_losses.png``;
- ``models/model.pt`` - the chosen depth's best checkpoint, its contract's provenance extended with the freeze
  depth and ``f``.

**Collapse.** A depth is ``collapsed`` when the 2nd-98th percentile of its test probabilities spans less than
``min_spread`` (0.3): every region gets about the same probability, whatever it shows. The paper's layer0-4 model
(fig. 13) put every prediction within 0.4-0.65 - freezing the whole backbone left a linear head on features that
do not separate early ischemia from intact tissue, so it learned the base rate. Its threshold-dependent metrics
(accuracy, recall) can still look passable; they measure where the threshold falls in one lump, not skill.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monai_stroke.contract import load_checkpoint, save_checkpoint
from monai_stroke.evaluation import METRIC_NAMES
from monai_stroke.evaluation.figures import roc_figure, save_figure
from monai_stroke.transfer.depths import CONTROL
from monai_stroke.transfer.figures import histograms_per_depth_figure, metrics_per_depth_figure, val_loss_figure
from monai_stroke.transfer.schedule import PlanStatus, SearchPlan
from monai_stroke.utils import write_json_atomic, write_text_atomic

__all__ = ["TABLE_COLUMNS", "COLLAPSE_NOTE", "search_table", "write_search_outputs", "read_test_predictions"]

logger = logging.getLogger(__name__)

TABLE_COLUMNS: tuple[str, ...] = (
    "theta",
    "init",
    "same_as",
    "epochs_trained",
    "eliminated_at",
    "val_losses",
    "f",
    "best_epoch",
    "best_val_loss",
    "threshold",
    *METRIC_NAMES,
    "prediction_spread",
    "collapsed",
    "chosen",
)

COLLAPSE_NOTE = (
    "collapsed: the test predictions barely spread (2nd-98th percentile narrower than {min_spread}); the network "
    "gives every region about the same probability - it did not learn to separate the classes, like the paper's "
    "layer0-4 model (fig. 13: all predictions within 0.4-0.65). Its accuracy/recall only say where the threshold "
    "falls inside that one lump."
)


def search_table(
    plan: SearchPlan,
    losses: Mapping[str, Sequence[float]],
    results: Mapping[str, Mapping[str, Any] | None],
    status: PlanStatus,
) -> list[dict[str, Any]]:
    """One row per depth of the plan (the paper's order), ``same_as`` depths repeating their twin's results.

    Args:
        plan: the search plan (depths, weights of f).
        losses: depth -> validation losses per epoch.
        results: depth -> stored evaluation of its best checkpoint (``ATLState.result``).
        status: the plan's final status (eliminated depths, chosen depth).
    """
    rows = []
    for depth in plan.depths:
        twin = plan.same_as.get(depth)
        source = twin or depth
        values = [float(v) for v in losses.get(source, [])]
        result = dict(results.get(source) or {})
        row: dict[str, Any] = {
            "theta": depth,
            "init": result.get("init", ""),
            "same_as": twin or "",
            "epochs_trained": len(values),
            "eliminated_at": status.eliminated.get(source, ""),
            "val_losses": json.dumps([round(v, 6) for v in values]),
            "f": plan.objective(values) if values else np.nan,
            "best_epoch": result.get("best_epoch", ""),
            "best_val_loss": result.get("best_val_loss", np.nan),
            "threshold": result.get("threshold", np.nan),
        }
        for name in (*METRIC_NAMES, "prediction_spread"):
            value = result.get(name)
            row[name] = np.nan if value is None else float(value)
        row["collapsed"] = bool(result.get("collapsed", False))
        row["chosen"] = depth == status.chosen
        rows.append(row)
    return rows


def read_test_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(y_true, y_prob) of the first output from a depth's ``test_predictions.csv``, or None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    label = next(c for c in frame.columns if c.startswith("label_"))
    prob = next(c for c in frame.columns if c.startswith("prob_"))
    return frame[label].to_numpy(int), frame[prob].to_numpy(float)


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).to_csv(buf, index=False, float_format="%.4f")
    return buf.getvalue()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def write_search_outputs(handler: Any, status: PlanStatus) -> dict[str, Any]:
    """Write table, choice, figures and ``models/model.pt`` of a finished search; returns the choice.

    Args:
        handler: the :class:`~monai_stroke.transfer.handler.AdaptiveTransferHandler` that ran the search.
        status: the plan's final status (``done``).
    """
    plan, state, out = handler.plan, handler.state, handler.output_dir
    if not status.done or status.chosen is None:
        raise RuntimeError("the search is not finished; nothing to report yet")
    losses = state.losses(plan.depths)
    results = {d: state.result(d) for d in plan.depths}
    rows = search_table(plan, losses, results, status)
    write_text_atomic(out / "atl_table.csv", _csv(rows))

    chosen = status.chosen
    by_theta = {r["theta"]: r for r in rows}
    collapsed = [r["theta"] for r in rows if r["collapsed"] and not r["same_as"]]
    recipe = getattr(handler.validator.data_loader.dataset, "recipe", None)
    n_trained = len([d for d in plan.depths if d not in plan.same_as])
    choice: dict[str, Any] = {
        "theta": chosen,
        "f": float(by_theta[chosen]["f"]),
        "w1": plan.w1,
        "w2": plan.w2,
        "search": plan.strategy,
        "epochs_per_depth": plan.epochs_per_depth,
        "objective": "f(theta) = w1 * L_1 + w2 * (L_1 + ... + L_e) / e over the validation BCE losses (paper eq. 2); "
        "theta = argmin f over the transfer depths that trained all e epochs",
        "task": getattr(recipe, "task", None),
        "candidates": list(plan.candidates),
        "same_as": dict(plan.same_as),
        "eliminated": dict(status.eliminated),
        "epochs_trained": plan.total_epochs(losses),
        "epochs_exhaustive": n_trained * plan.epochs_per_depth,
        "test": {k: _finite(by_theta[chosen][k]) for k in (*METRIC_NAMES, "threshold", "prediction_spread")},
        "control": None,
        "collapsed": collapsed,
        "collapse_rule": COLLAPSE_NOTE.format(min_spread=handler.min_spread),
        "source_checkpoint": {"path": str(handler.source_path), "sha256": handler.source_sha256},
        "model": "models/model.pt",
        "warnings": [],
    }
    if CONTROL in by_theta:
        control = by_theta[CONTROL]
        choice["control"] = {
            "theta": CONTROL,
            "init": control["init"],
            "f": _finite(float(control["f"])),
            "auc": _finite(control["auc"]),
            "accuracy": _finite(control["accuracy"]),
        }
    if by_theta[chosen]["collapsed"]:
        choice["warnings"].append(f"the chosen depth {chosen} collapsed on the test split; do not deploy it")
    if choice["control"] and choice["control"]["f"] is not None and choice["control"]["f"] < choice["f"]:
        choice["warnings"].append(
            f"the control not_transfer has a lower f ({choice['control']['f']:.4f}) than the chosen depth: on this "
            "data the source task did not help"
        )
    for text in choice["warnings"]:
        logger.warning("%s", text)
    write_json_atomic(out / "atl_choice.json", choice)

    _write_figures(handler, rows, losses, status)
    _write_model(handler, chosen, choice)
    state.write_summary(status={"done": True, "chosen": chosen, "eliminated": dict(status.eliminated)}, choice=choice)
    logger.info(
        "ATL %s search chose %s (f %.4f) after %d epochs (exhaustive: %d); wrote %s",
        plan.strategy,
        chosen,
        choice["f"],
        choice["epochs_trained"],
        choice["epochs_exhaustive"],
        out / "atl_table.csv",
    )
    return choice


def _write_figures(handler: Any, rows: list[dict[str, Any]], losses: Mapping[str, Sequence[float]], status) -> None:
    state, out = handler.state, handler.output_dir
    save_figure(metrics_per_depth_figure(rows), out / "atl_metrics.png")
    save_figure(val_loss_figure(losses, status.eliminated, status.chosen), out / "atl_val_losses.png")
    predictions, thresholds, flags = {}, {}, {}
    for row in rows:
        if row["same_as"]:
            continue
        found = read_test_predictions(state.depth_dir(row["theta"]) / "test_predictions.csv")
        if found is not None:
            predictions[row["theta"]] = found
            thresholds[row["theta"]] = float(row["threshold"])
            flags[row["theta"]] = bool(row["collapsed"])
    if not predictions:
        return
    task = getattr(getattr(handler.validator.data_loader.dataset, "recipe", None), "task", None) or "lesion"
    fig = histograms_per_depth_figure(predictions, thresholds, flags, class_names=("intact", task))
    save_figure(fig, out / "atl_histograms.png")
    curves = {}
    if status.chosen in predictions:
        curves[f"{status.chosen} (chosen)"] = predictions[status.chosen]
    if CONTROL in predictions:
        curves[CONTROL] = predictions[CONTROL]
    save_figure(roc_figure(curves, title=f"test ROC, {task}"), out / "atl_roc.png")


def _write_model(handler: Any, chosen: str, choice: Mapping[str, Any]) -> None:
    state_dict, contract = load_checkpoint(handler.state.best_checkpoint(chosen))
    training = {
        **contract.training,
        "freeze_depth": chosen,
        "atl": {k: choice[k] for k in ("theta", "f", "w1", "w2", "search", "epochs_per_depth")},
    }
    save_checkpoint(
        handler.output_dir / "models" / "model.pt",
        state_dict,
        contract.replace(training=training),
        epoch=training.get("epoch"),
    )
