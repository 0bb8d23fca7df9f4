"""Bring a published ASPECTS atlas onto the CT template grid.

Two source layouts:

* a **label map** NIfTI plus a table: either ``label,side,region`` (any column order) or ``label,name``
  with a name mapping (``--map``) and/or a ``--pattern`` that reads the side from the name;
* a **folder of binary masks**, one NIfTI per region and side (e.g. ``MNI152_<REGION>_<SIDE>.nii.gz``),
  names parsed with ``--pattern`` (placeholders ``{region}`` and ``{side}``, ``*`` for anything).

Atlases name regions differently (``IC`` is the insular cortex in some, the internal capsule in ours), so
every source name must be mapped to one of our region names (``--map IC=I,PLIC=IC``) unless it already
is one; ``NAME=-`` drops a name, several names may map to one region (their union: putamen + pallidum ->
L), and a target may carry the side (``Caudate_left=C:L``). A source region without a side (one label for
both hemispheres) is split at the mid-sagittal plane (x = 0 in RAS).

Sources are resampled through their affines into the template's world space (the atlas must be in MNI152
space): nearest neighbour for label maps, linear interpolation and a 0.5 threshold for masks (scaled by their
maximum first, so 0/1, 0/255 and percentage maps behave alike). Where masks of different regions overlap
the voxel goes to the region with the larger interpolated value, and the overlaps are reported.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from scipy import ndimage

from monai_stroke.anatomy.atlas import Atlas
from monai_stroke.anatomy.laterality import side_of_x
from monai_stroke.anatomy.template import load_template
from monai_stroke.errors import UserInputError
from monai_stroke.vocabulary import REGIONS, SIDES

__all__ = [
    "RegionTarget",
    "ImportReport",
    "parse_mapping",
    "compile_pattern",
    "resample_to_grid",
    "import_atlas",
    "DEFAULT_MASK_PATTERN",
]

logger = logging.getLogger(__name__)

#: How mask file names are read by default: ``<region>_<side>.nii[.gz]``, e.g. ``M1_L.nii.gz``.
DEFAULT_MASK_PATTERN = "{region}_{side}.nii*"

_SIDE_WORDS = {"l": "L", "left": "L", "lh": "L", "lt": "L", "r": "R", "right": "R", "rh": "R", "rt": "R"}
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class RegionTarget:
    """Where a source name goes: one of our regions, on a given side or (``side=None``) on the side it lies."""

    region: str
    side: str | None = None


@dataclass
class ImportReport:
    """What an import did, for the user and for ``import_report.json``."""

    source: str
    layout: str
    sources: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    unlabelled_values: list[int] = field(default_factory=list)
    overlaps: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- names -----------------------------------------------------------------------------------------------------


def _side_word(text: str) -> str | None:
    return _SIDE_WORDS.get(text.strip().lower())


def _parse_target(name: str, target: str, origin: str, regions: Sequence[str]) -> RegionTarget | None:
    target = target.strip()
    if target in ("-", ""):
        return None
    region, _, side_text = target.partition(":")
    region = region.strip()
    if region not in regions:
        raise UserInputError(
            f"unknown region name {region!r} in {origin} (for {name!r}); the atlas regions are "
            f"{', '.join(regions)} (use NAME=- to drop a name)"
        )
    side = None
    if side_text.strip():
        side = _side_word(side_text)
        if side is None:
            raise UserInputError(f"unknown side {side_text!r} in {origin} (for {name!r}); use L or R")
    return RegionTarget(region, side)


def parse_mapping(specs: Iterable[str] | None, regions: Sequence[str] = REGIONS) -> dict[str, RegionTarget | None]:
    """Read name mappings from ``NAME=REGION[:SIDE]`` lists (comma-separated) or mapping files.

    Args:
        specs: each item is either ``"IC=I,PLIC=IC,Thalamus=-"`` or the path of a file: CSV with columns
            ``name,region`` (and optionally ``side``), or YAML/JSON ``{name: region or "region:side"}``.
        regions: the region names a target may use.

    Returns:
        source name -> :class:`RegionTarget`, or None for names to drop.
    """
    mapping: dict[str, RegionTarget | None] = {}

    def add(name: str, target: str, origin: str) -> None:
        name = name.strip()
        if not name:
            raise UserInputError(f"an empty source name in {origin}")
        parsed = _parse_target(name, target, origin, regions)
        if name in mapping and mapping[name] != parsed:
            raise UserInputError(f"{origin} maps {name!r} twice, to different regions")
        mapping[name] = parsed

    for spec in specs or ():
        path = Path(spec)
        if path.suffix.lower() in (".csv", ".yaml", ".yml", ".json") or path.is_file():
            if not path.is_file():
                raise UserInputError(f"mapping file {path} does not exist")
            for name, target in _read_mapping_file(path):
                add(name, target, f"mapping file {path}")
            continue
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, target = item.partition("=")
            if not sep:
                raise UserInputError(f"--map item {item!r} must look like NAME=REGION (e.g. IC=I) or NAME=-")
            add(name, target, f"--map {item.strip()!r}")
    return mapping


def _read_mapping_file(path: Path) -> list[tuple[str, str]]:
    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if not {"name", "region"} <= set(table.columns):
                raise UserInputError(
                    f"mapping file {path} needs columns name,region (and optionally side); "
                    f"found {', '.join(table.columns)}"
                )
            sides = table["side"] if "side" in table.columns else [""] * len(table)
            return [
                (n, f"{r}:{s}" if s.strip() else r)
                for n, r, s in zip(table["name"], table["region"], sides, strict=True)
            ]
        loaded = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError, pd.errors.ParserError) as exc:
        raise UserInputError(f"cannot read mapping file {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise UserInputError(f"mapping file {path} must hold a mapping name: region (or 'region:side')")
    return [(str(k), "-" if v is None else str(v)) for k, v in loaded.items()]


def compile_pattern(pattern: str) -> re.Pattern:
    """Turn a file/name pattern with ``{region}``, ``{side}`` and ``*`` into a regular expression.

    ``{region}`` matches any text (shortest first), ``{side}`` one of L/R/left/right/lh/rh (any case), ``*``
    any text; everything else literally. The whole name must match.
    """
    if "{region}" not in pattern:
        raise UserInputError(
            f"--pattern {pattern!r} needs a {{region}} placeholder (e.g. 'MNI152_{{region}}_{{side}}.nii.gz')"
        )
    parts = re.split(r"(\{region\}|\{side\}|\*)", pattern)
    out = []
    for part in parts:
        if part == "{region}":
            out.append(r"(?P<region>.+?)")
        elif part == "{side}":
            out.append(r"(?P<side>" + "|".join(sorted(_SIDE_WORDS, key=len, reverse=True)) + ")")
        elif part == "*":
            out.append(r".*?")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


# --- resampling ------------------------------------------------------------------------------------------------


def resample_to_grid(
    data: np.ndarray,
    source_affine: np.ndarray,
    shape: Sequence[int],
    affine: np.ndarray,
    order: int,
) -> np.ndarray:
    """Resample ``data`` (voxel grid ``source_affine``) onto the grid ``(shape, affine)`` through world coordinates.

    Args:
        data: 3D source array.
        source_affine: its voxel -> world (RAS mm) affine.
        shape: target grid shape.
        affine: target voxel -> world affine.
        order: 0 (nearest, labels) or 1 (linear, masks; float32 output).
    """
    out = np.zeros(tuple(shape), dtype=np.float32 if order else data.dtype)
    box, block = _resample_block(data, source_affine, shape, affine, order)
    if box is not None:
        out[box] = block
    return out


def _resample_block(
    data: np.ndarray, source_affine: np.ndarray, shape: Sequence[int], affine: np.ndarray, order: int
) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
    # only the part of the target grid that the source's non-zero voxels can reach is computed: resampling a
    # small region mask onto the 1 mm template then costs little time and memory
    nonzero = np.argwhere(data != 0)
    if nonzero.size == 0:
        return None, None
    to_source = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(affine, dtype=np.float64)
    lo_src, hi_src = nonzero.min(0) - 1.0, nonzero.max(0) + 1.0
    corners = np.array([[hi_src[a] if (n >> a) & 1 else lo_src[a] for a in range(3)] for n in range(8)])
    corners_t = nib.affines.apply_affine(np.linalg.inv(to_source), corners)
    lo = np.maximum(np.floor(corners_t.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(corners_t.max(0)).astype(int) + 2, np.asarray(shape))
    if np.any(hi <= lo):
        return None, None
    block = ndimage.affine_transform(
        data.astype(np.float32) if order else data,
        to_source[:3, :3],
        offset=to_source[:3, :3] @ lo + to_source[:3, 3],
        output_shape=tuple(int(v) for v in hi - lo),
        order=order,
        mode="constant",
        cval=0,
        prefilter=False,
    )
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)), block


# --- sources ---------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    name: str
    side: str | None
    origin: str  # file name or "label N"
    box: tuple[slice, ...] | None  # where on the template grid ``values`` lies; None: nowhere
    values: np.ndarray | None  # float32 in [0, 1]: interpolated mask, or 0/1 for a label


def _load_3d(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise UserInputError(f"{what} {path} does not exist")
    try:
        image = nib.load(path)
        shape = image.shape
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise UserInputError(f"cannot read {what} {path} as NIfTI: {exc}") from exc
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    elif len(shape) != 3:
        raise UserInputError(f"{what} {path} must be a 3D image, got shape {shape}")
    return image


def _mask_sources(
    folder: Path, pattern: str, grid: tuple[tuple[int, ...], np.ndarray], report: ImportReport
) -> list[_Source]:
    regex = compile_pattern(pattern)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_NIFTI_SUFFIXES))
    if not files:
        raise UserInputError(f"mask folder {folder} holds no .nii or .nii.gz files")
    sources = []
    for path in files:
        match = regex.match(path.name)
        if match is None:
            report.ignored_files.append(path.name)
            continue
        image = _load_3d(path, "mask")
        data = np.asarray(image.dataobj, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise UserInputError(f"mask {path} contains NaN or infinite values")
        peak = float(data.max())
        if float(data.min()) < 0 or peak <= 0:
            raise UserInputError(
                f"mask {path} must be non-negative with some voxels above 0 (got {data.min():g}..{peak:g})"
            )
        box, values = _resample_block(data / peak, image.affine, grid[0], grid[1], order=1)
        side = _side_word(match.group("side")) if match.groupdict().get("side") else None
        sources.append(_Source(match.group("region"), side, path.name, box, values))
    if report.ignored_files:
        logger.warning(
            "ignored %d file(s) of %s that do not match --pattern %r: %s",
            len(report.ignored_files),
            folder,
            pattern,
            ", ".join(report.ignored_files[:5]) + (" ..." if len(report.ignored_files) > 5 else ""),
        )
    if not sources:
        raise UserInputError(
            f"no file in {folder} matches --pattern {pattern!r} (files are named like {files[0].name}); "
            "give a pattern with {region} and {side}, e.g. 'MNI152_{region}_{side}.nii.gz'"
        )
    return sources


def _label_sources(
    label_path: Path,
    table_path: Path | None,
    pattern: str | None,
    grid: tuple[tuple[int, ...], np.ndarray],
    report: ImportReport,
) -> list[_Source]:
    if table_path is None:
        raise UserInputError(
            f"{label_path} is a label map: give its table with --table (columns label,side,region or label,name)"
        )
    if not table_path.is_file():
        raise UserInputError(f"table {table_path} does not exist")
    try:
        table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read table {table_path}: {exc}") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if "label" not in table.columns or not ({"region"} <= set(table.columns) or "name" in table.columns):
        raise UserInputError(
            f"table {table_path} needs columns label,side,region or label,name; found {', '.join(table.columns)}"
        )
    name_column = "region" if "region" in table.columns else "name"
    regex = compile_pattern(pattern) if pattern else None
    image = _load_3d(label_path, "label map")
    data = np.asarray(image.dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        if np.any(np.mod(data, 1) != 0):
            raise UserInputError(f"label map {label_path} holds non-integer values; is it a probability map?")
        data = data.astype(np.int32)
    resampled = resample_to_grid(data, image.affine, grid[0], grid[1], order=0)
    boxes = ndimage.find_objects(np.clip(resampled, 0, None).astype(np.int64)) if resampled.any() else []
    present_src = set(np.unique(data).tolist()) - {0}
    labels_in_table = set()
    sources = []
    for row_number, row in enumerate(table.to_dict("records"), start=2):
        try:
            label = int(str(row["label"]).strip())
        except ValueError as exc:
            raise UserInputError(
                f"table {table_path} row {row_number}: label {row['label']!r} is not an integer"
            ) from exc
        if label in labels_in_table:
            raise UserInputError(f"table {table_path} row {row_number}: label {label} appears twice")
        labels_in_table.add(label)
        name = str(row[name_column]).strip()
        side = None
        if "side" in row and str(row["side"]).strip():
            side = _side_word(str(row["side"]))
            if side is None:
                raise UserInputError(f"table {table_path} row {row_number}: side {row['side']!r} is not L or R")
        elif regex is not None and (match := regex.match(name)) is not None:
            # a name that does not match (e.g. one label for both hemispheres) is taken whole, without a side
            name = match.group("region")
            if match.groupdict().get("side"):
                side = _side_word(match.group("side"))
        if label not in present_src:
            report.warnings.append(f"label {label} ({name}) of {table_path.name} has no voxels in {label_path.name}")
        box = boxes[label - 1] if 0 < label <= len(boxes) else None
        values = (resampled[box] == label).astype(np.float32) if box is not None else None
        sources.append(_Source(name, side, f"label {label}", box, values))
    report.unlabelled_values = sorted(present_src - labels_in_table)
    if report.unlabelled_values:
        logger.warning(
            "label value(s) %s of %s have no row in %s and are ignored",
            report.unlabelled_values[:10],
            label_path,
            table_path,
        )
    return sources


# --- the import ------------------------------------------------------------------------------------------------


def import_atlas(
    source: str | os.PathLike,
    *,
    table: str | os.PathLike | None = None,
    mapping: dict[str, RegionTarget | None] | None = None,
    pattern: str | None = None,
    allow_missing: bool = False,
    regions: Sequence[str] = REGIONS,
    template: nib.Nifti1Image | None = None,
) -> tuple[Atlas, ImportReport]:
    """Import a label map + table or a folder of region masks onto the template grid.

    Args:
        source: a label map NIfTI file or a folder of per-region mask NIfTI files (MNI152 space).
        table: the label map's table (CSV): ``label,side,region`` or ``label,name``.
        mapping: source name -> target (see :func:`parse_mapping`); names that are already region names
            need no entry.
        pattern: how names are parsed: file names of masks (default :data:`DEFAULT_MASK_PATTERN`) or, for a
            ``label,name`` table, the names.
        allow_missing: warn instead of failing when some regions/sides are absent.
        regions: the region set the atlas must provide (ASPECTS by default).
        template: the grid to resample onto; the built-in CT template when None.

    Returns:
        ``(atlas, report)``; labels are numbered 1..N for the left side then the right, in ``regions`` order.
    """
    source = Path(source)
    template_image = template if template is not None else load_template()
    grid = (tuple(template_image.shape[:3]), np.asarray(template_image.affine, dtype=np.float64))
    mapping = dict(mapping or {})
    for target in mapping.values():
        if target is not None and target.region not in regions:
            raise UserInputError(f"unknown region name {target.region!r} in the mapping; regions: {', '.join(regions)}")
    if source.is_dir():
        report = ImportReport(source=str(source), layout="masks")
        if table is not None:
            raise UserInputError(f"{source} is a folder of masks; --table is for a label map file")
        sources = _mask_sources(source, pattern or DEFAULT_MASK_PATTERN, grid, report)
    elif source.is_file():
        report = ImportReport(source=str(source), layout="label map")
        sources = _label_sources(source, Path(table) if table is not None else None, pattern, grid, report)
    else:
        raise UserInputError(f"atlas source {source} does not exist (give a label map NIfTI or a folder of masks)")

    # name -> target
    names = sorted({s.name for s in sources})
    unused = sorted(set(mapping) - set(names))
    if unused:
        raise UserInputError(
            f"the mapping names {', '.join(map(repr, unused))}, which {source} does not have; its names are "
            f"{', '.join(names)}"
        )
    unknown = sorted(n for n in names if n not in mapping and n not in regions)
    if unknown:
        raise UserInputError(
            f"{source} names region(s) {', '.join(map(repr, unknown))} that are not atlas regions "
            f"({', '.join(regions)}); map them with --map NAME=REGION (e.g. --map {unknown[0]}=I) or drop them "
            f"with --map {unknown[0]}=-"
        )
    as_is = [n for n in names if n not in mapping]
    if as_is:
        logger.info("taking source name(s) %s as our region names of the same spelling", ", ".join(as_is))

    # group sources by (side, region); a source without a side is split at x = 0
    grouped: dict[tuple[str, str], list[tuple[tuple[slice, ...], np.ndarray]]] = {}
    for src in sources:
        target = mapping[src.name] if src.name in mapping else RegionTarget(src.name)
        if target is None:
            report.dropped.append(f"{src.origin} ({src.name})")
            continue
        side = target.side or src.side
        on_grid = 0 if src.values is None else int(np.count_nonzero(src.values >= 0.5))
        report.sources.append(
            {
                "source": src.origin,
                "name": src.name,
                "region": target.region,
                "side": side or "split at x=0",
                "voxels_on_grid": on_grid,
            }
        )
        if on_grid == 0:
            report.warnings.append(f"{src.origin} ({src.name}) has no voxels on the template grid")
            continue
        if side is not None:
            grouped.setdefault((side, target.region), []).append((src.box, src.values))
            continue
        left = _left_half(grid[1], src.box)
        for part_side, part in (("L", np.where(left, src.values, 0.0)), ("R", np.where(left, 0.0, src.values))):
            if np.any(part >= 0.5):
                grouped.setdefault((part_side, target.region), []).append((src.box, part))

    # paint: a voxel goes to the region with the larger value; overlaps are counted per pair
    labels = np.zeros(grid[0], dtype=np.int16)
    best = np.zeros(grid[0], dtype=np.float32)
    overlaps: dict[tuple[int, int], list[int]] = {}
    for side in SIDES:
        for region in regions:
            if (side, region) not in grouped:
                continue
            label = _label_number(side, region, regions)
            box, values = _union(grouped[(side, region)])
            claim = values >= 0.5
            current, current_best = labels[box], best[box]
            contested = claim & (current != 0)
            wins = claim & ((current == 0) | (values > current_best))
            for other in np.unique(current[contested]):
                pair = overlaps.setdefault((int(other), label), [0, 0])
                pair[0] += int(np.count_nonzero(contested & (current == other) & ~wins))
                pair[1] += int(np.count_nonzero(contested & (current == other) & wins))
            current[wins] = label
            current_best[wins] = values[wins]
    name_of = {_label_number(s, r, regions): f"{s} {r}" for s in SIDES for r in regions}
    report.overlaps = [
        {
            "regions": [name_of[a], name_of[b]],
            "voxels": kept + moved,
            f"to {name_of[a]}": kept,
            f"to {name_of[b]}": moved,
        }
        for (a, b), (kept, moved) in sorted(overlaps.items())
    ]
    if report.overlaps:
        logger.warning(
            "%d voxel(s) claimed by two regions went to the one with the larger mask value (see the import report)",
            sum(o["voxels"] for o in report.overlaps),
        )

    present = set(np.unique(labels).tolist()) - {0}
    rows = [
        (_label_number(side, region, regions), side, region)
        for side in SIDES
        for region in regions
        if _label_number(side, region, regions) in present
    ]
    report.missing = [
        f"{side} {region}"
        for side in SIDES
        for region in regions
        if _label_number(side, region, regions) not in present
    ]
    if report.missing:
        message = f"{source} lacks region(s): {', '.join(report.missing)}"
        if not allow_missing:
            raise UserInputError(message + " (map the names that hold them with --map, or pass --allow-missing)")
        report.warnings.append(message)
        logger.warning("%s", message)
    if not rows:
        raise UserInputError(f"nothing of {source} landed on the template grid: is the atlas in MNI152 space?")
    atlas = Atlas(
        labels=labels,
        affine=grid[1],
        table=pd.DataFrame(rows, columns=["label", "side", "region"]),
        template=template,
    )
    return atlas, report


def _union(parts: list[tuple[tuple[slice, ...], np.ndarray]]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxel-wise maximum of blocks lying in different boxes, on their common bounding box."""
    if len(parts) == 1:
        return parts[0]
    lo = [min(box[a].start for box, _ in parts) for a in range(3)]
    hi = [max(box[a].stop for box, _ in parts) for a in range(3)]
    out = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], dtype=np.float32)
    for box, values in parts:
        sub = tuple(slice(box[a].start - lo[a], box[a].stop - lo[a]) for a in range(3))
        out[sub] = np.maximum(out[sub], values)
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), out


def _label_number(side: str, region: str, regions: Sequence[str]) -> int:
    return regions.index(region) + 1 + (0 if side == "L" else len(regions))


def _left_half(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """Whether each voxel of ``box`` lies in the patient's left hemisphere (world x < 0)."""
    index = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) for b in box], indexing="ij"), axis=-1)
    return side_of_x(nib.affines.apply_affine(affine, index)[..., 0]) == "L"
