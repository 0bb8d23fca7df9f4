"""Ignite/MONAI handlers of the classification bundles.

Attached to a MONAI ``SupervisedEvaluator`` (validation, evaluation, inference), in this order:

- :class:`PredictionCollector` gathers every sample's probabilities and labels (from all ranks under DDP) into
  ``engine.state.predictions`` and puts per-epoch metrics of the headline output into ``engine.state.metrics``.
- :class:`BestLossCheckpoint` keeps the checkpoint with the lowest validation loss (the paper's rule): on each
  new lowest loss it chooses the decision thresholds on the validation predictions and writes ``model.pt`` with
  the full pre-processing :class:`~monai_stroke.contract.Contract`.
- :class:`TensorBoardROC` draws the ROC curve and the probability histograms of each validation.
- :class:`EvaluationWriter` (evaluate.yaml) and :class:`PredictionWriter` (inference.yaml) write the results.

Attached to the trainer: :class:`LearningRateLogger`, :class:`TensorBoardSampleGrid`, :class:`ProgressBar`.
Everything that writes files does so on rank 0 only; TensorBoard handlers get a :func:`summary_writer` that is a
no-op on the other ranks.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as _IgniteProgressBar

from monai_stroke.contract import Contract, network_from_checkpoint, save_checkpoint
from monai_stroke.engines.distributed import is_rank_zero, unwrap, world_size
from monai_stroke.engines.outputs import Predictions, outputs_for
from monai_stroke.evaluation import binary_metrics, write_evaluation
from monai_stroke.utils import write_json_atomic, write_text_atomic

__all__ = [
    "NullSummaryWriter",
    "summary_writer",
    "PredictionCollector",
    "BestLossCheckpoint",
    "LearningRateLogger",
    "TensorBoardSampleGrid",
    "TensorBoardROC",
    "ProgressBar",
    "TrainedModel",
    "EvaluationWriter",
    "PredictionWriter",
]

logger = logging.getLogger(__name__)

#: Metrics of the headline output that :class:`PredictionCollector` puts into ``engine.state.metrics`` each epoch.
EPOCH_METRICS: tuple[str, ...] = ("auc", "average_precision", "accuracy", "f1")


class NullSummaryWriter:
    """A TensorBoard writer that writes nothing: what ranks other than 0 get from :func:`summary_writer`."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("add_") or name in ("flush", "close"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def summary_writer(log_dir: str | os.PathLike) -> Any:
    """A ``SummaryWriter`` on ``log_dir`` on rank 0, a :class:`NullSummaryWriter` elsewhere.

    One writer is shared by every TensorBoard handler of a run, so all curves land in one event file.
    """
    if not is_rank_zero():
        return NullSummaryWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


