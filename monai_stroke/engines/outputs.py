"""From network outputs to decisions: probabilities per sample, series/patient aggregation, thresholds, groups.

Both bundles evaluate at two levels. The sample level is what the network sees (a slice, a region crop); the
series/patient level is what a report says (does this scan bleed; does this patient have early ischemic change).

- Hemorrhage: slice probabilities -> series probability per output by :func:`aggregate_slices`, default the mean
  of the top 3 slices (``{"method": "topk_mean", "k": 3}``). The maximum lets one noisy slice decide; the mean
  of the three highest needs a finding on about one 5 mm slice with its two neighbours (an acute bleed spans
  several slices), while a 1-2 slice bleed of high probability still ranks far above a clean series. The cascade
  decides "hemorrhage" on the series probability of ``any``, so the checkpoint's ``decision_threshold`` is chosen
  on the validation *series*; per-slice and per-subtype thresholds are stored too.
- Ischemic: one probability per region crop (``decision_threshold`` is chosen on validation regions); a patient's
  probability is the maximum over its regions (any region with the change).

Thresholds are chosen on validation predictions by :func:`monai_stroke.evaluation.choose_threshold` (Youden's J
by default); a group whose validation labels hold one class only cannot choose one, and falls back to the
sample-level threshold of the same output (series/patient groups) or 0.5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from monai_stroke.evaluation import choose_threshold

__all__ = [
    "DEFAULT_AGGREGATION",
    "Predictions",
    "ThresholdChoice",
    "aggregate_slices",
    "Outputs",
    "SliceOutputs",
    "RegionOutputs",
    "outputs_for",
]

#: How slice probabilities become a series probability (stored in the checkpoint contract).
DEFAULT_AGGREGATION: dict[str, Any] = {"method": "topk_mean", "k": 3}


@dataclasses.dataclass
class Predictions:
    """Predictions of one pass over a dataset, ordered by ``sample_id``.

    Args:
        sample_id: ``(N,)`` row of each prediction in the dataset's table.
        prob: ``(N, K)`` sigmoid probabilities.
        label: ``(N, K)`` 0/1 labels (as given to the network).
    """

    sample_id: np.ndarray
    prob: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        self.sample_id = np.asarray(self.sample_id, dtype=np.int64).reshape(-1)
        n = self.sample_id.size
        prob = np.asarray(self.prob, dtype=np.float64)
        label = np.asarray(self.label, dtype=np.float64)
        width = prob.shape[-1] if prob.ndim == 2 else 1  # keeps (0, K) for an empty shard
        self.prob = prob.reshape(n, width)
        self.label = label.reshape(n, width)


@dataclasses.dataclass
class ThresholdChoice:
    """Decision thresholds chosen on validation.

    Args:
        decision_threshold: the threshold of the decision a report makes (series ``any``; region of the task).
        rule: how it was chosen, in words.
        per_group: threshold per evaluation group (``"slice/any"``, ``"series/any"``, ``"region/<task>"``, ...).
    """

    decision_threshold: float
    rule: str
    per_group: dict[str, float]


def aggregate_slices(prob: np.ndarray, method: str = "topk_mean", k: int = 3) -> np.ndarray:
    """Series probability per output from the slice probabilities of one series.

    Args:
        prob: ``(Z, K)`` (or ``(Z,)``) slice probabilities.
        method: ``"max"`` or ``"topk_mean"`` (the mean of the ``k`` highest slices per output; all slices when the
            series has fewer).
        k: slices averaged by ``topk_mean``.

    Returns:
        ``(K,)`` series probabilities (``(1,)`` for 1-D input).
    """
    p = np.asarray(prob, dtype=np.float64)
    p = p.reshape(p.shape[0], -1)
    if p.shape[0] == 0:
        raise ValueError("a series without slices has no probability")
    if method == "max":
        return p.max(axis=0)
    if method == "topk_mean":
        if int(k) < 1:
            raise ValueError(f"topk_mean needs k >= 1, got {k!r}")
        top = -np.sort(-p, axis=0)[: int(k)]
        return top.mean(axis=0)
    raise ValueError(f"unknown aggregation {method!r}; use 'max' or 'topk_mean'")


class Outputs:
    """Maps predictions back onto a dataset's sample table and groups them for metrics and thresholds.

    Args:
        table: the dataset's sample table (``sample_id``, ``patient_id``, ``label_<name>`` per output, ...).
        output_names: network outputs, in order.
    """

    sample_level = "sample"
    patient_level = "patient"

    def __init__(self, table: pd.DataFrame, output_names: Sequence[str]) -> None:
        self.table = table.set_index("sample_id", drop=False)
        self.output_names = list(output_names)

    def frame(self, pred: Predictions) -> pd.DataFrame:
        """The sample table rows of ``pred`` with ``prob_<name>`` columns, in table order."""
        order = np.argsort(pred.sample_id, kind="stable")
        rows = self.table.loc[pred.sample_id[order]].reset_index(drop=True)
        for k, name in enumerate(self.output_names):
            rows[f"prob_{name}"] = pred.prob[order, k]
        return rows

    def aggregate(self, probs: np.ndarray) -> np.ndarray:
        """Patient-level probabilities ``(K,)`` from its samples' ``(n, K)``."""
        return np.asarray(probs, dtype=np.float64).max(axis=0)

    def patient_frame(self, pred: Predictions) -> pd.DataFrame:
        """One row per patient: ``label_<name>`` (any positive sample) and aggregated ``prob_<name>``."""
        frame = self.frame(pred)
        prob_cols = [f"prob_{n}" for n in self.output_names]
        label_cols = [f"label_{n}" for n in self.output_names]
        rows = []
        for pid, group in frame.groupby("patient_id", sort=False):
            row = {"patient_id": pid, "n_samples": len(group)}
            row.update(dict(zip(label_cols, group[label_cols].max(axis=0).astype(int), strict=True)))
            row.update(dict(zip(prob_cols, self.aggregate(group[prob_cols].to_numpy()), strict=True)))
            rows.append(row)
        return pd.DataFrame(rows, columns=["patient_id", "n_samples", *label_cols, *prob_cols])

    def groups(self, pred: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Evaluation groups, headline first: ``{name: (y_true, y_prob)}``."""
        frame, patients = self.frame(pred), self.patient_frame(pred)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in self.output_names:
            for level, table in ((self.sample_level, frame), (self.patient_level, patients)):
                out[f"{level}/{name}"] = (table[f"label_{name}"].to_numpy(int), table[f"prob_{name}"].to_numpy())
        return out

    def decision_group(self) -> str:
        """The group whose threshold is the checkpoint's ``decision_threshold``."""
        return f"{self.sample_level}/{self.output_names[0]}"

    def choose_thresholds(self, pred: Predictions, rule: str = "youden") -> ThresholdChoice:
        """Thresholds per group chosen on validation predictions (see the module docstring for fallbacks)."""
        per_group: dict[str, float] = {}
        notes: dict[str, str] = {}
        for name, (y, p) in self.groups(pred).items():
            level, output = name.split("/", 1)
            if 0 < int(np.sum(y)) < len(y):
                per_group[name] = choose_threshold(y, p, rule)
            elif level != self.sample_level and f"{self.sample_level}/{output}" in per_group:
                per_group[name] = per_group[f"{self.sample_level}/{output}"]
                notes[name] = f"validation {level} labels of one class: the {self.sample_level} threshold"
            else:
                per_group[name] = 0.5
                notes[name] = "validation of one class: 0.5"
        decision = self.decision_group()
        text = f"{rule} on validation {decision}"
        if decision in notes:
            text += f" ({notes[decision]})"
        return ThresholdChoice(per_group[decision], text, per_group)


class SliceOutputs(Outputs):
    """Hemorrhage: slices and series (see the module docstring).

    Args:
        table: a :class:`~monai_stroke.data.SliceDataset` table.
        output_names: ``HEMORRHAGE_LABELS``.
        aggregation: ``{"method": "topk_mean", "k": 3}`` or ``{"method": "max"}``.
    """

    sample_level = "slice"
    patient_level = "series"

    def __init__(
        self, table: pd.DataFrame, output_names: Sequence[str], aggregation: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(table, output_names)
        self.aggregation = dict(aggregation or DEFAULT_AGGREGATION)
        aggregate_slices(np.zeros((1, 1)), **self.aggregation)  # validates the method now, not at the first epoch

    def aggregate(self, probs: np.ndarray) -> np.ndarray:
        return aggregate_slices(probs, **self.aggregation)

    def decision_group(self) -> str:
        return f"{self.patient_level}/{self.output_names[0]}"

    def groups(self, pred: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        groups = super().groups(pred)
        # any at both levels first (the headline), then the subtypes
        first = [f"{self.sample_level}/{self.output_names[0]}", f"{self.patient_level}/{self.output_names[0]}"]
        return {**{g: groups[g] for g in first}, **{g: v for g, v in groups.items() if g not in first}}


class RegionOutputs(Outputs):
    """Ischemic: region crops and patients (a patient is positive when any of its task regions is).

    Args:
        table: a region dataset's table.
        output_names: ``[task]``.
    """

    sample_level = "region"
    patient_level = "patient"


def outputs_for(dataset: Any, aggregation: Mapping[str, Any] | None = None) -> Outputs:
    """The :class:`Outputs` of a slice or region dataset (by its ``kind``)."""
    kind = getattr(dataset, "kind", None)
    names = list(dataset.output_names)
    if kind == "hemorrhage":
        return SliceOutputs(dataset.table, names, aggregation)
    if kind == "ischemic":
        return RegionOutputs(dataset.table, names)
    raise ValueError(f"no outputs for a dataset of kind {kind!r}")
