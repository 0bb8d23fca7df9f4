"""Ingest speed: a 40-slice 512x512 CT series, our ingest vs a plain pydicom read of the same files.

The plain read is ``pydicom.dcmread(f).pixel_array`` for every file: the least any DICOM reader must do. Ingest adds a
header pass (pixel data deferred), sorting along the slice normal, checks, HU conversion into one stack, and, when
tilted, the in-plane un-shear. Every figure is the median of several interleaved runs in this one process, so the
ratios compare like with like on whatever machine runs it; nothing here asserts a time.

Run: ``python benchmarks/ingest_benchmark.py [--repeats N] [--slices 40] [--size 512]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from monai_stroke.io import load_ct_series, save_nifti


def write_series(folder: Path, n_slices: int, size: int, tilt_deg: float = 0.0, syntax: str = ExplicitVRLittleEndian):
    """A head-like phantom (air, bone shell, brain) as ``n_slices`` files of ``size`` x ``size`` signed pixels."""
    folder.mkdir(parents=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    spacing, step = 220.0 / size, 5.0
    t = np.radians(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), np.sin(t)])
    j, i = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    rng = np.random.default_rng(0)
    order = rng.permutation(n_slices)  # file names say nothing about position
    for k in range(n_slices):
        origin = np.array([-110.0, -110.0 * np.cos(t), (k - n_slices / 2) * step - 110.0 * np.sin(t)])
        points = origin + (i[..., None] * spacing) * row + (j[..., None] * spacing) * col
        r = np.sqrt(((points / np.array([75.0, 90.0, 110.0])) ** 2).sum(-1))
        hu = np.where(r <= 1.0, np.where(r <= 0.93, 35.0, 1200.0), -1000.0)
        stored = (hu + 1024 + rng.normal(0, 4, hu.shape)).astype(np.int16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = series_uid, study_uid, "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(n_slices - k)
        ds.ImagePositionPatient = [float(v) for v in origin]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.PixelSpacing = [spacing, spacing]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = stored.tobytes()
        if syntax != ExplicitVRLittleEndian:
            ds.compress(syntax)
        ds.save_as(folder / f"{order[k]:08x}.dcm", enforce_file_format=True)
    return folder


def plain_read(folder: Path) -> None:
    for file in sorted(folder.iterdir()):
        pydicom.dcmread(file).pixel_array  # noqa: B018 - decoding is the point


def median_seconds(jobs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():  # warm-up: imports, page cache
        job()
    for _ in range(repeats):
        for name, job in jobs.items():  # interleaved, so that machine load hits every job alike
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cases = {
            "axial, uncompressed": write_series(tmp_path / "axial", args.slices, args.size),
            "tilted 20 deg, un-shear": write_series(tmp_path / "tilted", args.slices, args.size, tilt_deg=20.0),
            "axial, RLE lossless": write_series(tmp_path / "rle", args.slices, args.size, syntax=RLELossless),
        }
        for label, folder in cases.items():
            nii, nii_gz = tmp_path / f"{folder.name}.nii", tmp_path / f"{folder.name}.nii.gz"
            seconds = median_seconds(
                {
                    "plain_pydicom_read": lambda f=folder: plain_read(f),
                    "load_ct_series": lambda f=folder: load_ct_series(f),
                    "ingest_to_nii": lambda f=folder, o=nii: save_nifti(load_ct_series(f), o),
                    "ingest_to_nii_gz": lambda f=folder, o=nii_gz: save_nifti(load_ct_series(f), o),
                },
                args.repeats,
            )
            plain = seconds.pop("plain_pydicom_read")
            results[label] = {"plain_pydicom_read_s": round(plain, 4)}
            for job, value in seconds.items():
                results[label].update({f"{job}_s": round(value, 4), f"{job}_ratio": round(value / plain, 2)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"ingest of {args.slices} x {args.size}x{args.size} slices, median of {args.repeats} interleaved runs")
        jobs = ("load_ct_series", "ingest_to_nii", "ingest_to_nii_gz")
        print(f"{'case':24s} {'pydicom read':>12s}" + "".join(f" {job:>16s} {'ratio':>6s}" for job in jobs))
        for label, r in results.items():
            cells = "".join(f" {r[f'{job}_s']:15.3f}s {r[f'{job}_ratio']:5.2f}x" for job in jobs)
            print(f"{label:24s} {r['plain_pydicom_read_s']:11.3f}s{cells}")
    return results


if __name__ == "__main__":
    main()
