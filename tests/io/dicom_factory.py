"""Build real DICOM CT series for tests: any orientation, gantry tilt, spacing, rescale, padding, compression.

A series is sampled from a *phantom*: a function of LPS world positions (mm, array ``(..., 3)``) returning HU. Because
every pixel is the phantom at a known world position, a test can check an ingested volume voxel by voxel: evaluate
the phantom at the world position the output affine gives each voxel and compare.

Tests in ``tests/io`` import it as ``dicom_factory`` (pytest puts their folder on ``sys.path``); other test folders
put ``tests/io`` on ``sys.path`` first (``sys.path.insert(0, str(Path(__file__).parents[1] / "io"))``). Nothing
here imports monai_stroke: the fixtures must not share the code they test.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

__all__ = [
    "PATIENT_NAME",
    "PATIENT_ID",
    "PATIENT_BIRTH_DATE",
    "Phantom",
    "WrittenSeries",
    "tilted_orientation",
    "linear_phantom",
    "head_phantom",
    "blob_phantom",
    "make_ct_dataset",
    "write_dataset",
    "write_ct_series",
    "write_localizer",
    "write_presentation_state",
    "write_other_modality",
    "encode_jpeg_lossless_sv1",
    "slice_points",
    "nifti_from_volume",
]

#: Identifying values written into every generated file: ingest output must never contain them.
PATIENT_NAME = "Doe^Jane^Quincy"
PATIENT_ID = "MRN-0042-XYZ"
PATIENT_BIRTH_DATE = "19610203"

Phantom = Callable[[np.ndarray], np.ndarray]
_COUNTER = itertools.count()


# --- phantoms ------------------------------------------------------------------------------------------------------


def linear_phantom(gradient: Sequence[float] = (2.0, -3.0, 5.0), offset: float = 0.0) -> Phantom:
    """HU = offset + gradient . p: every voxel's value says where it is (and linear interpolation is exact on it)."""
    g = np.asarray(gradient, dtype=float)

    def phantom(points: np.ndarray) -> np.ndarray:
        return offset + points @ g

    return phantom


def head_phantom(
    center: Sequence[float] = (0.0, 0.0, 0.0),
    semi_axes: Sequence[float] = (70.0, 85.0, 75.0),
    shell_mm: float = 6.0,
    brain_hu: float = 35.0,
) -> Phantom:
    """Air (-1000 HU) around an ellipsoid of brain (``brain_hu``) inside a bone shell (1000 HU, ``shell_mm`` thick)."""
    c, a = np.asarray(center, float), np.asarray(semi_axes, float)

    def phantom(points: np.ndarray) -> np.ndarray:
        r = np.sqrt((((points - c) / a) ** 2).sum(axis=-1))
        hu = np.full(r.shape, -1000.0)
        hu[r <= 1.0] = 1000.0
        hu[r <= 1.0 - shell_mm / a.min()] = brain_hu
        return hu

    return phantom


def blob_phantom(
    centers_lps: Sequence[Sequence[float]],
    sigma_mm: float = 3.0,
    peak_hu: float = 1000.0,
    background: Phantom | None = None,
) -> Phantom:
    """Small bright Gaussian blobs ("spheres") at known LPS positions on a background phantom.

    A sampled Gaussian's intensity-weighted centroid is its centre to well under a voxel, even on a coarse or
    sheared grid, so the blobs measure where an ingest puts things.
    """
    centers = np.asarray(centers_lps, dtype=float)
    base = background or head_phantom()

    def phantom(points: np.ndarray) -> np.ndarray:
        hu = base(points)
        for center in centers:
            d2 = ((points - center) ** 2).sum(axis=-1)
            hu = hu + peak_hu * np.exp(-d2 / (2 * sigma_mm**2))
        return hu

    return phantom


# --- geometry ------------------------------------------------------------------------------------------------------


def tilted_orientation(tilt_deg: float) -> tuple[float, ...]:
    """ImageOrientationPatient of an axial slice tilted by ``tilt_deg`` about the patient's left-right axis."""
    t = np.radians(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t)))


@dataclass
class WrittenSeries:
    """What :func:`write_ct_series` wrote, in ascending order along the slice normal (absent slices excluded).

    Attributes:
        files: file of each slice.
        series_uid / study_uid: the UIDs written.
        sop_uids: SOPInstanceUID of each slice.
        origins: ``(N, 3)`` ImagePositionPatient (LPS mm).
        orientation: ImageOrientationPatient.
        pixel_spacing: PixelSpacing (between rows, between columns).
        hu: ``(N, rows, columns)`` the HU each slice encodes (after rounding to stored values).
        phantom: the phantom sampled.
    """

    files: list[Path]
    series_uid: str
    study_uid: str
    sop_uids: list[str]
    origins: np.ndarray
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    hu: np.ndarray
    phantom: Phantom
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)


