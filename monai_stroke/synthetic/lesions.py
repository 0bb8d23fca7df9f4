"""Lesions of the synthetic cohort: what they are, where they go, and their shape in template space.

A lesion is described by a :class:`LesionSpec` (JSON-able parameters) and turned into a **weight field**
``w`` in [0, 1] on a block of the template grid by :func:`lesion_field`; rendering samples that field through
the patient's pose, so a lesion drawn inside an atlas region lands in the same anatomy in every patient.
How the weight changes HU depends on the kind:

* early ischemic change (``frank_hypodensity``, ``territorial_infarction``, ``recent_infarction``,
  ``scattered_infarction``) is *additive*: ``HU += a * w``, a soft-edged drop restricted to gray/white
  matter of its atlas region. ``contrast_hu`` is the requested **mean HU change over the lesion's labelled
  voxels** of the final image; rendering scales ``a`` so that it holds exactly (partial volume included).
* ``old_infarction`` and hemorrhage are *replacements*: ``HU += w * (target_hu - HU)``, i.e. the core is
  fluid (old infarct, 5-20 HU, sharp edges, no tissue texture) or blood (50-90 HU).

Shapes: ischemic lesions are one or more soft ellipsoids intersected with the region and the parenchyma
(``territorial`` covers most of a region, ``scattered`` is several small foci); intraparenchymal hemorrhage is
a blob; subdural a crescent along the inner table (thin, wide, not crossing the midline); epidural a
biconvex lens (thick, narrow); subarachnoid blood fills CSF spaces (sulci, Sylvian fissure) near the
surface; intraventricular blood layers in the dependent (posterior) ventricles below a fluid level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage, special

from monai_stroke.synthetic.head import HeadModel
from monai_stroke.vocabulary import HEMORRHAGE_SUBTYPES

__all__ = [
    "EARLY_ISCHEMIC_KINDS",
    "ISCHEMIC_KINDS",
    "HEMORRHAGE_KINDS",
    "LESION_KINDS",
    "LesionSpec",
    "lesion_field",
    "soft_step",
    "bone_fraction",
    "replacement_change",
]

#: early ischemic change: additive HU drop (the issue's "early ischemic change" kinds)
EARLY_ISCHEMIC_KINDS: tuple[str, ...] = (
    "frank_hypodensity",
    "territorial_infarction",
    "recent_infarction",
    "scattered_infarction",
)
ISCHEMIC_KINDS: tuple[str, ...] = (*EARLY_ISCHEMIC_KINDS, "old_infarction")
HEMORRHAGE_KINDS: tuple[str, ...] = HEMORRHAGE_SUBTYPES
LESION_KINDS: tuple[str, ...] = (*ISCHEMIC_KINDS, *HEMORRHAGE_KINDS)

_SOFT_TISSUE_MAX_HU = 60.0
_CORTICAL_BONE_HU = 1600.0
# partial volume of the atlas boundary: keeps a lesion inside its region up to about a millimetre
_REGION_EDGE_SIGMA_MM = 0.7


def soft_step(signed_distance_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """1 inside (negative distance), 0 outside, 0.5 on the surface; ``edge_mm`` sets the transition width."""
    return (0.5 * special.erfc(signed_distance_mm / max(edge_mm, 1e-3))).astype(np.float32)


@dataclass
class LesionSpec:
    """One lesion of one patient.

    Args:
        code: its value in the patient's ``lesions.nii.gz`` (unique in the dataset).
        kind: one of ``LESION_KINDS`` (region categories for ischemic lesions, RSNA subtypes for hemorrhage).
        side: the patient's side, ``"L"``/``"R"`` (``""`` for a lesion on both sides, e.g. intraventricular).
        region: the ASPECTS region an ischemic lesion was placed in (``""`` for hemorrhage).
        centers_mm: blob centres (template mm); for a crescent or lens the point of the inner table it is
            centred on.
        radii_mm: ellipsoid semi-axes (template x, y, z) of each blob; for a crescent or lens ``radii_mm[0]`` is
            the radius of the patch of inner table it covers.
        edge_mm: width of the soft edge.
        thickness_mm: largest thickness of a crescent or lens.
        level_mm: template y of an intraventricular fluid level (blood lies posterior to it).
        contrast_hu: requested mean HU change over the labelled voxels (additive kinds).
        target_hu: density the lesion brings tissue to (replacement kinds).
    """

    code: int
    kind: str
    side: str = ""
    region: str = ""
    centers_mm: list[list[float]] = field(default_factory=list)
    radii_mm: list[float] = field(default_factory=lambda: [5.0, 5.0, 5.0])
    edge_mm: float = 1.0
    thickness_mm: float = 0.0
    level_mm: float = 0.0
    contrast_hu: float | None = None
    target_hu: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in LESION_KINDS:
            raise ValueError(f"lesion kind {self.kind!r} is not one of {', '.join(LESION_KINDS)}")
        if self.additive and self.contrast_hu is None:
            raise ValueError(f"a {self.kind} lesion needs contrast_hu")
        if not self.additive and self.target_hu is None:
            raise ValueError(f"a {self.kind} lesion needs target_hu")

    @property
    def additive(self) -> bool:
        """Whether the lesion adds a (scaled) HU change rather than replacing tissue by a density."""
        return self.kind in EARLY_ISCHEMIC_KINDS

    @property
    def hemorrhage(self) -> bool:
        return self.kind in HEMORRHAGE_KINDS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LesionSpec:
        return cls(**d)


def _blob_box(spec: LesionSpec, head: HeadModel, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    centers = np.asarray(spec.centers_mm, dtype=float).reshape(-1, 3)
    reach = np.asarray(spec.radii_mm, dtype=float) + margin_mm
    lo_mm, hi_mm = (centers - reach).min(axis=0), (centers + reach).max(axis=0)
    lo = np.floor(head.mm_to_index(lo_mm)).astype(int)
    hi = np.ceil(head.mm_to_index(hi_mm)).astype(int) + 1
    return lo, hi


def _blobs(spec: LesionSpec, mesh: tuple[np.ndarray, ...]) -> np.ndarray:
    """Soft union (max) of the ellipsoids of ``spec`` on an open mesh (mm)."""
    radii = np.asarray(spec.radii_mm, dtype=np.float32)
    # distance from the surface ~ (rho - 1) * (harmonic mean radius): exact for a sphere, close for mild ellipsoids
    r_eff = float(3.0 / np.sum(1.0 / radii))
    out = None
    for c in np.asarray(spec.centers_mm, dtype=np.float32).reshape(-1, 3):
        rho = np.sqrt(sum(((mesh[a] - c[a]) / radii[a]) ** 2 for a in range(3)))
        w = soft_step((rho - 1.0) * r_eff, spec.edge_mm)
        out = w if out is None else np.maximum(out, w)
    return out


def _clip_box(lo: np.ndarray, hi: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(lo, 0), np.minimum(hi, np.asarray(shape))


def _block(array: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]


def _surface_patch(spec: LesionSpec, head: HeadModel, mesh, lo, hi, lens: bool) -> np.ndarray:
    """Crescent (subdural) or lens (epidural) of blood against the inner table, on the centre's side only."""
    p0 = np.asarray(spec.centers_mm[0], dtype=np.float32)
    radius = float(spec.radii_mm[0])
    d2 = sum((mesh[a] - p0[a]) ** 2 for a in range(3)) / radius**2
    profile = np.sqrt(np.clip(1.0 - d2, 0.0, None)) if lens else np.clip(1.0 - d2, 0.0, None)
    thickness = spec.thickness_mm * profile
    # depth below the inner table: EDT counts from the centre of the first outside voxel, hence the half voxel
    depth = _block(head.depth_mm, lo, hi) - 0.5
    w = soft_step(depth - thickness, spec.edge_mm) * (thickness > 0.25) * _block(head.intracranial, lo, hi)
    # the falx stops a convexity collection at the midline
    return (w * _same_side(spec, mesh)).astype(np.float32)