def _default_output(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return output["pred"], output["label"]


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return tensor
    from monai.utils import evenly_divisible_all_gather

    return evenly_divisible_all_gather(tensor, concat=True)


class PredictionCollector:
    """Collect every sample's sigmoid probabilities, labels and ``sample_id`` over an evaluation epoch.

    At the end of the epoch the predictions of all ranks are gathered (each rank evaluated its shard), duplicates
    from padded samplers dropped, and stored as ``engine.state.predictions`` (:class:`Predictions`, ordered by
    ``sample_id``). The metrics of output 0 (``any`` / the task) at threshold 0.5 go into
    ``engine.state.metrics`` as ``<prefix>auc``, ``<prefix>average_precision``, ``<prefix>accuracy`` and
    ``<prefix>f1`` so that console, progress bar and TensorBoard show them per epoch.

    Args:
        prefix: prefix of the metric names.
        output_transform: ``engine.state.output`` -> ``(logits, labels)``, batched (evaluator with
            ``decollate=False``).
        id_key: batch key of the sample ids.
        metrics: put the epoch metrics into ``engine.state.metrics`` (False at inference, where labels are unknown).
    """

    def __init__(
        self,
        prefix: str = "val_",
        output_transform: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] = _default_output,
        id_key: str = "sample_id",
        metrics: bool = True,
    ) -> None:
        self.prefix = prefix
        self.metrics = bool(metrics)
        self.output_transform = output_transform
        self.id_key = id_key
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._ids: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self, engine: Engine | None = None) -> None:
        self._probs, self._labels, self._ids = [], [], []

    def update(self, engine: Engine) -> None:
        logits, labels = self.output_transform(engine.state.output)
        ids = torch.as_tensor(engine.state.batch[self.id_key]).reshape(-1)
        self._probs.append(torch.sigmoid(logits.detach().float()).reshape(len(ids), -1))
        self._labels.append(labels.detach().float().reshape(len(ids), -1).to(self._probs[-1].device))
        self._ids.append(ids.to(self._probs[-1].device))

    def complete(self, engine: Engine) -> None:
        if self._probs:
            probs, labels, ids = torch.cat(self._probs), torch.cat(self._labels), torch.cat(self._ids)
        else:  # a rank may receive no sample of a tiny split; it still takes part in the gather
            network = getattr(engine, "network", None)
            device = next(network.parameters()).device if network is not None else torch.device("cpu")
            probs = labels = torch.zeros((0, 1), device=device)
            ids = torch.zeros((0,), dtype=torch.long, device=device)
        if world_size() > 1:
            width = torch.tensor([probs.shape[1]], device=probs.device)
            torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX)
            if probs.shape[0] == 0:
                probs = labels = torch.zeros((0, int(width.item())), device=probs.device)
        probs, labels = _gather(probs).cpu().numpy(), _gather(labels).cpu().numpy()
        ids = _gather(ids.long()).cpu().numpy().astype(np.int64)
        order = np.unique(ids, return_index=True)[1]  # sorted ids, first occurrence (padding repeats samples)
        pred = Predictions(ids[order], probs[order], labels[order])
        engine.state.predictions = pred
        if self.metrics and len(pred.sample_id):
            m = binary_metrics(pred.label[:, 0], pred.prob[:, 0], 0.5)
            for name in EPOCH_METRICS:
                engine.state.metrics[f"{self.prefix}{name}"] = m[name]


