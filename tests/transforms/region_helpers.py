"""Shared builders for the region-crop, chain and window-search tests: a small symmetric atlas, template-grid
volumes, and one synthetic patient with early ischemic lesions (rendered once per test session)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor

from monai_stroke.anatomy import Atlas

#: A 2 mm x 2 mm x 1.5 mm RAS grid whose x axis is symmetric about the mid-sagittal plane (voxel 20 is x = 0).
SMALL_AFFINE = np.array([[2.0, 0, 0, -40.0], [0, 2.0, 0, -30.0], [0, 0, 1.5, -10.0], [0, 0, 0, 1]])
SMALL_SHAPE = (41, 30, 20)
#: region -> (x voxel range of the LEFT copy, y range, z range), stop exclusive; the right copy is mirrored
SMALL_BOXES = {"C": ((10, 15), (8, 15), (5, 14)), "M2": ((3, 9), (12, 24), (8, 12))}


def small_atlas() -> Atlas:
    """Two regions per side on :data:`SMALL_AFFINE`; the right regions are exact mirrors of the left ones."""
    labels = np.zeros(SMALL_SHAPE, dtype=np.int16)
    rows = []
    for i, (region, (xs, ys, zs)) in enumerate(SMALL_BOXES.items()):
        left, right = i + 1, i + 1 + len(SMALL_BOXES)
        labels[slice(*xs), slice(*ys), slice(*zs)] = left
        mirrored = slice(SMALL_SHAPE[0] - xs[1], SMALL_SHAPE[0] - xs[0])  # x -> -x about voxel 20
        labels[mirrored, slice(*ys), slice(*zs)] = right
        rows += [(left, "L", region), (right, "R", region)]
    template = nib.Nifti1Image(np.full(SMALL_SHAPE, 30.0, dtype=np.float32), SMALL_AFFINE)
    table = pd.DataFrame(rows, columns=["label", "side", "region"])
    return Atlas(labels=labels, affine=SMALL_AFFINE, table=table, template=template)


def world(axis: int, index) -> np.ndarray:
    """RAS mm of voxel ``index`` along ``axis`` of the small grid."""
    return SMALL_AFFINE[axis, axis] * np.asarray(index, dtype=float) + SMALL_AFFINE[axis, 3]


def as_kind(kind: str, array: np.ndarray, affine: np.ndarray = SMALL_AFFINE):
    """``array`` (C, X, Y, Z) as numpy, torch or a MetaTensor with ``affine``."""
    if kind == "numpy":
        return array
    if kind == "torch":
        return torch.as_tensor(array)
    return MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine), meta={"series_uid": "1.2.3"})


def to_numpy(x) -> np.ndarray:
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


_DATASET: dict[str, Path] = {}


def synthetic_early_dataset(base: Path) -> Path:
    """A dataset folder of one synthetic patient with early ischemic and old lesions (rendered once per session).

    ``make_cohort`` deals profiles per split; with two patients both are in train: ``intact`` and ``early_old``.
    The folder keeps only the ``early_old`` patient so that each chain or window-search run registers one series.
    """
    if "early" in _DATASET:
        return _DATASET["early"]
    from monai_stroke.synthetic.cohort import make_cohort
    from monai_stroke.synthetic.patient import SynthConfig

    root = make_cohort(base / "synthetic_two", n_patients=2, seed=11, config=SynthConfig(size="small"), workers=1)
    cohort = pd.read_csv(root / "cohort.csv", dtype=str, keep_default_na=False)
    regions = pd.read_csv(root / "regions.csv", dtype=str, keep_default_na=False)
    keep = cohort.loc[cohort["profile"] == "early_old", "patient_id"].tolist()
    assert len(keep) == 1, cohort[["patient_id", "profile"]]
    cohort.loc[cohort["patient_id"].isin(keep)].to_csv(root / "cohort.csv", index=False)
    regions.loc[regions["patient_id"].isin(keep)].to_csv(root / "regions.csv", index=False)
    (root / "rsna_labels.csv").unlink(missing_ok=True)
    _DATASET["early"] = root
    return root
