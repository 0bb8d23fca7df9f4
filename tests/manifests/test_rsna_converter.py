"""The RSNA ICH converter: labels CSV + DICOM folder -> one row per slice, in order along the slice normal."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from manifest_helpers import label_rows, make_rsna_folder, new_uid, tilted_orientation, write_ct, write_labels
from pydicom.data import get_testdata_file

from monai_stroke.errors import UserInputError
from monai_stroke.manifests import RSNA_SLICES_COLUMNS, check_manifest, convert_rsna, read_rsna_slices
from monai_stroke.manifests import rsna as rsna_module
from monai_stroke.vocabulary import HEMORRHAGE_LABELS, HEMORRHAGE_SUBTYPES


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("rsna")
    data = make_rsna_folder(root)
    out = root / "manifests" / "rsna_slices.csv"
    data["report"] = convert_rsna(data["labels"], data["dicom"], out)
    data["out"] = out
    return data


def test_slices_follow_position_along_normal_not_name_number_or_z(converted: dict) -> None:
    table = read_rsna_slices(converted["out"])
    assert list(table.columns[: len(RSNA_SLICES_COLUMNS)]) == list(RSNA_SLICES_COLUMNS)
    for name, expected in converted["order"].items():
        series = table.loc[table["series_uid"] == converted["series_uid"][name]].sort_values("slice_index")
        assert list(series["image_id"]) == expected, name
        assert list(series["slice_index"]) == list(range(len(expected)))
        assert series["position_mm"].tolist() == pytest.approx([converted["positions"][i] for i in expected], abs=1e-3)
    # the oblique series is the one where raw z falls while the position along the normal rises
    oblique = table.loc[table["series_uid"] == converted["series_uid"]["oblique"]].sort_values("slice_index")
    z = [float(pydicom.dcmread(converted["files"][i]).ImagePositionPatient[2]) for i in oblique["image_id"]]
    assert z == sorted(z, reverse=True)


def test_labels_counts_and_paths(converted: dict) -> None:
    table = read_rsna_slices(converted["out"]).set_index("image_id")
    assert len(table) == sum(len(v) for v in converted["order"].values()) == 12
    for image, positive in converted["positives"].items():
        expected = {s: int(s in positive) for s in HEMORRHAGE_SUBTYPES} | {"any": int(bool(positive))}
        assert table.loc[image, list(HEMORRHAGE_LABELS)].astype(int).to_dict() == expected, image
        # dicom_path is relative to the manifest's folder and points at the image's own file
        assert (converted["out"].parent / table.loc[image, "dicom_path"]).resolve() == converted["files"][
            image
        ].resolve()
    report = converted["report"]
    assert (report.slices, report.series, report.studies) == (12, 3, 2)
    assert (report.labels_without_dicom, report.dicom_without_labels) == (1, 1)
    assert report.duplicate_label_rows == converted["repeated_rows"]
    assert report.files_skipped == 2  # README.txt and the hidden file
    assert check_manifest(converted["out"]) == []
    text = converted["out"].read_text()
    assert "Doe" not in text and "MRN-SECRET" not in text


def test_unmatched_labels_and_files_are_warned_with_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = make_rsna_folder(tmp_path, seed=1)
    with caplog.at_level(logging.WARNING, logger="monai_stroke"):
        convert_rsna(data["labels"], data["dicom"], tmp_path / "out.csv")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("1 labelled images have no DICOM") and "ID_nofile000" in m for m in messages), messages
    assert any(m.startswith("1 DICOM files have no labels") and "unlabelled.dcm" in m for m in messages), messages


@pytest.mark.parametrize("named_as", ["random", "stem"])
def test_pydicom_ct_sample(tmp_path: Path, named_as: str) -> None:
    sample = Path(get_testdata_file("CT_small.dcm"))
    sop = str(pydicom.dcmread(sample, stop_before_pixels=True).SOPInstanceUID)
    # RSNA keeps "ID_" in front of the image id; the sample's SOPInstanceUID is a plain UID, found either way
    image = f"ID_{sop}" if named_as == "random" else "ID_ct0small"
    shutil.copy(sample, tmp_path / ("3f9a1c.dcm" if named_as == "random" else f"{image}.dcm"))
    labels = write_labels(tmp_path / "labels.csv", label_rows(image, ["intraparenchymal"]))
    report = convert_rsna(labels, tmp_path, tmp_path / "out" / "slices.csv")
    table = read_rsna_slices(tmp_path / "out" / "slices.csv")
    assert report.slices == 1 and report.files_skipped == 1  # labels.csv sits in the folder and is skipped
    row = table.iloc[0]
    assert (row["image_id"], row["slice_index"], row["intraparenchymal"], row["any"], row["subdural"]) == (
        image,
        0,
        1,
        1,
        0,
    )
    assert row["position_mm"] == pytest.approx(-75.699997, abs=1e-3)  # axial: the position along the normal is z
    assert row["series_uid"] == "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"


def test_parallel_header_reading_gives_the_same_table(converted: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rsna_module, "_MIN_FILES_FOR_WORKERS", 1)
    convert_rsna(converted["labels"], converted["dicom"], tmp_path / "p.csv", workers=2)
    serial = pd.read_csv(converted["out"]).drop(columns="dicom_path")
    parallel = pd.read_csv(tmp_path / "p.csv").drop(columns="dicom_path")
    pd.testing.assert_frame_equal(serial, parallel)


def _series(folder: Path, n: int = 3, **kwargs) -> list[str]:
    study, series = new_uid(), new_uid()
    ids = [f"ID_s{k}" for k in range(n)]
    for k, image in enumerate(ids):
        write_ct(folder / f"f{k}.dcm", image, study, series, (0, 0, 5.0 * k), **kwargs)
    return ids


def _break_conflicting_label(folder: Path, ids: list[str]) -> list:
    rows = [r for i in ids for r in label_rows(i)]
    return [*rows, (f"{ids[1]}_epidural", 1)]


def _break_missing_subtype(folder: Path, ids: list[str]) -> list:
    return [r for i in ids for r in label_rows(i) if r[0] != f"{ids[2]}_subdural"]


def _break_not_dicom(folder: Path, ids: list[str]) -> list:
    (folder / "broken.dcm").write_bytes(b"this is not DICOM at all" * 10)
    return [r for i in ids for r in label_rows(i)]


def _break_truncated(folder: Path, ids: list[str]) -> list:
    data = (folder / "f1.dcm").read_bytes()
    (folder / "f1.dcm").write_bytes(data[:300])
    return [r for i in ids for r in label_rows(i)]


def _break_same_position(folder: Path, ids: list[str]) -> list:
    study = pydicom.dcmread(folder / "f0.dcm").StudyInstanceUID
    series = pydicom.dcmread(folder / "f0.dcm").SeriesInstanceUID
    write_ct(folder / "twin.dcm", "ID_twin", study, series, (0, 0, 5.0))
    return [r for i in [*ids, "ID_twin"] for r in label_rows(i)]


def _break_no_position(folder: Path, ids: list[str]) -> list:
    ds = pydicom.dcmread(folder / "f2.dcm")
    write_ct(folder / "f2.dcm", ids[2], ds.StudyInstanceUID, ds.SeriesInstanceUID, None)
    return [r for i in ids for r in label_rows(i)]


def _break_degenerate_orientation(folder: Path, ids: list[str]) -> list:
    ds = pydicom.dcmread(folder / "f2.dcm")
    write_ct(folder / "f2.dcm", ids[2], ds.StudyInstanceUID, ds.SeriesInstanceUID, (0, 0, 10), (1, 0, 0, 1, 0, 0))
    return [r for i in ids for r in label_rows(i)]


def _break_mixed_planes(folder: Path, ids: list[str]) -> list:
    ds = pydicom.dcmread(folder / "f2.dcm")
    write_ct(folder / "f2.dcm", ids[2], ds.StudyInstanceUID, ds.SeriesInstanceUID, (0, 0, 10), tilted_orientation(15))
    return [r for i in ids for r in label_rows(i)]


def _break_any_disagrees(folder: Path, ids: list[str]) -> list:
    rows = [r for i in ids for r in label_rows(i)]
    return [(i, 1) if i == f"{ids[0]}_any" else (i, v) for i, v in rows]


def _break_no_match(folder: Path, ids: list[str]) -> list:
    return label_rows("ID_elsewhere")


@pytest.mark.parametrize(
    "breaker, expected",
    [
        (_break_conflicting_label, "ID_s1_epidural has Label 1 here and 0 at row"),
        (_break_missing_subtype, "image ID_s2 has no row for subdural"),
        (_break_not_dicom, "broken.dcm is not a DICOM file"),
        (_break_truncated, "f1.dcm"),
        (_break_same_position, "are at the same position 5.000 mm"),
        (_break_no_position, "lacks a valid ImagePositionPatient"),
        (_break_degenerate_orientation, "f2.dcm (image ID_s2) lacks a valid ImageOrientationPatient"),
        (_break_mixed_planes, "lies in another plane"),
        (_break_any_disagrees, "image ID_s0: any is 1 but no subtype is 1"),
        (_break_no_match, "none of the 3 DICOM files"),
    ],
    ids=lambda v: v.__name__.removeprefix("_break_") if callable(v) else "",
)
def test_bad_input_is_an_error_naming_the_culprit_and_writes_nothing(tmp_path: Path, breaker, expected: str) -> None:
    dicom = tmp_path / "dicom"
    ids = _series(dicom)
    labels = write_labels(tmp_path / "labels.csv", breaker(dicom, ids))
    out = tmp_path / "out" / "slices.csv"
    with pytest.raises(UserInputError) as err:
        convert_rsna(labels, dicom, out)
    assert expected in str(err.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_identical_duplicate_files_are_dropped(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    ids = _series(dicom)
    shutil.copy(dicom / "f1.dcm", dicom / "copy_of_f1.dcm")
    labels = write_labels(tmp_path / "labels.csv", [r for i in ids for r in label_rows(i)])
    report = convert_rsna(labels, dicom, tmp_path / "slices.csv")
    assert (report.slices, report.duplicate_files) == (3, 1)
    assert list(pd.read_csv(tmp_path / "slices.csv")["image_id"]) == ids