def _same_side(spec: LesionSpec, mesh) -> np.ndarray:
    """1 on the side of the lesion's (first) centre, 0 across the midline (the falx), a 1 mm soft edge."""
    side_sign = 1.0 if spec.centers_mm[0][0] >= 0 else -1.0
    return soft_step(-side_sign * mesh[0], 1.0)


def lesion_field(spec: LesionSpec, head: HeadModel) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's weight field on a block of the template grid.

    Args:
        spec: the lesion.
        head: the template anatomy.

    Returns:
        ``(lo, weights)``: the block's first voxel index (3 ints) and its float32 weights in [0, 1].
    """
    kind = spec.kind
    if kind in ("subdural", "epidural"):
        reach = spec.radii_mm[0] + spec.thickness_mm + 3 * spec.edge_mm
        c = np.asarray(spec.centers_mm[0], dtype=float)
        lo = np.floor(head.mm_to_index(c - reach)).astype(int)
        hi = np.ceil(head.mm_to_index(c + reach)).astype(int) + 1
    else:
        lo, hi = _blob_box(spec, head, 3.0 * spec.edge_mm + 1.0)
    if kind in ISCHEMIC_KINDS and spec.region:
        rlo, rhi = head.region_box(spec.side, spec.region)
        pad = int(math.ceil(3 * _REGION_EDGE_SIGMA_MM)) + 1
        lo, hi = np.maximum(lo, rlo - pad), np.minimum(hi, rhi + pad)
    elif kind == "intraventricular":
        vox = np.argwhere(head.ventricles)
        if len(vox):
            lo, hi = np.maximum(lo, vox.min(axis=0) - 2), np.minimum(hi, vox.max(axis=0) + 3)
    lo, hi = _clip_box(lo, hi, head.shape)
    if np.any(hi <= lo):
        return lo, np.zeros((0, 0, 0), dtype=np.float32)
    mesh = head.axes_mm(lo, hi)

    if kind in ISCHEMIC_KINDS:
        w = _blobs(spec, mesh) * _block(head.tissue, lo, hi)
        if spec.region:
            inside = (_block(head.atlas_labels, lo, hi) == head.region_label(spec.side, spec.region)).astype(np.float32)
            w = w * np.clip(ndimage.gaussian_filter(inside, _REGION_EDGE_SIGMA_MM / head.voxel_mm), 0.0, 1.0)
    elif kind == "intraparenchymal":
        # a parenchymal clot stays in its hemisphere's brain tissue
        w = _blobs(spec, mesh) * _block(head.tissue, lo, hi) * _same_side(spec, mesh)
    elif kind in ("subdural", "epidural"):
        w = _surface_patch(spec, head, mesh, lo, hi, lens=kind == "epidural")
    elif kind == "subarachnoid":
        # CSF spaces near the surface (sulci, fissures), not the ventricles
        not_deep = soft_step(_block(head.depth_mm, lo, hi) - 25.0, 3.0)
        w = _blobs(spec, mesh) * _block(head.csf, lo, hi) * not_deep * ~_block(head.ventricles, lo, hi)
    elif kind == "intraventricular":
        vent = ndimage.gaussian_filter(_block(head.ventricles, lo, hi).astype(np.float32), 0.5)
        # supine patient: blood settles posteriorly (template -y) below the fluid level
        w = _blobs(spec, mesh) * vent * soft_step(mesh[1] - spec.level_mm, 0.7)
    else:  # pragma: no cover - guarded by LesionSpec
        raise ValueError(kind)
    if not spec.additive:
        # blood and fluid displace soft tissue, not bone: template voxels sharing the inner table keep their
        # bone fraction (a lesion weight is the fraction of the voxel the lesion fills)
        w = w * (1.0 - bone_fraction(_block(head.hu, lo, hi)))
    return lo, np.clip(w, 0.0, 1.0).astype(np.float32)


def replacement_change(spec: LesionSpec, weight: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """HU change ``w * (target - soft tissue HU)`` of a replacement lesion on a block of (patient) template HU.

    Computed on the template grid, before any interpolation, so that blood next to the skull is never
    averaged with bone; the weight already excludes the bone part of a voxel (see :func:`lesion_field`).
    """
    soft = np.minimum(hu, np.float32(_SOFT_TISSUE_MAX_HU))
    return (weight * (np.float32(spec.target_hu) - soft)).astype(np.float32)


def bone_fraction(hu: np.ndarray) -> np.ndarray:
    """Fraction of bone in a voxel, from its HU as a mix of soft tissue (~60 HU) and cortical bone (1600 HU)."""
    return np.clip((hu - _SOFT_TISSUE_MAX_HU) / (_CORTICAL_BONE_HU - _SOFT_TISSUE_MAX_HU), 0.0, 1.0).astype(np.float32)
