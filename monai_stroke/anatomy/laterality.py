"""Laterality in one place.

World coordinates are RAS+ (NIfTI/MNI): +x points to the patient's right, so the patient's **left**
hemisphere is ``x < 0``. Side labels ``"L"``/``"R"`` always mean the patient's own left/right.
"""

from __future__ import annotations

import numpy as np

__all__ = ["side_of_x", "mirror_side"]


def side_of_x(x_ras_mm: float | np.ndarray) -> str | np.ndarray:
    """The patient's side (``"L"`` or ``"R"``) of an RAS x coordinate (mid-sagittal plane at x = 0).

    Args:
        x_ras_mm: x in RAS world millimetres (scalar or array).
    """
    if np.ndim(x_ras_mm) == 0:
        return "L" if float(x_ras_mm) < 0 else "R"
    return np.where(np.asarray(x_ras_mm) < 0, "L", "R")


def mirror_side(side: str) -> str:
    """The contralateral side: ``"L"`` <-> ``"R"``."""
    if side not in ("L", "R"):
        raise ValueError(f"side must be 'L' or 'R', got {side!r}")
    return "R" if side == "L" else "L"
