"""Manifest schemas: every problem is found and located by file, spreadsheet row (header = 1) and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_stroke.errors import UserInputError
from monai_stroke.manifests import (
    check_manifest,
    check_manifests,
    detect_kind,
    read_cohort,
    read_regions,
    read_rsna_labels,
)
from monai_stroke.vocabulary import HEMORRHAGE_LABELS, REGIONS, SIDES

LABELS_HEADER = ",".join(HEMORRHAGE_LABELS)
SLICES_HEADER = "image_id,study_uid,series_uid,slice_index,position_mm," + LABELS_HEADER


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """Folders and files the cohort rows below point at."""
    for pid in ("P1", "P2", "P3", "P4"):
        (tmp_path / pid / "dicom").mkdir(parents=True)
        (tmp_path / pid / "dicom" / "a.dcm").write_bytes(b"x")
        (tmp_path / pid / "lesions.nii.gz").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "scan.nii").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    return tmp_path


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


GOOD_COHORT = (
    "patient_id,series_dir,split,lesion_mask,age\n"
    "P1,P1/dicom,train,P1/lesions.nii.gz,71\n"
    "P2,P2/dicom,val,,64\n"
    "P3,scan.nii,test,P3/lesions.nii.gz,80\n"
)


def test_valid_cohort_keeps_extra_columns(dataset_dir: Path) -> None:
    path = _write(dataset_dir, "cohort.csv", GOOD_COHORT)
    assert check_manifest(path) == []
    cohort = read_cohort(path)
    assert list(cohort.columns) == ["patient_id", "series_dir", "split", "lesion_mask", "age"]
    assert list(cohort["age"]) == ["71", "64", "80"]
    assert list(cohort.index) == [0, 1, 2]


@pytest.mark.parametrize(
    "row, expected",
    [
        ("P4,P4/dicom,trian,", "row 5, column split: 'trian' is not one of train, val, test"),
        ("P4,P4/dicom,Train,", "row 5, column split: 'Train' is not one of train, val, test"),
        ("P4,P4/dicom,,", "row 5, column split: empty; expected one of train, val, test"),
        (",P4/dicom,test,", "row 5, column patient_id: empty; a value is required"),
        (
            "P1,P4/dicom,test,",
            "row 5, column patient_id: patient 'P1' is in split 'test' here and in split 'train' at row 2",
        ),
        ("P2,P4/dicom,val,", "row 5, column patient_id: patient 'P2' is listed again (first at row 3)"),
        ("P4,P9/dicom,test,", "row 5, column series_dir: 'P9/dicom' does not exist"),
        ("P4,empty,test,", "row 5, column series_dir: 'empty' is an empty folder"),
        ("P4,notes.txt,test,", "row 5, column series_dir: 'notes.txt' is not a DICOM folder or a NIfTI file"),
        ("P4,./P1/dicom/,test,", "row 5, column series_dir: './P1/dicom/' is also the series of patient 'P1' at row 2"),
        ("P4,P4/dicom,test,P1/dicom", "row 5, column lesion_mask: 'P1/dicom' is a folder; expected a NIfTI file"),
        ("P4,P4/dicom,test,gone.nii.gz", "row 5, column lesion_mask: 'gone.nii.gz' does not exist"),
        ("P4,P4/dicom,test,notes.txt", "row 5, column lesion_mask: 'notes.txt' is not a NIfTI file"),
    ],
)
def test_cohort_problem_is_located(dataset_dir: Path, row: str, expected: str) -> None:
    cohort = GOOD_COHORT.replace(",71", "").replace(",64", "").replace(",80", "").replace(",age", "")
    path = _write(dataset_dir, "cohort.csv", cohort + row + "\n")
    problems = check_manifest(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path} {expected}")


def test_missing_paths_are_not_checked_without_files(dataset_dir: Path) -> None:
    path = _write(dataset_dir, "cohort.csv", "patient_id,series_dir,split\nP1,nowhere/dicom,train\n")
    assert check_manifest(path, check_files=False) == []
    assert check_manifest(path, check_files=True) != []


def test_several_problems_are_all_listed_in_row_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "cohort.csv",
        "patient_id,series_dir,split\n\nA,a,train\nB,b,trian\n  \nA,c,val\nC,,test\n",
    )
    problems = check_manifest(path, check_files=False)
    # blank lines keep their spreadsheet row numbers
    assert problems == [
        f"{path} row 4, column split: 'trian' is not one of train, val, test",
        f"{path} row 6, column patient_id: patient 'A' is in split 'val' here and in split 'train' at row 3; splits "
        "are by patient, so a patient belongs to one split",
        f"{path} row 7, column series_dir: empty; a value is required",
    ]


def test_many_bad_rows_are_listed_up_to_a_limit_then_counted(tmp_path: Path) -> None:
    rows = "".join(f"P{i},s{i},nope\n" for i in range(50))
    problems = check_manifest(_write(tmp_path, "c.csv", "patient_id,series_dir,split\n" + rows), check_files=False)
    assert len(problems) == 21
    assert problems[0].endswith("row 2, column split: 'nope' is not one of train, val, test")
    assert problems[-1].endswith(
        "column split: 30 more rows like row 2 ('nope' is not one of train, val, test) not listed"
    )


REGIONS_HEADER = "patient_id,side,region,category\n"


def _all_regions(pid: str, category: str = "intact") -> str:
    return "".join(f"{pid},{s},{r},{category}\n" for s in SIDES for r in REGIONS)


@pytest.mark.parametrize(
    "row, expected",
    [
        ("P1,left,M1,intact", "row 42, column side: 'left' is not one of L, R"),
        ("P1,L,M7,intact", "row 42, column region: 'M7' is not one of C, L, IC, I, M1, M2, M3, M4, M5, M6"),
        ("P3,L,M1,infarct", "row 42, column category: 'infarct' is not one of intact, old_infarction"),
        (
            "P1,L,M1,old_infarction",
            "row 42, column patient_id: patient 'P1' side L region M1 is listed again (first at row 6)",
        ),
    ],
)
def test_regions_problem_is_located(tmp_path: Path, row: str, expected: str) -> None:
    path = _write(tmp_path, "regions.csv", REGIONS_HEADER + _all_regions("P1") + _all_regions("P2") + row + "\n")
    problems = check_manifest(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path} {expected}"), problems


def test_regions_cross_checked_against_cohort(dataset_dir: Path) -> None:
    cohort = _write(dataset_dir, "cohort.csv", GOOD_COHORT)
    regions = _write(dataset_dir, "regions.csv", REGIONS_HEADER + _all_regions("P1") + _all_regions("P7"))
    assert check_manifest(regions) == []  # alone it is valid
    reports = check_manifests([cohort, regions])
    assert reports[0].ok
    assert [str(p) for p in reports[1].problems][
        0
    ] == f"{regions} row 22, column patient_id: patient 'P7' is not in {cohort}"
    assert len(reports[1].problems) == 20
    assert any("2 patient(s)" in w and "P2, P3" in w for w in reports[1].warnings)


def test_incomplete_patient_is_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, "regions.csv", REGIONS_HEADER + _all_regions("P1") + "P2,L,M1,intact\n")
    (report,) = check_manifests([path])
    assert report.ok and report.n_rows == 21
    assert report.warnings and "P2 (1)" in report.warnings[0]


def test_read_regions_raises_naming_the_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "regions.csv", REGIONS_HEADER + "P1,X,M1,intact\n")
    with pytest.raises(UserInputError, match=r"row 2, column side: 'X' is not one of L, R.*manifest check"):
        read_regions(path)


def _slice_rows(rows: list[tuple]) -> str:
    return SLICES_HEADER + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)


GOOD_SLICES = [
    ("ID_a", "st1", "se1", 0, -10.0, 0, 0, 0, 0, 0, 0),
    ("ID_b", "st1", "se1", 1, -5.0, 1, 0, 1, 0, 0, 1),
    ("ID_c", "st1", "se1", 2, 0.0, 0, 0, 0, 0, 0, 0),
    ("ID_d", "st2", "se2", 0, 3.5, 1, 1, 0, 0, 0, 0),
]


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {1: ("ID_b", "st1", "se1", 1, -5.0, 0, 0, 1, 0, 0, 1)},
            "row 3, column any: image 'ID_b': any is 0 but intraparenchymal, subdural is 1",
        ),
        (
            {3: ("ID_d", "st2", "se2", 0, 3.5, 1, 0, 0, 0, 0, 0)},
            "row 5, column any: image 'ID_d': any is 1 but no subtype is 1",
        ),
        (
            {2: ("ID_c", "st1", "se1", 3, 0.0, 0, 0, 0, 0, 0, 0)},
            "row 2, column slice_index: series 'se1' has slice_index values 0, 1, 3",
        ),
        (
            {2: ("ID_c", "st1", "se1", 2, -7.0, 0, 0, 0, 0, 0, 0)},
            "row 4, column position_mm: slice 2 of series 'se1' is not above slice 1",
        ),
        (
            {2: ("ID_c", "st9", "se1", 2, 0.0, 0, 0, 0, 0, 0, 0)},
            "row 2, column study_uid: series 'se1' appears under more than one study_uid",
        ),
        (
            {2: ("ID_a", "st1", "se1", 2, 0.0, 0, 0, 0, 0, 0, 0)},
            "row 4, column image_id: image 'ID_a' is listed again (first at row 2)",
        ),
        (
            {0: ("ID_a", "st1", "se1", -1, -10.0, 0, 0, 0, 0, 0, 0)},
            "row 2, column slice_index: '-1' is not a whole number >= 0",
        ),
        (
            {0: ("ID_a", "st1", "se1", 0, "nan", 0, 0, 0, 0, 0, 0)},
            "row 2, column position_mm: 'nan' is not a finite number",
        ),
        ({0: ("ID_a", "st1", "se1", 0, -10.0, 0, 0, 0, 0, 0, 2)}, "row 2, column subdural: '2' is not 0 or 1"),
    ],
)
def test_rsna_slices_problem_is_located(tmp_path: Path, change: dict, expected: str) -> None:
    assert check_manifest(_write(tmp_path, "ok.csv", _slice_rows(GOOD_SLICES))) == []
    rows = [change.get(i, r) for i, r in enumerate(GOOD_SLICES)]
    path = _write(tmp_path, "slices.csv", _slice_rows(rows))
    problems = check_manifest(path)
    assert any(p.startswith(f"{path} {expected}") for p in problems), problems


def _label_file(tmp_path: Path, rows: list[str]) -> Path:
    return _write(tmp_path, "stage_2_train.csv", "ID,Label\n" + "\n".join(rows) + "\n")


def _image(image: str, **positive: int) -> list[str]:
    subtypes = {s: positive.get(s, 0) for s in HEMORRHAGE_LABELS[1:]}
    values = {"any": int(any(subtypes.values())), **subtypes}
    return [f"{image}_{name},{values[name]}" for name in HEMORRHAGE_LABELS]


def test_rsna_labels_identical_repeats_dropped(tmp_path: Path) -> None:
    rows = _image("ID_63eb1e259", subdural=1) + _image("ID_2669954a7") + _image("ID_63eb1e259", subdural=1)[:2]
    labels = read_rsna_labels(_label_file(tmp_path, rows))
    assert list(labels.columns) == list(HEMORRHAGE_LABELS)
    assert labels.loc["ID_63eb1e259"].tolist() == [1, 0, 0, 0, 0, 1]
    assert labels.loc["ID_2669954a7"].sum() == 0
    assert labels.attrs["duplicate_rows"] == 2


@pytest.mark.parametrize(
    "rows, expected",
    [
        (["ID_x_any,1"], "row 14, column ID: ID_x_any has Label 1 here and 0 at row 2; the file contradicts itself"),
        (["ID_63eb1e259 _any,0"], "row 14, column ID: 'ID_63eb1e259 _any' is not ID_<image>_<subtype>"),
        (["_any,0"], "row 14, column ID: '_any' is not ID_<image>_<subtype>"),
        (["ID_y_hemorrhage,0"], "row 14, column ID: 'ID_y_hemorrhage' is not ID_<image>_<subtype>"),
        (["ID_z_any,yes"], "row 14, column Label: 'yes' is not 0 or 1"),
        (
            ["ID_w_any,0", "ID_w_epidural,0"],
            "row 14, column ID: image ID_w has no row for intraparenchymal, intraventricular",
        ),
    ],
)
def test_rsna_labels_problem_is_located(tmp_path: Path, rows: list[str], expected: str) -> None:
    path = _label_file(tmp_path, _image("ID_x") + _image("ID_v", epidural=1) + rows)
    problems = check_manifest(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path} {expected}"), problems


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        ("", "is empty; a manifest starts with a header row"),
        ("patient_id,series_dir,split\n", "has a header but no data rows"),
        ("patient_id,series_dir,split\nP1,a,train,extra\n", "row 2: has 4 fields but the header has 3"),
        ("patient_id,split,split\nP1,a,train\n", "row 1: column split appears more than once in the header"),
        ("patient_id,series,split\nP1,a,train\n", "looks like a cohort manifest but lacks column series_dir"),
        ("name,value\nx,1\n", "is not a known manifest kind"),
        (b"\xff\xfe\x00p\x00a\x00t\x00i\x00", "is not a UTF-8 CSV text file"),
    ],
)
def test_unreadable_or_unknown_files(tmp_path: Path, content: str | bytes | None, expected: str) -> None:
    path = tmp_path / "m.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    problems = check_manifest(path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_bom_and_spaces_from_spreadsheets_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffpatient_id, series_dir ,split\nP1 , a, train \n".encode())
    cohort = read_cohort(path, check_files=False)
    assert cohort.iloc[0].tolist() == ["P1", "a", "train"]


def test_kind_detection_and_forcing(tmp_path: Path) -> None:
    assert detect_kind(["patient_id", "split", "series_dir", "x"]) == "cohort"
    assert detect_kind(["ID", "Label"]) == "rsna_labels"
    assert detect_kind(SLICES_HEADER.split(",")) == "rsna_slices"
    with pytest.raises(UserInputError, match="fits several kinds"):
        detect_kind(["patient_id", "series_dir", "split", "side", "region", "category"])
    path = _write(tmp_path, "both.csv", "patient_id,series_dir,split,side,region,category\nP1,a,train,L,C,intact\n")
    assert check_manifest(path, kind="regions") == []
    assert check_manifest(path, kind="cohort", check_files=False) == []
    with pytest.raises(UserInputError, match="unknown manifest kind"):
        check_manifest(path, kind="cohorts")
