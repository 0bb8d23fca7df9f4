"""Write atlases the way other groups publish them: per-region mask folders and label maps, other grids and names."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from monai_stroke.anatomy import Atlas

#: how a foreign atlas might name our regions ("IC" meaning insular cortex is the classic trap)
FOREIGN_NAMES = {"C": "caudate", "L": "lentiform", "IC": "PLIC", "I": "IC"}
FOREIGN_MAP = "caudate=C,lentiform=L,PLIC=IC,IC=I"
SIDE_WORDS = {"L": "left", "R": "right"}


def write_masks_2mm_las(atlas: Atlas, folder: Path) -> Path:
    """One float mask per region and side on a 2 mm grid stored left-to-right flipped (LAS), values = the fraction
    of each 2 mm voxel the region fills; named ``MNI152_<name>_<left|right>.nii.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    shape_1mm = np.asarray(atlas.labels.shape)
    shape_2mm = (shape_1mm + 1) // 2
    # 2 mm voxel (i, j, k) covers 1 mm voxels 2i, 2i+1: its centre is half a millimetre beyond voxel 2i's
    origin = atlas.affine[:3, 3] + 0.5
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [origin[0] + 2.0 * (shape_2mm[0] - 1), origin[1], origin[2]]
    for label, side, region in atlas.table.itertuples(index=False):
        box = atlas.bounding_box(side, region)
        lo = np.array([s.start // 2 * 2 for s in box])
        hi = np.array([(s.stop + 1) // 2 * 2 for s in box])
        crop = np.zeros(hi - lo, dtype=np.float32)
        src = atlas.labels[tuple(slice(a, min(b, n)) for a, b, n in zip(lo, hi, shape_1mm, strict=True))] == label
        crop[tuple(slice(0, n) for n in src.shape)] = src
        fraction = crop.reshape(crop.shape[0] // 2, 2, crop.shape[1] // 2, 2, crop.shape[2] // 2, 2).mean(
            axis=(1, 3, 5)
        )
        mask = np.zeros(shape_2mm, dtype=np.float32)
        mask[tuple(slice(a // 2, a // 2 + n) for a, n in zip(lo, fraction.shape, strict=True))] = fraction
        name = FOREIGN_NAMES.get(region, region)
        nib.save(nib.Nifti1Image(mask[::-1], affine), folder / f"MNI152_{name}_{SIDE_WORDS[side]}.nii.gz")
    return folder


def write_masks_same_lattice(atlas: Atlas, folder: Path, regions=None) -> Path:
    """uint8 0/1 masks on the template's own 1 mm lattice, each cropped to its region (+2 voxels) with the affine
    shifted accordingly; named ``<REGION>_<SIDE>.nii.gz`` (the default pattern)."""
    folder.mkdir(parents=True, exist_ok=True)
    for label, side, region in atlas.table.itertuples(index=False):
        if regions is not None and region not in regions:
            continue
        box = atlas.bounding_box(side, region, margin_vox=2)
        affine = atlas.affine.copy()
        affine[:3, 3] = nib.affines.apply_affine(atlas.affine, [s.start for s in box])
        mask = (atlas.labels[box] == label).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, affine), folder / f"{region}_{side}.nii.gz")
    return folder
