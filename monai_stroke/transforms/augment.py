"""Training augmentation for HU data: small affine jitter and CT-like noise, nothing that changes HU meaning.

Non-contrast CT differs from photographs in two ways that decide what augmentation is safe:

- **HU is absolute.** Early ischemic change is a drop of ~1.7 HU in a region's mean (old infarction ~4.1 HU,
  METHOD.md), and loss of grey-white differentiation is a change of contrast. Intensity shift, scale,
  contrast, gamma or histogram transforms would manufacture or erase exactly that signal (a +-3 HU shift is
  an "infarct"), so none is used.
- **Left and right are labels.** Region crops carry a side and ASPECTS is scored per hemisphere; a left-right
  flip turns a left-hemisphere lesion into a right one (and swaps the contralateral comparison). No flips.
  (Right-hemisphere region crops are mirrored deterministically by the region cropper so both sides share one
  orientation; that is a canonicalisation with the side kept in the metadata, not augmentation.)

What is used, and why it is safe:

- **Affine jitter** (``RandAffined``): rotation of a few degrees, translation of a few voxels, scale +-5 %
  per axis, in-plane only for 3D. It mimics residual head tilt and template-registration error and the
  variation in head size, all larger than the jitter. Bilinear interpolation is a convex combination of
  neighbouring voxels, so it never creates HU values outside the local range and keeps the mean HU of a
  uniform region; ``border`` padding repeats edge values, where zero padding would paint 0 HU (CSF-like, i.e.
  hypodense) bands into a crop. Label/mask keys use nearest-neighbour interpolation.
- **Gaussian noise** (``RandGaussianNoised``), zero mean, std drawn uniformly in ``[0, noise_std_hu]`` with
  ``noise_std_hu <= 2`` HU by default (at most :data:`MAX_NOISE_STD_HU`), added in HU *after* the affine (so
  interpolation does not smooth it) and *before* windowing (so it is clipped by the window like scanner
  noise). Independent noise adds in quadrature: with scanner noise of 3-6 HU per voxel the total becomes at
  most sqrt(3**2 + 2**2) = 3.6 HU, i.e. it looks like a slightly lower dose, well within the spread between
  scanners and protocols. Being zero-mean it leaves region means unchanged in expectation; the standard
  error of a region's mean over N voxels rises from 3/sqrt(N) to 3.6/sqrt(N) HU - 0.25 HU for N = 200 - an
  order of magnitude below the 1.7-4.1 HU lesion signal, so it cannot erase it.

The chain must see HU: it refuses images that :class:`~monai_stroke.transforms.HUWindow` already windowed or
that are 8-bit. It is deterministic under ``chain.set_random_state(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, RandAffined, RandGaussianNoised
from monai.utils import TransformBackends, ensure_tuple

from monai_stroke.errors import UserInputError
from monai_stroke.transforms.intensity import WINDOWS_META_KEY

__all__ = ["MAX_NOISE_STD_HU", "RequireHUd", "train_augmentation"]

#: Largest noise std accepted, in HU: the low end of head-CT noise. Above it the augmentation would start to
#: dominate the scanner's own noise and the 2-6 HU infarct signal it is meant to be robust to.
MAX_NOISE_STD_HU = 3.0


class RequireHUd(MapTransform):
    """Refuse images that are not in HU any more (windowed by :class:`HUWindow`, or 8-bit).

    HU-domain augmentation applied after windowing would add "2 HU" of noise to values in [0, 1], i.e. noise
    of a hundred times the intended size; this check turns that configuration mistake into an error.

    Args:
        keys: keys of the images that must be in HU.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = getattr(img, "meta", {})
            if WINDOWS_META_KEY in meta or img.dtype in (np.uint8, torch.uint8):
                raise UserInputError(
                    f"training augmentation needs HU images but {key!r} is already windowed "
                    f"({meta.get(WINDOWS_META_KEY, str(img.dtype))}); put train_augmentation before HUWindowd"
                )
        return d


def train_augmentation(
    keys: KeysCollection,
    mask_keys: KeysCollection = (),
    spatial_dims: int = 2,
    prob_affine: float = 0.5,
    rotate_deg: float = 5.0,
    translate_voxels: float = 4.0,
    scale_fraction: float = 0.05,
    prob_noise: float = 0.5,
    noise_std_hu: float = 2.0,
) -> Compose:
    """The training augmentation chain for HU images (see the module docstring for why each part is safe).

    Place it on HU data before :class:`~monai_stroke.transforms.HUWindowd`, typically after
    :class:`~monai_stroke.transforms.SliceSamplesd` / region crops, so that all concatenated slices of a sample
    get the same jitter. No flips and no intensity shift/scale/contrast/gamma, by design.

    Args:
        keys: HU image keys (bilinear interpolation, noise added).
        mask_keys: label/mask keys moved with the images (nearest neighbour, no noise).
        spatial_dims: 2 for slice/crop samples ``(C, X, Y)``; 3 for volumes ``(C, X, Y, Z)``, where the jitter is
            in-plane only (rotation about Z, no translation or scaling along Z) because thick slices must
            not be mixed.
        prob_affine: probability of the affine jitter per sample.
        rotate_deg: maximum in-plane rotation, degrees.
        translate_voxels: maximum in-plane translation, voxels.
        scale_fraction: maximum scale change per in-plane axis (0.05 = +-5 %).
        prob_noise: probability of adding noise per sample.
        noise_std_hu: maximum noise standard deviation in HU (the std is drawn uniformly in ``[0, noise_std_hu]``);
            at most :data:`MAX_NOISE_STD_HU`.

    Returns:
        a MONAI ``Compose``; call ``set_random_state(seed)`` on it for reproducible draws.

    Raises:
        UserInputError: a parameter outside its safe range.
    """
    image_keys = ensure_tuple(keys)
    masks = ensure_tuple(mask_keys)
    if not image_keys:
        raise UserInputError("train_augmentation needs at least one image key")
    if spatial_dims not in (2, 3):
        raise UserInputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for name, value in (("prob_affine", prob_affine), ("prob_noise", prob_noise)):
        if not 0.0 <= value <= 1.0:
            raise UserInputError(f"{name} must be a probability in [0, 1], got {value!r}")
    limits = {"rotate_deg": (rotate_deg, 15.0), "translate_voxels": (translate_voxels, math.inf)}
    limits.update({"scale_fraction": (scale_fraction, 0.2), "noise_std_hu": (noise_std_hu, MAX_NOISE_STD_HU)})
    for name, (value, upper) in limits.items():
        if not 0.0 <= value <= upper:
            raise UserInputError(f"{name} must be in [0, {upper:g}] for HU data, got {value!r}")

    angle = math.radians(rotate_deg)
    rotate: Sequence[float] = (angle,) if spatial_dims == 2 else (0.0, 0.0, angle)
    translate: Sequence[float] = (translate_voxels,) * 2 + (0.0,) * (spatial_dims - 2)
    scale: Sequence[float] = (scale_fraction,) * 2 + (0.0,) * (spatial_dims - 2)
    all_keys = image_keys + masks
    return Compose(
        [
            RequireHUd(image_keys),
            RandAffined(
                keys=all_keys,
                prob=prob_affine,
                rotate_range=rotate,
                translate_range=translate,
                scale_range=scale,
                mode=("bilinear",) * len(image_keys) + ("nearest",) * len(masks),
                padding_mode="border",
            ),
            RandGaussianNoised(keys=image_keys, prob=prob_noise, mean=0.0, std=noise_std_hu, sample_std=True),
        ]
    )
