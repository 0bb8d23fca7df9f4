"""Cascade steps [3]-[4]: template registration, its quality check, region crops, both ischemic networks, ASPECTS.

Each ischemic model pre-processes by its own contract (``transforms/ischemic_regions.yaml`` with its recorded
parameters, the atlas in use substituted): ingest -> affine registration to the atlas's template -> one crop per
(side, region) -> the task's window and lesion concatenation. The two models normally share registration and
crops (:class:`~monai_stroke.inference.preprocess.ChainRunner` runs identical steps once).

A registration whose brain overlap or scale fails :func:`~monai_stroke.transforms.registration.registration_quality`
stops the step: crops of a misregistered head are other anatomy, so ASPECTS is *not scored* and the report says
why, rather than scoring silently.

ASPECTS per hemisphere = number of ASPECTS regions (10) minus the regions with early ischemic change; old infarcts
are listed but do not lower the score (METHOD.md, "ASPECTS").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_stroke.errors import UserInputError
from monai_stroke.inference.hemorrhage import batched_sigmoid
from monai_stroke.inference.models import EARLY_SLOT, OLD_SLOT, CascadeModel, CascadeModels
from monai_stroke.inference.preprocess import ChainRunner
from monai_stroke.transforms.registration import map_points_to_patient, registration_quality
from monai_stroke.vocabulary import REGIONS, SIDES

__all__ = [
    "RegionPrediction",
    "IschemicResult",
    "predict_ischemic",
    "aspects_scores",
    "order_regions",
    "regions_outside_scan",
]

_STAGE = "ischemic"
_REGISTRATION_STEP = "RegisterToTemplated"


@dataclasses.dataclass
class RegionPrediction:
    """Per slot (task) of one ischemic model: its region probabilities and what Grad-CAM needs.

    Args:
        slot: ``early_vs_intact`` or ``old_vs_intact``.
        probabilities: ``(side, region)`` -> probability.
        threshold: the model's decision threshold.
        inputs: ``(side, region)`` -> network input ``(C, H, W)``.
        crop_meta: ``(side, region)`` -> the crop's metadata (its affine on the template grid, slices, box).
    """

    slot: str
    probabilities: dict[tuple[str, str], float]
    threshold: float
    inputs: dict[tuple[str, str], torch.Tensor]
    crop_meta: dict[tuple[str, str], Mapping[str, Any]]


@dataclasses.dataclass
class IschemicResult:
    """What the ischemic step found.

    Args:
        scored: whether ASPECTS was scored.
        reason: why not, when not scored.
        quality: the registration quality record (:func:`registration_quality`).
        registration_meta: the registered image's metadata (template transform, patient grid).
        regions: one record per (side, region) in report order (empty when not scored).
        aspects: ``{"L": int | None, "R": int | None}``.
        predictions: slot -> :class:`RegionPrediction`.
    """

    scored: bool
    reason: str | None
    quality: dict[str, Any] | None
    registration_meta: Mapping[str, Any] | None
    regions: list[dict[str, Any]]
    aspects: dict[str, int | None]
    predictions: dict[str, RegionPrediction]


def order_regions(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(side, region)`` pairs in report order: L then R, ASPECTS regions in their usual order, others after."""
    rank = {r: i for i, r in enumerate(REGIONS)}
    return sorted(pairs, key=lambda p: (SIDES.index(p[0]) if p[0] in SIDES else 9, rank.get(p[1], len(rank)), p[1]))


def aspects_scores(
    regions: Sequence[Mapping[str, Any]], aspects_regions: Sequence[str] = REGIONS
) -> dict[str, int | None]:
    """ASPECTS per hemisphere from region records (``side``, ``region``, ``early_ischemic``).

    ``len(aspects_regions)`` (10) minus the hemisphere's ASPECTS regions with early ischemic change; old infarction
    does not count. A hemisphere missing any ASPECTS region (an atlas without it) gets None: a score over fewer
    regions would not be ASPECTS.

    Args:
        regions: region records of both hemispheres.
        aspects_regions: the regions that make up the score.
    """
    scores: dict[str, int | None] = {}
    for side in SIDES:
        mine = {r["region"]: r for r in regions if r["side"] == side}
        if not set(aspects_regions) <= set(mine):
            scores[side] = None
            continue
        flagged = sum(1 for name in aspects_regions if bool(mine[name]["early_ischemic"]))
        scores[side] = len(aspects_regions) - flagged
    return scores


