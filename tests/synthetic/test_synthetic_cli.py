"""``monai-stroke synth``: the command, its errors, atomic output and determinism."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from monai_stroke.cli import main
from monai_stroke.synthetic import PatientSpec, SynthConfig, make_cohort, plan_cohort, write_patient
from monai_stroke.synthetic import cohort as cohort_module


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("info:")]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_synth_writes_a_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["synth", "--patients", "1", "--out", str(out), "--seed", "5", "--noise-hu", "4", "5"]) == 0
    assert "wrote 1 synthetic patients" in capsys.readouterr().out
    cohort = (out / "cohort.csv").read_text().splitlines()
    assert len(cohort) == 2 and cohort[0].startswith("patient_id,series_dir,lesion_mask,split")
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 5 and meta["n_patients"] == 1 and meta["settings"]["size"] == "small"
    assert meta["settings"]["noise_sd_hu"] == [4.0, 5.0]
    assert {p.name for p in (out / "P001").iterdir()} == {"dicom", "lesions.nii.gz", "spec.json"}


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = make_cohort(tmp_path / "a", 2, seed=11, workers=2)
    second = make_cohort(tmp_path / "b", 2, seed=11, workers=1)  # the worker count must not matter
    files = _files(first)
    assert files == _files(second) and len(files) > 60
    match, mismatch, errors = filecmp.cmpfiles(first, second, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    other = plan_cohort(2, seed=12, config=SynthConfig())
    mine = [PatientSpec.from_json(first / f"P00{i}" / "spec.json").to_dict() for i in (1, 2)]
    assert [s.to_dict() for s, _ in other] != mine


def test_a_patient_re_renders_from_its_spec_byte_for_byte(synthetic_small_cohort: Path, tmp_path: Path) -> None:
    pid = "P004"
    spec = PatientSpec.from_json(synthetic_small_cohort / pid / "spec.json")
    write_patient(spec, tmp_path / pid)
    for path in _files(synthetic_small_cohort / pid):
        assert filecmp.cmp(synthetic_small_cohort / pid / path, tmp_path / pid / path, shallow=False), path


def test_a_failure_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(spec, patient_dir, head=None):
        calls.append(spec.patient_id)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return write_patient(spec, patient_dir, head)

    monkeypatch.setattr(cohort_module, "write_patient", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_cohort(tmp_path / "out", 3, seed=1, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_synthetic_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    make_cohort(out, 1, seed=1, workers=1)
    first = (out / "P001" / "spec.json").read_text()
    assert main(["synth", "--patients", "1", "--out", str(out), "--seed", "2", "--overwrite"]) == 0
    assert (out / "P001" / "spec.json").read_text() != first
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ischemic-contrast-hu", "2", "4"], "must be negative"),
        (["--ischemic-contrast-hu", "-2", "-6"], "low <= high"),
        (["--old-density-hu", "40", "60"], "old infarct density"),
        (["--hemorrhage-density-hu", "10", "20"], "hemorrhage density"),
        (["--noise-hu", "-1", "3"], "noise SD"),
        (["--size", "huge"], "huge"),
        (["--patients", "0"], "--patients"),
    ],
)
def test_bad_options_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["synth", "--patients", "2", "--out", str(tmp_path / "x"), *args]
    assert main(argv) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_existing_folders_are_not_overwritten_by_accident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["synth", "--patients", "1", "--out", str(busy)]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    # --overwrite only ever replaces a folder that synth wrote
    assert main(["synth", "--patients", "1", "--out", str(busy), "--overwrite"]) == 2
    assert "not a synthetic dataset" in _one_error_line(capsys)
    assert (busy / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["synth", "--patients", "1", "--out", str(a_file)]) == 2
    assert "not a folder" in _one_error_line(capsys)
    assert main(["synth", "--patients", "1", "--out", str(a_file / "below")]) == 2
    assert "cannot create" in _one_error_line(capsys)
