"""A folder of DICOM files -> one CT series as HU on a regular grid with its true geometry.

Real head CT folders are messy; in reading order this module

1. reads the header of every file (any name, any order, subfolders; pixel data is deferred, so a header pass costs
   little), keeping validation warnings of pydicom (invalid UIDs are common in anonymised data) without any
   patient name, ID or birth date;
2. skips what is not a slice of a volume: non-DICOM files (a warning), non-image objects (RTSTRUCT, SR,
   presentation states, DICOMDIR) and LOCALIZER/scout images;
3. groups image files by SeriesInstanceUID and chooses the axial CT series (or the one named), else fails listing
   the candidates with their slice counts;
4. orders the slices by their position along the slice normal (never file name, InstanceNumber or raw z),
   drops identical duplicates, refuses conflicting ones, and finds missing slices and uneven steps;
5. decodes the pixels (compressed transfer syntaxes through pydicom's plugins; a missing decoder names the package
   to install) and converts stored values to HU: ``stored * RescaleSlope + RescaleIntercept``, PixelPaddingValue
   -> air, and the RSNA ICH 12-bit wrap corrected;
6. un-shears a gantry tilt by in-plane resampling (or keeps it in the affine), see
   :func:`monai_stroke.io.geometry.regularize_stack`, and converts the LPS geometry to a RAS affine.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_stroke.errors import MissingDependencyError, UserInputError
from monai_stroke.io.geometry import (
    LPS_TO_RAS,
    RegularStack,
    SpacingCheck,
    check_spacing,
    position_along_normal,
    regularize_stack,
    slice_normal,
)
from monai_stroke.io.volume import AIR_HU, CTVolume

__all__ = [
    "load_dicom_series",
    "stored_to_hu",
    "DECODER_PACKAGES",
    "LOCALIZER_IMAGE_TYPES",
]

#: pip packages that give pydicom a decoder, by transfer syntax UID (what the "missing decoder" error suggests).
DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE lossless
}
#: ImageType values that mark a projection scout rather than a slice.
LOCALIZER_IMAGE_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# an axial series has its slice normal within 45 degrees of the body axis (gantry tilts reach 30 degrees)
_AXIAL_MIN_COS = float(np.cos(np.radians(45.0)))
# slices closer than this along the normal are the same slice (positions are written with ~1e-3 mm precision)
_SAME_POSITION_MM = 0.02
_ORIENTATION_ATOL = 1e-3
# attributes that identify the patient: never in a message, log or output
_IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames")
# VRs whose values are safe to quote in a warning (UIDs, numbers, code strings)
_QUOTABLE_VRS = frozenset({"UI", "DS", "IS", "CS", "US", "SS", "UL", "SL", "FL", "FD", "AT"})
_VR_WARNING = re.compile(r"Invalid value for VR (\w\w): (.*?)\.?( Please see .*)?$", re.S)


@dataclass
class _Header:
    """What ingest needs from one file's header; the dataset is kept so the pixel data can be read later."""

    path: Path
    name: str  # path relative to the input folder: short, and says which file without the full tree
    ds: Any
    series_uid: str
    sop_uid: str
    modality: str
    image_type: tuple[str, ...]
    has_pixels: bool
    frames: int
    orientation: np.ndarray | None
    position: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    transfer_syntax: str
    rescale: tuple[float, float] | None
    bits_stored: int
    bits_allocated: int
    pixel_representation: int
    padding: tuple[float, float] | None
    series_description: str
    series_number: str
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (grouping key, message)

    @property
    def is_localizer(self) -> bool:
        return bool(LOCALIZER_IMAGE_TYPES.intersection(self.image_type))

    @property
    def is_image(self) -> bool:
        return self.has_pixels and not self.is_localizer


@dataclass
class _Scan:
    """The result of reading every header of a folder."""

    folder: Path
    headers: list[_Header]
    not_dicom: list[str]
    damaged: list[tuple[str, str, str | None]]  # (file, reason, its series if the header says): unusable DICOM
    non_image: Counter

    def image_series(self) -> dict[str, list[_Header]]:
        series: dict[str, list[_Header]] = defaultdict(list)
        for h in self.headers:
            if h.is_image:
                series[h.series_uid].append(h)
        return dict(series)