def slice_points(origin: np.ndarray, orientation: Sequence[float], pixel_spacing: Sequence[float], shape) -> np.ndarray:
    """LPS position ``(rows, columns, 3)`` of every pixel of a slice."""
    rows, cols = shape
    r, c = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    j, i = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return origin + (i[..., None] * pixel_spacing[1]) * r + (j[..., None] * pixel_spacing[0]) * c


# --- datasets and files --------------------------------------------------------------------------------------------


def make_ct_dataset(
    stored: np.ndarray,
    position: Sequence[float] | None,
    orientation: Sequence[float] | None,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    series_uid: str | None = None,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    bits_stored: int = 16,
    pixel_representation: int = 1,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    **extra: Any,
) -> Dataset:
    """One CT slice with patient identifiers filled in (so tests can check they never leak).

    Invalid values (UIDs, over-long names) are written as given, silently: tests use them on purpose.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _make_ct_dataset(
            stored,
            position,
            orientation,
            pixel_spacing,
            series_uid,
            study_uid,
            sop_uid,
            instance_number,
            slope,
            intercept,
            bits_stored,
            pixel_representation,
            modality,
            sop_class,
            image_type,
            **extra,
        )


def _make_ct_dataset(
    stored,
    position,
    orientation,
    pixel_spacing,
    series_uid,
    study_uid,
    sop_uid,
    instance_number,
    slope,
    intercept,
    bits_stored,
    pixel_representation,
    modality,
    sop_class,
    image_type,
    **extra,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = extra.pop("FrameOfReferenceUID", None) or _frame_of_reference(ds.StudyInstanceUID)
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = PATIENT_BIRTH_DATE
    ds.ImageType = list(image_type)
    ds.SeriesNumber = 2
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = "HEAD NCCT"
    ds.Manufacturer = "monai-stroke tests"
    if position is not None:
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [round(float(v), 6) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 5.0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixel_representation
    ds.PixelData = stored.astype(np.int16 if pixel_representation else np.uint16).tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def _frame_of_reference(study_uid: str) -> str:
    # one frame of reference per study, stable across calls
    return generate_uid(entropy_srcs=[study_uid, "frame"])


def write_dataset(ds: Dataset, path: str | Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write ``ds`` with a DICOM preamble in ``transfer_syntax`` (uncompressed, RLE, JPEG 2000 or JPEG lossless)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(transfer_syntax, encoding_plugin="pydicom" if transfer_syntax == RLELossless else "pylibjpeg")
    elif transfer_syntax == JPEGLosslessSV1:
        if ds.PixelRepresentation != 0:
            raise ValueError("the test JPEG lossless encoder writes unsigned pixels only")
        frame = encode_jpeg_lossless_sv1(ds.pixel_array, precision=int(ds.BitsStored))
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


def encode_jpeg_lossless_sv1(image: np.ndarray, precision: int = 16) -> bytes:
    """Encode a 2D unsigned image as a JPEG lossless (ITU T.81 process 14, first-order prediction) codestream.

    No Python package encodes this syntax, so the tests carry a minimal encoder: predictor 1 (left neighbour; the
    first column predicts from above, the first pixel from 2**(P-1)), one Huffman table giving each difference
    category a 5-bit code. Decoders (pylibjpeg-libjpeg, GDCM) read it like any scanner's file.
    """
    x = np.asarray(image, dtype=np.int64)
    if x.ndim != 2 or x.min() < 0 or x.max() >= (1 << precision):
        raise ValueError(f"need a 2D image of unsigned {precision}-bit values")
    rows, cols = x.shape
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff).ravel()
    magnitude = np.abs(diff)
    ssss = np.zeros_like(magnitude)
    nonzero = magnitude > 0
    ssss[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int64) + 1
    n_extra = np.where(ssss == 16, 0, ssss)  # category 16 (difference 32768) carries no extra bits
    extra = np.where(diff >= 0, diff, diff - 1) & ((1 << n_extra) - 1)
    lengths = 5 + n_extra
    values = (ssss << n_extra) | extra
    # MSB-first bit string of every code, concatenated
    positions = np.arange(lengths.max())
    bits = (values[:, None] >> (lengths[:, None] - 1 - positions[None, :])) & 1
    bits = bits[positions[None, :] < lengths[:, None]].astype(np.uint8)
    bits = np.concatenate([bits, np.ones((-len(bits)) % 8, dtype=np.uint8)])  # pad with 1-bits
    entropy = np.packbits(bits).tobytes().replace(b"\xff", b"\xff\x00")

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof3 = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    counts = bytes([0, 0, 0, 0, 17] + [0] * 11)  # 17 codes of length 5 for categories 0..16
    dht = bytes([0x00]) + counts + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, predictor 1, Se 0, point transform 0
    return b"\xff\xd8" + segment(0xC3, sof3) + segment(0xC4, dht) + segment(0xDA, sos) + entropy + b"\xff\xd9"


def _stored_values(hu: np.ndarray, slope: float, intercept: float, pixel_representation: int, bits_stored: int):
    stored = np.rint((hu - intercept) / slope).astype(np.int64)
    lo, hi = (
        (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1)
        if pixel_representation
        else (0, (1 << bits_stored) - 1)
    )
    return np.clip(stored, lo, hi)


def write_ct_series(
    out_dir: str | Path,
    phantom: Phantom | None = None,
    n_slices: int = 12,
    shape: tuple[int, int] = (48, 48),
    pixel_spacing: tuple[float, float] = (4.0, 4.0),
    slice_step_mm: float = 5.0,
    tilt_deg: float = 0.0,
    orientation: Sequence[float] | None = None,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    step_direction: Sequence[float] | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    pixel_representation: int = 1,
    bits_stored: int = 16,
    rsna_wrap: bool = False,
    padding_value: int | None = None,
    padding_mask: Callable[[np.ndarray], np.ndarray] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    names: str = "ordered",
    instance_numbers: str = "ascending",
    subfolders: int = 0,
    skip: Sequence[int] = (),
    series_uid: str | None = None,
    study_uid: str | None = None,
    seed: int = 0,
    **extra: Any,
) -> WrittenSeries:
    """Write a CT series sampled from ``phantom``; returns what was written, sorted along the slice normal.

    Args:
        out_dir: folder to write into (created).
        phantom: HU as a function of LPS positions (default :func:`head_phantom`).
        n_slices: number of slice positions (before ``skip``).
        shape: (rows, columns).
        pixel_spacing: (between rows, between columns) in mm.
        slice_step_mm: distance between consecutive slice origins (along the table for a tilted series).
        tilt_deg: gantry tilt: slice planes tilted about the left-right axis while the origins step along the
            table (LPS z), so the grid is sheared.
        orientation: ImageOrientationPatient (default: :func:`tilted_orientation` of ``tilt_deg``).
        center: LPS centre of the middle slice's field of view.
        step_direction: direction of the origin steps (default: the table axis when tilted, else the normal).
        slope / intercept: RescaleSlope / RescaleIntercept.
        pixel_representation / bits_stored: stored integer format.
        rsna_wrap: write like the RSNA ICH quirk files: BitsStored 12, unsigned, intercept 0, negative HU wrapped
            into 12 bits (two's complement).
        padding_value: PixelPaddingValue; pixels where ``padding_mask(points)`` is true store this value.
        padding_mask: which pixels are padding (default: outside a 90 mm radius circle around the table axis).
        transfer_syntax: ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless or
            JPEGLosslessSV1.
        names: "ordered" (slice_000.dcm ...), "shuffled" (random hex names, no extension relation to position).
        instance_numbers: "ascending", "reversed" or "shuffled" (InstanceNumber must not matter).
        subfolders: spread the files over this many nested subfolders.
        skip: slice indices (in position order) not written: a missing slice.
        series_uid / study_uid: UIDs (generated when None).
        seed: random names and numbers.
        extra: more DICOM keywords for every slice (e.g. WindowCenter=[40, 400]).
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    phantom = phantom or head_phantom()
    orientation = tuple(orientation) if orientation is not None else tilted_orientation(tilt_deg)
    r, c = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(r, c)
    normal /= np.linalg.norm(normal)
    if step_direction is None:
        step_direction = (0.0, 0.0, 1.0) if tilt_deg else normal
    step = np.asarray(step_direction, float) / np.linalg.norm(step_direction) * slice_step_mm
    rows, cols = shape
    half_fov = (cols - 1) / 2 * pixel_spacing[1] * r + (rows - 1) / 2 * pixel_spacing[0] * c
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    if rsna_wrap:
        bits_stored, pixel_representation, intercept, slope = 12, 0, 0.0, 1.0
    kept = [k for k in range(n_slices) if k not in set(skip)]
    numbers = np.arange(1, len(kept) + 1)
    if instance_numbers == "reversed":
        numbers = numbers[::-1]
    elif instance_numbers == "shuffled":
        numbers = rng.permutation(numbers)
    batch = next(_COUNTER)
    files, sops, origins, hus = [], [], [], []
    for order, k in enumerate(kept):
        origin = np.asarray(center, float) + (k - (n_slices - 1) / 2) * step - half_fov
        points = slice_points(origin, orientation, pixel_spacing, shape)
        hu = phantom(points)
        if rsna_wrap:
            stored = np.rint(hu).astype(np.int64) % 4096
            hu = np.where(stored >= 2048, stored - 4096, stored).astype(float)
        else:
            stored = _stored_values(hu, slope, intercept, pixel_representation, bits_stored)
            hu = stored * slope + intercept
        if padding_value is not None:
            mask = (padding_mask or _outside_circle(center))(points)
            stored = np.where(mask, padding_value, stored)
            hu = np.where(mask, np.nan, hu)  # the expected value is "air", decided by the reader
        ds = make_ct_dataset(
            stored,
            origin,
            orientation,
            pixel_spacing,
            series_uid=series_uid,
            study_uid=study_uid,
            instance_number=int(numbers[order]),
            slope=slope,
            intercept=intercept,
            bits_stored=bits_stored,
            pixel_representation=pixel_representation,
            **({"PixelPaddingValue": padding_value} if padding_value is not None else {}),
            **({"GantryDetectorTilt": tilt_deg} if tilt_deg else {}),
            **extra,
        )
        name = f"slice_{order:03d}.dcm" if names == "ordered" else f"{rng.integers(1 << 40):010x}.dcm"
        folder = out_dir
        for level in range(subfolders):
            folder = folder / f"sub{(order + level) % 2}_{level}"
        files.append(write_dataset(ds, folder / f"b{batch}_{name}", transfer_syntax))
        sops.append(ds.SOPInstanceUID)
        origins.append(origin)
        hus.append(hu)
    return WrittenSeries(
        files=files,
        series_uid=series_uid,
        study_uid=study_uid,
        sop_uids=sops,
        origins=np.array(origins),
        orientation=orientation,
        pixel_spacing=tuple(pixel_spacing),
        hu=np.array(hus),
        phantom=phantom,
    )


def _outside_circle(center: Sequence[float], radius_mm: float = 90.0) -> Callable[[np.ndarray], np.ndarray]:
    c = np.asarray(center, float)

    def mask(points: np.ndarray) -> np.ndarray:
        return ((points[..., :2] - c[:2]) ** 2).sum(axis=-1) > radius_mm**2

    return mask


def write_localizer(path: str | Path, series_uid: str | None = None, study_uid: str | None = None) -> Path:
    """A CT scout (ImageType ORIGINAL\\PRIMARY\\LOCALIZER) in a sagittal plane."""
    stored = np.full((32, 64), 1024, dtype=np.int64)
    ds = make_ct_dataset(
        stored,
        (0.0, -120.0, 100.0),
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        (4.0, 4.0),
        series_uid=series_uid,
        study_uid=study_uid,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    return write_dataset(ds, path)


def write_presentation_state(path: str | Path, study_uid: str | None = None) -> Path:
    """A grayscale softcopy presentation state: a DICOM object without pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "PR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.ContentLabel = "GSPS"
    return write_dataset(ds, path)


def write_other_modality(
    path: str | Path, modality: str = "US", n: int = 1, series_uid: str | None = None
) -> list[Path]:
    """``n`` image files of a non-CT modality (US: Ultrasound Image Storage; MR: MR Image Storage)."""
    sop_class = {"US": "1.2.840.10008.5.1.4.1.1.6.1", "MR": "1.2.840.10008.5.1.4.1.1.4"}[modality]
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(n):
        ds = make_ct_dataset(
            np.full((16, 16), 100, dtype=np.int64),
            (0.0, 0.0, 5.0 * k),
            (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            modality=modality,
            sop_class=sop_class,
            series_uid=series_uid,
            image_type=("ORIGINAL", "PRIMARY"),
        )
        paths.append(write_dataset(ds, Path(path) / f"{modality.lower()}_{k:03d}.dcm"))
    return paths


def nifti_from_volume(path: str | Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI (for NIfTI-input tests)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else np.asarray(affine, float))
    nib.save(image, str(path))
    return Path(path)
