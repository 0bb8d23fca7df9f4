"""Helpers for the manifest tests: tiny CT DICOM files written with pydicom, RSNA-style label files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_stroke.vocabulary import HEMORRHAGE_LABELS, HEMORRHAGE_SUBTYPES


def write_ct(
    path: Path,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    position: Sequence[float] | None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    instance_number: int = 1,
) -> Path:
    """A 4x4 CT slice with the geometry given (``position=None`` leaves ImagePositionPatient out)."""
    with pydicom.config.disable_value_validation():  # RSNA-style "ID_<hex>" UIDs are not valid UIDs
        return _write_ct(path, sop_uid, study_uid, series_uid, position, orientation, instance_number)


def _write_ct(
    path: Path,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    position: Sequence[float] | None,
    orientation: Sequence[float],
    instance_number: int,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-SECRET-42"
    ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.zeros((4, 4), np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def tilted_orientation(tilt_deg: float) -> tuple[float, ...]:
    """ImageOrientationPatient of an axial slice tilted about the patient's x axis (gantry tilt)."""
    t = math.radians(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))


def label_rows(image_id: str, positive: Sequence[str] = ()) -> list[tuple[str, int]]:
    """The six RSNA ``(ID, Label)`` rows of one image; ``any`` follows the subtypes."""
    labels = {s: int(s in positive) for s in HEMORRHAGE_SUBTYPES}
    labels["any"] = int(any(labels.values()))
    return [(f"{image_id}_{name}", labels[name]) for name in HEMORRHAGE_LABELS]


def write_labels(path: Path, rows: Sequence[tuple[str, int]]) -> Path:
    path.write_text("ID,Label\n" + "".join(f"{i},{v}\n" for i, v in rows))
    return path


def new_uid() -> str:
    return generate_uid()


def make_rsna_folder(root: Path, seed: int = 0) -> dict:
    """An RSNA-like folder: DICOM files with random names, InstanceNumber reversed, and a labels CSV with repeats.

    Three series in two studies: ``axial`` (RSNA style: SOPInstanceUID ``ID_<hex>``, found by UID),
    ``tilted`` (20 degree gantry tilt, numeric UIDs, files named ``ID_<hex>.dcm`` in a subfolder, found by
    file name) and ``oblique`` (30 degree tilt whose slice origins fall in z while they rise along the normal,
    so sorting by raw z, InstanceNumber or file name all give the wrong order). Plus one labelled image
    without a file, one file without labels, a README and a hidden file.

    Returns:
        ``labels`` (path), ``dicom`` (folder), ``order`` (series name -> image ids in true slice order),
        ``series_uid`` (name -> UID), ``positions`` (image id -> expected position along the normal, mm),
        ``positives`` (image id -> positive subtypes), ``files`` (image id -> path), ``repeated_rows`` (count).
    """
    rng = np.random.default_rng(seed)
    dicom = root / "stage_2_train"
    study_1, study_2 = new_uid(), new_uid()

    def hexid() -> str:
        return "".join(rng.choice(list("0123456789abcdef"), 9))

    layouts = {
        # name: (study, orientation, origin of slice k, how the file is found, number of slices)
        "axial": (study_1, (1, 0, 0, 0, 1, 0), lambda k: (-120.0, -110.0, -40.0 + 5.0 * k), "sop", 5),
        "tilted": (study_1, tilted_orientation(20), lambda k: (-120.0, -100.0, 10.0 + 5.0 * k), "stem", 4),
        "oblique": (study_2, tilted_orientation(30), lambda k: (-100.0, 10.0 * k, -1.0 * k), "sop", 3),
    }
    out: dict = {"order": {}, "series_uid": {}, "positions": {}, "positives": {}, "files": {}}
    rows: list[tuple[str, int]] = []
    for name, (study, orientation, origin, found_by, n) in layouts.items():
        series = new_uid()
        out["series_uid"][name] = series
        normal = np.cross(orientation[:3], orientation[3:])
        ids = [f"ID_{hexid()}" for _ in range(n)]
        out["order"][name] = ids
        for k in rng.permutation(n):
            image = ids[k]
            if found_by == "sop":
                path, sop = dicom / f"{hexid()}.dcm", image
            else:
                path, sop = dicom / "sub" / f"{image}.dcm", new_uid()
            write_ct(path, sop, study, series, origin(k), orientation, instance_number=n - k)
            out["positions"][image] = float(np.dot(origin(k), normal))
            out["files"][image] = path
            positive = [str(s) for s in rng.choice(HEMORRHAGE_SUBTYPES, size=int(rng.integers(0, 3)), replace=False)]
            out["positives"][image] = positive
            rows += label_rows(image, positive)
    rows += label_rows("ID_nofile000", ["subdural"])
    write_ct(dicom / "unlabelled.dcm", "ID_nolabels0", study_1, new_uid(), (0, 0, 0))
    (dicom / "README.txt").write_text("not DICOM, skipped by its suffix")
    (dicom / ".DS_Store").write_bytes(b"\0\1")
    repeated = [rows[i] for i in rng.choice(len(rows), size=7, replace=False)]
    all_rows = rows + repeated
    all_rows = [all_rows[i] for i in rng.permutation(len(all_rows))]
    out["labels"] = write_labels(root / "stage_2_train.csv", all_rows)
    out["dicom"] = dicom
    out["repeated_rows"] = len(repeated)
    return out
