"""Write a rendered synthetic series as DICOM CT Image Storage files.

One file per slice named ``ID_<10 hex>.dcm`` (the RSNA challenge's naming, in random order on disk),
16-bit unsigned pixels with RescaleSlope 1 / RescaleIntercept -1024, the scanner geometry in
ImagePositionPatient/ImageOrientationPatient (gantry tilt in GantryDetectorTilt as well), and UIDs that are
deterministic for the cohort seed. The patient is ``Synthetic^<id>``: no real person's data is ever written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from monai_stroke import __version__
from monai_stroke.synthetic.patient import PatientSpec

__all__ = ["RESCALE_INTERCEPT", "write_ct_series", "hu_to_stored"]

RESCALE_INTERCEPT = -1024.0
# 12 bits stored: -1024 .. 3071 HU, enough for cortical bone and the cradle
_BITS_STORED = 12


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU -> stored uint16 values (``round(HU - intercept)``, clipped to the 12-bit range)."""
    return np.clip(np.rint(hu - RESCALE_INTERCEPT), 0, 2**_BITS_STORED - 1).astype(np.uint16)


def _ds(value: float) -> str:
    # DICOM decimal strings hold 16 characters; 6 decimals keep sub-micrometre geometry
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_ct_series(hu: np.ndarray, spec: PatientSpec, out_dir: str | os.PathLike) -> list[Path]:
    """Write one slice file per native slice of ``hu`` into ``out_dir``.

    Args:
        hu: float32 HU ``(slices, rows, cols)`` from :func:`monai_stroke.synthetic.render_patient`.
        spec: the patient (geometry, UIDs, file names).
        out_dir: folder to write into (created); normally a temporary folder that the caller renames.

    Returns:
        The written paths, in slice order.
    """
    geom = spec.scanner
    if hu.shape != (geom.n_slices, geom.rows, geom.cols):
        raise ValueError(f"series shape {hu.shape} does not match the geometry {(geom.n_slices, geom.rows, geom.cols)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = hu_to_stored(hu)
    paths = []
    for k in range(geom.n_slices):
        ds = _slice_dataset(spec, k, stored[k])
        path = out_dir / f"{spec.file_stems[k]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(spec: PatientSpec, k: int, pixels: np.ndarray) -> Dataset:
    geom = spec.scanner
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = spec.sop_uids[k]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MONAI_STROKE_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = spec.sop_uids[k]
    ds.StudyDate = spec.study_date
    ds.SeriesDate = spec.study_date
    ds.ContentDate = spec.study_date
    ds.StudyTime = "120000"
    ds.SeriesTime = "120000"
    ds.ContentTime = f"1200{k // 60:02d}.{k % 60:02d}"[:13]
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "monai-stroke synthetic"
    ds.InstitutionName = "synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT HEAD WO CONTRAST (synthetic)"
    ds.SeriesDescription = "Head 5mm (synthetic)"
    ds.ManufacturerModelName = "monai-stroke synth"
    ds.SoftwareVersions = __version__
    ds.PatientName = f"Synthetic^{spec.patient_id}"
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = _ds(geom.slice_thickness_mm)
    ds.KVP = "120"
    ds.GantryDetectorTilt = _ds(geom.tilt_deg)
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = spec.uids["study"]
    ds.SeriesInstanceUID = spec.uids["series"]
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in geom.ipp(k)]
    ds.ImageOrientationPatient = [_ds(v) for v in geom.iop]
    ds.FrameOfReferenceUID = spec.uids["frame"]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(geom.ipp(k)[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geom.rows
    ds.Columns = geom.cols
    ds.PixelSpacing = [_ds(geom.pixel_spacing_mm), _ds(geom.pixel_spacing_mm)]
    ds.BitsAllocated = 16
    ds.BitsStored = _BITS_STORED
    ds.HighBit = _BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds
