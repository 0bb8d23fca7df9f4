"""DICOM slice geometry shared by ingest and the RSNA converter.

Slices are ordered by their position along the slice normal, the cross product of the two
ImageOrientationPatient direction cosines - never by file name, InstanceNumber or raw z, which are
wrong for tilted, flipped or re-numbered series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["slice_normal", "position_along_normal", "LPS_TO_RAS"]

#: DICOM patient coordinates are LPS+; NIfTI/MONAI world coordinates are RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_normal(image_orientation_patient: Sequence[float]) -> np.ndarray:
    """Unit normal of a slice plane (LPS) from ImageOrientationPatient (row cosines, then column cosines)."""
    iop = np.asarray(image_orientation_patient, dtype=float)
    if iop.shape != (6,):
        raise ValueError(f"ImageOrientationPatient must have 6 values, got {iop.size}")
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError(f"ImageOrientationPatient {iop.tolist()} has parallel row and column directions")
    return normal / norm


def position_along_normal(
    image_position_patient: Sequence[float], image_orientation_patient: Sequence[float]
) -> float:
    """Signed distance (mm) of a slice's origin along its plane's normal: the sort key for slices."""
    return float(np.dot(np.asarray(image_position_patient, dtype=float), slice_normal(image_orientation_patient)))
