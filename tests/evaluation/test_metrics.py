from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from monai_stroke.evaluation import binary_metrics, choose_threshold, is_collapsed, write_evaluation

Y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
P = np.array([0.1, 0.3, 0.2, 0.6, 0.8, 0.4, 0.9, 0.05, 0.7, 0.55])


def test_binary_metrics_by_hand() -> None:
    m = binary_metrics(Y, P, threshold=0.5)
    # predicted positive: 0.6(neg) 0.8 0.9 0.7 0.55 -> tp=4, fp=1; 0.4 is a missed positive -> fn=1; tn=4
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (4, 1, 1, 4)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["f1"] == pytest.approx(0.8)
    # AUC: fraction of (pos, neg) pairs ranked correctly: 0.4 and 0.55 rank below the 0.6 negative -> 23/25
    assert m["auc"] == pytest.approx(23 / 25)


def test_weighted_f1_differs_from_binary_on_imbalanced_data() -> None:
    y = np.array([0] * 8 + [1] * 2)
    p = np.array([0.1] * 7 + [0.9] + [0.9, 0.2])
    m = binary_metrics(y, p)
    assert m["f1"] == pytest.approx(0.5)
    assert m["f1_weighted"] > m["f1"]  # the paper's F1 > harmonic mean of its P and R hints at this
    assert m["f1_macro"] == pytest.approx((0.5 + 2 * 7 / (2 * 7 + 1 + 1)) / 2)


def test_single_class_gives_nan_auc_not_an_exception() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["auc"]) and math.isnan(m["average_precision"])


@pytest.mark.parametrize("rule", ["youden", "f1"])
def test_threshold_separates_separable_data(rule: str) -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.2, 0.3, 0.35, 0.6, 0.7, 0.9])
    thr = choose_threshold(y, p, rule)
    assert 0.35 < thr <= 0.6
    assert binary_metrics(y, p, thr)["accuracy"] == 1.0


@pytest.mark.parametrize(
    "probs, collapsed",
    [
        (np.random.default_rng(0).uniform(0.4, 0.65, 500), True),  # paper fig. 13
        (np.full(100, 0.5), True),
        (np.r_[np.random.default_rng(1).uniform(0.0, 0.2, 50), np.random.default_rng(2).uniform(0.8, 1, 50)], False),
    ],
)
def test_collapse_check(probs: np.ndarray, collapsed: bool) -> None:
    assert is_collapsed(probs) is collapsed


def test_write_evaluation_files(tmp_path) -> None:
    preds = pd.DataFrame({"y": Y, "p": P})
    payload = write_evaluation(tmp_path, {"slice": (Y, P), "patient": ([0, 1], [0.2, 0.9])}, 0.5,
                               info={"task": "demo"}, predictions=preds)
    for name in ("metrics.json", "metrics.csv", "roc.png", "probability_histogram.png",
                 "probability_histogram_patient.png", "predictions.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["metrics"]["slice"]["auc"] == pytest.approx(payload["metrics"]["slice"]["auc"])
    assert on_disk["info"]["task"] == "demo"
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert list(table["group"]) == ["slice", "patient"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporaries left behind
