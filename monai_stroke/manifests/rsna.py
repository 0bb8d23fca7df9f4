"""RSNA Intracranial Hemorrhage Detection: challenge labels + DICOM folder -> one manifest row per slice.

The challenge ships ``stage_2_train.csv`` (``ID,Label`` with IDs ``ID_<image>_<subtype>``, six rows per image,
some rows repeated) and one DICOM file per slice. The hemorrhage network needs slices in anatomical order (it
stacks neighbouring slices), so the converter reads every file's header (never the pixels), groups slices by
series and orders them by position along the slice normal (:func:`monai_stroke.io.geometry.position_along_normal`),
never by InstanceNumber or file name.

Matching an image to a file: by SOPInstanceUID (RSNA stores ``ID_<image>`` there), else by the file name
without a ``.dcm`` suffix; a leading ``ID_`` is optional on either side, so a plain-UID file matches
``ID_<uid>``. Labelled images without a file, and files without labels, are counted and reported as warnings
(a partial download is normal); every other inconsistency is an error that names the file, image or series.

Files skipped without reading: hidden ones (``.name``) and those whose suffix says they are not DICOM
(``.csv``, ``.nii``, ``.json``, ...). Any other file that is not readable DICOM is an error.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pydicom.config
from pydicom.errors import InvalidDicomError

from monai_stroke.errors import UserInputError
from monai_stroke.io.geometry import position_along_normal, slice_normal
from monai_stroke.manifests.schemas import RSNA_SLICES_COLUMNS, read_rsna_labels
from monai_stroke.utils import atomic_path
from monai_stroke.vocabulary import HEMORRHAGE_LABELS

__all__ = ["RsnaConversion", "build_rsna_slices", "convert_rsna", "NON_DICOM_SUFFIXES"]

logger = logging.getLogger(__name__)

#: Suffixes of files the converter does not try to read as DICOM.
NON_DICOM_SUFFIXES: tuple[str, ...] = (
    ".csv",
    ".json",
    ".txt",
    ".md",
    ".yaml",
    ".yml",
    ".nii",
    ".nii.gz",
    ".png",
    ".jpg",
    ".jpeg",
    ".zip",
    ".npy",
    ".npz",
    ".pt",
    ".py",
)
_DICOM_SUFFIXES = (".dcm", ".dicom")
_HEADER_TAGS = [
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
]
# slices of one series must share their plane; a gantry-tilted series still does (its tilt is in the IOP)
_MAX_NORMAL_ANGLE_DEG = 1.0
# two images closer than this along the normal are at the same place
_SAME_POSITION_MM = 1e-3
_LISTED = 10
# below this many files, starting worker processes costs more than it saves
_MIN_FILES_FOR_WORKERS = 1000


@dataclass(frozen=True)
class _Header:
    path: str
    sop_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    position: tuple[float, ...] = ()
    orientation: tuple[float, ...] = ()
    error: str = ""


@dataclass
class RsnaConversion:
    """What a conversion found (counts; no patient data).

    Args:
        labelled_images: images in the labels file (after dropping identical repeated rows).
        duplicate_label_rows: identical repeated rows dropped from the labels file.
        files_read: files read as DICOM.
        files_skipped: hidden or non-DICOM-suffix files not read.
        slices: rows written (labelled images with a file).
        series: series among them.
        studies: studies among them.
        labels_without_dicom: labelled images with no matching file.
        dicom_without_labels: DICOM files whose image has no labels.
        duplicate_files: extra files holding an image already found (same series and position), dropped.
    """

    labelled_images: int = 0
    duplicate_label_rows: int = 0
    files_read: int = 0
    files_skipped: int = 0
    slices: int = 0
    series: int = 0
    studies: int = 0
    labels_without_dicom: int = 0
    dicom_without_labels: int = 0
    duplicate_files: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _strip_id(image_id: str) -> str:
    return image_id[3:] if image_id.startswith("ID_") else image_id


def _stem(path: str) -> str:
    name = os.path.basename(path)
    # only a DICOM suffix is removed: file names that are UIDs ("1.2.840.113619.2.5") have dots of their own
    for suffix in _DICOM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _floats(value: object, n: int) -> tuple[float, ...]:
    if value is None:
        return ()
    values = tuple(float(v) for v in (value if isinstance(value, Iterable) and not isinstance(value, str) else [value]))
    return values if len(values) == n and all(math.isfinite(v) for v in values) else ()


def _is_orientation(values: tuple[float, ...]) -> bool:
    try:
        slice_normal(values)
    except ValueError:  # missing, or row and column directions parallel (a corrupt header)
        return False
    return True


def _read_header(path: str) -> _Header:
    """The header fields the converter needs; a problem becomes ``error`` (so a worker process never raises)."""
    try:
        # RSNA stores "ID_<hex>" in UID elements; pydicom would warn once per file (750k lines) about each
        with pydicom.config.disable_value_validation():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            sop = str(ds.get("SOPInstanceUID", "") or "")
            if not sop and getattr(ds, "file_meta", None) is not None:
                sop = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
            return _Header(
                path=path,
                sop_uid=sop.strip(),
                study_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
                series_uid=str(ds.get("SeriesInstanceUID", "") or "").strip(),
                position=_floats(ds.get("ImagePositionPatient"), 3),
                orientation=_floats(ds.get("ImageOrientationPatient"), 6),
            )
    except InvalidDicomError:
        return _Header(path=path, error="is not a DICOM file (no DICM preamble)")
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files raise many different errors
        return _Header(path=path, error=f"cannot be read as DICOM ({type(exc).__name__}: {' '.join(str(exc).split())})")


def _list_files(folders: Sequence[Path], exclude: set[Path]) -> tuple[list[str], int]:
    files, skipped = [], 0
    for folder in folders:
        if not folder.exists():
            raise UserInputError(f"DICOM folder {folder} does not exist; check the path")
        if not folder.is_dir():
            raise UserInputError(f"{folder} is not a folder; give the folder that holds the DICOM files")
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(root, name)
                if name.startswith(".") or name.lower().endswith(NON_DICOM_SUFFIXES) or path.resolve() in exclude:
                    skipped += 1
                else:
                    files.append(str(path))
    return files, skipped


def _read_headers(files: list[str], workers: int) -> list[_Header]:
    if workers <= 1 or len(files) < _MIN_FILES_FOR_WORKERS:
        return [_read_header(f) for f in files]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_read_header, files, chunksize=256))


def _raise_listed(errors: list[str], what: str) -> None:
    if errors:
        shown = "; ".join(errors[:_LISTED])
        more = f"; and {len(errors) - _LISTED} more" if len(errors) > _LISTED else ""
        raise UserInputError(f"{len(errors)} {what}: {shown}{more}")


def _examples(values: Sequence[str], n: int = 3) -> str:
    return ", ".join(values[:n]) + (", ..." if len(values) > n else "")


def _match(headers: list[_Header], labelled: pd.Index) -> tuple[dict[str, list[_Header]], list[str]]:
    """Labelled image id -> the files holding it; and the files with no labels."""
    by_key = {_strip_id(i): i for i in labelled}
    matched: dict[str, list[_Header]] = {}
    unlabelled = []
    for header in headers:
        image = by_key.get(_strip_id(header.sop_uid)) if header.sop_uid else None
        if image is None:
            image = by_key.get(_strip_id(_stem(header.path)))
        if image is None:
            unlabelled.append(header.path)
        else:
            matched.setdefault(image, []).append(header)
    return matched, unlabelled


def _one_file_per_image(matched: dict[str, list[_Header]]) -> tuple[dict[str, _Header], int, list[str]]:
    chosen, duplicates, errors = {}, 0, []
    for image, headers in matched.items():
        for h in headers:
            missing = [
                name
                for name, ok in (
                    ("StudyInstanceUID", h.study_uid),
                    ("SeriesInstanceUID", h.series_uid),
                    ("ImagePositionPatient", h.position),
                    ("ImageOrientationPatient", _is_orientation(h.orientation)),
                )
                if not ok
            ]
            if missing:
                errors.append(f"{h.path} (image {image}) lacks a valid {', '.join(missing)}")
        if len(headers) > 1:
            first = headers[0]
            same = all(
                (h.series_uid, h.position, h.orientation) == (first.series_uid, first.position, first.orientation)
                for h in headers[1:]
            )
            if not same:
                errors.append(
                    f"image {image} is in {len(headers)} files that differ: {_examples([h.path for h in headers])}"
                )
            duplicates += len(headers) - 1
        chosen[image] = headers[0]
    return chosen, duplicates, errors


def _order_series(chosen: dict[str, _Header]) -> tuple[pd.DataFrame, list[str]]:
    """One row per image with slice_index/position_mm along its series' normal, and the series' problems."""
    rows = pd.DataFrame(
        {
            "image_id": list(chosen),
            "study_uid": [h.study_uid for h in chosen.values()],
            "series_uid": [h.series_uid for h in chosen.values()],
            "path": [h.path for h in chosen.values()],
        }
    )
    headers = list(chosen.values())
    positions = np.empty(len(rows))
    index = np.empty(len(rows), dtype=np.int64)
    errors = []
    cos_limit = math.cos(math.radians(_MAX_NORMAL_ANGLE_DEG))
    for series, group in rows.groupby("series_uid", sort=False):
        members = group.sort_values("path").index.to_numpy()
        studies = rows.loc[members, "study_uid"].unique()
        if len(studies) > 1:
            errors.append(f"series {series} is in {len(studies)} studies ({_examples(list(studies))})")
        reference = headers[members[0]].orientation
        normal = slice_normal(reference)
        for m in members[1:]:
            if float(np.dot(slice_normal(headers[m].orientation), normal)) < cos_limit:
                errors.append(
                    f"series {series}: {headers[m].path} lies in another plane than {headers[members[0]].path} "
                    f"(normals more than {_MAX_NORMAL_ANGLE_DEG:g} degree apart); a series must be one stack"
                )
                break
        # one normal for the whole series, so that positions are comparable
        where = np.array([position_along_normal(headers[m].position, reference) for m in members])
        order = np.argsort(where, kind="stable")
        gaps = np.diff(where[order])
        for k in np.flatnonzero(gaps < _SAME_POSITION_MM)[:3]:
            a, b = rows.at[members[order[k]], "image_id"], rows.at[members[order[k + 1]], "image_id"]
            errors.append(f"series {series}: images {a} and {b} are at the same position {where[order[k]]:.3f} mm")
        positions[members] = where
        index[members[order]] = np.arange(len(members))
    rows["slice_index"] = index
    rows["position_mm"] = np.round(positions, 4)
    return rows, errors


def build_rsna_slices(
    labels: str | os.PathLike | pd.DataFrame,
    dicom_dir: str | os.PathLike | Sequence[str | os.PathLike],
    relative_to: str | os.PathLike | None = None,
    workers: int = 1,
) -> tuple[pd.DataFrame, RsnaConversion]:
    """The RSNA slice table: one row per labelled image that has a DICOM file, in slice order per series.

    Args:
        labels: the challenge's ``ID,Label`` CSV, or the frame :func:`read_rsna_labels` returns.
        dicom_dir: the folder (searched recursively) or folders holding the DICOM files.
        relative_to: write ``dicom_path`` relative to this folder (None: absolute paths).
        workers: processes reading headers in parallel (the real set has ~750k files).

    Returns:
        The table (columns ``RSNA_SLICES_COLUMNS`` + ``dicom_path``, sorted by study, series, slice_index) and
        the counts of what was found.

    Raises:
        UserInputError: unreadable files, labelled files lacking geometry or UIDs, one image in differing files,
            a series spanning studies or planes, two images at one position, or no file matching any label.
    """
    label_path = None if isinstance(labels, pd.DataFrame) else Path(labels)
    wide = read_rsna_labels(label_path) if label_path is not None else labels
    missing = [c for c in HEMORRHAGE_LABELS if c not in wide.columns]
    if missing:
        raise UserInputError(f"the labels frame lacks column {', '.join(missing)}; read it with read_rsna_labels")
    folders = [Path(dicom_dir)] if isinstance(dicom_dir, (str, os.PathLike)) else [Path(d) for d in dicom_dir]
    exclude = {label_path.resolve()} if label_path is not None else set()
    files, skipped = _list_files(folders, exclude)
    where = ", ".join(map(str, folders))
    if not files:
        raise UserInputError(f"no DICOM files in {where}; give the folder of the challenge's .dcm files")
    headers = _read_headers(files, workers)
    _raise_listed([f"{h.path} {h.error}" for h in headers if h.error], f"files in {where} are not readable DICOM")

    matched, unlabelled = _match(headers, wide.index)
    if not matched:
        raise UserInputError(
            f"none of the {len(files)} DICOM files in {where} matches an image of the labels (by SOPInstanceUID or "
            "file name); check that the labels and the folder belong together"
        )
    chosen, duplicate_files, errors = _one_file_per_image(matched)
    _raise_listed(errors, "problems with labelled DICOM files")
    table, errors = _order_series(chosen)
    _raise_listed(errors, "problems with series")

    table = table.join(wide.astype("int8"), on="image_id")
    base = Path(relative_to).resolve() if relative_to is not None else None
    table["dicom_path"] = [
        Path(os.path.relpath(Path(p).resolve(), base)).as_posix() if base else str(Path(p).resolve())
        for p in table["path"]
    ]
    table = table.sort_values(["study_uid", "series_uid", "slice_index"], kind="stable").reset_index(drop=True)
    table = table[[*RSNA_SLICES_COLUMNS, "dicom_path"]]

    without_dicom = sorted(set(wide.index) - set(chosen))
    report = RsnaConversion(
        labelled_images=len(wide),
        duplicate_label_rows=int(wide.attrs.get("duplicate_rows", 0)),
        files_read=len(files),
        files_skipped=skipped,
        slices=len(table),
        series=table["series_uid"].nunique(),
        studies=table["study_uid"].nunique(),
        labels_without_dicom=len(without_dicom),
        dicom_without_labels=len(unlabelled),
        duplicate_files=duplicate_files,
    )
    if without_dicom:
        logger.warning(
            "%d labelled images have no DICOM file in %s and are left out (e.g. %s)",
            len(without_dicom),
            where,
            _examples(without_dicom),
        )
    if unlabelled:
        logger.warning(
            "%d DICOM files have no labels and are left out (e.g. %s)", len(unlabelled), _examples(unlabelled)
        )
    if duplicate_files:
        logger.warning(
            "%d files repeat an image already found (same series and position) and are dropped", duplicate_files
        )
    return table, report


def convert_rsna(
    labels_csv: str | os.PathLike,
    dicom_dir: str | os.PathLike | Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    workers: int = 1,
) -> RsnaConversion:
    """Convert the RSNA challenge labels + DICOM folder into a slice manifest CSV (written atomically).

    ``dicom_path`` in the output is relative to the output's folder, like every path in a manifest.

    Args:
        labels_csv: ``stage_2_train.csv`` (``ID,Label``).
        dicom_dir: the folder of DICOM files (searched recursively), or several folders.
        out_csv: the slice manifest to write.
        workers: processes reading headers in parallel.

    Raises:
        UserInputError: see :func:`build_rsna_slices`; nothing is written then.
    """
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise UserInputError(f"--out {out_csv} is a folder; give the CSV file to write")
    table, report = build_rsna_slices(labels_csv, dicom_dir, relative_to=out_csv.parent.resolve(), workers=workers)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return report
