"""Series aggregation, evaluation groups, threshold choice and the RSNA-weighted loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

from monai_stroke.engines import (
    RSNA_OUTPUT_WEIGHTS,
    Predictions,
    RegionOutputs,
    SliceOutputs,
    WeightedBCEWithLogitsLoss,
    aggregate_slices,
    balanced_pos_weight,
)
from monai_stroke.evaluation import choose_threshold
from monai_stroke.vocabulary import HEMORRHAGE_LABELS


@pytest.mark.parametrize(
    "method, k, expected",
    [
        ("max", 3, [0.9, 0.4]),
        ("topk_mean", 1, [0.9, 0.4]),
        ("topk_mean", 2, [0.85, 0.35]),
        ("topk_mean", 3, [0.6, 0.3]),
        ("topk_mean", 10, [0.475, 0.25]),  # fewer slices than k: all of them
    ],
)
def test_aggregation_over_slices(method, k, expected) -> None:
    slices = np.array([[0.1, 0.1], [0.9, 0.3], [0.8, 0.2], [0.1, 0.4]])
    np.testing.assert_allclose(aggregate_slices(slices, method, k), expected)


@pytest.mark.parametrize("kwargs", [{"method": "mean"}, {"method": "topk_mean", "k": 0}])
def test_bad_aggregation_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        SliceOutputs(pd.DataFrame({"sample_id": [], "patient_id": []}), HEMORRHAGE_LABELS, kwargs)


def _slice_table(n_series: int, n_slices: int, positive_series: set[int]) -> tuple[pd.DataFrame, np.ndarray]:
    rows = []
    for s in range(n_series):
        for z in range(n_slices):
            bleed = s in positive_series and z in (2, 3)
            rows.append({"patient_id": f"S{s}", "slice_index": z, **{f"label_{n}": 0 for n in HEMORRHAGE_LABELS}})
            rows[-1]["label_any"] = rows[-1]["label_subdural"] = int(bleed)
    table = pd.DataFrame(rows)
    table.insert(0, "sample_id", range(len(table)))
    return table, table[[f"label_{n}" for n in HEMORRHAGE_LABELS]].to_numpy(float)


def test_series_level_groups_aggregate_slices_per_series() -> None:
    table, labels = _slice_table(4, 6, {1, 3})
    prob = np.full(labels.shape, 0.1)
    prob[labels[:, 0] == 1, 0] = 0.8
    outputs = SliceOutputs(table, HEMORRHAGE_LABELS, {"method": "topk_mean", "k": 3})
    pred = Predictions(table["sample_id"].to_numpy()[::-1], prob[::-1], labels[::-1])  # any order in
    groups = outputs.groups(pred)
    assert list(groups)[:2] == ["slice/any", "series/any"]
    assert len(groups) == 12
    y, p = groups["series/any"]
    np.testing.assert_array_equal(y, [0, 1, 0, 1])
    np.testing.assert_allclose(p, [0.1, (0.8 + 0.8 + 0.1) / 3, 0.1, (0.8 + 0.8 + 0.1) / 3])
    assert groups["slice/any"][0].sum() == 4


def test_decision_threshold_is_the_series_any_threshold() -> None:
    table, labels = _slice_table(6, 5, {0, 2, 5})
    rng = np.random.default_rng(3)
    prob = np.clip(labels * 0.5 + rng.uniform(0, 0.5, labels.shape), 0, 1)
    outputs = SliceOutputs(table, HEMORRHAGE_LABELS)
    choice = outputs.choose_thresholds(Predictions(table["sample_id"], prob, labels))
    y, p = outputs.groups(Predictions(table["sample_id"], prob, labels))["series/any"]
    assert choice.decision_threshold == pytest.approx(choose_threshold(y, p))
    assert choice.per_group["series/any"] == choice.decision_threshold
    # subtypes without any positive slice fall back to 0.5; their series level to the slice threshold
    assert choice.per_group["slice/epidural"] == 0.5
    assert choice.per_group["series/epidural"] == choice.per_group["slice/epidural"]


def test_region_patient_level_is_any_region() -> None:
    table = pd.DataFrame({"sample_id": range(4), "patient_id": ["A", "A", "B", "B"], "label_early": [0, 1, 0, 0]})
    pred = Predictions(np.arange(4), [[0.2], [0.7], [0.4], [0.1]], [[0], [1], [0], [0]])
    groups = RegionOutputs(table, ["early"]).groups(pred)
    assert list(groups) == ["region/early", "patient/early"]
    np.testing.assert_array_equal(groups["patient/early"][0], [1, 0])
    np.testing.assert_allclose(groups["patient/early"][1], [0.7, 0.4])


def test_rsna_weighted_loss_is_the_challenge_metric() -> None:
    torch.manual_seed(0)
    logits = torch.randn(32, 6)
    target = (torch.rand(32, 6) > 0.7).float()
    loss = WeightedBCEWithLogitsLoss(RSNA_OUTPUT_WEIGHTS)(logits, target)
    prob = torch.sigmoid(logits).numpy()
    per_output = [log_loss(target[:, k].numpy(), prob[:, k], labels=[0, 1]) for k in range(6)]
    expected = np.average(per_output, weights=RSNA_OUTPUT_WEIGHTS)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert RSNA_OUTPUT_WEIGHTS[0] == 2 * RSNA_OUTPUT_WEIGHTS[1]


def test_unweighted_loss_is_plain_bce_and_shapes_are_checked() -> None:
    logits, target = torch.randn(8, 1), (torch.rand(8) > 0.5).float()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)
    assert float(WeightedBCEWithLogitsLoss()(logits, target)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError):
        WeightedBCEWithLogitsLoss()(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError):
        WeightedBCEWithLogitsLoss([1.0, -1.0])


@pytest.mark.parametrize(
    "labels, max_weight, expected",
    [
        ([0, 0, 0, 1], 50.0, [3.0]),  # 3 negatives per positive
        ([[0, 1], [0, 1], [1, 1], [0, 0]], 50.0, [3.0, 1.0]),  # per output; more positives than negatives: 1
        ([0] * 99 + [1], 20.0, [20.0]),  # clipped
        ([0, 0, 0], 50.0, [1.0]),  # no positive: nothing to up-weight
    ],
)
def test_balanced_pos_weight(labels, max_weight, expected) -> None:
    assert balanced_pos_weight(labels, max_weight=max_weight) == pytest.approx(expected)


def test_balanced_pos_weight_balances_the_gradient_of_the_two_classes() -> None:
    labels = torch.tensor([1.0] + [0.0] * 9)
    loss = WeightedBCEWithLogitsLoss(pos_weight=balanced_pos_weight(labels))
    logits = torch.zeros(10, 1, requires_grad=True)
    loss(logits, labels).backward()
    grad = logits.grad[:, 0]
    # at p = 0.5 every sample pulls with |p - y| = 0.5: one positive weighted 9 pulls as hard as nine negatives
    assert float(grad[labels == 1].sum()) == pytest.approx(-float(grad[labels == 0].sum()), rel=1e-6)
