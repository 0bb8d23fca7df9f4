"""The ingested CT volume, the one loader for DICOM folders and NIfTI files, and the NIfTI writer.

Every later stage starts from a :class:`CTVolume`: float32 HU in ``(X, Y, Z)`` voxel order with a 4x4 affine to RAS+
world millimetres (see docs/ARCHITECTURE.md). ``X`` runs along the DICOM row direction (the column index), ``Y``
along the column direction (the row index) and ``Z`` is the slice index, ascending along the slice normal.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_stroke.errors import UserInputError
from monai_stroke.utils import atomic_path

__all__ = ["AIR_HU", "CTVolume", "load_ct_series", "save_nifti", "NIFTI_SUFFIXES"]

logger = logging.getLogger(__name__)

#: The HU given to padding pixels and to pixels that come from outside the field of view.
AIR_HU = -1024.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class CTVolume:
    """A CT series as HU on a regular grid with its true geometry.

    Attributes:
        array: float32 HU, shape ``(X, Y, Z)``.
        affine: 4x4 float64 voxel -> RAS+ world mm (orthogonal unless a gantry tilt was kept as shear).
        summary: JSON-able description (source, series_uid, n_slices, shape, spacing, tilt_deg, hu_min, hu_max,
            warnings, ...). Never patient name, ID or birth date.
        slice_uids: SOPInstanceUID of each output slice (None for a slice interpolated into a gap); None for
            NIfTI input.
        slice_files: the file each output slice came from (same conventions as ``slice_uids``).
    """

    array: np.ndarray
    affine: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    slice_uids: list[str | None] | None = None
    slice_files: list[str | None] | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along X, Y, Z (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_ct_series(path: str | os.PathLike, series_uid: str | None = None, **options: Any) -> CTVolume:
    """Read a head CT from a DICOM folder (any file names, any order, subfolders) or a NIfTI file.

    Args:
        path: a folder of DICOM files, one DICOM file (its folder is read and its series chosen), or a
            ``.nii``/``.nii.gz`` file.
        series_uid: the SeriesInstanceUID to read when the folder holds several CT series.
        options: for DICOM input, see :func:`monai_stroke.io.dicom.load_dicom_series` (``allow_gaps``,
            ``correct_tilt``, ``spacing_tolerance``, ``interpolation_order``); for NIfTI input only
            ``correct_tilt`` and ``interpolation_order`` apply.

    Raises:
        UserInputError: the input is not a readable CT series; the message names the file or value and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path} does not exist: give a folder of DICOM files or a .nii/.nii.gz file")
    if path.is_file() and is_nifti_path(path):
        if series_uid is not None:
            raise UserInputError(f"{path} is a NIfTI file: a series UID ({series_uid}) only applies to DICOM folders")
        from monai_stroke.io.nifti import load_nifti_volume

        nifti_options = {k: v for k, v in options.items() if k in ("correct_tilt", "interpolation_order")}
        volume = load_nifti_volume(path, **nifti_options)
    else:
        from monai_stroke.io.dicom import load_dicom_series

        volume = load_dicom_series(path, series_uid=series_uid, **options)
    for message in volume.summary.get("warnings", []):
        logger.warning(message)
    return volume


def save_nifti(volume: CTVolume, path: str | os.PathLike) -> Path:
    """Write ``volume`` as NIfTI-1 atomically (no partial file on failure); returns the path.

    HU is stored as int16 when every value is a whole number in int16 range (as dcm2niix does: lossless and half
    the size), else float32. Both qform and sform carry the RAS affine (code 1, scanner anatomical).

    Args:
        volume: the volume to write.
        path: destination ending in ``.nii`` or ``.nii.gz``.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise UserInputError(f"output {path} must end in .nii or .nii.gz")
    array = volume.array
    data = array
    if array.size and float(array.min()) >= -32768 and float(array.max()) <= 32767:
        as_int = array.astype(np.int16)
        if np.array_equal(as_int, array):
            data = as_int
    image = nib.Nifti1Image(data, volume.affine)
    image.header.set_xyzt_units("mm", "sec")
    # a quaternion cannot hold a shear (a gantry tilt kept in the affine): then only the sform is valid
    axes = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    orthogonal = np.allclose(axes.T @ axes, np.eye(3), atol=1e-4)
    image.set_qform(volume.affine if orthogonal else None, code=1 if orthogonal else 0)
    image.set_sform(volume.affine, code=1)
    image.header["descrip"] = b"monai-stroke ingest"
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path
