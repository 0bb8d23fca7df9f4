"""``monai-stroke ingest`` end to end: the NIfTI it writes, --json, and one ``error:`` line for every bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import (
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    head_phantom,
    nifti_from_volume,
    write_ct_series,
    write_other_modality,
)
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

from monai_stroke.cli import main
from monai_stroke.io import load_ct_series


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ingest_writes_nifti_and_json_summary(tmp_path, capsys) -> None:
    written = write_ct_series(tmp_path / "dicom", phantom=head_phantom(), tilt_deg=12.0, names="shuffled")
    (tmp_path / "dicom" / "notes.dcm").write_text("not DICOM\n")  # mixed with a valid series: skipped, warned
    out = tmp_path / "out" / "ct.nii.gz"
    status, stdout, stderr = _run(["ingest", str(tmp_path / "dicom"), "--out", str(out), "--json"], capsys)
    assert status == 0, stderr
    assert "warning: skipped 1 file that is not DICOM: notes.dcm" in stderr
    summary = json.loads(stdout)  # stdout is the JSON and nothing else
    assert summary["skipped"]["not_dicom"] == 1
    assert summary["series_uid"] == written.series_uid and summary["n_slices"] == 12
    assert summary["shape"] == [48, 48, 12] and summary["tilt_deg"] == pytest.approx(12.0, abs=0.01)
    assert summary["output"] == str(out)
    for key in ("spacing", "hu_min", "hu_max", "warnings", "source"):
        assert key in summary
    image = nib.load(out)
    volume = load_ct_series(tmp_path / "dicom")
    np.testing.assert_allclose(image.affine, volume.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(image.dataobj), volume.array, atol=1e-4)
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    # no patient identifiers anywhere: stdout, stderr, the NIfTI bytes
    raw = gzip.decompress(out.read_bytes())
    for value in (PATIENT_NAME, "Doe", PATIENT_ID, PATIENT_BIRTH_DATE):
        assert value not in stdout and value not in stderr and value.encode() not in raw
    assert sorted(p.name for p in out.parent.iterdir()) == ["ct.nii.gz"]  # no temporary left behind


def test_ingest_stores_integral_hu_as_int16(tmp_path, capsys) -> None:
    written = write_ct_series(tmp_path / "dicom", phantom=head_phantom())
    out = tmp_path / "ct.nii"
    status, stdout, _ = _run(["ingest", str(tmp_path / "dicom"), "--out", str(out)], capsys)
    assert status == 0 and stdout.startswith(f"wrote {out}: 48x48x12 voxels")
    image = nib.load(out)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), written.hu)


def test_ingest_options_allow_gaps_and_keep_tilt(tmp_path, capsys) -> None:
    write_ct_series(tmp_path / "dicom", skip=[4], tilt_deg=20.0)
    out = tmp_path / "ct.nii.gz"
    argv = ["ingest", str(tmp_path / "dicom"), "--out", str(out), "--allow-gaps", "--keep-tilt", "--json"]
    status, stdout, stderr = _run(argv, capsys)
    assert status == 0, stderr
    summary = json.loads(stdout)
    assert summary["filled_slices"] == [4] and summary["tilt_corrected"] is False
    assert "warning: filled 1 missing slice" in stderr
    affine = nib.load(out).affine
    third = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    assert np.degrees(np.arccos(abs(third @ normal / np.linalg.norm(normal)))) == pytest.approx(20.0, abs=0.01)


# --- bad input: one error line, exit 2, nothing written ------------------------------------------------------------


def _empty(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "empty").mkdir()
    return tmp / "empty", ["is empty"]


def _missing(tmp: Path) -> tuple[Path, list[str]]:
    return tmp / "nowhere", ["does not exist"]


def _not_dicom(tmp: Path) -> tuple[Path, list[str]]:
    folder = tmp / "fake"
    folder.mkdir()
    for k in range(3):
        (folder / f"IM{k}.dcm").write_text(f"this is not DICOM {k}\n" * 20)
    return folder, ["no DICOM files", "IM0.dcm"]


def _truncated_pixels(tmp: Path) -> tuple[Path, list[str]]:
    written = write_ct_series(tmp / "series")
    data = written.files[4].read_bytes()
    written.files[4].write_bytes(data[: len(data) - 1000])
    return tmp / "series", [written.files[4].name, "truncated or corrupt"]


def _truncated_header(tmp: Path) -> tuple[Path, list[str]]:
    written = write_ct_series(tmp / "series")
    written.files[0].write_bytes(written.files[0].read_bytes()[:600])
    return tmp / "series", [written.files[0].name, "remove it"]


def _mr_only(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "mr").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp / "mr" / "MR_small.dcm")
    return tmp / "mr", ["no CT series", "MR", "non-contrast head CT"]


def _us_only(tmp: Path) -> tuple[Path, list[str]]:
    write_other_modality(tmp / "us", "US", n=2)
    return tmp / "us", ["no CT series", "US"]


def _rtstruct_only(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "rt").mkdir()
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp / "rt" / "rtstruct.dcm")
    return tmp / "rt", ["no CT image series", "RTSTRUCT"]


def _single_slice(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "one").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp / "one" / "CT_small.dcm")
    return tmp / "one", ["a single slice", "2 or more slices"]


def _two_series(tmp: Path) -> tuple[Path, list[str]]:
    a = write_ct_series(tmp / "two" / "a", n_slices=10)
    b = write_ct_series(tmp / "two" / "b", n_slices=7)
    return tmp / "two", [a.series_uid, b.series_uid, "10 slices", "7 slices", "--series"]


def _slice_missing(tmp: Path) -> tuple[Path, list[str]]:
    written = write_ct_series(tmp / "gap", skip=[3])
    return tmp / "gap", ["1 missing slice", written.files[2].name, "--allow-gaps"]


def _nifti_2d(tmp: Path) -> tuple[Path, list[str]]:
    return nifti_from_volume(tmp / "flat.nii.gz", np.full((32, 32), -1000, np.int16)), ["3D", "flat.nii.gz"]


def _nifti_nan(tmp: Path) -> tuple[Path, list[str]]:
    data = np.full((8, 8, 4), -1000.0, np.float32)
    data[2, 2, 2] = np.nan
    return nifti_from_volume(tmp / "nan.nii.gz", data), ["1 NaN or infinite", "nan.nii.gz"]


def _nifti_not_hu(tmp: Path) -> tuple[Path, list[str]]:
    data = np.random.default_rng(0).uniform(0, 800, (8, 8, 4)).astype(np.float32)  # an MR-like intensity range
    return nifti_from_volume(tmp / "mr.nii.gz", data), ["no air", "Hounsfield"]


def _nifti_out_of_range(tmp: Path) -> tuple[Path, list[str]]:
    data = np.full((8, 8, 4), -1000.0, np.float32)
    data[0, 0, 0] = 1e6
    return nifti_from_volume(tmp / "big.nii.gz", data), ["plausible HU range"]


def _nifti_garbage(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "bad.nii.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    return tmp / "bad.nii.gz", ["cannot be read as NIfTI", "bad.nii.gz"]


BAD_INPUTS: list[Callable[[Path], tuple[Path, list[str]]]] = [
    _empty,
    _missing,
    _not_dicom,
    _truncated_pixels,
    _truncated_header,
    _mr_only,
    _us_only,
    _rtstruct_only,
    _single_slice,
    _two_series,
    _slice_missing,
    _nifti_2d,
    _nifti_nan,
    _nifti_not_hu,
    _nifti_out_of_range,
    _nifti_garbage,
]


@pytest.mark.parametrize("make_input", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_no_output(tmp_path, capsys, make_input) -> None:
    path, expected = make_input(tmp_path)
    out = tmp_path / "out" / "ct.nii.gz"
    status, stdout, stderr = _run(["ingest", str(path), "--out", str(out), "--json"], capsys)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and stdout == ""
    for fragment in expected:
        assert fragment in lines[0]
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_missing_decoder_through_the_cli(tmp_path, capsys, monkeypatch) -> None:
    from pydicom.pixels import get_decoder

    write_ct_series(tmp_path / "j2k", transfer_syntax=JPEG2000Lossless)
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg-openjpeg>=2.0",)})
    out = tmp_path / "ct.nii.gz"
    status, _, stderr = _run(["ingest", str(tmp_path / "j2k"), "--out", str(out)], capsys)
    assert status == 2 and stderr.count("\n") == 1
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in stderr and "JPEG 2000" in stderr
    assert not out.exists()


@pytest.mark.parametrize("out_name", ["ct.nrrd", "ct.nii.gz.tmp"])
def test_bad_output_name_is_refused_before_reading(tmp_path, capsys, out_name) -> None:
    write_ct_series(tmp_path / "dicom")
    status, _, stderr = _run(["ingest", str(tmp_path / "dicom"), "--out", str(tmp_path / out_name)], capsys)
    assert status == 2 and stderr.startswith("error: --out") and ".nii.gz" in stderr


def test_existing_output_is_kept_when_ingest_fails(tmp_path, capsys) -> None:
    out = tmp_path / "ct.nii.gz"
    out.write_bytes(b"previous result")
    write_ct_series(tmp_path / "gap", skip=[3])
    status, _, _ = _run(["ingest", str(tmp_path / "gap"), "--out", str(out)], capsys)
    assert status == 2 and out.read_bytes() == b"previous result"


def test_header_warnings_are_log_lines_not_python_warnings(tmp_path, capsys) -> None:
    write_ct_series(tmp_path / "dicom", series_uid="1.2.3.04.5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, _, stderr = _run(["ingest", str(tmp_path / "dicom"), "--out", str(tmp_path / "ct.nii.gz")], capsys)
    assert status == 0
    assert [str(w.message) for w in caught] == []  # pydicom's validation warnings are captured, not re-raised
    assert "warning: SeriesInstanceUID '1.2.3.04.5' is not a valid DICOM UID" in stderr
