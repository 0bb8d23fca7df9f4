"""The ASPECTS region atlas: an integer label map on the CT template's grid plus a ``label,side,region`` table.

Side ``L``/``R`` is the patient's own left/right; on the RAS grid the patient's left is x < 0
(:func:`monai_stroke.anatomy.side_of_x`). An atlas folder holds ``template.nii.gz`` (the HU template the
labels are drawn on), ``atlas.nii.gz`` (int16 labels, 0 = no region) and ``regions.csv``.

``Atlas.default()`` is the built-in approximation (see :mod:`monai_stroke.anatomy.default_atlas` and
docs/atlas.md); ``Atlas.from_dir`` reads an exported or imported one. Every later stage takes the atlas as
configuration and records :attr:`Atlas.identity` in its contract.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from monai_stroke.anatomy.default_atlas import DEFAULT_ATLAS_RECIPE, build_default_labels
from monai_stroke.anatomy.laterality import side_of_x
from monai_stroke.anatomy.template import (
    _build_lock,
    cache_root,
    image_identity,
    load_template,
    template_identity,
    tissue_maps,
)
from monai_stroke.errors import UserInputError
from monai_stroke.utils import atomic_dir, write_json_atomic
from monai_stroke.vocabulary import SIDES

__all__ = ["Atlas", "ATLAS_FILES", "read_regions_table"]

logger = logging.getLogger(__name__)

#: The files of an atlas folder.
ATLAS_FILES: dict[str, str] = {"template": "template.nii.gz", "labels": "atlas.nii.gz", "table": "regions.csv"}

_TABLE_COLUMNS = ["label", "side", "region"]
# reports a command may leave in an atlas folder; replacing such a folder is safe
_REPORT_FILES = {"import_report.json"}
_memo: dict[str, tuple[np.ndarray, np.ndarray, pd.DataFrame]] = {}


def _canonical_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [col for col in _TABLE_COLUMNS if col not in table.columns]
    if missing:
        raise UserInputError(
            f"{source}: the region table needs columns {','.join(_TABLE_COLUMNS)}; missing {', '.join(missing)} "
            f"(found {', '.join(map(str, table.columns))})"
        )
    table = table[_TABLE_COLUMNS].copy()
    try:
        labels = pd.to_numeric(table["label"], errors="raise")
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"{source}: the label column must hold integers ({exc})") from exc
    if (labels != labels.round()).any() or (labels <= 0).any() or (labels > np.iinfo(np.int16).max).any():
        raise UserInputError(f"{source}: labels must be integers from 1 to 32767 (0 is 'no region')")
    table["label"] = labels.astype(int)
    table["side"] = table["side"].astype(str).str.strip()
    table["region"] = table["region"].astype(str).str.strip()
    bad_sides = sorted(set(table["side"]) - set(SIDES))
    if bad_sides:
        raise UserInputError(f"{source}: side must be L or R (the patient's own side), got {', '.join(bad_sides)}")
    if (table["region"] == "").any():
        raise UserInputError(f"{source}: a row has an empty region name")
    duplicated = table["label"][table["label"].duplicated()].tolist()
    if duplicated:
        raise UserInputError(f"{source}: label(s) {duplicated} appear more than once in the region table")
    pairs = table[["side", "region"]].apply(tuple, axis=1)
    if pairs.duplicated().any():
        dup = [f"{s} {r}" for s, r in pairs[pairs.duplicated()]]
        raise UserInputError(f"{source}: region(s) {', '.join(dup)} appear more than once in the region table")
    return table.sort_values("label").reset_index(drop=True)


def read_regions_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check an atlas's ``regions.csv`` (columns ``label,side,region``)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"region table {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read region table {path}: {exc}") from exc
    return _canonical_table(table, str(path))


@dataclass(frozen=True, eq=False)
class Atlas:
    """An ASPECTS region atlas on a CT template grid.

    Args:
        labels: integer label map ``(X, Y, Z)`` on the template grid; 0 is no region.
        affine: 4x4 voxel -> RAS mm affine of the grid.
        table: DataFrame with columns ``label, side, region`` (one row per label).
        template: the HU template the labels are drawn on (same grid); the built-in template when None.
        check: verify that every region has voxels, that every label has a row, and that each region lies on
            the side its table row says (centroid x < 0 for L).
    """

    labels: np.ndarray
    affine: np.ndarray
    table: pd.DataFrame
    template: nib.Nifti1Image | None = None
    check: bool = True

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 3:
            raise UserInputError(f"an atlas label map must be 3D, got shape {labels.shape}")
        if not (np.issubdtype(labels.dtype, np.integer) or np.all(np.mod(labels, 1) == 0)):
            raise UserInputError("an atlas label map must hold integers")
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int16).max):
            raise UserInputError(f"atlas labels must lie in 0..32767, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.int16, copy=True)
        labels.flags.writeable = False
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise UserInputError(f"an atlas affine must be 4x4, got {affine.shape}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "table", _canonical_table(pd.DataFrame(self.table), "atlas"))
        if self.template is not None and (
            tuple(self.template.shape[:3]) != labels.shape or not np.allclose(self.template.affine, affine, atol=1e-4)
        ):
            raise UserInputError(
                f"the atlas labels (shape {labels.shape}) are not on the grid of its template "
                f"(shape {tuple(self.template.shape)}); resample them with 'monai-stroke atlas import'"
            )
        if self.check:
            self.validate()

    # --- construction ---------------------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Atlas:
        """The built-in 20-region ASPECTS atlas on the CT template (built once, then read from the cache)."""
        labels, affine, table = _default_arrays()
        return cls(labels=labels, affine=affine, table=table, template=None, check=False)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Atlas:
        """Read an atlas folder (``template.nii.gz``, ``atlas.nii.gz``, ``regions.csv``).

        Args:
            path: the folder, as written by :meth:`to_dir` or ``monai-stroke atlas export/import``.
        """
        path = Path(path)
        if not path.is_dir():
            raise UserInputError(f"atlas folder {path} does not exist (make one with 'monai-stroke atlas export')")
        files = {key: path / name for key, name in ATLAS_FILES.items()}
        missing = [f.name for f in files.values() if not f.is_file()]
        if missing:
            raise UserInputError(
                f"atlas folder {path} lacks {', '.join(missing)}; an atlas folder holds "
                f"{', '.join(ATLAS_FILES.values())} (write one with 'monai-stroke atlas export' or 'atlas import')"
            )
        template = _load_nifti(files["template"], "template")
        label_image = _load_nifti(files["labels"], "label map")
        data = np.asarray(label_image.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3 or (not np.issubdtype(data.dtype, np.integer) and np.any(np.mod(data, 1) != 0)):
            raise UserInputError(f"{files['labels']} must be a 3D integer label map, got shape {data.shape}")
        return cls(
            labels=data,
            affine=label_image.affine,
            table=read_regions_table(files["table"]),
            template=template,
        )

    def to_dir(self, path: str | os.PathLike, overwrite: bool = True, extras: dict[str, Any] | None = None) -> Path:
        """Write ``template.nii.gz`` (HU), ``atlas.nii.gz`` (int16) and ``regions.csv`` into ``path`` atomically.

        Args:
            path: the folder; it appears complete or not at all. An existing folder is replaced only when it
                holds nothing but atlas files (so a mistyped ``--out`` cannot wipe unrelated data).
            overwrite: replace an existing atlas folder.
            extras: more JSON files to write into the folder, ``{file name: object}`` (e.g. an import report).
        """
        path = Path(path)
        extras = dict(extras or {})
        if path.exists():
            if not path.is_dir():
                raise UserInputError(f"{path} exists and is not a folder; give a folder for the atlas")
            if not overwrite:
                raise UserInputError(f"atlas folder {path} exists; choose another folder")
            allowed = set(ATLAS_FILES.values()) | _REPORT_FILES | set(extras)
            foreign = sorted(p.name for p in path.iterdir() if p.name not in allowed)
            if foreign:
                raise UserInputError(
                    f"{path} exists and holds other files ({', '.join(foreign[:5])}); give a new or empty folder"
                )
        template = self.template_image
        with atomic_dir(path, overwrite=overwrite) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; an exported atlas is meant to be shared
            template_out = nib.Nifti1Image(np.asarray(template.dataobj, dtype=np.float32), template.affine)
            template_out.header.set_xyzt_units("mm")
            nib.save(template_out, tmp / ATLAS_FILES["template"])
            label_image = nib.Nifti1Image(np.asarray(self.labels, dtype=np.int16), self.affine)
            label_image.header.set_xyzt_units("mm")
            label_image.header.set_intent("label")
            nib.save(label_image, tmp / ATLAS_FILES["labels"])
            self.table.to_csv(tmp / ATLAS_FILES["table"], index=False)
            for name, obj in extras.items():
                write_json_atomic(tmp / name, obj)
        return path

    # --- identity -------------------------------------------------------------------------------------------

    @property
    def template_image(self) -> nib.Nifti1Image:
        """The HU template the labels are drawn on."""
        return self.template if self.template is not None else load_template()

    @functools.cached_property
    def template_identity(self) -> str:
        """Identity of the template (see :func:`monai_stroke.anatomy.template_identity`)."""
        return template_identity() if self.template is None else image_identity(self.template)

    @functools.cached_property
    def identity(self) -> str:
        """SHA-256 over the label map, its affine, the region table and the template identity."""
        digest = hashlib.sha256()
        labels = np.ascontiguousarray(self.labels, dtype=np.int16)
        digest.update(f"{labels.shape}".encode())
        digest.update(labels.tobytes())
        digest.update(np.ascontiguousarray(self.affine, dtype=np.float64).tobytes())
        digest.update(self.table.to_csv(index=False).encode())
        digest.update(self.template_identity.encode())
        return digest.hexdigest()

    # --- regions --------------------------------------------------------------------------------------------

    @property
    def regions(self) -> list[tuple[str, str]]:
        """``(side, region)`` pairs in label order."""
        return list(zip(self.table["side"], self.table["region"], strict=True))

    def label_of(self, side: str, region: str) -> int:
        """The integer label of a region on a side (``"L"``/``"R"``, the patient's own)."""
        hit = self.table[(self.table["side"] == side) & (self.table["region"] == region)]
        if hit.empty:
            known = ", ".join(f"{s} {r}" for s, r in self.regions)
            raise UserInputError(f"the atlas has no region {region!r} on side {side!r}; it has: {known}")
        return int(hit["label"].iloc[0])

    def region_mask(self, side: str, region: str) -> np.ndarray:
        """Boolean mask of one region on the template grid."""
        return self.labels == self.label_of(side, region)

    def bounding_box(self, side: str, region: str, margin_vox: int = 0) -> tuple[slice, slice, slice]:
        """Voxel-index slices (stop exclusive) enclosing a region, widened by ``margin_vox`` and clipped to the grid.

        ``atlas.labels[atlas.bounding_box("L", "C")]`` is the smallest block holding the left caudate.
        """
        box = self._objects[self.label_of(side, region) - 1]
        return tuple(
            slice(max(0, s.start - margin_vox), min(n, s.stop + margin_vox))
            for s, n in zip(box, self.labels.shape, strict=True)
        )

    def centroid_mm(self, side: str, region: str) -> np.ndarray:
        """Centre of mass of a region in RAS world millimetres, shape ``(3,)``."""
        label = self.label_of(side, region)
        return self._centroids_mm[label]

    def volume_ml(self, side: str, region: str) -> float:
        """Volume of a region in millilitres."""
        label = self.label_of(side, region)
        return float(self._counts[label] * self.voxel_volume_ml)

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def summary(self) -> pd.DataFrame:
        """One row per region: label, side, region, voxels, volume (mL), centroid and z range (RAS mm)."""
        rows = []
        for label, side, region in self.table.itertuples(index=False):
            centroid = self._centroids_mm[label]
            box = self._objects[label - 1]
            corners = nib.affines.apply_affine(
                self.affine, np.array([[s.start for s in box], [s.stop - 1 for s in box]], dtype=float)
            )
            rows.append(
                {
                    "label": label,
                    "side": side,
                    "region": region,
                    "voxels": int(self._counts[label]),
                    "volume_ml": round(float(self._counts[label] * self.voxel_volume_ml), 3),
                    "x_mm": round(float(centroid[0]), 1),
                    "y_mm": round(float(centroid[1]), 1),
                    "z_mm": round(float(centroid[2]), 1),
                    "z_min_mm": round(float(corners[:, 2].min()), 1),
                    "z_max_mm": round(float(corners[:, 2].max()), 1),
                }
            )
        return pd.DataFrame(rows)

    def validate(self) -> None:
        """Check that labels and table agree and that each region lies on its table side.

        Raises:
            UserInputError: naming every region without voxels, every unnamed label, and every region whose
                centroid is on the other side (a left-right flip: LPS data read as RAS, or swapped names).
        """
        present = set(np.unique(self.labels).tolist()) - {0}
        named = set(self.table["label"])
        problems = []
        unnamed = sorted(present - named)
        if unnamed:
            problems.append(f"label(s) {unnamed} in the label map have no row in the region table")
        empty = [f"{s} {r} (label {lab})" for lab, s, r in self.table.itertuples(index=False) if lab not in present]
        if empty:
            problems.append(f"region(s) {', '.join(empty)} have no voxels")
        if not problems:
            flipped = []
            for label, side, region in self.table.itertuples(index=False):
                x = float(self._centroids_mm[label][0])
                if side_of_x(x) != side:
                    flipped.append(f"{side} {region} (centroid x = {x:+.1f} mm)")
            if flipped:
                problems.append(
                    f"region(s) {', '.join(flipped)} lie on the other side: in RAS the patient's left is x < 0; "
                    "check the side names or whether the atlas's affine flips left and right"
                )
        if problems:
            raise UserInputError("invalid atlas: " + "; ".join(problems))

    # --- cached per-label statistics ------------------------------------------------------------------------

    @functools.cached_property
    def _counts(self) -> np.ndarray:
        return np.bincount(self.labels.ravel().clip(0), minlength=int(self.table["label"].max()) + 1)

    @functools.cached_property
    def _objects(self) -> list:
        objects = ndimage.find_objects(self.labels.clip(0), max_label=int(self.table["label"].max()))
        return [o if o is not None else tuple(slice(0, 0) for _ in range(3)) for o in objects]

    @functools.cached_property
    def _centroids_mm(self) -> dict[int, np.ndarray]:
        # per bounding box: a region is a small part of the grid, so this is far cheaper than a full-grid pass
        centroids = {}
        for label in (int(v) for v in self.table["label"]):
            box = self._objects[label - 1]
            index = np.argwhere(self.labels[box] == label)
            if index.size == 0:
                centroids[label] = np.full(3, np.nan)
                continue
            centre = index.mean(axis=0) + np.array([s.start for s in box])
            centroids[label] = nib.affines.apply_affine(self.affine, centre)
        return centroids


def _load_nifti(path: Path, what: str) -> nib.Nifti1Image:
    try:
        image = nib.load(path)
        image.get_data_dtype()
        return image
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise UserInputError(f"cannot read the atlas {what} {path}: {exc}") from exc


def _default_arrays() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Build (once) or read the default atlas from the cache; keyed by the recipe and the template identity."""
    template = load_template()
    key = hashlib.sha256(f"{DEFAULT_ATLAS_RECIPE}:{template_identity()}".encode()).hexdigest()
    folder = cache_root() / "anatomy" / f"atlas-{key[:16]}"
    if str(folder) in _memo:
        return _memo[str(folder)]
    files = {"labels": folder / ATLAS_FILES["labels"], "table": folder / ATLAS_FILES["table"]}
    if not all(f.is_file() for f in files.values()):
        with _build_lock(folder.with_name(f".{folder.name}.lock")):
            if not all(f.is_file() for f in files.values()):
                logger.info("building the default ASPECTS atlas (once) into %s", folder)
                tissues = {name: np.asarray(img.dataobj) for name, img in tissue_maps().items()}
                labels, rows = build_default_labels(tissues["gm"], tissues["wm"], tissues["csf"], template.affine)
                table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
                try:
                    with atomic_dir(folder, overwrite=False) as tmp:
                        nib.save(nib.Nifti1Image(labels, template.affine), tmp / ATLAS_FILES["labels"])
                        table.to_csv(tmp / ATLAS_FILES["table"], index=False)
                except OSError:
                    if not all(f.is_file() for f in files.values()):
                        raise
    labels = np.asarray(nib.load(files["labels"]).dataobj).astype(np.int16)
    table = read_regions_table(files["table"])
    entry = (labels, template.affine.copy(), table)
    _memo[str(folder)] = entry
    return entry
