"""Cascade step [1]-[2]: the hemorrhage network over every native slice, aggregated to one series decision.

Each slice is pre-processed by the hemorrhage model's contract (``transforms/hemorrhage_slices.yaml`` with the
recorded parameters: in-plane size, neighbours stacked as channels, windows) and classified; the slice
probabilities of each output (``any`` + 5 subtypes) become a series probability by the contract's aggregation
(default: mean of the 3 highest slices, see :func:`monai_stroke.engines.outputs.aggregate_slices`). The series is
hemorrhage-positive when the series ``any`` probability reaches the checkpoint's decision threshold (chosen on
validation series); each subtype is called at its own validation threshold when the checkpoint stored one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from monai_stroke.engines.outputs import DEFAULT_AGGREGATION, aggregate_slices
from monai_stroke.errors import UserInputError
from monai_stroke.inference.models import CascadeModel
from monai_stroke.inference.preprocess import ChainRunner

__all__ = ["HemorrhageResult", "predict_hemorrhage", "batched_sigmoid"]

_STAGE = "hemorrhage"


@dataclasses.dataclass
class HemorrhageResult:
    """What the hemorrhage step found.

    Args:
        output_names: the network outputs (``any`` first, then the subtypes).
        slice_probabilities: ``(Z, K)`` per native slice, in ingest order (inferior to superior).
        series_probabilities: ``(K,)`` aggregated.
        threshold: the decision threshold of series ``any``.
        positive: series ``any`` >= threshold.
        subtypes: subtype -> ``{"probability", "positive", "threshold"}``.
        top_slices: indices of the slices with the highest ``any`` probability, highest first.
        top_inputs: the network inputs of ``top_slices`` ``(k, C, H, W)`` (for Grad-CAM).
        aggregation: the aggregation used.
    """

    output_names: list[str]
    slice_probabilities: np.ndarray
    series_probabilities: np.ndarray
    threshold: float
    positive: bool
    subtypes: dict[str, dict[str, Any]]
    top_slices: list[int]
    top_inputs: torch.Tensor
    aggregation: dict[str, Any]

    @property
    def probability(self) -> float:
        return float(self.series_probabilities[0])


def batched_sigmoid(
    network: torch.nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int = 16
) -> np.ndarray:
    """Sigmoid outputs ``(N, K)`` of ``network`` over ``inputs`` ``(N, C, H, W)`` in batches, without gradients."""
    outs = []
    with torch.inference_mode():
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size].to(device=device, dtype=torch.float32)
            outs.append(torch.sigmoid(network(batch).float()).cpu())
    return torch.cat(outs).reshape(inputs.shape[0], -1).numpy().astype(np.float64)


def _stack(samples: list[dict[str, Any]], key: str, what: str) -> torch.Tensor:
    images = [torch.as_tensor(s[key]) for s in samples]
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise UserInputError(f"{what}: the chain must give one (C, H, W) image per sample, got shapes {sorted(shapes)}")
    return torch.stack(images)


def predict_hemorrhage(
    runner: ChainRunner,
    model: CascadeModel,
    series: str | os.PathLike,
    device: torch.device,
    batch_size: int = 16,
    top_k: int = 3,
) -> HemorrhageResult:
    """Classify every slice of ``series`` and decide for the series.

    Args:
        runner: runs the contract's chain (shares the ingest with the ischemic step).
        model: the hemorrhage model.
        series: DICOM folder or NIfTI file.
        device: where the network runs.
        batch_size: slices per forward pass.
        top_k: slices listed as driving the decision (at least the aggregation's k).
    """
    contract = model.contract
    params = runner.params_of(contract)
    image_key, index_key = params.get("image_key", "image"), params.get("slice_index_key", "slice_index")
    data = runner.run(contract.chain, "preprocess", params, {image_key: str(series)}, _STAGE, input_key=str(series))
    volume = data[image_key]
    n_slices = int(volume.shape[-1])
    per_slice = [{**data, index_key: z} for z in range(n_slices)]
    samples = runner.run(contract.chain, "sample", params, per_slice, _STAGE)
    samples = runner.run(contract.chain, "finalize", params, samples, _STAGE)
    inputs = _stack(samples, image_key, f"hemorrhage chain {contract.chain}")
    expected = int(contract.network.get("in_channels", inputs.shape[1]))
    if inputs.shape[1] != expected:
        raise UserInputError(
            f"{model.path}: its chain gives {inputs.shape[1]} channels but the network takes {expected}; the "
            "checkpoint's contract is inconsistent - retrain it"
        )
    with runner.timer.stage(_STAGE):
        prob = batched_sigmoid(model.network, inputs, device, batch_size)
        names = list(contract.output_names)
        aggregation = dict(contract.aggregation or DEFAULT_AGGREGATION)
        series_prob = aggregate_slices(prob, **aggregation)
        threshold = model.threshold
        subtypes = {}
        for k, name in enumerate(names[1:], start=1):
            t = model.group_threshold(f"series/{name}")
            subtypes[name] = {
                "probability": float(series_prob[k]),
                "positive": bool(series_prob[k] >= t),
                "threshold": t,
            }
        k = max(int(top_k), int(aggregation.get("k", 1)) if aggregation.get("method") == "topk_mean" else 1)
        order = np.argsort(-prob[:, 0], kind="stable")[: min(k, n_slices)]
    return HemorrhageResult(
        output_names=names,
        slice_probabilities=prob,
        series_probabilities=series_prob,
        threshold=threshold,
        positive=bool(series_prob[0] >= threshold),
        subtypes=subtypes,
        top_slices=[int(z) for z in order],
        top_inputs=inputs[torch.as_tensor(order, dtype=torch.long)].clone(),
        aggregation=aggregation,
    )
