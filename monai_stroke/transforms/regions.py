"""Per-hemisphere ASPECTS region crops on the template grid (paper section 3.2, figs. 3-4).

After template registration every patient's head lies on the atlas's grid, so a region is the same block of
voxels in every patient. :class:`RegionCrop` / :class:`RegionCropd` cut one sample per (side, region) of the
atlas out of such a volume:

* **Slices.** The paper's unit is a region spanning up to 3 sequential slices of 3 mm. On a finer template grid
  (MNI 1 mm) ``k = round(slice_thickness_mm / dz)`` consecutive planes are averaged into one *template slice*
  (the mean HU over the slab, what a thick reconstruction shows); on a grid as coarse as the slice thickness
  each plane is a slice. Of each region the ``slices`` consecutive template slices holding the most region voxels
  are taken (fewer when the region is thinner), the same ones for every patient. The output keeps them along
  the last axis, ``(C, H, W, S)``, ascending in z, and ``target_slice`` names the middle one, so that
  ``LesionConcatd(neighbours=1, target_slice="target_slice")`` stacks target and neighbours into channels (the
  paper's lesion concatenation) and ``neighbours=0`` gives the single-slice ablation (paper table 1).
* **Box.** The region's in-plane bounding box over those slices, widened by ``margin_mm`` on every side and, with
  ``square=True``, to a square (so a crop is never stretched more along one axis than the other), is resampled
  to ``spatial_size`` pixels: linear interpolation, widened to a tent of one output pixel when shrinking (the
  anti-aliased bilinear resize of ``torch.nn.functional.interpolate(..., antialias=True)``), edge voxels
  repeated outside the grid. ``spatial_size=None`` keeps the grid's own resolution (voxel values unchanged: what
  the window search's histograms use).
* **Laterality.** ``side`` is the patient's own side (``L`` = RAS x < 0, :func:`monai_stroke.anatomy.side_of_x`).
  Crops of the right hemisphere are mirrored left-right (``mirrored=True``): in every crop the first spatial axis
  runs from lateral to medial, so both hemispheres share one orientation and one network sees them alike. The
  crop's affine keeps the truth (its x spacing is negative when mirrored): voxel -> RAS mm of the template.
* **Contralateral channels** (``contralateral=True``): the same box reflected across the mid-sagittal plane
  x = 0, sampled so that it overlays the ipsilateral crop pixel for pixel (the left-right comparison a
  radiologist makes; the paper's fig. 7 shows the signal is there). Channels ``0..C-1`` are the ipsilateral
  crop, ``C..2C-1`` the contralateral one.
* **Masking** (``mask_outside=True``): pixels whose region fraction is below 0.5 get ``mask_fill_hu`` (default
  -1000 HU, air: below every window, so black in any window and never mistaken for a 2-4 HU hypodensity).
  The contralateral channels are masked with the contralateral region's own mask.

:class:`RegionCropd` also attaches the region's ground-truth category (from ``regions.csv`` rows carried in the
sample) and, given a task, its label (:meth:`TaskDefinition.label_of`: 1, 0, or not part of the task).
:class:`RegionLabeld` does the labelling alone, after a task-independent cache (see ``transforms/README.md``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Transform
from monai.transforms.traits import MultiSampleTrait, ReduceTrait
from monai.utils import MetaKeys, TransformBackends, convert_to_tensor, ensure_tuple, ensure_tuple_rep
from threadpoolctl import threadpool_limits

from monai_stroke.anatomy.atlas import Atlas
from monai_stroke.anatomy.laterality import mirror_side
from monai_stroke.errors import UserInputError
from monai_stroke.manifests.tasks import TaskDefinition, get_task
from monai_stroke.vocabulary import CATEGORIES

__all__ = [
    "MIRRORED_SIDE",
    "MASK_FILL_HU",
    "TARGET_SLICE_KEY",
    "CATEGORY_KEY",
    "REGION_CATEGORIES_KEY",
    "RegionGeometry",
    "RegionCrop",
    "RegionCropd",
    "RegionLabeld",
    "region_categories",
    "region_records",
    "task_window",
]

#: The hemisphere whose crops are mirrored left-right so both sides share one orientation.
MIRRORED_SIDE = "R"
#: Default fill (HU) of voxels outside the region with ``mask_outside=True``: air, below every window.
MASK_FILL_HU = -1000.0
#: Sample key holding the index (along the crop's last axis) of the target slice for :class:`LesionConcatd`.
TARGET_SLICE_KEY = "target_slice"
#: Sample keys of a region's ground-truth category and of its contralateral region's ("" when unknown).
CATEGORY_KEY = "category"
CONTRALATERAL_CATEGORY_KEY = "contralateral_category"
#: Input key holding a patient's region categories (rows ``side, region, category`` of regions.csv).
REGION_CATEGORIES_KEY = "region_categories"
#: Meta keys that describe one native slice each; they do not apply to a crop (and would not collate).
_PER_NATIVE_SLICE_META = ("slice_uids",)
_ALIGN_TOL = 1e-4


def task_window(
    task: str | TaskDefinition, window: Sequence[float] | None = None, tasks_file: str | os.PathLike | None = None
) -> tuple[float, float]:
    """The ``(center, width)`` HU window of a task: its definition's, unless ``window`` overrides it.

    Args:
        task: a task name (see :func:`monai_stroke.manifests.load_tasks`) or definition.
        window: an explicit ``(center, width)`` in HU that wins over the task's (e.g. a window sweep).
        tasks_file: an optional user task file, as for :func:`monai_stroke.manifests.load_tasks`.
    """
    if window is not None:
        try:
            center, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise UserInputError(f"window override {window!r} must be a (center, width) pair in HU") from None
        if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
            raise UserInputError(f"window override {window!r}: center must be finite and width > 0 HU")
        return center, width
    definition = get_task(task, tasks_file)
    return definition.window_center_hu, definition.window_width_hu


def region_categories(value: Any) -> dict[tuple[str, str], str]:
    """Normalise a patient's region categories to ``{(side, region): category}``.

    Args:
        value: rows of ``regions.csv`` for one patient (a DataFrame, or a list of mappings with ``side``,
            ``region``, ``category``), or a mapping from ``(side, region)`` / ``"side:region"`` to category;
            None for none.

    Raises:
        UserInputError: a row lacks a field, a category is unknown, or a region is given twice.
    """
    if value is None:
        return {}
    if isinstance(value, pd.DataFrame):
        value = value.to_dict("records")
    if isinstance(value, Mapping):
        rows = []
        for key, category in value.items():
            side, region = key.split(":", 1) if isinstance(key, str) and ":" in key else (tuple(key) + ("", ""))[:2]
            rows.append({"side": side, "region": region, "category": category})
        value = rows
    out: dict[tuple[str, str], str] = {}
    for row in value:
        try:
            side, region, category = str(row["side"]), str(row["region"]), str(row["category"])
        except (KeyError, TypeError):
            raise UserInputError(
                f"a region category row must have side, region and category (as in regions.csv), got {row!r}"
            ) from None
        if category not in CATEGORIES:
            raise UserInputError(f"region {side} {region}: unknown category {category!r}; use {', '.join(CATEGORIES)}")
        if (side, region) in out:
            raise UserInputError(f"region {side} {region} has two categories in one patient's rows")
        out[(side, region)] = category
    return out


def region_records(dataset: Any, split: str | None = None, image_key: str = "image") -> list[dict[str, Any]]:
    """Input records for the ischemic chain: one dict per patient of a dataset folder.

    Each record is ``{image_key: series path, "patient_id": ..., "split": ..., "region_categories": [rows]}``
    (rows ``side, region, category`` of the patient's ``regions.csv`` entries; empty without labels). The record
    holds no task, so a cache keyed on it is shared by every task.

    Args:
        dataset: a dataset folder path or a loaded :class:`monai_stroke.manifests.Dataset`.
        split: only patients of this split (``train``, ``val``, ``test``); None for all.
        image_key: key of the series path.
    """
    from monai_stroke.manifests.dataset import Dataset, load_dataset

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    patients = ds.patients if split is None else ds.split(split)
    split_of = dict(zip(ds.cohort["patient_id"], ds.cohort["split"], strict=True))
    grouped = dict(list(ds.regions.groupby("patient_id", sort=False)))
    records = []
    for pid in patients:
        rows = grouped.get(pid)
        cats = [] if rows is None else rows[["side", "region", "category"]].to_dict("records")
        records.append(
            {
                image_key: str(ds.series_path(pid)),
                "patient_id": pid,
                "split": split_of[pid],
                REGION_CATEGORIES_KEY: cats,
            }
        )
    return records


# --- geometry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """An axis-aligned RAS grid: world = spacing * index + origin per axis."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: Sequence[int], what: str) -> _Grid:
        affine = np.asarray(affine, dtype=np.float64)
        linear = affine[:3, :3]
        spacing = np.diag(linear).copy()
        if np.abs(linear - np.diag(spacing)).max() > _ALIGN_TOL * max(1.0, np.abs(spacing).max()) or np.any(
            spacing <= 0
        ):
            raise UserInputError(
                f"region crops need {what} on the template grid (axes along RAS +x, +y, +z, as "
                f"RegisterToTemplated writes it), but its affine is\n{np.round(affine, 4)}; register it first"
            )
        return cls(tuple(int(n) for n in shape), spacing, affine[:3, 3].copy())

    def key(self) -> tuple:
        return (self.shape, tuple(np.round(self.spacing, 6)), tuple(np.round(self.origin, 6)))

    def to_index(self, world: np.ndarray, axis: int) -> np.ndarray:
        return (np.asarray(world, dtype=np.float64) - self.origin[axis]) / self.spacing[axis]

    def to_world(self, index: np.ndarray | float, axis: int) -> np.ndarray:
        return np.asarray(index, dtype=np.float64) * self.spacing[axis] + self.origin[axis]


def _labels_on_grid(atlas: Atlas, grid: _Grid) -> np.ndarray:
    """The atlas labels on ``grid`` (nearest neighbour; 0 outside the atlas)."""
    atlas_grid = _Grid.from_affine(atlas.affine, atlas.labels.shape, "the atlas")
    if atlas_grid.key() == grid.key():
        return atlas.labels
    index = []
    valid = []
    for axis in range(3):
        world = grid.to_world(np.arange(grid.shape[axis]), axis)
        idx = np.floor(atlas_grid.to_index(world, axis) + 0.5).astype(np.int64)
        ok = (idx >= 0) & (idx < atlas_grid.shape[axis])
        index.append(np.clip(idx, 0, atlas_grid.shape[axis] - 1))
        valid.append(ok)
    labels = atlas.labels[np.ix_(*index)].copy()
    inside = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    labels[~inside] = 0
    return labels


def _interp_matrix(centres: np.ndarray, n_in: int, scale: float, nearest: bool) -> tuple[int, np.ndarray]:
    """Resampling weights from ``n_in`` input voxels to output pixels centred at ``centres`` (voxel coordinates).

    Linear interpolation (a tent one voxel wide) widened to a tent of ``scale`` voxels when an output pixel spans
    more than one voxel (anti-aliasing); indices beyond the grid repeat the edge voxel. Returns the first input
    index used and the ``(n_out, m)`` weights over input voxels ``start .. start + m - 1``; each row sums to 1.
    """
    # a centre within rounding error of a voxel centre is that voxel: its value is copied, not re-weighted
    snapped = np.round(centres)
    centres = np.where(np.abs(centres - snapped) < 1e-6, snapped, centres)
    if nearest:
        idx = np.clip(np.floor(centres + 0.5).astype(np.int64), 0, n_in - 1)
        start = int(idx.min())
        weights = np.zeros((len(centres), int(idx.max()) - start + 1))
        weights[np.arange(len(centres)), idx - start] = 1.0
        return start, weights
    support = max(1.0, scale)
    lo = int(math.floor(centres.min() - support))
    hi = int(math.ceil(centres.max() + support))
    taps = np.arange(lo, hi + 1)
    raw = np.clip(1.0 - np.abs(taps[None, :] - centres[:, None]) / support, 0.0, None)
    raw /= raw.sum(axis=1, keepdims=True)
    clamped = np.clip(taps, 0, n_in - 1)
    start = int(clamped.min())
    weights = np.zeros((len(centres), int(clamped.max()) - start + 1))
    for j, src in enumerate(clamped - start):  # fold taps beyond the grid onto the edge voxel
        weights[:, src] += raw[:, j]
    return start, weights


@dataclass(frozen=True)
class RegionGeometry:
    """Where one (side, region) crop comes from; all coordinates on the volume's template grid.

    Args:
        side: the patient's side, ``L`` or ``R``.
        region: region name (e.g. ``M2``).
        label: the region's atlas label.
        planes: ``(S, k)`` grid plane indices averaged into each template slice, ascending in z.
        box_mm: ``((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi))`` RAS mm edges of the ipsilateral crop.
        size: output pixels ``(H, W)`` along x and y.
        mirrored: the crop is flipped left-right (right hemisphere).
        target_slice: index of the middle template slice along the crop's last axis.
    """

    side: str
    region: str
    label: int
    planes: np.ndarray
    box_mm: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    size: tuple[int, int]
    mirrored: bool
    target_slice: int

    @property
    def n_slices(self) -> int:
        return int(self.planes.shape[0])

    def pixel_centres_mm(self, axis: int, contralateral: bool = False) -> np.ndarray:
        """RAS mm of the output pixel centres along x (``axis=0``) or y (``axis=1``)."""
        lo, hi = self.box_mm[axis]
        n = self.size[axis]
        step = (hi - lo) / n
        centres = lo + (np.arange(n) + 0.5) * step
        if axis == 0:
            if self.mirrored:
                centres = centres[::-1]
            if contralateral:
                centres = -centres  # reflection across the mid-sagittal plane x = 0
        return centres

    def affine(self, grid: _Grid, contralateral: bool = False) -> np.ndarray:
        """4x4 crop voxel ``(h, w, s)`` -> RAS mm (x spacing negative when the crop is mirrored)."""
        x = self.pixel_centres_mm(0, contralateral)
        y = self.pixel_centres_mm(1)
        z = grid.to_world(self.planes.mean(axis=1), 2)
        out = np.eye(4)
        out[0, 0] = (x[-1] - x[0]) / (len(x) - 1) if len(x) > 1 else (self.box_mm[0][1] - self.box_mm[0][0])
        out[1, 1] = (y[-1] - y[0]) / (len(y) - 1) if len(y) > 1 else (self.box_mm[1][1] - self.box_mm[1][0])
        out[2, 2] = (z[-1] - z[0]) / (len(z) - 1) if len(z) > 1 else grid.spacing[2] * self.planes.shape[1]
        out[:3, 3] = (x[0], y[0], z[0])
        return out


class RegionCrop(Transform, MultiSampleTrait):
    """Cut one crop per (side, region) of an atlas out of a volume on the template grid.

    Input: a channel-first volume ``(C, X, Y, Z)`` in HU on the atlas's template grid (or a coarser grid over the
    same RAS frame, e.g. registration with ``spacing``): a MetaTensor whose affine says so, or a numpy/torch
    array of exactly the atlas's shape. Output: a list of MetaTensors ``(C or 2C, H, W, S)``, one per (side,
    region) in atlas-table order; each one's ``meta`` holds ``side``, ``region``, ``mirrored``,
    ``contralateral``, ``target_slice``, ``template_slices`` (``(S, k)`` grid planes per slice),
    ``template_slice_z_mm``, ``crop_box_mm`` (``(3, 2)`` RAS mm edges), ``slice_thickness_mm``,
    ``atlas_identity``, and the crop's affine; the input's meta is kept otherwise (registration fields included,
    per-native-slice lists dropped). A crop starts with no applied operations: it is not invertible in MONAI's
    sense (inverting the registration on a crop would be wrong); its affine maps it into template space and the
    registration fields from there to the patient (``monai_stroke.transforms.registration.map_to_patient``). See
    the module docstring for the rules.

    Args:
        atlas: an :class:`~monai_stroke.anatomy.Atlas`, an atlas folder, or None for ``Atlas.default()`` (loaded on
            first use).
        spatial_size: output ``(H, W)`` pixels (an int for a square), or None to keep the grid's resolution.
        slices: template slices per region, at most (the paper's 3).
        slice_thickness_mm: thickness of a template slice; consecutive planes of a finer grid are averaged.
        margin_mm: context added around the region's bounding box on every side.
        square: widen the shorter side of the box so a crop keeps the aspect ratio of the anatomy.
        contralateral: add the mirrored contralateral crop as extra channels.
        mask_outside: set pixels outside the region to ``mask_fill_hu``.
        mask_fill_hu: fill value of masked pixels, HU (default -1000, air).
        regions: region names to crop (default: all of the atlas).
        sides: sides to crop (default both).
        mode: ``"bilinear"`` for HU images, ``"nearest"`` for label maps (centre plane of each slab, no averaging).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        atlas: Atlas | str | os.PathLike | None = None,
        spatial_size: int | Sequence[int] | None = (128, 128),
        slices: int = 3,
        slice_thickness_mm: float = 3.0,
        margin_mm: float = 5.0,
        square: bool = True,
        contralateral: bool = False,
        mask_outside: bool = False,
        mask_fill_hu: float = MASK_FILL_HU,
        regions: Sequence[str] | None = None,
        sides: Sequence[str] | None = None,
        mode: str = "bilinear",
    ) -> None:
        if spatial_size is not None:
            size = ensure_tuple_rep(spatial_size, 2)
            if len(size) != 2 or any(
                isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size
            ):
                raise UserInputError(f"spatial_size must be two positive integers (H, W) or None, got {spatial_size!r}")
            spatial_size = (int(size[0]), int(size[1]))
        if isinstance(slices, bool) or not isinstance(slices, (int, np.integer)) or slices < 1:
            raise UserInputError(f"slices must be a positive integer (the paper uses 3), got {slices!r}")
        for name, value in (("slice_thickness_mm", slice_thickness_mm), ("margin_mm", margin_mm)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserInputError(f"{name} must be a non-negative number of mm, got {value!r}")
        if mode not in ("bilinear", "nearest"):
            raise UserInputError(f"mode must be 'bilinear' (HU images) or 'nearest' (label maps), got {mode!r}")
        self._atlas_spec = atlas
        self._atlas: Atlas | None = atlas if isinstance(atlas, Atlas) else None
        self.spatial_size = spatial_size
        self.slices = int(slices)
        self.slice_thickness_mm = float(slice_thickness_mm)
        self.margin_mm = float(margin_mm)
        self.square = bool(square)
        self.contralateral = bool(contralateral)
        self.mask_outside = bool(mask_outside)
        self.mask_fill_hu = float(mask_fill_hu)
        self.regions = None if regions is None else tuple(ensure_tuple(regions))
        self.sides = None if sides is None else tuple(ensure_tuple(sides))
        self.mode = mode
        self._plans: dict[tuple, tuple[np.ndarray, list[RegionGeometry]]] = {}
        self._masks: dict[tuple, torch.Tensor] = {}

    # --- atlas and plan ---------------------------------------------------------------------------------------

    @property
    def atlas(self) -> Atlas:
        """The atlas (loaded on first use)."""
        if self._atlas is None:
            self._atlas = Atlas.default() if self._atlas_spec is None else Atlas.from_dir(self._atlas_spec)
        return self._atlas

    def _selected(self) -> list[tuple[int, str, str]]:
        table = self.atlas.table
        chosen = [(int(lab), s, r) for lab, s, r in table.itertuples(index=False)]
        for what, wanted, have in (("region", self.regions, set(table["region"])), ("side", self.sides, {"L", "R"})):
            if wanted is not None:
                unknown = sorted(set(wanted) - have)
                if unknown:
                    raise UserInputError(
                        f"the atlas has no {what} {', '.join(unknown)}; it has {', '.join(sorted(have))}"
                    )
        if self.regions is not None:
            chosen = [c for c in chosen if c[2] in self.regions]
        if self.sides is not None:
            chosen = [c for c in chosen if c[1] in self.sides]
        return chosen

    def _box(self, grid: _Grid, lo_idx: int, hi_idx: int, axis: int) -> tuple[float, float]:
        lo = float(grid.to_world(lo_idx, axis) - grid.spacing[axis] / 2)
        hi = float(grid.to_world(hi_idx, axis) + grid.spacing[axis] / 2)
        return lo, hi

    def _plan(self, grid: _Grid) -> tuple[np.ndarray, list[RegionGeometry]]:
        """The atlas labels on ``grid`` and every selected region's :class:`RegionGeometry` (cached per grid)."""
        key = grid.key()
        if key in self._plans:
            return self._plans[key]
        labels = _labels_on_grid(self.atlas, grid)
        k = max(1, int(round(self.slice_thickness_mm / grid.spacing[2]))) if self.slice_thickness_mm > 0 else 1
        geometries = []
        for label, side, region in self._selected():
            region_mask = labels == label
            if not region_mask.any():
                raise UserInputError(
                    f"atlas region {side} {region} has no voxel on the volume's grid (shape {grid.shape}); the volume "
                    "must cover the template's brain (register it to the atlas's template)"
                )
            area = region_mask.sum(axis=(0, 1)).astype(np.float64)
            present = np.flatnonzero(area)
            z_min, z_max = int(present[0]), int(present[-1])
            n_slices = min(self.slices, math.ceil((z_max - z_min + 1) / k))
            length = n_slices * k
            if length > grid.shape[2]:
                raise UserInputError(f"the volume has {grid.shape[2]} planes, fewer than a {length}-plane slab")
            # every slab of `length` planes that overlaps the region and lies inside the volume
            starts = np.arange(max(0, z_min - length + 1), min(grid.shape[2] - length, z_max) + 1)
            cumulative = np.concatenate([[0.0], np.cumsum(area)])
            score = cumulative[starts + length] - cumulative[starts]
            centroid_z = float((area * np.arange(len(area))).sum() / area.sum())
            # most region voxels; among equals, the slab centred nearest the region's centroid
            distance = np.abs(starts + (length - 1) / 2 - centroid_z)
            start = int(starts[np.lexsort((distance, -score))[0]])
            planes = (start + np.arange(length)).reshape(n_slices, k)
            in_slab = region_mask[:, :, start : start + length]
            xs = np.flatnonzero(in_slab.any(axis=(1, 2)))
            ys = np.flatnonzero(in_slab.any(axis=(0, 2)))
            box = [self._box(grid, int(idx[0]), int(idx[-1]), axis) for axis, idx in ((0, xs), (1, ys))]
            size = self._size(grid, box, side)
            z_box = self._box(grid, start, start + length - 1, 2)
            geometries.append(
                RegionGeometry(
                    side=side,
                    region=region,
                    label=label,
                    planes=planes,
                    box_mm=(box[0], box[1], z_box),
                    size=size,
                    mirrored=side == MIRRORED_SIDE,
                    target_slice=(n_slices - 1) // 2,
                )
            )
        self._plans[key] = (labels, geometries)
        return self._plans[key]

    def _size(self, grid: _Grid, box: list[tuple[float, float]], side: str) -> tuple[int, int]:
        """Widen ``box`` in place by the margin (and to a square); the output size in pixels."""
        if self.spatial_size is None:
            # keep voxel centres: margin and squaring in whole voxels
            margins = [math.ceil(self.margin_mm / grid.spacing[a] - 1e-9) for a in range(2)]
            box[:] = [
                (lo - m * grid.spacing[a], hi + m * grid.spacing[a])
                for a, ((lo, hi), m) in enumerate(zip(box, margins, strict=True))
            ]
            counts = [int(round((hi - lo) / grid.spacing[a])) for a, (lo, hi) in enumerate(box)]
            if self.square:
                for a in range(2):
                    extra = max(counts) - counts[a]
                    if extra:
                        lo, hi = box[a]
                        # the odd voxel goes to the medial side on both hemispheres, so that the boxes of a
                        # symmetric atlas stay mirror images of each other
                        before = extra // 2 if (a != 0 or side != MIRRORED_SIDE) else extra - extra // 2
                        box[a] = (lo - before * grid.spacing[a], hi + (extra - before) * grid.spacing[a])
                        counts[a] = max(counts)
            return counts[0], counts[1]
        box[:] = [(lo - self.margin_mm, hi + self.margin_mm) for lo, hi in box]
        if self.square:
            half = max(hi - lo for lo, hi in box) / 2
            box[:] = [((lo + hi) / 2 - half, (lo + hi) / 2 + half) for lo, hi in box]
        return self.spatial_size

    # --- sampling ---------------------------------------------------------------------------------------------

    def _weights(self, grid: _Grid, geometry: RegionGeometry, contralateral: bool, nearest: bool):
        out = []
        for axis in range(2):
            centres = grid.to_index(geometry.pixel_centres_mm(axis, contralateral), axis)
            pixel = (geometry.box_mm[axis][1] - geometry.box_mm[axis][0]) / geometry.size[axis]
            out.append(_interp_matrix(centres, grid.shape[axis], pixel / grid.spacing[axis], nearest))
        return out

    def _sample(
        self,
        volume: np.ndarray | torch.Tensor,
        grid: _Grid,
        geometry: RegionGeometry,
        contralateral: bool,
        nearest: bool,
    ) -> torch.Tensor:
        """One crop ``(C, H, W, S)`` of ``volume`` (numpy for CPU data, a torch tensor on an accelerator)."""
        (x0, wx), (y0, wy) = self._weights(grid, geometry, contralateral, nearest)
        flat = geometry.planes.reshape(-1)
        if isinstance(volume, torch.Tensor):
            flat = torch.as_tensor(flat, device=volume.device)
        block = volume[:, x0 : x0 + wx.shape[1], y0 : y0 + wy.shape[1]][..., flat]
        block = block.reshape(*block.shape[:3], *geometry.planes.shape)  # (C, x, y, S, k)
        block = block[..., geometry.planes.shape[1] // 2] if nearest else block.mean(-1)
        # separable resampling as two small matrix products per slice: (C, S, x, y) -> (C, S, H, W)
        if isinstance(volume, torch.Tensor):
            wx_t = torch.as_tensor(wx, dtype=block.dtype, device=block.device)
            wy_t = torch.as_tensor(wy, dtype=block.dtype, device=block.device)
            return (wx_t @ block.permute(0, 3, 1, 2) @ wy_t.T).permute(0, 2, 3, 1)
        # numpy on CPU: torch's thread pool makes products this small ~10-100x slower on a busy machine
        slices = np.ascontiguousarray(block.transpose(0, 3, 1, 2))
        out = wx.astype(block.dtype) @ slices @ np.ascontiguousarray(wy.T, dtype=block.dtype)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 2, 3, 1)))

    def _region_mask(self, labels: np.ndarray, grid: _Grid, geometry: RegionGeometry, contralateral: bool = False):
        """Boolean ``(H, W, S)`` mask of the crop's pixels inside the region (the contralateral region's for the
        contralateral crop): the region fraction, sampled like the image, at least 0.5."""
        key = (grid.key(), geometry.side, geometry.region, contralateral)
        if key in self._masks:
            return self._masks[key]
        label = geometry.label
        if contralateral:
            label = self.atlas.label_of(mirror_side(geometry.side), geometry.region)
        (x0, wx), (y0, wy) = self._weights(grid, geometry, contralateral, nearest=False)
        # only the block the crop samples from, not the whole grid
        block = labels[x0 : x0 + wx.shape[1], y0 : y0 + wy.shape[1], geometry.planes.reshape(-1)] == label
        block = block.reshape(*block.shape[:2], *geometry.planes.shape).mean(axis=-1)
        fraction = (wx @ block.transpose(2, 0, 1) @ wy.T).transpose(1, 2, 0)
        self._masks[key] = torch.from_numpy(fraction >= 0.5)
        return self._masks[key]

    def crop_all(
        self, img: NdarrayOrTensor, with_masks: bool = False
    ) -> list[tuple[RegionGeometry, torch.Tensor, torch.Tensor | None, dict[str, Any]]]:
        """Crops of ``img`` as ``(geometry, crop tensor, mask or None, meta)`` per region (the work of ``__call__``)."""
        if img.ndim != 4:
            raise UserInputError(
                f"RegionCrop expects a channel-first volume (C, X, Y, Z) on the template grid, got shape {tuple(img.shape)}"
            )
        affine = None
        meta_in: dict[str, Any] = {}
        if isinstance(img, MetaTensor):
            affine = convert_to_tensor(img.affine, track_meta=False).cpu().numpy()
            meta_in = dict(img.meta)
            identity = meta_in.get("template_identity")
            if isinstance(identity, str) and identity and identity != self.atlas.template_identity:
                raise UserInputError(
                    f"the volume was registered to template {identity[:12]}.. but the atlas is drawn on template "
                    f"{self.atlas.template_identity[:12]}..; register to the atlas's template (or use its atlas)"
                )
        elif tuple(img.shape[1:]) != tuple(self.atlas.labels.shape):
            raise UserInputError(
                f"a volume without an affine must have the atlas grid's shape {tuple(self.atlas.labels.shape)}, got "
                f"{tuple(img.shape[1:])}; pass a MetaTensor with its affine (e.g. from RegisterToTemplated)"
            )
        if affine is None:
            affine = self.atlas.affine
        grid = _Grid.from_affine(affine, img.shape[1:], "the volume")
        labels, geometries = self._plan(grid)
        volume = convert_to_tensor(img, track_meta=False)
        if not torch.is_floating_point(volume):
            volume = volume.float()
        if volume.device.type == "cpu":
            volume = volume.detach().numpy()  # a view, no copy
        nearest = self.mode == "nearest"
        for key in (*_PER_NATIVE_SLICE_META, MetaKeys.AFFINE, MetaKeys.SPATIAL_SHAPE):
            meta_in.pop(key, None)
        # one BLAS thread: the products are tiny, and a BLAS pool spinning up threads for each of them (worse on a
        # busy machine or inside DataLoader workers) made 20 crops take 0.3-1 s instead of ~50 ms
        with threadpool_limits(limits=1, user_api="blas"):
            return [self._crop_one(volume, labels, grid, g, meta_in, nearest, with_masks) for g in geometries]

    def _crop_one(
        self,
        volume: np.ndarray | torch.Tensor,
        labels: np.ndarray,
        grid: _Grid,
        geometry: RegionGeometry,
        meta_in: dict[str, Any],
        nearest: bool,
        with_masks: bool,
    ) -> tuple[RegionGeometry, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        crop = self._sample(volume, grid, geometry, False, nearest)
        mask = None
        if self.mask_outside or with_masks:
            mask = self._region_mask(labels, grid, geometry)[None]
        if self.mask_outside:
            crop = torch.where(mask, crop, torch.as_tensor(self.mask_fill_hu, dtype=crop.dtype))
        if self.contralateral:
            other = self._sample(volume, grid, geometry, True, nearest)
            other_mask = None
            if self.mask_outside or with_masks:
                other_mask = self._region_mask(labels, grid, geometry, contralateral=True)[None]
            if self.mask_outside:
                other = torch.where(other_mask, other, torch.as_tensor(self.mask_fill_hu, dtype=other.dtype))
            crop = torch.cat([crop, other], dim=0)
            if mask is not None:
                mask = torch.cat([mask, other_mask], dim=0)
        z_mm = grid.to_world(geometry.planes.mean(axis=1), 2)
        meta = {
            **meta_in,
            "side": geometry.side,
            "region": geometry.region,
            "mirrored": geometry.mirrored,
            "contralateral": self.contralateral,
            TARGET_SLICE_KEY: geometry.target_slice,
            "template_slices": torch.as_tensor(geometry.planes, dtype=torch.long),
            "template_slice_z_mm": torch.as_tensor(z_mm, dtype=torch.float64),
            "crop_box_mm": torch.as_tensor(geometry.box_mm, dtype=torch.float64),
            "slice_thickness_mm": float(grid.spacing[2] * geometry.planes.shape[1]),
            "atlas_identity": self.atlas.identity,
            MetaKeys.AFFINE: torch.as_tensor(geometry.affine(grid), dtype=torch.float64),
            MetaKeys.SPATIAL_SHAPE: np.asarray(crop.shape[1:]),
        }
        return geometry, crop.contiguous(), mask, meta

    def __call__(self, img: NdarrayOrTensor) -> list[NdarrayOrTensor]:
        """One crop per (side, region) of ``img`` (channel-first ``(C, X, Y, Z)`` in HU, template grid)."""
        out = []
        for _, crop, _, meta in self.crop_all(img):
            if get_track_meta():
                out.append(MetaTensor(crop, meta=meta))
            else:
                out.append(crop)
        return out


def _label_sample(sample: dict, task: TaskDefinition | None, label_key: str) -> int | None:
    """Write ``label_key`` (float32 ``(1,)``) from the sample's category; the label or None (unknown/not in task)."""
    category = sample.get(CATEGORY_KEY, "")
    if task is None or not category:
        return None
    label = task.label_of(category)
    if label is not None:
        sample[label_key] = torch.tensor([float(label)], dtype=torch.float32)
    return label


class RegionCropd(MapTransform, MultiSampleTrait):
    """Dictionary-based :class:`RegionCrop`: one sample dict per (side, region), like MONAI's crop samplers.

    Every sample holds the crops of ``keys`` (same grid; the first key's grid decides the geometry), the other
    entries of the input (by reference), and: ``side``, ``region``, ``target_slice``, ``patient_id`` (from
    ``patient_id_key``, also in the crop's meta), ``category`` / ``contralateral_category`` (ground truth from
    ``categories_key``; ``""`` when not given), the region ``mask_key`` (uint8 ``(1 or 2, H, W, S)``) when
    asked, and, with a ``task``, ``label_key`` (float32 ``(1,)``: 1 positive, 0 negative). The input's
    ``categories_key`` entry is not copied into the samples.

    Args:
        keys: HU volume keys to crop.
        atlas, spatial_size, slices, slice_thickness_mm, margin_mm, square, contralateral, mask_outside,
            mask_fill_hu, regions, sides: as for :class:`RegionCrop`.
        mode: ``"bilinear"`` or ``"nearest"`` per key (label maps such as a lesion mask: nearest).
        patient_id_key: input key of the (pseudonymous) patient id; copied into each crop's meta.
        categories_key: input key of the patient's region categories (see :func:`region_categories`).
        task: a task name or :class:`TaskDefinition`; None leaves labelling to :class:`RegionLabeld`.
        label_key: sample key of the task label.
        drop_unlabelled: with a task, drop samples whose category is not part of the task or not given while
            the patient has categories (a patient without categories, as at inference, keeps all its regions).
        mask_key: sample key for the region masks (None: not written).
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = RegionCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        atlas: Atlas | str | os.PathLike | None = None,
        spatial_size: int | Sequence[int] | None = (128, 128),
        slices: int = 3,
        slice_thickness_mm: float = 3.0,
        margin_mm: float = 5.0,
        square: bool = True,
        contralateral: bool = False,
        mask_outside: bool = False,
        mask_fill_hu: float = MASK_FILL_HU,
        regions: Sequence[str] | None = None,
        sides: Sequence[str] | None = None,
        mode: str | Sequence[str] = "bilinear",
        patient_id_key: str = "patient_id",
        categories_key: str = REGION_CATEGORIES_KEY,
        task: str | TaskDefinition | None = None,
        label_key: str = "label",
        drop_unlabelled: bool = True,
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        modes = ensure_tuple_rep(mode, len(self.keys))
        options = dict(
            spatial_size=spatial_size,
            slices=slices,
            slice_thickness_mm=slice_thickness_mm,
            margin_mm=margin_mm,
            square=square,
            contralateral=contralateral,
            mask_outside=mask_outside,
            mask_fill_hu=mask_fill_hu,
            regions=regions,
            sides=sides,
        )
        first = RegionCrop(atlas, mode=modes[0], **options)
        # one atlas and one plan cache for all keys: the first cropper lends its atlas to the others
        self.croppers = {
            key: first if m == modes[0] else RegionCrop(atlas, mode=m, **options)
            for key, m in zip(self.keys, modes, strict=True)
        }
        self._first = first
        self.patient_id_key = patient_id_key
        self.categories_key = categories_key
        self.task = None if task is None else get_task(task)
        self.label_key = label_key
        self.drop_unlabelled = drop_unlabelled
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        categories = region_categories(d.pop(self.categories_key, None))
        patient_id = d.get(self.patient_id_key)
        crops: dict[Hashable, list] = {}
        for i, key in enumerate(keys):
            cropper = self.croppers[key]
            if cropper is not self._first:
                cropper._atlas = self._first.atlas
            crops[key] = cropper.crop_all(d[key], with_masks=i == 0 and self.mask_key is not None)
        samples = []
        for i, (geometry, _, mask, _) in enumerate(crops[keys[0]]):
            sample = dict(d)
            for key in keys:
                _, crop, _, meta = crops[key][i]
                if patient_id is not None:
                    meta = {**meta, self.patient_id_key: patient_id}
                sample[key] = MetaTensor(crop, meta=meta) if get_track_meta() else crop
            sample["side"], sample["region"] = geometry.side, geometry.region
            sample[TARGET_SLICE_KEY] = geometry.target_slice
            sample[CATEGORY_KEY] = categories.get((geometry.side, geometry.region), "")
            sample[CONTRALATERAL_CATEGORY_KEY] = categories.get((mirror_side(geometry.side), geometry.region), "")
            if self.mask_key is not None:
                sample[self.mask_key] = mask.to(torch.uint8)
            label = _label_sample(sample, self.task, self.label_key)
            if self.task is not None and self.drop_unlabelled and categories and label is None:
                continue
            samples.append(sample)
        return samples


class RegionLabeld(ReduceTrait):
    """Label region samples for a task and drop those outside it, after a task-independent cache.

    Takes the list of samples :class:`RegionCropd` made for one patient (a ``ReduceTrait``, so MONAI's
    ``Compose`` hands it the whole list and it can drop samples) or a single sample dict, and writes
    ``label_key`` (float32 ``(1,)``) from each sample's ``category`` via :meth:`TaskDefinition.label_of`.

    It is deliberately *not* a ``monai.transforms.Transform``: MONAI's ``PersistentDataset`` and ``CacheDataset``
    cache a chain up to its first random transform or its first callable that is not a ``Transform``, and they
    key the cache by the input item alone. Everything from this transform on depends on the task (label, window),
    so caching must stop here, or a cache folder shared by two tasks would hand one task the other's labels.

    Args:
        task: a task name or :class:`TaskDefinition`.
        label_key: sample key of the label.
        drop_unlabelled: drop samples whose category the task leaves out or that have none while others of the
            same list do (a list without any category, as at inference, is kept whole).
        tasks_file: an optional user task file for a task given by name.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        task: str | TaskDefinition,
        label_key: str = "label",
        drop_unlabelled: bool = True,
        tasks_file: str | os.PathLike | None = None,
    ) -> None:
        self.task = get_task(task, tasks_file)
        self.label_key = label_key
        self.drop_unlabelled = drop_unlabelled

    def __call__(self, data: Mapping | Sequence[Mapping]) -> Any:
        single = isinstance(data, Mapping)
        samples = [dict(data)] if single else [dict(s) for s in data]
        known = any(s.get(CATEGORY_KEY) for s in samples)
        kept = []
        for sample in samples:
            label = _label_sample(sample, self.task, self.label_key)
            if self.drop_unlabelled and known and label is None:
                continue
            kept.append(sample)
        if single:
            return kept[0] if kept else []
        return kept