def load_dicom_series(
    path: str | os.PathLike,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    correct_tilt: bool = True,
    spacing_tolerance: float = 0.1,
    interpolation_order: int = 1,
) -> CTVolume:
    """Read one CT series from a folder of DICOM files.

    Args:
        path: the folder (searched recursively), or one DICOM file whose folder is read and whose series is chosen.
        series_uid: SeriesInstanceUID to read; needed when the folder holds more than one axial CT series.
        allow_gaps: accept missing slices (a step that is a whole multiple of the nominal spacing) and fill each
            by linear interpolation between its neighbours, reported in ``summary["filled_slices"]`` and the
            warnings. By default a missing slice is an error that names where it is. Uneven steps that are not a
            multiple of the spacing are always an error: a regular grid cannot hold them without resampling.
        correct_tilt: remove a gantry-tilt shear by in-plane resampling (default, an orthogonal affine as
            registration needs); False keeps the stored pixels and puts the shear in the affine.
        spacing_tolerance: relative tolerance on the step between slices (0.1 = 10% of the nominal spacing).
        interpolation_order: spline order of the in-plane un-shear shift (1 = linear).

    Raises:
        UserInputError: the folder holds no readable CT series; the message says why, naming files and options.
    """
    path = Path(path)
    folder, from_file = (path.parent, path) if path.is_file() else (path, None)
    scan = _scan_folder(folder)
    if from_file is not None and series_uid is None:
        series_uid = _series_of_file(scan, from_file)
    warnings_out: list[str] = []
    _check_damaged(scan, None, warnings_out)
    uid, slices = _choose_series(scan, series_uid)
    _check_damaged(scan, uid, warnings_out)
    if scan.not_dicom:
        warnings_out.append(f"skipped {_not_dicom(len(scan.not_dicom))}: {_names(scan.not_dicom)}")
    return _build_volume(
        scan, uid, slices, warnings_out, allow_gaps, correct_tilt, spacing_tolerance, interpolation_order, path
    )


# --- reading headers -----------------------------------------------------------------------------------------------


def _list_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        # hidden entries are never slices (and hold our own in-progress atomic writes)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return files


def _scan_folder(folder: Path) -> _Scan:
    if not folder.is_dir():
        raise UserInputError(f"{folder} is not a folder: give a folder of DICOM files or a .nii/.nii.gz file")
    files = _list_files(folder)
    if not files:
        raise UserInputError(f"{folder} is empty: give a folder that holds the DICOM files of a CT series")
    scan = _Scan(folder, [], [], [], Counter())
    for file in files:
        name = file.relative_to(folder).as_posix()
        kind, ds, captured = _read_dataset(file)
        if kind == "not_dicom":
            scan.not_dicom.append(name)
            continue
        if kind == "damaged":
            scan.damaged.append((name, ds, None))  # ds is the reason here
            continue
        header = _header(file, name, ds, captured)
        if header is None:
            scan.damaged.append((name, "its header is incomplete (no SeriesInstanceUID/SOPInstanceUID)", None))
        elif not header.has_pixels:
            if header.modality == "CT" and _is_image_storage(ds):
                scan.damaged.append((name, "it is a CT image without pixel data (truncated?)", header.series_uid))
            else:
                scan.non_image[_object_kind(ds, header.modality)] += 1
        else:
            scan.headers.append(header)
    if not scan.headers and not scan.non_image and not scan.damaged:
        raise UserInputError(
            f"{folder} holds no DICOM files ({_not_dicom(len(scan.not_dicom))}: "
            f"{_names(scan.not_dicom)}): give the folder of the CT series' DICOM files or a .nii/.nii.gz file"
        )
    return scan


