"""`monai-stroke manifest check|rsna|tasks`: output lines, exit status, one `error:` line for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from manifest_helpers import label_rows, make_rsna_folder, write_labels

from monai_stroke.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "data_manifests" / "examples"


def _err_lines(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    captured = capsys.readouterr()
    return captured.out.strip().splitlines(), captured.err.strip().splitlines()


def test_check_examples_ok(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(EXAMPLES / n) for n in ("cohort.csv", "regions.csv", "rsna_labels.csv", "rsna_slices.csv")]
    assert main(["manifest", "check", "--no-files", *files]) == 0
    out, err = _err_lines(capsys)
    assert out == [
        f"ok: {files[0]} (4 rows, cohort)",
        f"ok: {files[1]} (80 rows, regions)",
        f"ok: {files[2]} (13 rows, rsna_labels)",
        f"ok: {files[3]} (5 rows, rsna_slices)",
    ]
    assert err == []


def test_check_lists_every_problem_first_line_prefixed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"x")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("patient_id,series_dir,split\nP1,a,train\nP2,b,trian\n")
    regions = tmp_path / "regions.csv"
    regions.write_text("patient_id,side,region,category\nP1,L,C,intact\nP9,L,C,intact\n")
    assert main(["manifest", "check", str(cohort), str(regions)]) == 2
    out, err = _err_lines(capsys)
    # the regions file is fine on its own; it cannot be cross-checked against an invalid cohort, and says so
    assert out == [f"ok: {regions} (2 rows, regions)"]
    assert f"warning: {regions} is not checked against {cohort}, which has problems" in err
    errors = [line for line in err if not line.startswith("warning:")]
    assert errors == [
        f"error: {cohort} row 3, column series_dir: 'b' does not exist (paths are relative to the manifest's folder "
        f"{tmp_path.resolve()})",
        f"{cohort} row 3, column split: 'trian' is not one of train, val, test",
    ]
    # the cohort is invalid, so regions are checked alone (valid) and not against it
    assert main(["manifest", "check", "--no-files", str(cohort), str(regions)]) == 2
    out, err = _err_lines(capsys)
    assert out == [f"ok: {regions} (2 rows, regions)"] and len(err) - sum(e.startswith("warning:") for e in err) == 1
    cohort.write_text("patient_id,series_dir,split\nP1,a,train\n")
    assert main(["manifest", "check", str(cohort), str(regions)]) == 2
    out, err = _err_lines(capsys)
    assert out == [f"ok: {cohort} (1 rows, cohort)"]
    assert [e for e in err if e.startswith("error:")] == [
        f"error: {regions} row 3, column patient_id: patient 'P9' is not in {cohort}"
    ]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["manifest", "check", "nowhere.csv"], "error: nowhere.csv: no such file"),
        (["manifest", "check"], "error: Missing argument 'FILES...'"),
        (["manifest", "check", "--kind", "patients", "x.csv"], "error: Invalid value for '--kind'"),
        (["manifest", "rsna", "nowhere.csv", ".", "--out", "o.csv"], "error: nowhere.csv: no such file"),
        (["manifest", "tasks", "--tasks", "nowhere.yaml"], "error: task file nowhere.yaml does not exist"),
    ],
)
def test_bad_input_is_one_error_line(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    _, err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(expected), err


def test_rsna_writes_the_slice_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_rsna_folder(tmp_path)
    out = tmp_path / "out" / "rsna_slices.csv"
    assert main(["manifest", "rsna", str(data["labels"]), str(data["dicom"]), "--out", str(out)]) == 0
    stdout, err = _err_lines(capsys)
    assert stdout == [
        f"wrote {out}: 12 slices in 3 series of 2 studies (1 labelled images without DICOM, 1 DICOM files without "
        f"labels, {data['repeated_rows']} repeated label rows dropped)"
    ]
    assert [e.split(" (e.g.")[0] for e in err] == [
        f"warning: 1 labelled images have no DICOM file in {data['dicom']} and are left out",
        "warning: 1 DICOM files have no labels and are left out",
    ]
    assert main(["manifest", "check", str(out)]) == 0
    assert _err_lines(capsys)[0] == [f"ok: {out} (12 rows, rsna_slices)"]


def test_rsna_bad_input_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_rsna_folder(tmp_path)
    (data["dicom"] / "broken.dcm").write_bytes(b"\0" * 200)
    out = tmp_path / "out.csv"
    assert main(["manifest", "rsna", str(data["labels"]), str(data["dicom"]), "--out", str(out)]) == 2
    _, err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: 1 files in") and "broken.dcm is not a DICOM file" in err[0]
    assert not out.exists() and list(tmp_path.glob(".out.csv*")) == []


def test_rsna_conflicting_label_names_the_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_rsna_folder(tmp_path)
    image = data["order"]["axial"][0]
    labels = write_labels(tmp_path / "conflict.csv", [*label_rows(image), (f"{image}_any", 1)])
    assert main(["manifest", "rsna", str(labels), str(data["dicom"]), "--out", str(tmp_path / "o.csv")]) == 2
    _, err = _err_lines(capsys)
    assert len(err) == 1 and f"{image}_any has Label 1 here and 0 at row 2" in err[0]


def test_tasks_lists_builtin_and_user_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest", "tasks"]) == 0
    out, _ = _err_lines(capsys)
    assert out == [
        "early_vs_intact: positives frank_hypodensity, territorial_infarction; negatives intact; window center 40 "
        "width 20 HU (30 to 50)",
        "old_vs_intact: positives old_infarction; negatives intact; window center 40 width 30 HU (25 to 55)",
    ]
    assert main(["manifest", "tasks", "--tasks", str(EXAMPLES / "tasks_extra.yaml")]) == 0
    out, _ = _err_lines(capsys)
    assert len(out) == 3 and out[2].startswith("any_recent_vs_intact: positives frank_hypodensity")
