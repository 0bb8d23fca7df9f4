"""What the classifiers looked at, on the patient's own slices: Grad-CAM and the way back from template space.

The paper names "cannot see what the classifier looked at" as an open problem. For every region flagged positive
and for the slices that drive a hemorrhage call we compute Grad-CAM (:class:`monai.visualize.GradCAM` on the
network's last stage ``layer4``) on exactly the input the network classified, then bring the heat map back to
the patient's voxels:

* hemorrhage: the input is the native slice resized in-plane, so the map is resized back to the slice's grid;
* regions: the input is a crop on the template grid (right-hemisphere crops mirrored); the crop's own affine
  (template voxel -> RAS, negative x spacing when mirrored) places the map in template space, and the inverse
  registration (:func:`~monai_stroke.transforms.registration.map_to_patient`) samples it on the patient's slice.

Only the patient slices that are shown are resampled (a one-slice patient grid), so an explanation costs
milliseconds, not a full-volume resampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_stroke.transforms.registration import map_points_to_patient, map_to_patient

__all__ = [
    "TARGET_LAYER",
    "grad_cam",
    "slice_affine",
    "patient_slice_of",
    "template_map_on_slice",
    "labels_on_slice",
    "resize_to_slice",
    "crop_heat_volume",
]

#: The network stage Grad-CAM reads (the last convolutional stage of every network of the factory).
TARGET_LAYER = "layer4"


def grad_cam(
    network: torch.nn.Module, inputs: torch.Tensor, class_idx: int = 0, target_layer: str = TARGET_LAYER
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1] of output ``class_idx`` for ``inputs`` ``(B, C, H, W)``.

    Returns:
        the maps and the size of the target layer's feature map (the map's true resolution: a 128-pixel crop
        through SE-ResNeXt's 32x down-sampling gives 4 x 4; 1 x 1 carries no spatial information and is all 0).

    Args:
        network: the classifier (put in eval mode by MONAI's hooks for the call, restored afterwards).
        inputs: the exact network inputs.
        class_idx: the output explained (0: ``any`` for hemorrhage; the task's single output for ischemic).
        target_layer: the named module whose activations and gradients are used.
    """
    from monai.visualize import GradCAM

    device = next(network.parameters()).device
    cam = GradCAM(nn_module=network, target_layers=target_layer)
    with torch.enable_grad(), warnings.catch_warnings():
        # MONAI's hooks fire on module outputs only (no input needs a gradient): expected, and harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        maps = cam(x=inputs.detach().clone().to(device=device, dtype=torch.float32), class_idx=class_idx)
    out = maps[:, 0].detach().float().cpu().numpy()
    with torch.enable_grad():
        feature_size = tuple(int(v) for v in cam.feature_map_size((1, *inputs.shape[1:]), device=device)[2:])
    return np.nan_to_num(out, nan=0.0), feature_size


def slice_affine(affine: np.ndarray, z: float) -> np.ndarray:
    """The affine of the one-slice grid made of (fractional) slice ``z`` of a volume with ``affine``."""
    affine = np.asarray(affine, dtype=np.float64)
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(z)]) + affine[:3, 3]
    return out


def patient_slice_of(points_template_mm: Sequence[Sequence[float]], registration_meta: Mapping[str, Any]) -> int:
    """The patient slice (index along Z) at template points: the median of their mapped slice positions.

    Args:
        points_template_mm: template RAS points (e.g. the centroids of the regions of one ASPECTS level).
        registration_meta: the registered image's metadata (template transform and patient grid).
    """
    voxels = map_points_to_patient(
        np.asarray(points_template_mm, dtype=np.float64).reshape(-1, 3), registration_meta, as_voxel=True
    )
    n_slices = int(np.asarray(registration_meta["patient_spatial_shape"]).reshape(-1)[2])
    return int(np.clip(np.rint(np.median(voxels[:, 2])), 0, n_slices - 1))


def template_map_on_slice(
    image: np.ndarray,
    image_affine: np.ndarray,
    registration_meta: Mapping[str, Any],
    z: float,
    mode: str,
) -> np.ndarray:
    """A template-space map (labels or heat, ``(X, Y, Z)``) sampled on patient slice ``z``: ``(X, Y)``.

    Args:
        image: the map on a grid of the template space (the atlas grid, or a crop's grid).
        image_affine: its voxel -> template RAS affine.
        registration_meta: the registered image's metadata.
        z: the patient slice (fractional: a plane inside a thick slice).
        mode: ``"nearest"`` (labels) or ``"bilinear"`` (heat maps).
    """
    shape = np.asarray(registration_meta["patient_spatial_shape"]).reshape(-1)
    patient_affine = np.asarray(registration_meta["patient_affine"], dtype=np.float64)
    out = map_to_patient(
        np.asarray(image)[None],
        registration_meta,
        patient_shape=(int(shape[0]), int(shape[1]), 1),
        patient_affine=slice_affine(patient_affine, z),
        mode=mode,
        image_affine=np.asarray(image_affine, dtype=np.float64),
        padding_value=0.0,
    )
    return np.asarray(out[0, :, :, 0])


def labels_on_slice(
    labels: np.ndarray,
    labels_affine: np.ndarray,
    registration_meta: Mapping[str, Any],
    z: int,
    samples: int = 5,
    min_fraction: float = 0.4,
) -> np.ndarray:
    """Atlas labels as a thick patient slice shows them: ``(X, Y)``.

    A 5 mm slice averages 5 mm of anatomy, while the atlas is drawn at 1 mm; sampling it at the slice centre alone
    shows a cortical region as scattered islands. The label map is sampled at ``samples`` planes across the slice
    thickness; a pixel takes its most frequent label when that label covers at least ``min_fraction`` of them.

    Args:
        labels: the atlas label map ``(X, Y, Z)``.
        labels_affine: its voxel -> template RAS affine.
        registration_meta: the registered image's metadata.
        z: the patient slice.
        samples: planes sampled across the slice.
        min_fraction: share of the planes a label must cover.
    """
    offsets = np.linspace(-0.4, 0.4, samples) if samples > 1 else np.zeros(1)
    stack = np.stack(
        [template_map_on_slice(labels, labels_affine, registration_meta, z + t, "nearest") for t in offsets]
    )
    out = np.zeros(stack.shape[1:], dtype=stack.dtype)
    best = np.zeros(stack.shape[1:], dtype=np.int32)
    for label in np.unique(stack):
        if label == 0:
            continue
        count = (stack == label).sum(axis=0)
        take = (count > best) & (count >= min_fraction * len(offsets))
        out[take], best[take] = label, count[take]
    return out


def resize_to_slice(cam: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A map made at the network's in-plane size back on the native slice grid (bilinear, as the resize down)."""
    t = torch.as_tensor(np.asarray(cam, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in shape[:2]), mode="bilinear", align_corners=False)[0, 0].numpy()


def crop_heat_volume(cam: np.ndarray, crop_meta: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A crop's 2-D Grad-CAM as a template-space map ``(H, W, S + 2)`` with its affine.

    The network sees the crop's ``S`` template slices stacked as channels, so its map holds for each of them; one
    more slice on each side covers the outer halves of the first and last slab (a map sampled only between slice
    centres would miss a thick patient slice centred near the region's edge).
    """
    n_slices = max(1, len(np.asarray(crop_meta["template_slice_z_mm"]).reshape(-1)))
    affine = crop_meta["affine"]
    affine = np.asarray(affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    heat = np.repeat(np.asarray(cam, dtype=np.float32)[:, :, None], n_slices + 2, axis=2)
    return heat, slice_affine(affine, -1)