class BestLossCheckpoint:
    """Keep the model of the lowest validation loss, with its contract and decision thresholds.

    On every validation (``EPOCH_COMPLETED`` of the evaluator) whose loss ``engine.state.metrics[loss_metric]`` is
    lower than every earlier one, the thresholds are chosen on that validation's predictions
    (:meth:`~monai_stroke.engines.outputs.Outputs.choose_thresholds`) and ``path`` is written atomically with
    :func:`~monai_stroke.contract.save_checkpoint`: the weights, and a Contract made of the dataset's pre-processing
    recipe, the network's factory arguments, the decision threshold and rule, the aggregation (hemorrhage) and
    the provenance (epoch, validation loss, per-group thresholds, ``provenance``). Only rank 0 writes. Attach it
    after :class:`PredictionCollector`.

    Args:
        path: the checkpoint to write (``OUT/models/model.pt``).
        network: the trained network (DDP is unwrapped).
        dataset: the validation dataset (its ``recipe`` and sample table).
        loss_metric: name of the validation loss in ``engine.state.metrics``.
        threshold_rule: ``"youden"``, ``"f1"`` or ``"fixed"`` (see ``choose_threshold``).
        aggregation: series aggregation of a hemorrhage model (default top-3 mean).
        provenance: more facts for ``contract.training`` (bundle, version, seed, hyper-parameters, ...).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        network: torch.nn.Module,
        dataset: Any,
        loss_metric: str = "val_loss",
        threshold_rule: str = "youden",
        aggregation: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.network = network
        self.dataset = dataset
        self.loss_metric = loss_metric
        self.threshold_rule = threshold_rule
        self.outputs = outputs_for(dataset, aggregation)
        self.aggregation = getattr(self.outputs, "aggregation", None)
        self.provenance = dict(provenance or {})
        self.best_loss = math.inf
        self.best_epoch = -1
        self.history: list[tuple[int, float]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = float(engine.state.metrics[self.loss_metric])
        epoch = int(engine.state.epoch)
        self.history.append((epoch, loss))
        if not math.isfinite(loss) or loss >= self.best_loss:
            return
        self.best_loss, self.best_epoch = loss, epoch
        choice = self.outputs.choose_thresholds(engine.state.predictions, self.threshold_rule)
        net = unwrap(self.network)
        contract = Contract(
            **self.dataset.recipe.contract_fields(),
            network=dict(net.factory_args),
            decision_threshold=choice.decision_threshold,
            threshold_rule=choice.rule,
            aggregation=self.aggregation,
            training={
                **self.provenance,
                "epoch": epoch,
                "val_loss": loss,
                "thresholds": choice.per_group,
                "val_losses": [v for _, v in self.history],
                "val_samples": int(len(engine.state.predictions.sample_id)),
                "world_size": world_size(),
            },
        )
        engine.state.best_val_loss, engine.state.best_val_epoch = loss, epoch
        if is_rank_zero():
            save_checkpoint(self.path, net.state_dict(), contract, epoch=epoch)
            logger.info(
                "epoch %d: lowest validation loss so far (%.4f); wrote %s (decision threshold %.3f, %s)",
                epoch,
                loss,
                self.path,
                choice.decision_threshold,
                choice.rule,
            )


class LearningRateLogger:
    """Write the optimizer's learning rate (first parameter group) to TensorBoard after every epoch.

    Args:
        summary_writer: from :func:`summary_writer`.
        optimizer: the trainer's optimizer.
        tag: TensorBoard tag.
    """

    def __init__(self, summary_writer: Any, optimizer: torch.optim.Optimizer, tag: str = "learning_rate") -> None:
        self.writer = summary_writer
        self.optimizer = optimizer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.writer.add_scalar(self.tag, float(self.optimizer.param_groups[0]["lr"]), engine.state.epoch)


def _batched(batch: Any, key: str) -> torch.Tensor:
    # engines that decollate keep the batch as a list of per-sample dicts
    if isinstance(batch, list):
        return torch.stack([torch.as_tensor(item[key]).detach().float().cpu() for item in batch])
    return torch.as_tensor(batch[key]).detach().float().cpu()


def _caption(labels: np.ndarray, names: Sequence[str]) -> str:
    positive = [n for n, v in zip(names, labels, strict=False) if v > 0.5]
    return ", ".join(positive) if positive else "negative"


class TensorBoardSampleGrid:
    """A grid of the network's input samples with their labels, from the first batch of every ``every_n_epochs``.

    Shows one channel per sample (default the middle one: the target slice, in the middle window for the
    hemorrhage network), as the network sees it after augmentation and windowing, with the positive labels as
    the title - what lets a reader check that crops, windows and labels line up.

    Args:
        summary_writer: from :func:`summary_writer`.
        label_names: names of the label outputs.
        every_n_epochs: how often.
        max_samples: samples per grid.
        channel: input channel to show (None: the middle one).
        tag: TensorBoard tag.
    """

    def __init__(
        self,
        summary_writer: Any,
        label_names: Sequence[str],
        every_n_epochs: int = 1,
        max_samples: int = 16,
        channel: int | None = None,
        tag: str = "train/input_samples",
    ) -> None:
        self.writer = summary_writer
        self.label_names = list(label_names)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.max_samples = int(max_samples)
        self.channel = channel
        self.tag = tag
        self._pending = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._arm)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _arm(self, engine: Engine) -> None:
        self._pending = (engine.state.epoch - 1) % self.every_n_epochs == 0

    def __call__(self, engine: Engine) -> None:
        if not self._pending or isinstance(self.writer, NullSummaryWriter):
            return
        self._pending = False
        batch = engine.state.batch
        images = _batched(batch, "image")[: self.max_samples]
        labels = _batched(batch, "label")[: self.max_samples].reshape(images.shape[0], -1).numpy()
        self.writer.add_figure(self.tag, self.figure(images, labels), engine.state.epoch)

    def figure(self, images: torch.Tensor, labels: np.ndarray) -> Any:
        """The grid as a matplotlib figure (``images`` ``(N, C, H, W)``)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = images.shape[0]
        channel = images.shape[1] // 2 if self.channel is None else self.channel
        cols = int(math.ceil(math.sqrt(n)))
        rows = int(math.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), dpi=80, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                # (H, W) = (X, Y) in RAS voxel order; transpose so that anterior is up as in a radiology viewer
                ax.imshow(images[i, channel].numpy().T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower")
                ax.set_title(_caption(labels[i], self.label_names), fontsize=7)
        fig.tight_layout()
        return fig


class TensorBoardROC:
    """ROC curve (paper fig. 14) and probability histogram (fig. 13) of each validation, in TensorBoard.

    Args:
        summary_writer: from :func:`summary_writer`.
        dataset: the validation dataset (to group predictions by slice/series or region/patient).
        aggregation: series aggregation (hemorrhage).
        tag: TensorBoard tag prefix.
    """

    def __init__(
        self, summary_writer: Any, dataset: Any, aggregation: Mapping[str, Any] | None = None, tag: str = "val"
    ) -> None:
        self.writer = summary_writer
        self.outputs = outputs_for(dataset, aggregation)
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if isinstance(self.writer, NullSummaryWriter):
            return
        from monai_stroke.evaluation.figures import probability_histogram_figure, roc_figure

        groups = self.outputs.groups(engine.state.predictions)
        headline = dict(list(groups.items())[:2])
        epoch = engine.state.epoch
        self.writer.add_figure(f"{self.tag}/roc", roc_figure(headline, title=f"validation ROC, epoch {epoch}"), epoch)
        name, (y, p) = next(iter(groups.items()))
        self.writer.add_figure(f"{self.tag}/probability_histogram", probability_histogram_figure(y, p, title=name), epoch)
        self.writer.flush()


def _first_output(output: Any) -> Mapping[str, Any]:
    # a decollated engine output is a list of per-sample dicts with the batch loss repeated in each
    return output[0] if isinstance(output, list) else output


class ProgressBar(_IgniteProgressBar):
    """Ignite's tqdm progress bar, attachable by MONAI (``attach(engine)``) with the loss and chosen metrics.

    Args:
        output_key: key of ``engine.state.output`` to show (the trainer's ``"loss"``), or None.
        metric_names: metrics of ``engine.state.metrics`` to show at the end of each epoch, or ``"all"``.
        kwargs: passed to ignite's ``ProgressBar`` and tqdm (``persist``, ``desc``, ...); by default the bar is
            hidden when the output is not a terminal (``disable=None``), so log files stay readable.
    """

    def __init__(self, output_key: str | None = "loss", metric_names: str | list[str] | None = None, **kwargs: Any):
        kwargs.setdefault("disable", None)  # tqdm: a bar on a terminal, nothing in redirected logs
        super().__init__(**kwargs)
        self.output_key = output_key
        self.metric_names = metric_names

    def attach(self, engine: Engine, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if args or kwargs:
            super().attach(engine, *args, **kwargs)
            return
        key = self.output_key
        transform = None if key is None else (lambda out: {key: float(_first_output(out)[key])})
        super().attach(engine, metric_names=self.metric_names, output_transform=transform)


class TrainedModel:
    """A trained checkpoint, ready for evaluation or inference: network, contract, identity.

    Args:
        path: ``models/model.pt`` written by a bundle.
        device: where to put the network.
        expect: checks passed to :func:`~monai_stroke.contract.load_checkpoint` (``kind``, ``task``, ...).
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None, **expect: Any) -> None:
        self.path = Path(path)
        network, self.contract, self.sha256 = network_from_checkpoint(self.path, **expect)
        self.network = network.to(device) if device is not None else network

    @property
    def identity(self) -> dict[str, Any]:
        """What a report cites: file, sha256, kind, task, epoch, threshold."""
        c = self.contract
        return {
            "checkpoint": str(self.path),
            "sha256": self.sha256,
            "kind": c.kind,
            "task": c.task,
            "epoch": c.training.get("epoch"),
            "decision_threshold": c.decision_threshold,
            "threshold_rule": c.threshold_rule,
            "bundle": c.training.get("bundle"),
            "bundle_version": c.training.get("bundle_version"),
        }


def _csv_text(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.5f")
    return buf.getvalue()


class EvaluationWriter:
    """Write ``metrics.json``, ``metrics.csv``, ``roc.png``, ``probability_histogram*.png`` and predictions tables.

    Runs when the evaluator completes, on the gathered test predictions, at the thresholds chosen on validation
    and stored in the checkpoint (per group when the contract has them, else its decision threshold).

    Args:
        output_dir: where to write.
        dataset: the evaluated dataset.
        model: the :class:`TrainedModel` evaluated.
        split: name of the evaluated split (recorded).
    """

    def __init__(self, output_dir: str | os.PathLike, dataset: Any, model: TrainedModel, split: str = "test") -> None:
        self.output_dir = Path(output_dir)
        self.dataset = dataset
        self.model = model
        self.split = split
        self.outputs = outputs_for(dataset, model.contract.aggregation)
        self.result: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        pred: Predictions = engine.state.predictions
        groups = self.outputs.groups(pred)
        contract = self.model.contract
        stored = contract.training.get("thresholds") or {}
        thresholds = {g: float(stored.get(g, contract.decision_threshold)) for g in groups}
        level = self.outputs.patient_level
        info = {
            **self.model.identity,
            "split": self.split,
            "n_samples": int(len(pred.sample_id)),
            "n_patients": int(self.dataset.table.loc[pred.sample_id, "patient_id"].nunique()),
            "aggregation": contract.aggregation,
            "headline": next(iter(groups)),
            "decision_group": self.outputs.decision_group(),
        }
        names = ("intact", contract.task or "lesion") if contract.kind == "ischemic" else ("no hemorrhage", "hemorrhage")
        self.result = write_evaluation(
            self.output_dir, groups, thresholds, info, class_names=names, predictions=self.outputs.frame(pred)
        )
        write_text_atomic(self.output_dir / f"predictions_{level}.csv", _csv_text(self.outputs.patient_frame(pred)))
        head = self.result["metrics"][info["headline"]]
        logger.info(
            "evaluation on %d %s samples: %s auc %.3f, f1 %.3f (threshold %.3f); wrote %s",
            info["n_samples"],
            self.split,
            info["headline"],
            head["auc"],
            head["f1"],
            head["threshold"],
            self.output_dir / "metrics.json",
        )


class PredictionWriter:
    """Write per-sample predictions (``predictions.csv``) and per-series/patient decisions (``predictions.json``).

    Hemorrhage: per slice the six probabilities; per series the aggregated probabilities, ``positive`` (series
    ``any`` >= the decision threshold), the subtypes above their thresholds, and the ``top_slices`` that drive
    the decision. Ischemic: per region its probability and decision; per patient the regions called positive.

    Args:
        output_dir: where to write.
        dataset: the predicted dataset.
        model: the :class:`TrainedModel` used.
        top_slices: slices listed per series (hemorrhage).
    """

    def __init__(self, output_dir: str | os.PathLike, dataset: Any, model: TrainedModel, top_slices: int = 3) -> None:
        self.output_dir = Path(output_dir)
        self.dataset = dataset
        self.model = model
        self.top_slices = int(top_slices)
        self.outputs = outputs_for(dataset, model.contract.aggregation)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        contract = self.model.contract
        thresholds = contract.training.get("thresholds") or {}
        frame = self.outputs.frame(engine.state.predictions)
        keep = [c for c in frame.columns if not c.startswith("label_") and c not in ("patient", "labelled")]
        names = self.outputs.output_names
        level, sample_level = self.outputs.patient_level, self.outputs.sample_level
        frame = frame[keep]
        decision = float(contract.decision_threshold)
        frame["positive"] = frame[f"prob_{names[0]}"] >= thresholds.get(f"{sample_level}/{names[0]}", decision)
        patients = []
        for pid, group in frame.groupby("patient_id", sort=False):
            probs = self.outputs.aggregate(group[[f"prob_{n}" for n in names]].to_numpy())
            entry: dict[str, Any] = {
                "patient_id": pid,
                "probability": {n: round(float(p), 5) for n, p in zip(names, probs, strict=True)},
                "positive": bool(probs[0] >= decision),
                "decision_threshold": decision,
            }
            if contract.kind == "hemorrhage":
                entry["subtypes_positive"] = [
                    n for n, p in zip(names[1:], probs[1:], strict=True) if p >= thresholds.get(f"{level}/{n}", decision)
                ]
                top = group.sort_values(f"prob_{names[0]}", ascending=False).head(self.top_slices)
                entry["top_slices"] = [
                    {"slice_index": int(r["slice_index"]), "probability": round(float(r[f"prob_{names[0]}"]), 5)}
                    for _, r in top.iterrows()
                ]
            else:
                entry["positive_regions"] = [
                    f"{r['side']}:{r['region']}" for _, r in group.iterrows() if bool(r["positive"])
                ]
            patients.append(entry)
        plural = "series" if level == "series" else f"{level}s"
        write_text_atomic(self.output_dir / "predictions.csv", _csv_text(frame))
        write_json_atomic(self.output_dir / "predictions.json", {"model": self.model.identity, plural: patients})
        logger.info("wrote predictions of %d %s to %s", len(patients), plural, self.output_dir / "predictions.json")