def _read_dataset(file: Path) -> tuple[str, Any, list[str]]:
    """Read a header, pixel data deferred.

    Returns:
        ("ok", dataset, pydicom's warnings), ("not_dicom", None, []) or ("damaged", reason, []).
    """
    import pydicom

    try:
        with open(file, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        return "damaged", f"it cannot be read ({exc.strerror})", []
    has_magic = len(head) == 132 and head[128:] == b"DICM"
    # files without the preamble are accepted only when they start like a raw DICOM stream (group 0002 or 0008):
    # forcing pydicom onto arbitrary files (a large NIfTI, a PDF) would parse garbage
    if not has_magic and head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return "not_dicom", None, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(file, defer_size="2 KB", force=not has_magic)
            sop = ds.get("SOPInstanceUID")
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
            if has_magic:
                return "damaged", f"it cannot be parsed ({type(exc).__name__}: {_one_line(exc)})", []
            return "not_dicom", None, []
    if not has_magic and sop is None:
        return "not_dicom", None, []
    return "ok", ds, [str(w.message) for w in caught]


def _header(file: Path, name: str, ds: Any, captured: list[str]) -> _Header | None:
    """What ingest needs from a dataset, with its warnings (None when it has no series or instance UID)."""
    from pydicom.uid import UID

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series_uid = _text(ds.get("SeriesInstanceUID"))
        sop_uid = _text(ds.get("SOPInstanceUID"))
        modality = _text(ds.get("Modality")).upper()
        sop_class = _text(ds.get("SOPClassUID"))
        if (
            sop_class == _DICOMDIR_SOP_CLASS
            or _text(ds.file_meta.get("MediaStorageSOPClassUID")) == _DICOMDIR_SOP_CLASS
        ):
            modality = "DICOMDIR"
        has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        if not series_uid or not sop_uid:
            if modality == "DICOMDIR":
                series_uid = sop_uid = f"DICOMDIR:{name}"
            else:
                return None
        geometry_problem = ""
        try:
            orientation = _floats(ds.get("ImageOrientationPatient"), 6)
            position = _floats(ds.get("ImagePositionPatient"), 3)
            spacing = _floats(ds.get("PixelSpacing"), 2)
        except (TypeError, ValueError) as exc:
            orientation = position = spacing = None
            geometry_problem = f"{name}: unreadable geometry ({_one_line(exc)})"
        rescale = None
        if "RescaleSlope" in ds or "RescaleIntercept" in ds:
            rescale = (_float(ds.get("RescaleSlope"), 1.0) or 1.0, _float(ds.get("RescaleIntercept"), 0.0))
        padding = None
        if "PixelPaddingValue" in ds:
            value = _float(ds.get("PixelPaddingValue"), None)
            limit = _float(ds.get("PixelPaddingRangeLimit"), value)
            if value is not None:
                padding = (value, limit)
        transfer_syntax = _text(ds.file_meta.get("TransferSyntaxUID"))
        if not transfer_syntax:
            # a raw stream without file meta: pydicom needs the syntax it was read with to decode pixels
            from pydicom.dataset import FileMetaDataset
            from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

            implicit, little = ds.original_encoding
            syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            if not hasattr(ds, "file_meta") or ds.file_meta is None:
                ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = syntax
            transfer_syntax = str(syntax)
        image_type = ds.get("ImageType") or ()
        image_type = (image_type,) if isinstance(image_type, str) else tuple(image_type)
        header = _Header(
            path=file,
            name=name,
            ds=ds,
            series_uid=series_uid,
            sop_uid=sop_uid,
            modality=modality,
            image_type=tuple(_text(v).upper() for v in image_type),
            has_pixels=has_pixels,
            frames=int(_float(ds.get("NumberOfFrames"), 1) or 1),
            orientation=None if orientation is None else np.array(orientation),
            position=None if position is None else np.array(position),
            pixel_spacing=None if spacing is None else (spacing[0], spacing[1]),
            rows=int(ds.get("Rows") or 0),
            columns=int(ds.get("Columns") or 0),
            transfer_syntax=transfer_syntax,
            rescale=rescale,
            bits_stored=int(ds.get("BitsStored") or 16),
            bits_allocated=int(ds.get("BitsAllocated") or 16),
            pixel_representation=int(ds.get("PixelRepresentation") or 0),
            padding=padding,
            series_description=_text(ds.get("SeriesDescription")),
            series_number=_text(ds.get("SeriesNumber")),
        )
        for label in ("SeriesInstanceUID", "SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
            value = _text(ds.get(label))
            if value and not value.startswith("DICOMDIR:") and not UID(value).is_valid:
                header.warnings.append((f"uid:{label}", f"{label} {value!r} is not a valid DICOM UID"))
        if geometry_problem:
            header.warnings.append(("geometry", geometry_problem))
        for tag in ("WindowCenter", "WindowWidth"):
            value = ds.get(tag)
            if value is not None and not isinstance(value, str | int | float) and len(value) > 1:
                values = [_float(v, None) for v in value]
                header.warnings.append((f"multi:{tag}", f"{tag} has {len(values)} values {values}: the first is used"))
        identifying = [_text(ds.get(tag)) for tag in _IDENTIFYING]
    for message in captured + [str(w.message) for w in caught]:
        header.warnings.append(_pydicom_warning(message, identifying))
    return header


def _pydicom_warning(message: str, identifying: Sequence[str]) -> tuple[str, str]:
    """A pydicom warning as (grouping key, message), with values of identifying VRs withheld."""
    match = _VR_WARNING.match(message.strip())
    if match:
        vr, value = match.group(1), match.group(2)
        if vr not in _QUOTABLE_VRS:
            value = "(value withheld)"
        message = f"pydicom: invalid value for VR {vr}: {value}"
        key = f"vr:{vr}"
    else:
        message = "pydicom: " + _one_line(message)
        key = message
    for value in identifying:
        for part in {value, *value.replace("^", " ").split()}:
            if len(part) >= 2:
                message = message.replace(part, "***")
    return key, message


def _is_image_storage(ds: Any) -> bool:
    from pydicom.uid import UID

    sop_class = _text(ds.get("SOPClassUID")) or _text(ds.file_meta.get("MediaStorageSOPClassUID"))
    return "Image Storage" in UID(sop_class).name if sop_class else False


def _object_kind(ds: Any, modality: str) -> str:
    """A short name for a non-image object (RTSTRUCT, SR, PR, DICOMDIR, ...)."""
    return modality or _text(ds.get("SOPClassUID")) or "unknown"


def _series_of_file(scan: _Scan, file: Path) -> str:
    for h in scan.headers:
        if h.path == file:
            if h.is_localizer:
                raise UserInputError(f"{file} is a localizer (scout) image, not a slice: give its folder instead")
            return h.series_uid
    raise UserInputError(f"{file} is not a DICOM image: give a folder of DICOM files or a .nii/.nii.gz file")


# --- choosing the series -------------------------------------------------------------------------------------------


def _axial(normal: np.ndarray) -> bool:
    return abs(float(normal[2])) >= _AXIAL_MIN_COS


def _disqualification(slices: list[_Header]) -> str:
    """Why a series cannot be read as an axial CT volume ("" when it can)."""
    first = slices[0]
    if first.modality != "CT":
        return f"modality {first.modality or 'missing'}"
    if any(h.frames > 1 for h in slices):
        return "multi-frame (enhanced) CT"
    if any(h.orientation is None or h.position is None or h.pixel_spacing is None for h in slices):
        return "no slice geometry (ImageOrientationPatient/ImagePositionPatient/PixelSpacing)"
    if len(_same_position_groups(np.sort([_position_of(h) for h in slices]))) < 2:
        return "a single slice"
    if not _axial(slice_normal(first.orientation)):
        return "not axial"
    return ""


def _position_of(header: _Header) -> float:
    return position_along_normal(header.position, header.orientation)


def _describe(uid: str, slices: list[_Header], reason: str = "") -> str:
    first = slices[0]
    details = [first.modality or "no modality", _count(len(slices), "slice")]
    if first.series_description:
        details.append(repr(first.series_description))
    if reason:
        details.append(reason)
    return f"{uid} ({', '.join(details)})"


def _choose_series(scan: _Scan, series_uid: str | None) -> tuple[str, list[_Header]]:
    series = scan.image_series()
    localizers = sum(h.is_localizer for h in scan.headers)
    if series_uid is not None:
        if series_uid not in series:
            listing = "; ".join(_describe(u, s) for u, s in series.items()) or "none"
            raise UserInputError(
                f"series {series_uid} is not an image series in {scan.folder} (image series found: {listing}): "
                "pass one of those to --series"
            )
        reason = _disqualification(series[series_uid])
        if reason and reason != "not axial":
            raise UserInputError(
                f"series {_describe(series_uid, series[series_uid], reason)} cannot be read as a CT volume"
            )
        return series_uid, series[series_uid]
    if not series:
        found = ", ".join(f"{kind} x{n}" for kind, n in sorted(scan.non_image.items()))
        extra = f", {_count(localizers, 'localizer image')}" if localizers else ""
        raise UserInputError(
            f"{scan.folder} holds no CT image series (only non-image objects: {found or 'none'}{extra}): "
            "give the folder of the CT series"
        )
    ct = {u: s for u, s in series.items() if s[0].modality == "CT"}
    if not ct:
        found = "; ".join(_describe(u, s) for u, s in series.items())
        raise UserInputError(
            f"{scan.folder} holds no CT series, only {found}: monai-stroke reads non-contrast head CT; give a CT series"
        )
    reasons = {u: _disqualification(s) for u, s in ct.items()}
    qualified = [u for u, r in reasons.items() if not r]
    if len(qualified) == 1:
        return qualified[0], ct[qualified[0]]
    listing = "; ".join(_describe(u, ct[u], reasons[u]) for u in ct)
    if not qualified:
        raise UserInputError(
            f"{scan.folder} holds no axial CT series with 2 or more slices ({listing}): give the folder that holds "
            "the whole axial series, or name a series with --series UID"
        )
    raise UserInputError(
        f"{scan.folder} holds {len(qualified)} axial CT series: {listing}; choose one with --series UID "
        "(series_uid= in Python)"
    )


def _check_damaged(scan: _Scan, uid: str | None, warnings_out: list[str]) -> None:
    """Fail on damaged files that may belong to the series read (``uid``; None: those of unknown series).

    A file whose header cannot be read may be a slice of any series, so it always fails the ingest: a volume with
    a silently missing end slice is worse than an error. One whose header names another series is a warning.
    """
    suspects = [d for d in scan.damaged if d[2] is None or d[2] == uid]
    if suspects:
        file, reason, _ = suspects[0]
        others = f" (and {_count(len(suspects) - 1, 'more damaged file')})" if len(suspects) > 1 else ""
        raise UserInputError(
            f"{scan.folder / file}: {reason}{others}; it may be a slice of the series: copy it again from the source "
            "(the file is truncated or corrupt) or remove it from the folder"
        )
    if uid is not None:
        others = [d[0] for d in scan.damaged]
        if others:
            warnings_out.append(f"skipped {_count(len(others), 'damaged file')} of other series: {_names(others)}")


# --- building the volume -------------------------------------------------------------------------------------------


def _build_volume(
    scan: _Scan,
    uid: str,
    slices: list[_Header],
    warnings_out: list[str],
    allow_gaps: bool,
    correct_tilt: bool,
    spacing_tolerance: float,
    interpolation_order: int,
    source: Path,
) -> CTVolume:
    first = slices[0]
    if not _axial(slice_normal(first.orientation)):
        warnings_out.append(f"series {uid} is not axial (ImageOrientationPatient {first.orientation.tolist()})")
    _check_consistent(slices)
    series_values = _series_values(first)
    # sort by position along the normal; the file name only breaks ties so that duplicates are found in a fixed order
    slices = sorted(slices, key=lambda h: (_position_of(h), h.name))
    positions = np.array([_position_of(h) for h in slices])
    groups = _same_position_groups(positions)
    unique = [group[0] for group in groups]
    spacing = check_spacing(positions[unique], tolerance=spacing_tolerance)
    output_index = _output_index(spacing, slices, unique, positions, allow_gaps)
    _check_decoders(slices)
    # decode straight into one preallocated stack: one copy of the pixels, HU computed in place
    stack = np.empty((len(unique), first.rows, first.columns), dtype=np.float32)
    stats = Counter()
    kept: list[_Header] = []
    duplicates_dropped = 0
    for k, group in enumerate(groups):
        _decode_hu(slices[group[0]], stack[k], stats)
        for other in group[1:]:
            candidate = np.empty_like(stack[k])
            _decode_hu(slices[other], candidate, Counter())
            if not np.array_equal(candidate, stack[k]):
                raise UserInputError(
                    f"conflicting duplicate slices at {positions[group[0]]:.2f} mm along the slice normal: "
                    f"{slices[group[0]].name} and {slices[other].name} have different pixels; remove the one that "
                    "does not belong to this series"
                )
            duplicates_dropped += 1
        kept.append(slices[group[0]])
    if duplicates_dropped:
        warnings_out.append(f"dropped {_count(duplicates_dropped, 'identical duplicate slice')}")
    regular = regularize_stack(
        stack,
        np.array([h.position for h in kept]),
        first.orientation[:3],
        first.orientation[3:],
        first.pixel_spacing,
        output_index=output_index,
        correct_tilt=correct_tilt,
        fill_value=AIR_HU,
        order=interpolation_order,
    )
    if regular.filled:
        warnings_out.append(
            f"filled {_count(len(regular.filled), 'missing slice')} by linear interpolation (output slices "
            f"{list(regular.filled)}; --allow-gaps)"
        )
    slice_uids: list[str | None] = [None] * len(regular.stack)
    slice_files: list[str | None] = [None] * len(regular.stack)
    for h, k in zip(kept, output_index, strict=True):
        slice_uids[k], slice_files[k] = h.sop_uid, str(h.path)
    # (Z, rows, columns) -> (X, Y, Z): a view, Fortran-ordered as NIfTI stores it
    array = regular.stack.transpose(2, 1, 0)
    affine = LPS_TO_RAS @ regular.affine
    _add_header_warnings(slices, scan, uid, stats, warnings_out)
    summary = _summary(
        source, uid, first, slices, array, affine, regular, duplicates_dropped, stats, scan, series_values, warnings_out
    )
    return CTVolume(array=array, affine=affine, summary=summary, slice_uids=slice_uids, slice_files=slice_files)


def _check_consistent(slices: list[_Header]) -> None:
    first = slices[0]
    for h in slices[1:]:
        if not np.allclose(h.orientation, first.orientation, atol=_ORIENTATION_ATOL):
            raise UserInputError(
                f"slices of series {first.series_uid} have different orientations: {first.name} "
                f"{first.orientation.tolist()} vs {h.name} {h.orientation.tolist()}; split the series or remove the "
                "odd files"
            )
        if (h.rows, h.columns) != (first.rows, first.columns) or not np.allclose(h.pixel_spacing, first.pixel_spacing):
            raise UserInputError(
                f"slices of series {first.series_uid} differ in size: {first.name} {first.rows}x{first.columns} "
                f"pixels of {first.pixel_spacing} mm vs {h.name} {h.rows}x{h.columns} of {h.pixel_spacing} mm; "
                "remove the odd files"
            )


def _same_position_groups(positions: np.ndarray) -> list[list[int]]:
    groups: list[list[int]] = [[0]]
    for k in range(1, len(positions)):
        if positions[k] - positions[groups[-1][0]] < _SAME_POSITION_MM:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _output_index(
    spacing: SpacingCheck, slices: list[_Header], unique: list[int], positions: np.ndarray, allow_gaps: bool
) -> list[int]:
    """Output slice index of each unique slice; raises on missing slices (unless allowed) and uneven steps."""

    def where(k: int) -> str:
        a, b = slices[unique[k]], slices[unique[k + 1]]
        return (
            f"between {positions[unique[k]]:.2f} mm ({a.name}) and {positions[unique[k + 1]]:.2f} mm ({b.name}) "
            f"along the slice normal: step {spacing.steps_mm[k]:.2f} mm vs {spacing.nominal_mm:.2f} mm"
        )

    if spacing.uneven:
        spots = "; ".join(where(k) for k in spacing.uneven[:3])
        raise UserInputError(
            f"uneven slice spacing in series {slices[0].series_uid}, {spots}: this series cannot be put on a regular "
            "grid without resampling; check that no slice is missing or foreign, or give a series with regular spacing"
        )
    if spacing.gaps and not allow_gaps:
        spots = "; ".join(f"{_count(n, 'missing slice')} {where(k)}" for k, n in spacing.gaps[:3])
        more = f" (and {len(spacing.gaps) - 3} more gaps)" if len(spacing.gaps) > 3 else ""
        raise UserInputError(
            f"series {slices[0].series_uid} has {spots}{more}: copy the missing files again, or pass --allow-gaps "
            "(allow_gaps=True) to fill them by interpolation"
        )
    index, current = [0], 0
    extra = dict(spacing.gaps)
    for k in range(len(unique) - 1):
        current += 1 + extra.get(k, 0)
        index.append(current)
    return index


def _check_decoders(slices: list[_Header]) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    for syntax in sorted({h.transfer_syntax for h in slices}):
        example = next(h for h in slices if h.transfer_syntax == syntax)
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            raise UserInputError(
                f"{example.name}: transfer syntax {syntax} ({UID(syntax).name}) is not supported by pydicom; "
                "convert the series to an uncompressed or standard compressed syntax (e.g. with dcmtk's dcmdjpeg)"
            ) from None
        if not available:
            raise _missing_decoder(example, syntax)


def _missing_decoder(header: _Header, syntax: str) -> MissingDependencyError:
    from pydicom.uid import UID

    packages = DECODER_PACKAGES.get(syntax, "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    return MissingDependencyError(
        f"{header.path}: pixel data is compressed as {UID(syntax).name} ({syntax}) and no installed decoder reads it; "
        f"install one with: pip install {packages}"
    )


def _decode_hu(header: _Header, out: np.ndarray, stats: Counter) -> None:
    """Decode one slice's pixels and write its HU into ``out`` (rows, columns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoder chatter; header warnings were captured on the header pass
        try:
            stored = header.ds.pixel_array
        except RuntimeError as exc:
            if "Unable to decompress" in str(exc):
                raise _missing_decoder(header, header.transfer_syntax) from None
            raise _damaged_pixels(header, exc) from None
        except Exception as exc:  # noqa: BLE001 - any failure here means the file's pixel data is unusable
            raise _damaged_pixels(header, exc) from None
    if stored.shape != out.shape:
        raise UserInputError(
            f"{header.name}: pixel data has shape {stored.shape}, expected ({header.rows}, {header.columns}) "
            "(a colour or multi-frame image in a CT series?); remove the file"
        )
    slope, intercept = header.rescale if header.rescale is not None else (1.0, 0.0)
    if header.rescale is None:
        stats["no_rescale"] += 1
    wrapped, padded = stored_to_hu(
        stored,
        slope,
        intercept,
        bits_stored=header.bits_stored,
        pixel_representation=header.pixel_representation,
        padding=header.padding,
        out=out,
    )
    stats["rsna_wrap"] += int(wrapped)
    stats["padding_pixels"] += padded
    # the dataset holds a cached copy of the pixels: drop it, the stack is the only copy we need
    header.ds = None


def _damaged_pixels(header: _Header, exc: BaseException) -> UserInputError:
    return UserInputError(
        f"{header.path}: its pixel data cannot be read ({type(exc).__name__}: {_one_line(exc)}); the file is "
        "truncated or corrupt: copy it again from the source or remove it"
    )


def stored_to_hu(
    stored: np.ndarray,
    slope: float,
    intercept: float,
    bits_stored: int = 16,
    pixel_representation: int = 0,
    padding: tuple[float, float] | None = None,
    out: np.ndarray | None = None,
) -> tuple[bool, int]:
    """Convert stored pixel values to HU in place into ``out``: ``HU = stored * slope + intercept``.

    Pixels whose stored value is the PixelPaddingValue (or within [PixelPaddingValue, PixelPaddingRangeLimit])
    become air (:data:`AIR_HU`). The RSNA ICH quirk: some files say BitsStored 12, PixelRepresentation 0
    (unsigned) and an intercept near 0 while the 12 bits hold a signed (two's complement) HU; their air shows up
    as stored values near 3072. When ``bits_stored == 12``, ``pixel_representation == 0`` and ``intercept > -100``,
    stored values >= 2048 wrap to ``value - 4096``. The RSNA winning solutions add 1000, subtract 4096 from values
    >= 4096 and use intercept -1000; both readings agree for every HU in [-1000, 2047], and two's complement also
    keeps air below -1000 (e.g. -1024) negative.

    Args:
        stored: the stored values (pydicom's ``pixel_array``), 2D.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        bits_stored: BitsStored.
        pixel_representation: 0 unsigned, 1 signed.
        padding: (PixelPaddingValue, PixelPaddingRangeLimit or the same value), in stored units, or None.
        out: float32 output of the same shape (allocated when None).

    Returns:
        (whether the RSNA wrap was applied, number of padding pixels set to air).
    """
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    padding_mask = None
    if padding is not None:
        lo, hi = sorted(padding)
        lo, hi = _as_stored(lo, stored.dtype), _as_stored(hi, stored.dtype)
        padding_mask = (stored == lo) if lo == hi else (stored >= lo) & (stored <= hi)
    wrapped = bits_stored == 12 and pixel_representation == 0 and intercept > -100
    if wrapped:
        values = stored.astype(np.int32) & 0x0FFF
        values[values >= 2048] -= 4096
        np.copyto(out, values, casting="unsafe")
    else:
        np.copyto(out, stored, casting="unsafe")
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    n_padding = 0
    if padding_mask is not None:
        n_padding = int(np.count_nonzero(padding_mask))
        if n_padding:
            out[padding_mask] = AIR_HU
    return wrapped, n_padding


def _as_stored(value: float, dtype: np.dtype) -> float:
    """A padding value read with the wrong signedness (US 63536 for signed -2000) as the pixels store it."""
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is None:
        return value
    bits = info.bits
    if info.min < 0 and value > info.max:
        return value - (1 << bits)
    if info.min == 0 and value < 0:
        return value + (1 << bits)
    return value


def _add_header_warnings(slices: list[_Header], scan: _Scan, uid: str, stats: Counter, warnings_out: list[str]) -> None:
    """One warning per kind of header problem in the series, with the number of files it affects."""
    messages: dict[str, dict[str, None]] = defaultdict(dict)  # key -> distinct messages, in order
    files: dict[str, set[str]] = defaultdict(set)
    for h in slices:
        for key, message in h.warnings:
            messages[key][message] = None
            files[key].add(h.name)
    for key, distinct in messages.items():
        first, n_other = next(iter(distinct)), len(distinct) - 1
        others = f" (and {_count(n_other, 'other value')})" if n_other else ""
        where = (
            f" ({len(files[key])} of {len(slices)} files)" if len(files[key]) > 1 else f" ({next(iter(files[key]))})"
        )
        warnings_out.append(first + others + where)
    if stats["no_rescale"]:
        warnings_out.append(
            f"{_count(stats['no_rescale'], 'slice')} without RescaleSlope/RescaleIntercept: stored values taken as HU"
        )
    if stats["rsna_wrap"]:
        warnings_out.append(
            f"corrected the 12-bit wrap (BitsStored 12, unsigned, intercept > -100) on {_count(stats['rsna_wrap'], 'slice')}"
        )
    skipped_series = [u for u, s in scan.image_series().items() if u != uid]
    if skipped_series:
        warnings_out.append(
            f"ignored {_count(len(skipped_series), 'other image series', 'other image series')}: "
            + ", ".join(skipped_series[:5])
        )


def _summary(
    source: Path,
    uid: str,
    first: _Header,
    slices: list[_Header],
    array: np.ndarray,
    affine: np.ndarray,
    regular: RegularStack,
    duplicates_dropped: int,
    stats: Counter,
    scan: _Scan,
    series_values: dict[str, Any],
    warnings_out: list[str],
) -> dict[str, Any]:
    import nibabel as nib
    from pydicom.uid import UID

    hu_min, hu_max = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if hu_min > -500:
        warnings_out.append(f"lowest value is {hu_min:.0f} HU: no air in the volume; check RescaleIntercept")
    return {
        "source": str(source),
        "format": "dicom",
        "series_uid": uid,
        "modality": first.modality,
        "series_description": first.series_description,
        "series_number": first.series_number,
        "n_slices": int(array.shape[2]),
        "n_files": len(slices),
        "shape": [int(v) for v in array.shape],
        "spacing": [round(float(v), 6) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "orientation": "".join(nib.aff2axcodes(affine)),
        "tilt_deg": round(regular.tilt_deg, 4),
        "tilt_corrected": bool(regular.max_shift_mm > 0),
        "max_unshear_shift_mm": round(regular.max_shift_mm, 4),
        "max_position_error_mm": round(regular.max_position_error_mm, 4),
        "hu_min": round(hu_min, 2),
        "hu_max": round(hu_max, 2),
        **series_values,
        "transfer_syntaxes": sorted({UID(h.transfer_syntax).name for h in slices}),
        "filled_slices": list(regular.filled),
        "duplicates_dropped": duplicates_dropped,
        "rsna_wrap_corrected_slices": int(stats["rsna_wrap"]),
        "padding_pixels": int(stats["padding_pixels"]),
        "skipped": {
            "not_dicom": len(scan.not_dicom),
            "non_image": dict(sorted(scan.non_image.items())),
            "localizer": sum(h.is_localizer for h in scan.headers),
            "other_series_files": sum(1 for h in scan.headers if h.is_image and h.series_uid != uid),
        },
        "warnings": list(warnings_out),
    }


def _series_values(header: _Header) -> dict[str, Any]:
    """Acquisition facts of the series worth keeping (nothing that identifies the patient)."""
    ds = header.ds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the header pass already reported invalid values
        return _read_series_values(ds)


def _read_series_values(ds: Any) -> dict[str, Any]:
    window_center, window_width = ds.get("WindowCenter"), ds.get("WindowWidth")
    return {
        "study_uid": _text(ds.get("StudyInstanceUID")) or None,
        "manufacturer": _text(ds.get("Manufacturer")) or None,
        "convolution_kernel": _text(ds.get("ConvolutionKernel")) or None,
        "slice_thickness_mm": _float(ds.get("SliceThickness"), None),
        "gantry_tilt_tag_deg": _float(ds.get("GantryDetectorTilt"), None),
        "kvp": _float(ds.get("KVP"), None),
        "window_center": _first_float(window_center),
        "window_width": _first_float(window_width),
    }


# --- small helpers -------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | bytes) and isinstance(value, Iterable):
        return "\\".join(_text(v) for v in value)
    return str(value).strip()


def _float(value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    if not isinstance(value, str | bytes) and isinstance(value, Iterable):
        value = list(value)
        if not value:
            return default
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _first_float(value: Any) -> float | None:
    return _float(value, None)


def _floats(value: Any, n: int) -> list[float] | None:
    if value is None:
        return None
    values = [float(v) for v in (value if isinstance(value, Iterable) and not isinstance(value, str) else [value])]
    if len(values) != n or not np.all(np.isfinite(values)):
        raise ValueError(f"expected {n} finite numbers, got {values}")
    return values


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _not_dicom(n: int) -> str:
    return f"{n} file that is not DICOM" if n == 1 else f"{n} files that are not DICOM"


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())