def regions_outside_scan(atlas: Any, registration_meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Atlas regions whose centroid maps outside the patient's scanned volume (e.g. M4-M6 above a short scan).

    Their crops would show padding, not brain: they are not scored.

    Args:
        atlas: the atlas in use.
        registration_meta: the registered image's metadata (template transform, patient grid).
    """
    shape = np.asarray(registration_meta["patient_spatial_shape"], dtype=np.float64).reshape(-1)[:3]
    pairs = list(atlas.regions)
    centroids = np.stack([atlas.centroid_mm(side, region) for side, region in pairs])
    voxels = map_points_to_patient(centroids, registration_meta, as_voxel=True)
    inside = np.all((voxels >= -0.5) & (voxels <= shape - 0.5), axis=1)
    return [pair for pair, ok in zip(pairs, inside, strict=True) if not ok]


def _stack(samples: list[dict[str, Any]], key: str) -> torch.Tensor:
    images = [torch.as_tensor(s[key]) for s in samples]
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise UserInputError(
            f"the ischemic chain must give one (C, H, W) image per region, got shapes {sorted(shapes)}"
        )
    return torch.stack(images)


def _predict_slot(
    runner: ChainRunner,
    model: CascadeModel,
    params: Mapping[str, Any],
    crops: list[dict[str, Any]],
    device: torch.device,
    batch_size: int,
) -> RegionPrediction:
    image_key = params.get("image_key", "image")
    # the finalize part's transforms copy what they change; shallow copies keep the shared crops intact
    samples = runner.run(model.contract.chain, "finalize", params, [dict(c) for c in crops], _STAGE)
    if isinstance(samples, Mapping):
        samples = [samples]
    inputs = _stack(samples, image_key)
    expected = int(model.contract.network.get("in_channels", inputs.shape[1]))
    if inputs.shape[1] != expected:
        raise UserInputError(
            f"{model.path}: its chain gives {inputs.shape[1]} channels but the network takes {expected}; the "
            "checkpoint's contract is inconsistent - retrain it"
        )
    with runner.timer.stage(_STAGE):
        prob = batched_sigmoid(model.network, inputs, device, batch_size)[:, 0]
    keys = [(str(s["side"]), str(s["region"])) for s in samples]
    meta = {(str(c["side"]), str(c["region"])): dict(getattr(c[image_key], "meta", {})) for c in crops}
    return RegionPrediction(
        slot=model.slot,
        probabilities={k: float(p) for k, p in zip(keys, prob, strict=True)},
        threshold=model.threshold,
        inputs=dict(zip(keys, inputs, strict=True)),
        crop_meta=meta,
    )


def predict_ischemic(
    runner: ChainRunner,
    models: CascadeModels,
    series: str | os.PathLike,
    device: torch.device,
    batch_size: int = 20,
) -> IschemicResult:
    """Register, check the registration, crop, classify every region with both models, and score ASPECTS.

    Args:
        runner: runs the contracts' chains (shares ingest and registration between the models).
        models: the cascade's models (the atlas in use included).
        series: DICOM folder or NIfTI file.
        device: where the networks run.
        batch_size: crops per forward pass.
    """
    atlas_param = None if models.atlas_dir is None else str(models.atlas_dir)
    crops_by_slot: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    registration_meta: Mapping[str, Any] | None = None
    quality: dict[str, Any] | None = None
    for slot, model in models.ischemic.items():
        params = runner.params_of(model.contract, atlas=atlas_param)
        image_key = params.get("image_key", "image")
        crops = runner.run(
            model.contract.chain, "preprocess", params, {image_key: str(series)}, _STAGE, input_key=str(series)
        )
        if isinstance(crops, Mapping):
            crops = [crops]
        registered = runner.outputs.get(_REGISTRATION_STEP, {}).get(image_key)
        if registered is None:
            raise UserInputError(
                f"{model.path}: its chain {model.contract.chain!r} has no {_REGISTRATION_STEP} step; ischemic models "
                "must crop regions of a registered volume (transforms/ischemic_regions.yaml)"
            )
        meta = dict(registered.meta)
        if quality is None:
            registration_meta, quality = meta, registration_quality(meta)
        crops_by_slot[slot] = (params, crops)

    if not quality["passed"]:
        reason = "registration to the template failed its quality check (" + "; ".join(quality["reasons"]) + ")"
        return IschemicResult(False, reason, quality, registration_meta, [], dict.fromkeys(SIDES), {})

    predictions = {
        slot: _predict_slot(runner, models.ischemic[slot], params, crops, device, batch_size)
        for slot, (params, crops) in crops_by_slot.items()
    }
    early, old = predictions[EARLY_SLOT], predictions[OLD_SLOT]
    outside = regions_outside_scan(models.atlas, registration_meta)
    pairs = (set(early.probabilities) | set(old.probabilities)) - set(outside)
    regions = []
    for side, region in order_regions(list(pairs)):
        p_early = early.probabilities.get((side, region))
        p_old = old.probabilities.get((side, region))
        regions.append(
            {
                "side": side,
                "region": region,
                "early_ischemic_probability": None if p_early is None else round(p_early, 5),
                "old_infarction_probability": None if p_old is None else round(p_old, 5),
                "early_ischemic": bool(p_early is not None and p_early >= early.threshold),
                "old_infarction": bool(p_old is not None and p_old >= old.threshold),
            }
        )
    aspects = aspects_scores(regions)
    reason = None
    if outside:
        names = ", ".join(f"{s} {r}" for s, r in order_regions(outside))
        reason = f"the scan does not reach {names} (outside the scanned slices): ASPECTS needs all 10 regions per side"
    elif any(v is None for v in aspects.values()):
        reason = f"the atlas lacks ASPECTS regions ({', '.join(REGIONS)} are needed per side)"
    if reason is not None:
        aspects = dict.fromkeys(SIDES)
    return IschemicResult(
        scored=reason is None,
        reason=reason,
        quality=quality,
        registration_meta=registration_meta,
        regions=regions,
        aspects=aspects,
        predictions=predictions,
    )
