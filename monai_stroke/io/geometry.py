"""DICOM slice geometry shared by ingest and the RSNA converter.

Slices are ordered by their position along the slice normal, the cross product of the two
ImageOrientationPatient direction cosines - never by file name, InstanceNumber or raw z, which are
wrong for tilted, flipped or re-numbered series.

Gantry tilt: the slice planes are tilted while the slice origins step along the table, so the voxel grid is
sheared and the distance between planes is the origin step x cos(tilt). :func:`regularize_stack` removes the
shear by shifting each slice within its plane (as dcm2niix does), or keeps it in the affine, and fills
missing slices; :func:`check_spacing` finds where a series leaves its regular grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "slice_normal",
    "position_along_normal",
    "LPS_TO_RAS",
    "MIN_SHIFT_PX",
    "SpacingCheck",
    "check_spacing",
    "tilt_angle_deg",
    "in_plane_offsets",
    "shift_slices",
    "slice_stack_affine",
    "RegularStack",
    "regularize_stack",
]

#: DICOM patient coordinates are LPS+; NIfTI/MONAI world coordinates are RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Un-shear shifts below this many pixels are header rounding, not tilt: such slices are not resampled.
MIN_SHIFT_PX = 0.05


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


def position_along_normal(image_position_patient: Sequence[float], image_orientation_patient: Sequence[float]) -> float:
    """Signed distance (mm) of a slice's origin along its plane's normal: the sort key for slices."""
    return float(np.dot(np.asarray(image_position_patient, dtype=float), slice_normal(image_orientation_patient)))


# --- slice stacks: tilt, spacing, un-shearing -------------------------------------------------------------------


@dataclass(frozen=True)
class SpacingCheck:
    """Where the positions of a sorted slice stack leave a regular grid.

    Attributes:
        nominal_mm: the median step between consecutive positions (the spacing the series was meant to have).
        steps_mm: the step after each slice, ``positions[k + 1] - positions[k]``.
        gaps: ``(k, n_missing)`` for each step that is a whole multiple (2, 3, ...) of the nominal spacing: the
            ``n_missing`` slices that belong between sorted slices ``k`` and ``k + 1`` are absent.
        uneven: ``k`` for each step that is neither the nominal spacing nor a whole multiple of it.
    """

    nominal_mm: float
    steps_mm: np.ndarray
    gaps: tuple[tuple[int, int], ...]
    uneven: tuple[int, ...]

    @property
    def regular(self) -> bool:
        return not self.gaps and not self.uneven


def check_spacing(positions_mm: Sequence[float], tolerance: float = 0.1) -> SpacingCheck:
    """Find missing slices and uneven steps in sorted, distinct slice positions.

    Args:
        positions_mm: ascending positions along the slice normal (at least 2, no duplicates).
        tolerance: relative tolerance: a step within ``tolerance * nominal`` of ``m * nominal`` counts as ``m``
            steps. CT positions carry rounding noise of about a micrometre, so 10% only catches real problems.
    """
    pos = np.asarray(positions_mm, dtype=float)
    if pos.ndim != 1 or pos.size < 2:
        raise ValueError("check_spacing needs at least 2 positions")
    steps = np.diff(pos)
    if np.any(steps <= 0):
        raise ValueError("positions must be strictly ascending")
    nominal = float(np.median(steps))
    ratio = steps / nominal
    multiple = np.rint(ratio)
    on_grid = np.abs(ratio - multiple) <= tolerance
    gaps = tuple((int(k), int(multiple[k]) - 1) for k in np.flatnonzero(on_grid & (multiple >= 2)))
    uneven = tuple(int(k) for k in np.flatnonzero(~on_grid | (multiple < 1)))
    return SpacingCheck(nominal_mm=nominal, steps_mm=steps, gaps=gaps, uneven=uneven)


def tilt_angle_deg(origins: np.ndarray, normal: np.ndarray) -> float:
    """Angle (degrees, >= 0) between the slice normal and the line through the slice origins.

    This is the shear of the voxel grid: 0 for an ordinary series, the gantry tilt for a tilted acquisition
    whose slice origins step along the table axis while the slice planes are tilted.

    Args:
        origins: ``(N, 3)`` slice origins (ImagePositionPatient), sorted along the normal, ``N >= 2``.
        normal: unit slice normal in the same frame.
    """
    origins = np.asarray(origins, dtype=float)
    # the principal direction of the origins is robust to jitter of single slices
    centred = origins - origins.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    cos_angle = min(1.0, abs(float(np.dot(direction, normal))))
    return float(np.degrees(np.arccos(cos_angle)))


def in_plane_offsets(
    origins: np.ndarray, row_cosines: np.ndarray, col_cosines: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """In-plane displacement ``(N, 2)`` (mm along the row and column directions) of each slice origin from the line
    through ``reference`` along the slice normal.

    Shifting slice ``k`` by minus its offset puts every origin on that line, which removes a gantry-tilt shear.
    """
    rel = np.asarray(origins, dtype=float) - np.asarray(reference, dtype=float)
    return np.stack([rel @ np.asarray(row_cosines, float), rel @ np.asarray(col_cosines, float)], axis=1)


def shift_slices(
    stack: np.ndarray, shifts_px: np.ndarray, fill_value: float, order: int = 1, min_shift_px: float = MIN_SHIFT_PX
) -> np.ndarray:
    """Translate each slice of a ``(Z, rows, columns)`` stack within its plane, in place where possible.

    Args:
        stack: float array ``(Z, rows, columns)``.
        shifts_px: ``(Z, 2)`` shifts in pixels along (rows, columns): ``out[j, i] = in[j - s0, i - s1]``.
        fill_value: value for pixels that come from outside the field of view.
        order: spline order (1 = linear, exact for linear intensity ramps and centroid-preserving).
        min_shift_px: slices shifted by less than this are left untouched (no interpolation blur).
    """
    from scipy import ndimage

    for k, shift in enumerate(np.asarray(shifts_px, dtype=float)):
        if np.max(np.abs(shift)) < min_shift_px:
            continue
        if order == 1:
            stack[k] = _shift_linear(stack[k], shift, fill_value)
        else:
            stack[k] = ndimage.shift(stack[k], shift, order=order, mode="grid-constant", cval=fill_value)
    return stack


def _shift_linear(image: np.ndarray, shift: Sequence[float], fill_value: float) -> np.ndarray:
    """Bilinear shift of a 2D image, ``fill_value`` beyond its edges: ``out[o] = image[o - shift]``.

    Equal to ``scipy.ndimage.shift(order=1, mode="grid-constant")`` and ~5x faster: a tilt shifts each slice along
    one axis, which here is two slice copies and a weighted sum.
    """
    out = image
    for axis, s in enumerate(shift):
        if abs(s) < 1e-6:
            continue
        whole = int(np.floor(-s))
        frac = float(-s - whole)
        shifted = _take_shifted(out, whole, axis, fill_value)
        if frac > 1e-6:
            shifted *= np.float32(1.0 - frac)
            shifted += np.float32(frac) * _take_shifted(out, whole + 1, axis, fill_value)
        out = shifted
    return out


def _take_shifted(image: np.ndarray, offset: int, axis: int, fill_value: float) -> np.ndarray:
    """``out[o] = image[o + offset]`` along ``axis``, ``fill_value`` where that index is outside the image."""
    n = image.shape[axis]
    out = np.full(image.shape, fill_value, dtype=np.float32)
    lo, hi = max(0, -offset), min(n, n - offset)
    if lo < hi:
        dst = [slice(None)] * 2
        src = [slice(None)] * 2
        dst[axis], src[axis] = slice(lo, hi), slice(lo + offset, hi + offset)
        out[tuple(dst)] = image[tuple(src)]
    return out


def slice_stack_affine(
    row_cosines: np.ndarray,
    col_cosines: np.ndarray,
    pixel_spacing: Sequence[float],
    slice_step: np.ndarray,
    origin: np.ndarray,
) -> np.ndarray:
    """4x4 voxel -> world affine (same frame as the inputs) of a stack indexed ``(column, row, slice)``.

    Args:
        row_cosines: direction in which the column index grows (ImageOrientationPatient[:3]).
        col_cosines: direction in which the row index grows (ImageOrientationPatient[3:]).
        pixel_spacing: DICOM PixelSpacing: (spacing between rows, spacing between columns) in mm.
        slice_step: world vector from one slice's origin to the next (normal * spacing for an orthogonal grid).
        origin: world position of voxel (0, 0, 0).
    """
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(row_cosines, float) * float(pixel_spacing[1])
    affine[:3, 1] = np.asarray(col_cosines, float) * float(pixel_spacing[0])
    affine[:3, 2] = np.asarray(slice_step, float)
    affine[:3, 3] = np.asarray(origin, float)
    return affine


@dataclass(frozen=True)
class RegularStack:
    """A slice stack on a regular grid, as :func:`regularize_stack` returns it.

    Attributes:
        stack: float32 ``(Z, rows, columns)``, slice ``k`` at position ``k`` along the normal.
        affine: 4x4 voxel (column, row, slice) -> world, in the frame of the origins given.
        normal: unit slice normal (the direction of increasing slice index when un-sheared).
        spacing_mm: distance between slices along the normal.
        tilt_deg: angle between the normal and the line through the input slice origins (the grid's shear).
        max_position_error_mm: largest distance along the normal between an input slice and its place on the grid.
        max_shift_mm: largest in-plane shift applied to un-shear a slice (0 when nothing was resampled).
        filled: output slice indices that were interpolated from their neighbours (missing in the input).
    """

    stack: np.ndarray
    affine: np.ndarray
    normal: np.ndarray
    spacing_mm: float
    tilt_deg: float
    max_position_error_mm: float
    max_shift_mm: float
    filled: tuple[int, ...]


def regularize_stack(
    slices: np.ndarray,
    origins: np.ndarray,
    row_cosines: Sequence[float],
    col_cosines: Sequence[float],
    pixel_spacing: Sequence[float],
    output_index: Sequence[int] | None = None,
    correct_tilt: bool = True,
    fill_value: float = -1024.0,
    order: int = 1,
    min_shift_px: float = MIN_SHIFT_PX,
) -> RegularStack:
    """Put sorted slices on a regular voxel grid: un-shear a gantry tilt and fill missing slices.

    With ``correct_tilt`` (the default, as dcm2niix does) each slice is shifted within its own plane so that all
    slice origins lie on one line along the slice normal (through their mean); pixels that come from outside the
    field of view get ``fill_value``. The grid is then orthogonal, spaced by the true distance between the planes
    (the origin step x cos(tilt)). Without it, the affine's third column is the (oblique) origin step, which
    carries the shear. Either way there is one output slice per input slice, plus the interpolated ones that
    ``output_index`` says are missing.

    Args:
        slices: float32 ``(N, rows, columns)`` sorted along the normal; modified in place.
        origins: ``(N, 3)`` world position of each slice's first pixel (ImagePositionPatient).
        row_cosines: direction in which the column index grows.
        col_cosines: direction in which the row index grows.
        pixel_spacing: (spacing between rows, spacing between columns) in mm.
        output_index: ascending output slice index of each input slice (gaps mark missing slices);
            default ``0..N-1``.
        correct_tilt: resample in-plane to remove the shear (else keep it in the affine).
        fill_value: value for pixels from outside the field of view (air).
        order: interpolation order of the in-plane shift.
        min_shift_px: slices whose un-shear shift is smaller than this (in pixels) are not resampled, so that
            rounding noise in ImagePositionPatient never blurs an untilted series.
    """
    origins = np.asarray(origins, dtype=float)
    n_in = len(slices)
    if origins.shape != (n_in, 3) or n_in < 2:
        raise ValueError(
            f"need at least 2 slices with one (3,) origin each, got {n_in} slices, origins {origins.shape}"
        )
    row = np.asarray(row_cosines, dtype=float)
    col = np.asarray(col_cosines, dtype=float)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    index = np.arange(n_in) if output_index is None else np.asarray(output_index, dtype=int)
    if index.shape != (n_in,) or np.any(np.diff(index) <= 0) or index[0] != 0:
        raise ValueError("output_index must start at 0 and ascend strictly, one entry per slice")
    reference = origins.mean(axis=0)
    positions = (origins - reference) @ normal
    if positions[-1] < positions[0]:
        # keep the slice index ascending along the normal whatever the sign convention of the input
        normal, positions = -normal, -positions
    start, spacing = _fit_line(index, positions)
    max_error = float(np.max(np.abs(positions - (start + spacing * index))))
    tilt = tilt_angle_deg(origins, normal)
    max_shift = 0.0
    if correct_tilt:
        offsets = in_plane_offsets(origins, row, col, reference)
        shifts_px = np.stack([offsets[:, 1] / float(pixel_spacing[0]), offsets[:, 0] / float(pixel_spacing[1])], axis=1)
        moved = np.max(np.abs(shifts_px), axis=1) >= min_shift_px
        if np.any(moved):
            shift_slices(slices, shifts_px, fill_value=fill_value, order=order, min_shift_px=min_shift_px)
            max_shift = float(np.max(np.linalg.norm(offsets[moved], axis=1)))
        step, origin = normal * spacing, reference + start * normal
    else:
        # least-squares line through the origins: the affine then carries the shear exactly
        fit = np.array([_fit_line(index, origins[:, axis]) for axis in range(3)])
        origin, step = fit[:, 0], fit[:, 1]
        max_error = max(max_error, float(np.max(np.linalg.norm(origins - (origin + np.outer(index, step)), axis=1))))
    stack, filled = _fill_missing(slices, index)
    affine = slice_stack_affine(row, col, pixel_spacing, step, origin)
    return RegularStack(stack, affine, normal, float(spacing), tilt, max_error, max_shift, filled)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the least-squares line y = a + b x."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(intercept), float(slope)


def _fill_missing(slices: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Place slices at their output index and interpolate linearly the ones in between."""
    n_out = int(index[-1]) + 1
    if n_out == len(slices):
        return slices, ()
    stack = np.empty((n_out, *slices.shape[1:]), dtype=slices.dtype)
    stack[index] = slices
    filled = []
    for k in range(len(index) - 1):
        lo, hi = int(index[k]), int(index[k + 1])
        for j in range(lo + 1, hi):
            w = (j - lo) / (hi - lo)
            np.add((1 - w) * slices[k], w * slices[k + 1], out=stack[j])
            filled.append(j)
    return stack, tuple(filled)
