"""The anatomy a synthetic patient is drawn from: the CT template, its tissue maps and the ASPECTS atlas.

:class:`HeadModel` gathers, on the template's 1 mm MNI grid, what rendering and lesion placement need:
HU, gray/white matter and CSF probabilities, the intracranial mask and the depth of every voxel below the
inner table of the skull, the lateral ventricles, and the atlas labels. Everything is derived
deterministically from ``monai_stroke.anatomy`` (:meth:`HeadModel.default`), so two runs place the same
lesion in the same tissue.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from monai_stroke.errors import UserInputError
from monai_stroke.utils import array_sha256
from monai_stroke.vocabulary import REGIONS, SIDES

__all__ = ["HeadModel", "TEXTURE_MARGIN", "HEAD_CELL_VOX"]

# seeds of the lateral ventricles' bodies in MNI mm; the ventricle mask is the deep CSF connected to them
_VENTRICLE_SEEDS_MM = ((-16.0, -12.0, 18.0), (16.0, -12.0, 18.0))
#: cell size (voxels) of the coarse head occupancy map used to skip air when rendering
HEAD_CELL_VOX = 4
#: voxels by which the shared texture field exceeds the intracranial box on each side (room for random crops)
TEXTURE_MARGIN = 16
# CSF counts as "deep" (ventricles, not sulci or fissures near the surface) this far below the inner table
_VENTRICLE_MIN_DEPTH_MM = 12.0


@dataclass
class HeadModel:
    """Template-space anatomy (one 1 mm grid, RAS affine) shared by every synthetic patient.

    Args:
        hu: template HU, float32 ``(X, Y, Z)``.
        affine: voxel -> RAS mm, axis aligned.
        gm: gray matter probability.
        wm: white matter probability.
        csf: CSF probability (zero outside the intracranial space).
        intracranial: everything inside the inner table of the skull.
        atlas_labels: integer ASPECTS label map on the same grid.
        atlas_table: ``label, side, region`` rows naming the labels.
        identity: content hash of template and atlas (recorded in the dataset so that a cohort can be tied to
            the anatomy it was drawn from).
    """

    hu: np.ndarray
    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    intracranial: np.ndarray
    atlas_labels: np.ndarray
    atlas_table: pd.DataFrame
    identity: str = ""
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        lin = self.affine[:3, :3]
        if not np.allclose(lin, np.diag(np.diag(lin))) or np.any(np.diag(lin) <= 0):
            raise ValueError("the template grid must be axis aligned with positive (RAS) voxel axes")
        shape = self.hu.shape
        for name in ("gm", "wm", "csf", "intracranial", "atlas_labels"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, the template {shape}")
        if not self.identity:
            self.identity = array_sha256(self.hu, self.atlas_labels)

    @classmethod
    def default(cls) -> HeadModel:
        """The project's CT template, tissue maps and default ASPECTS atlas (built and cached on first use)."""
        from monai_stroke import anatomy

        template = anatomy.load_template()
        atlas = anatomy.Atlas.default()
        tissues = anatomy.tissue_maps()
        mask = np.asarray(anatomy.brain_mask().dataobj).astype(bool)
        if not np.allclose(atlas.affine, template.affine) or atlas.labels.shape != template.shape:
            raise UserInputError("the default atlas is not on the template grid; rebuild the anatomy cache")
        return cls(
            hu=np.asarray(template.dataobj, dtype=np.float32),
            affine=template.affine,
            gm=np.asarray(tissues["gm"].dataobj, dtype=np.float32),
            wm=np.asarray(tissues["wm"].dataobj, dtype=np.float32),
            csf=np.asarray(tissues["csf"].dataobj, dtype=np.float32),
            intracranial=mask,
            atlas_labels=np.asarray(atlas.labels),
            atlas_table=atlas.table[["label", "side", "region"]].copy(),
            identity=str(atlas.identity),
        )

    # --- grid -------------------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def voxel_mm(self) -> np.ndarray:
        return np.diag(self.affine)[:3].copy()

    def mm_to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Template mm ``(3, ...)`` -> fractional voxel indices ``(3, ...)`` (float32)."""
        pts = np.asarray(points_mm, dtype=np.float32)
        scale = (1.0 / self.voxel_mm).astype(np.float32).reshape((3,) + (1,) * (pts.ndim - 1))
        origin = self.affine[:3, 3].astype(np.float32).reshape((3,) + (1,) * (pts.ndim - 1))
        return (pts - origin) * scale

    def index_to_mm(self, index: np.ndarray) -> np.ndarray:
        """Voxel indices ``(3, ...)`` -> template mm ``(3, ...)``."""
        idx = np.asarray(index, dtype=np.float64)
        shape = (3,) + (1,) * (idx.ndim - 1)
        return idx * self.voxel_mm.reshape(shape) + self.affine[:3, 3].reshape(shape)

    def axes_mm(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open mesh (mm) of the index box ``[lo, hi)``, for evaluating a field on a sub-block."""
        return tuple(
            (np.arange(lo[a], hi[a], dtype=np.float32) * self.voxel_mm[a] + self.affine[a, 3]).reshape(
                [-1 if b == a else 1 for b in range(3)]
            )
            for a in range(3)
        )

    # --- derived maps (computed once) -----------------------------------------------------------------------

    @property
    def tissue(self) -> np.ndarray:
        """Brain parenchyma probability (gray + white matter)."""
        if "tissue" not in self._cache:
            self._cache["tissue"] = np.clip(self.gm + self.wm, 0.0, 1.0).astype(np.float32)
        return self._cache["tissue"]

    @property
    def depth_mm(self) -> np.ndarray:
        """Distance (mm) of each intracranial voxel below the inner table of the skull; 0 outside."""
        if "depth" not in self._cache:
            # the transform only needs the intracranial box (plus one voxel of outside around it)
            box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in self.intracranial_box)
            depth = np.zeros(self.shape, dtype=np.float32)
            depth[box] = ndimage.distance_transform_edt(self.intracranial[box], sampling=self.voxel_mm)
            self._cache["depth"] = depth
        return self._cache["depth"]

    @property
    def ventricles(self) -> np.ndarray:
        """The lateral ventricles: deep CSF connected to the ventricular bodies."""
        if "ventricles" not in self._cache:
            deep = (self.csf > 0.5) & (self.depth_mm > _VENTRICLE_MIN_DEPTH_MM)
            labels, _ = ndimage.label(deep)
            keep = set()
            for seed in _VENTRICLE_SEEDS_MM:
                c = np.round(self.mm_to_index(np.asarray(seed))).astype(int)
                lo, hi = np.maximum(c - 6, 0), np.minimum(c + 7, self.shape)
                found = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
                keep.update(int(v) for v in np.unique(found) if v)
            self._cache["ventricles"] = np.isin(labels, sorted(keep)) if keep else np.zeros(self.shape, bool)
        return self._cache["ventricles"]

    @property
    def head_points_mm(self) -> np.ndarray:
        """Template mm ``(3, N)`` of the head's outer surface voxels (skin), for planning slices and the couch."""
        if "surface" not in self._cache:
            head = self.hu > -500.0
            surface = head & ~ndimage.binary_erosion(head)
            self._cache["surface"] = self.index_to_mm(np.argwhere(surface).T[:, ::7]).astype(np.float32)
        return self._cache["surface"]

    @property
    def intracranial_box(self) -> tuple[slice, slice, slice]:
        """Index bounding box of the intracranial space."""
        if "box" not in self._cache:
            self._cache["box"] = ndimage.find_objects(self.intracranial.astype(np.uint8))[0]
        return self._cache["box"]

    def occupied_cells(self, cell_vox: int = HEAD_CELL_VOX) -> np.ndarray:
        """Coarse occupancy of the head (not air): ``cell_vox``-voxel cells, dilated by two cells.

        Rendering skips sample points whose cell is empty: they are air whatever the interpolation.
        """
        key = ("cells", cell_vox)
        if key not in self._cache:
            head = self.hu > -990.0
            pad = [(0, (-n) % cell_vox) for n in head.shape]
            cells = np.pad(head, pad).reshape(
                *(item for n in np.add(head.shape, [p[1] for p in pad]) for item in (n // cell_vox, cell_vox))
            )
            occupied = cells.any(axis=(1, 3, 5))
            self._cache[key] = ndimage.binary_dilation(occupied, iterations=2)
        return self._cache[key]

    def smoothed_hu(self, sigma_mm: float) -> np.ndarray:
        """The template blurred by an isotropic Gaussian (``sigma_mm`` = 0: the template itself).

        The most recent blur is kept, so patients with the same pixel size share it.
        """
        if sigma_mm <= 0:
            return self.hu
        key = round(float(sigma_mm), 4)
        cached = self._cache.get("smoothed")
        if cached is None or cached[0] != key:
            self._cache["smoothed"] = (key, ndimage.gaussian_filter(self.hu, sigma_mm / self.voxel_mm, mode="nearest"))
        return self._cache["smoothed"][1]

    def texture_field(self, scale_mm: float) -> np.ndarray:
        """A fixed random field (unit SD, Gaussian correlation ``scale_mm``) a little larger than the intracranial box.

        Each patient takes a randomly offset and flipped crop of it: a distinct texture per patient for the
        price of a slice, instead of filtering fresh noise for every patient.
        """
        key = ("texture", round(float(scale_mm), 4))
        if key not in self._cache:
            shape = tuple(s.stop - s.start + 2 * TEXTURE_MARGIN for s in self.intracranial_box)
            rng = np.random.default_rng(np.random.SeedSequence([20240611, int(round(scale_mm * 1000))]))
            field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), scale_mm / self.voxel_mm)
            field_ /= max(float(field_.std()), 1e-6)
            self._cache[key] = field_
        return self._cache[key]

    @property
    def inner_table_points_mm(self) -> np.ndarray:
        """Template mm ``(3, N)`` of intracranial voxels touching the inner table (where extra-axial blood starts)."""
        if "inner_table" not in self._cache:
            shell = (self.depth_mm > 0.5) & (self.depth_mm < 1.6)
            self._cache["inner_table"] = self.index_to_mm(np.argwhere(shell).T).astype(np.float32)
        return self._cache["inner_table"]

    @property
    def superficial_csf_points_mm(self) -> np.ndarray:
        """Template mm ``(3, N)`` of CSF in sulci and fissures (3-25 mm below the inner table, not ventricles)."""
        if "superficial_csf" not in self._cache:
            found = (self.csf > 0.6) & (self.depth_mm > 3.0) & (self.depth_mm < 25.0) & ~self.ventricles
            self._cache["superficial_csf"] = self.index_to_mm(np.argwhere(found).T).astype(np.float32)
        return self._cache["superficial_csf"]

    @property
    def head_center_mm(self) -> np.ndarray:
        """Centre of the intracranial space (template mm)."""
        if "center" not in self._cache:
            self._cache["center"] = self.index_to_mm(np.argwhere(self.intracranial).mean(axis=0))
        return self._cache["center"]

    def region_label(self, side: str, region: str) -> int:
        """Atlas label of one (side, region)."""
        rows = self.atlas_table[(self.atlas_table["side"] == side) & (self.atlas_table["region"] == region)]
        if len(rows) != 1:
            raise UserInputError(f"the atlas has {len(rows)} labels for side {side!r}, region {region!r}; expected 1")
        return int(rows["label"].iloc[0])

    @functools.cached_property
    def _region_boxes(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        boxes = {}
        objects = ndimage.find_objects(self.atlas_labels.astype(np.int32))
        for side in SIDES:
            for region in REGIONS:
                label = self.region_label(side, region)
                sl = objects[label - 1] if label - 1 < len(objects) else None
                if sl is None:
                    raise UserInputError(f"atlas region {side} {region} (label {label}) is empty")
                boxes[(side, region)] = (np.array([s.start for s in sl]), np.array([s.stop for s in sl]))
        return boxes

    def region_box(self, side: str, region: str) -> tuple[np.ndarray, np.ndarray]:
        """Index bounding box ``[lo, hi)`` of an atlas region."""
        return self._region_boxes[(side, region)]

    def region_voxels(self, side: str, region: str) -> np.ndarray:
        """Voxel indices ``(N, 3)`` of an atlas region."""
        lo, hi = self.region_box(side, region)
        block = self.atlas_labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == self.region_label(side, region)
        return np.argwhere(block) + lo
