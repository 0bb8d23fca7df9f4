"""Handlers of the classification bundles: prediction collection, lowest-loss checkpoint, TensorBoard helpers."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine

from monai_stroke.contract import load_checkpoint
from monai_stroke.data.recipe import Recipe
from monai_stroke.engines import (
    BestLossCheckpoint,
    NullSummaryWriter,
    PredictionCollector,
    Predictions,
    TensorBoardSampleGrid,
    summary_writer,
)
from monai_stroke.evaluation import choose_threshold
from monai_stroke.networks import create_network


class _RegionData:
    """The parts of a region dataset the handlers use: kind, outputs, table, recipe."""

    kind = "ischemic"

    def __init__(self, labels: list[int], patients: list[str]) -> None:
        self.output_names = ["early_vs_intact"]
        self.table = pd.DataFrame(
            {
                "sample_id": range(len(labels)),
                "patient_id": patients,
                "side": ["L"] * len(labels),
                "region": ["C"] * len(labels),
                "label_early_vs_intact": labels,
            }
        )
        self.recipe = Recipe(
            kind="ischemic",
            chain="ischemic_regions",
            chain_params={"task": "early_vs_intact", "window": [40.0, 20.0]},
            output_names=["early_vs_intact"],
            windows_hu=[[40.0, 20.0]],
            window_output="float",
            neighbours=1,
            spatial_size=[32, 32],
            in_channels=3,
            task="early_vs_intact",
            template_identity="t" * 64,
            atlas_identity="a" * 64,
        )


def _state(loss: float, epoch: int, pred: Predictions) -> types.SimpleNamespace:
    return types.SimpleNamespace(state=types.SimpleNamespace(metrics={"val_loss": loss}, epoch=epoch, predictions=pred))


@pytest.mark.parametrize(
    "losses, best_epoch",
    [([0.7, 0.4, 0.5, 0.45], 2), ([0.3, 0.4, 0.5], 1), ([0.9, 0.8, 0.7], 3), ([float("nan"), 0.6, 0.6], 2)],
)
def test_checkpoint_keeps_the_epoch_of_lowest_validation_loss(tmp_path, losses, best_epoch) -> None:
    labels = [0, 1, 0, 1, 1, 0, 0, 1]
    data = _RegionData(labels, [f"P{i // 2}" for i in range(8)])
    net = create_network(size="tiny", in_channels=3, num_outputs=1)
    handler = BestLossCheckpoint(tmp_path / "models" / "model.pt", net, data, provenance={"seed": 7})
    rng = np.random.default_rng(0)
    expected = {}
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():  # every epoch has its own weights and predictions
            net.last_linear.bias.fill_(float(epoch))
        prob = rng.uniform(size=(8, 1))
        expected[epoch] = (net.last_linear.bias.clone(), choose_threshold(labels, prob[:, 0]))
        handler(_state(loss, epoch, Predictions(np.arange(8), prob, np.array(labels)[:, None])))
    state, contract = load_checkpoint(tmp_path / "models" / "model.pt", kind="ischemic", task="early_vs_intact")
    assert contract.training["epoch"] == best_epoch
    assert torch.equal(state["last_linear.bias"], expected[best_epoch][0])
    assert contract.decision_threshold == pytest.approx(expected[best_epoch][1])
    assert contract.training["thresholds"]["region/early_vs_intact"] == pytest.approx(expected[best_epoch][1])
    assert contract.training["seed"] == 7 and contract.training["val_samples"] == 8
    assert contract.network["size"] == "tiny" and contract.atlas_identity == "a" * 64
    assert contract.threshold_rule.startswith("youden on validation region/early_vs_intact")


def test_threshold_of_one_class_validation_falls_back(tmp_path) -> None:
    data = _RegionData([0, 0, 0, 0], ["P1", "P1", "P2", "P2"])
    net = create_network(size="tiny", in_channels=3, num_outputs=1)
    handler = BestLossCheckpoint(tmp_path / "model.pt", net, data)
    handler(_state(0.2, 1, Predictions(np.arange(4), np.full((4, 1), 0.9), np.zeros((4, 1)))))
    _, contract = load_checkpoint(tmp_path / "model.pt")
    assert contract.decision_threshold == 0.5
    assert "one class" in contract.threshold_rule


def _fake_evaluator(batches: list[dict]) -> Engine:
    def step(engine, batch):
        return {"pred": batch["logits"], "label": batch["label"]}

    return Engine(step)


def test_collector_orders_by_sample_id_applies_sigmoid_and_reports_metrics() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [1.0]])
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0]])
    ids = torch.tensor([4, 0, 3, 1, 2])
    batches = [
        {"logits": logits[i : i + 2], "label": labels[i : i + 2], "sample_id": ids[i : i + 2]} for i in (0, 2, 4)
    ]
    engine = _fake_evaluator(batches)
    collector = PredictionCollector(prefix="val_")
    collector.attach(engine)
    engine.run(batches, max_epochs=1)
    pred = engine.state.predictions
    order = torch.argsort(ids)
    assert pred.sample_id.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(pred.prob[:, 0], torch.sigmoid(logits[order, 0]).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(pred.label[:, 0], labels[order, 0].numpy())
    # positives (ids 3, 4) score 0.5 and 2.0, negatives -1, -3, 1: 5 of 6 pairs ranked right
    assert engine.state.metrics["val_auc"] == pytest.approx(5 / 6)
    assert engine.state.metrics["val_accuracy"] == pytest.approx(4 / 5)


def test_collector_resets_between_epochs() -> None:
    batches = [{"logits": torch.zeros(3, 2), "label": torch.ones(3, 2), "sample_id": torch.arange(3)}]
    engine = _fake_evaluator(batches)
    PredictionCollector().attach(engine)
    engine.run(batches, max_epochs=3)
    assert engine.state.predictions.prob.shape == (3, 2)


def test_null_writer_swallows_everything_and_rank_zero_gets_a_real_one(tmp_path) -> None:
    null = NullSummaryWriter()
    null.add_scalar("x", 1.0, 1)
    null.add_figure("f", None, 1)
    null.close()
    with pytest.raises(AttributeError):
        null.not_a_writer_method  # noqa: B018
    writer = summary_writer(tmp_path / "logs")
    writer.add_scalar("loss", 0.5, 1)
    writer.close()
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))


def test_sample_grid_writes_one_figure_per_epoch_with_label_captions() -> None:
    figures = []

    class Writer:
        def add_figure(self, tag, figure, step):
            figures.append((tag, figure, step))

    images = torch.rand(5, 9, 16, 16)
    labels = torch.zeros(5, 6)
    labels[1, [0, 5]] = 1
    batches = [{"image": images, "label": labels}] * 3
    engine = Engine(lambda e, b: {"loss": 0.0})
    TensorBoardSampleGrid(Writer(), ["any", "epidural", "ip", "iv", "sa", "subdural"], max_samples=4).attach(engine)
    engine.run(batches, max_epochs=2)
    assert [(tag, step) for tag, _, step in figures] == [("train/input_samples", 1), ("train/input_samples", 2)]
    titles = [ax.get_title() for ax in figures[0][1].axes if ax.get_title()]
    assert titles == ["negative", "any, subdural", "negative", "negative"]


def test_collector_of_an_empty_shard_gives_empty_predictions() -> None:
    # under DDP a rank can get no sample of a tiny split; it must still complete (and join the gather)
    engine = Engine(lambda e, b: None)
    collector = PredictionCollector()
    collector.reset()
    collector.complete(engine)
    assert engine.state.predictions.sample_id.size == 0
    assert "val_auc" not in engine.state.metrics
