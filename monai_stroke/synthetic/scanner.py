"""Scanner geometry of a synthetic head CT series and the head's pose in it.

Coordinate frames (see docs/ARCHITECTURE.md):

* **DICOM patient frame (LPS+)**: what ImagePositionPatient/ImageOrientationPatient are written in. The table
  axis is z; the scanner's isocentre lies on it at x = y = 0, and every reconstructed slice is centred on
  it (``slice_center_lps``), so ImagePositionPatient steps along the table z by the table increment.
* **World (RAS+)**: the same frame with x and y negated; NIfTI affines and lesion masks use it.
* **Template (MNI RAS mm)**: where the CT template and the ASPECTS atlas live. :class:`HeadPose` maps world
  points to template points (the direction needed to *sample* the template), through a rigid pose, a
  per-patient anisotropic scale and a small smooth (quadratic) warp, so that no two heads are identical and
  an affine registration cannot undo the mapping exactly, as with real patients.

A gantry tilt rotates the slice plane about the patient's left-right axis: the column direction becomes
``(0, cos t, -sin t)`` (moving down the image goes posterior and, for a positive tilt, inferior, as in scans
angled along the orbitomeatal line). The slices stay parallel, but successive slice origins move along z, so
the voxel grid is sheared. :meth:`ScannerGeometry.unshear` resamples it with ingest's own functions (each
slice shifted in-plane so that its origin lies on the line through the mean origin along the normal, linear
interpolation), giving the orthogonal grid of :meth:`ScannerGeometry.ingest_affine` with slice spacing
``table_step * cos(tilt)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from monai_stroke.io.geometry import LPS_TO_RAS, in_plane_offsets, shift_slices, slice_stack_affine

__all__ = ["ScannerGeometry", "HeadPose", "Couch", "rotation_matrix"]


@dataclass(frozen=True)
class ScannerGeometry:
    """Where the slices of one series are, in the DICOM patient frame (LPS mm).

    Args:
        rows: image rows (along the column direction, posterior for an untilted head-first-supine scan).
        cols: image columns (along the row direction, the patient's left).
        pixel_spacing_mm: square pixel size.
        n_slices: number of slices.
        table_start_mm: table z (LPS) of the first, most inferior, slice centre.
        table_step_mm: table increment between slices, along z.
        slice_thickness_mm: nominal thickness along the slice normal (the sensitivity profile width).
        tilt_deg: gantry tilt about the patient's left-right axis.
    """

    rows: int
    cols: int
    pixel_spacing_mm: float
    n_slices: int
    table_start_mm: float
    table_step_mm: float = 5.0
    slice_thickness_mm: float = 5.0
    tilt_deg: float = 0.0

    @property
    def row_dir_lps(self) -> np.ndarray:
        """Direction of increasing column index (DICOM IOP first triplet)."""
        return np.array([1.0, 0.0, 0.0])

    @property
    def col_dir_lps(self) -> np.ndarray:
        """Direction of increasing row index (DICOM IOP second triplet), tilted about the x axis."""
        t = math.radians(self.tilt_deg)
        return np.array([0.0, math.cos(t), -math.sin(t)])

    @property
    def normal_lps(self) -> np.ndarray:
        """Slice normal ``row x col``; positions along it increase with the slice index."""
        return np.cross(self.row_dir_lps, self.col_dir_lps)

    @property
    def iop(self) -> list[float]:
        """ImageOrientationPatient."""
        return [float(v) for v in (*self.row_dir_lps, *self.col_dir_lps)]

    @property
    def spacing_along_normal_mm(self) -> float:
        """Distance between adjacent slice planes: the table step projected on the normal."""
        return self.table_step_mm * math.cos(math.radians(self.tilt_deg))

    def slice_center_lps(self, k: int | np.ndarray) -> np.ndarray:
        """Centre of slice ``k``: on the table axis (the isocentre), at table position ``start + k * step``."""
        k = np.asarray(k, dtype=float)
        z = self.table_start_mm + k * self.table_step_mm
        return np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=-1)

    def ipp(self, k: int) -> list[float]:
        """ImagePositionPatient of slice ``k``: the centre of its first pixel."""
        half_c = (self.cols - 1) / 2.0 * self.pixel_spacing_mm
        half_r = (self.rows - 1) / 2.0 * self.pixel_spacing_mm
        origin = self.slice_center_lps(k) - half_c * self.row_dir_lps - half_r * self.col_dir_lps
        return [float(v) for v in origin]

    def pixel_grid_lps(self, k: float, step: int = 1) -> np.ndarray:
        """LPS coordinates ``(3, rows // step, cols // step)`` of pixel centres of slice ``k``.

        Args:
            k: slice index (fractional allowed).
            step: with ``step > 1`` the centres of ``step x step`` pixel blocks (a coarser grid over the same
                field of view).
        """
        offset = (step - 1) / 2.0
        r = (np.arange(self.rows // step) * step + offset) * self.pixel_spacing_mm
        c = (np.arange(self.cols // step) * step + offset) * self.pixel_spacing_mm
        origin = np.asarray(self.ipp(0)) + k * self.table_step_mm * np.array([0.0, 0.0, 1.0])
        return (
            origin[:, None, None]
            + self.col_dir_lps[:, None, None] * r[None, :, None]
            + self.row_dir_lps[:, None, None] * c[None, None, :]
        )

    @property
    def origins_lps(self) -> np.ndarray:
        """``(n_slices, 3)`` ImagePositionPatient of every slice."""
        return np.array([self.ipp(k) for k in range(self.n_slices)])

    def unshear_shifts_px(self) -> np.ndarray:
        """``(n_slices, 2)`` in-plane shifts (rows, columns) ingest applies to remove the tilt's shear.

        Computed with ingest's own :func:`monai_stroke.io.geometry.in_plane_offsets`: each slice moves within its
        plane so that its origin lies on the line through the mean origin along the normal (zero without tilt).
        """
        origins = self.origins_lps
        offsets = in_plane_offsets(origins, self.row_dir_lps, self.col_dir_lps, origins.mean(axis=0))
        return np.stack([offsets[:, 1], offsets[:, 0]], axis=1) / self.pixel_spacing_mm

    # --- the grid ingest returns ---------------------------------------------------------------------------

    @property
    def ingest_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` = (columns, rows, slices)."""
        return (self.cols, self.rows, self.n_slices)

    def ingest_affine(self) -> np.ndarray:
        """Orthogonal RAS affine of the un-sheared volume (X along the row direction, Y along the column
        direction, Z along the slice normal), as ``monai_stroke.io.load_ct_series`` builds it: the origin is the
        mean slice origin moved along the normal to the first slice's plane."""
        reference = self.origins_lps.mean(axis=0)
        spacing = self.spacing_along_normal_mm
        origin = reference - (self.n_slices - 1) / 2.0 * spacing * self.normal_lps
        pixel = (self.pixel_spacing_mm, self.pixel_spacing_mm)
        lps = slice_stack_affine(self.row_dir_lps, self.col_dir_lps, pixel, self.normal_lps * spacing, origin)
        return LPS_TO_RAS @ lps

    def unshear(self, native: np.ndarray, cval: float = 0.0, first_slice: int = 0) -> np.ndarray:
        """Native slices ``(m, rows, cols)`` -> the ingest grid ``(X, Y, m)``.

        Uses ingest's own in-plane shift (:func:`monai_stroke.io.geometry.shift_slices`, linear), so that a
        lesion mask and the image ingest returns are resampled identically. Without tilt this is a transpose.

        Args:
            native: float array indexed ``[slice, row, col]``, slices ``first_slice .. first_slice + m - 1``.
            cval: value for positions outside the acquired slice.
            first_slice: index of ``native[0]`` in the series (a slab of slices may be passed).
        """
        m = native.shape[0]
        if native.shape[1:] != (self.rows, self.cols) or first_slice < 0 or first_slice + m > self.n_slices:
            raise ValueError(
                f"expected slices {first_slice}..{first_slice + m - 1} of a ({self.n_slices}, {self.rows}, "
                f"{self.cols}) series, got shape {native.shape}"
            )
        stack = np.array(native, dtype=np.float32, copy=True)
        if self.tilt_deg != 0.0:
            shift_slices(stack, self.unshear_shifts_px()[first_slice : first_slice + m], fill_value=cval, order=1)
        return stack.transpose(2, 1, 0)

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "n_slices": self.n_slices,
            "table_start_mm": self.table_start_mm,
            "table_step_mm": self.table_step_mm,
            "slice_thickness_mm": self.slice_thickness_mm,
            "tilt_deg": self.tilt_deg,
        }


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about x (pitch), then y (roll), then z (yaw), angles in degrees: ``Rz @ Ry @ Rx``."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: quadratic monomials of the warp, in head-frame coordinates divided by ``HeadPose.warp_scale_mm``
_WARP_TERMS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class HeadPose:
    """Where the patient's head is in the scanner and how it differs from the template.

    A world point ``r`` (RAS mm) maps to the template point ``m`` (MNI mm)::

        u = R^T (r - head_center_world)                 head frame, mm from the head centre
        m = template_center + u / scale + warp(u)       warp: quadratic in u / warp_scale_mm

    Args:
        rotation_deg: head rotation (pitch about x, roll about y, yaw about z), degrees.
        head_center_world_mm: RAS world point where ``template_center_mm`` lands (the isocentre plus the
            head shift).
        template_center_mm: the template point used as the head centre.
        scale: per-axis size of this head relative to the template (head frame axes).
        warp_mm: ``(3, 6)`` coefficients (mm) of the quadratic warp terms ``x^2, y^2, z^2, xy, xz, yz``.
        warp_scale_mm: normalisation of head-frame coordinates in the warp.
    """

    rotation_deg: tuple[float, float, float]
    head_center_world_mm: tuple[float, float, float]
    template_center_mm: tuple[float, float, float]
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    warp_mm: tuple[tuple[float, ...], ...] = field(default_factory=lambda: tuple((0.0,) * 6 for _ in range(3)))
    warp_scale_mm: float = 80.0

    @property
    def rotation(self) -> np.ndarray:
        return rotation_matrix(self.rotation_deg)

    def world_to_template(self, points_ras: np.ndarray) -> np.ndarray:
        """Map RAS world points ``(3, ...)`` to template points ``(3, ...)``, float32."""
        pts = np.asarray(points_ras, dtype=np.float32)
        shape = pts.shape
        flat = pts.reshape(3, -1)
        rot_t = self.rotation.T.astype(np.float32)
        u = rot_t @ (flat - np.asarray(self.head_center_world_mm, dtype=np.float32)[:, None])
        m = (
            u / np.asarray(self.scale, dtype=np.float32)[:, None]
            + np.asarray(self.template_center_mm, np.float32)[:, None]
        )
        warp = np.asarray(self.warp_mm, dtype=np.float32)
        if np.any(warp):
            v = u / np.float32(self.warp_scale_mm)
            for t, (a, b) in enumerate(_WARP_TERMS):
                term = v[a] * v[b]
                m += warp[:, t : t + 1] * term[None, :]
        return m.reshape(shape)

    def template_to_world_affine(self) -> np.ndarray:
        """The affine part of the inverse map (template -> world, RAS), ignoring the warp (a few mm at most)."""
        out = np.eye(4)
        out[:3, :3] = self.rotation @ np.diag(self.scale)
        out[:3, 3] = np.asarray(self.head_center_world_mm) - out[:3, :3] @ np.asarray(self.template_center_mm)
        return out

    def to_dict(self) -> dict:
        return {
            "rotation_deg": list(self.rotation_deg),
            "head_center_world_mm": list(self.head_center_world_mm),
            "template_center_mm": list(self.template_center_mm),
            "scale": list(self.scale),
            "warp_mm": [list(r) for r in self.warp_mm],
            "warp_scale_mm": self.warp_scale_mm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> HeadPose:
        return cls(
            rotation_deg=tuple(d["rotation_deg"]),
            head_center_world_mm=tuple(d["head_center_world_mm"]),
            template_center_mm=tuple(d["template_center_mm"]),
            scale=tuple(d["scale"]),
            warp_mm=tuple(tuple(r) for r in d["warp_mm"]),
            warp_scale_mm=float(d["warp_scale_mm"]),
        )


@dataclass(frozen=True)
class Couch:
    """The head cradle under the head: a curved carbon-fibre shell fixed to the table (scanner frame).

    Its cross-section is an arc of a circle about an axis parallel to the table, covering the posterior
    side; it does not tilt with the gantry, so on tilted slices it appears at a different place on each one.

    Args:
        axis_lps: (x, y) of the arc's axis in LPS mm.
        radius_mm: inner radius.
        thickness_mm: shell thickness.
        half_angle_deg: the arc spans this angle either side of straight posterior.
        hu: shell density.
    """

    axis_lps: tuple[float, float]
    radius_mm: float
    thickness_mm: float = 4.0
    half_angle_deg: float = 65.0
    hu: float = 250.0

    def fraction(self, x_lps: np.ndarray, y_lps: np.ndarray, pixel_mm: float) -> np.ndarray:
        """Fraction of each pixel covered by the shell (a one-pixel linear ramp at its edges)."""
        dx = x_lps - self.axis_lps[0]
        dy = y_lps - self.axis_lps[1]
        rho = np.sqrt(dx * dx + dy * dy)
        mid = self.radius_mm + self.thickness_mm / 2.0
        radial = np.clip((self.thickness_mm / 2.0 - np.abs(rho - mid)) / pixel_mm + 0.5, 0.0, 1.0)
        # angle from straight posterior (+y in LPS)
        cos_angle = dy / np.maximum(rho, 1e-6)
        angular = np.clip((cos_angle - math.cos(math.radians(self.half_angle_deg))) * rho / pixel_mm + 0.5, 0.0, 1.0)
        return (radial * angular).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "axis_lps": list(self.axis_lps),
            "radius_mm": self.radius_mm,
            "thickness_mm": self.thickness_mm,
            "half_angle_deg": self.half_angle_deg,
            "hu": self.hu,
        }
