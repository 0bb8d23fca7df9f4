"""A NIfTI file -> CTVolume, after checking that it is a 3D HU volume.

NIfTI input is kept in its own voxel order (its affine says where everything is). A sheared affine (a gantry tilt
kept by the converter) is un-sheared the way DICOM input is, unless ``correct_tilt=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monai_stroke.errors import UserInputError
from monai_stroke.io.geometry import regularize_stack
from monai_stroke.io.volume import AIR_HU, CTVolume

__all__ = ["load_nifti_volume", "PLAUSIBLE_HU", "MAX_AIR_HU"]

#: Values outside this range are not HU of a CT (nothing is below air; metal stays under ~30000 even on extended
#: HU scales); they mean the file holds something else (raw detector values, a label map with a wrong scale).
PLAUSIBLE_HU = (-10000.0, 40000.0)
#: A head CT has air around the head: a volume whose lowest value is above this is not in HU (an MR, stored values
#: without the rescale, a normalised or windowed image).
MAX_AIR_HU = -500.0


def load_nifti_volume(path: str | os.PathLike, correct_tilt: bool = True, interpolation_order: int = 1) -> CTVolume:
    """Read and check a NIfTI CT volume: 3D, finite, in a plausible HU range, with a usable affine.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        correct_tilt: un-shear a sheared affine by in-plane resampling (as for DICOM).
        interpolation_order: spline order of that resampling.

    Raises:
        UserInputError: the file is unreadable or not a 3D HU volume; the message says what was found.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise UserInputError(
            f"{path} cannot be read as NIfTI ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            "the file is truncated or not NIfTI: write it again"
        ) from None
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 2:
        raise UserInputError(
            f"{path} has shape {tuple(shape)}: a CT volume is 3D with at least 2 voxels along each axis; "
            "give one 3D series"
        )
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise UserInputError(f"{path} has {bad} NaN or infinite voxels: a CT volume in HU is finite everywhere")
    hu_min, hu_max = float(data.min()), float(data.max())
    if hu_min < PLAUSIBLE_HU[0] or hu_max > PLAUSIBLE_HU[1]:
        raise UserInputError(
            f"{path} has values from {hu_min:g} to {hu_max:g}, outside the plausible HU range {PLAUSIBLE_HU}: "
            "give a CT volume in Hounsfield units"
        )
    if hu_min > MAX_AIR_HU:
        raise UserInputError(
            f"{path} has no air (lowest value {hu_min:g}, air is about -1000 HU): it is not a CT in Hounsfield units "
            "(an MR, raw stored values without RescaleSlope/RescaleIntercept, or a normalised image?); "
            "give a CT volume in HU"
        )
    affine = np.asarray(image.affine, dtype=float)
    columns = affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    if not np.all(np.isfinite(affine)) or np.any(norms < 1e-6) or abs(np.linalg.det(columns)) < 1e-9:
        raise UserInputError(f"{path} has a degenerate affine {affine.tolist()}: write it with a valid sform/qform")
    row, col = columns[:, 0] / norms[0], columns[:, 1] / norms[1]
    if abs(float(np.dot(row, col))) > 1e-3:
        raise UserInputError(
            f"{path} has a sheared in-plane grid (first two voxel axes at {np.degrees(np.arccos(np.dot(row, col))):.2f}"
            " degrees): give a volume whose slices have square-cornered pixels"
        )
    warnings_out: list[str] = []
    stack = np.ascontiguousarray(data.transpose(2, 1, 0))
    origins = affine[:3, 3] + np.outer(np.arange(stack.shape[0]), columns[:, 2])
    regular = regularize_stack(
        stack,
        origins,
        row,
        col,
        (norms[1], norms[0]),
        correct_tilt=correct_tilt,
        fill_value=AIR_HU,
        order=interpolation_order,
    )
    if regular.tilt_deg > 0.01 and not correct_tilt:
        warnings_out.append(f"the affine is sheared by {regular.tilt_deg:.2f} degrees (kept: correct_tilt=False)")
    array = regular.stack.transpose(2, 1, 0)
    # keep the file's own affine when nothing was resampled: it is exact, the refit is only equal to rounding
    out_affine = regular.affine if regular.max_shift_mm > 0 else affine
    summary = {
        "source": str(path),
        "format": "nifti",
        "series_uid": None,
        "n_slices": int(array.shape[2]),
        "shape": [int(v) for v in array.shape],
        "spacing": [round(float(v), 6) for v in np.linalg.norm(out_affine[:3, :3], axis=0)],
        "orientation": "".join(nib.aff2axcodes(out_affine)),
        "tilt_deg": round(regular.tilt_deg, 4),
        "tilt_corrected": bool(regular.max_shift_mm > 0),
        "max_unshear_shift_mm": round(regular.max_shift_mm, 4),
        "hu_min": round(float(array.min()), 2),
        "hu_max": round(float(array.max()), 2),
        "warnings": warnings_out,
    }
    return CTVolume(array=array, affine=out_affine, summary=summary, slice_uids=None, slice_files=None)
