"""``monai-stroke predict`` and the stroke_cascade bundle: the hemorrhage-positive path, identifiers on request,
and one ``error:`` line (exit 2, no output folder) for every bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from cascade_patients import PLANTED

from monai_stroke.cli import main
from monai_stroke.inference import check_report

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "stroke_cascade" / "configs" / "inference.yaml"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def positive_cli_run(tmp_path_factory, left_patient, positive_models) -> dict:
    out = tmp_path_factory.mktemp("cli") / "report"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["predict", str(left_patient["series"]), "--models", str(positive_models), "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    return {"status": status, "out": out, "report": report, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_hemorrhage_positive_stops_before_ischemic_scoring(positive_cli_run: dict) -> None:
    assert positive_cli_run["status"] == 0, positive_cli_run["stderr"]
    assert "hemorrhage SUSPECTED" in positive_cli_run["stdout"]
    for value in PLANTED.values():  # nothing identifying on the console either
        assert value not in positive_cli_run["stdout"] + positive_cli_run["stderr"]
    report = positive_cli_run["report"]
    assert report["hemorrhage"]["positive"] is True and report["hemorrhage"]["probability"] > 0.99
    assert report["ischemic"]["scored"] is False and report["ischemic"]["regions"] == []
    assert "hemorrhage" in report["ischemic"]["reason"]
    assert report["aspects"] == {"L": None, "R": None} and report["registration"] is None
    # registration and region crops never ran
    assert "registration" not in report["timings_s"] and "region_crops" not in report["timings_s"]
    assert check_report(report) == []
    assert len(report["hemorrhage"]["top_slices"]) == 3
    out = positive_cli_run["out"]
    assert (out / "report.png").is_file()
    assert sorted(p.name for p in (out / "explain").iterdir()) == sorted(
        f"hemorrhage_slice_{t['slice_index']:03d}.png" for t in report["hemorrhage"]["top_slices"]
    )


def test_identifiers_only_on_request(positive_cli_run: dict, left_patient, positive_models, tmp_path, capsys) -> None:
    assert "patient_name" not in positive_cli_run["report"]["series"]
    status, out, err = _run(
        [
            "predict",
            left_patient["series"],
            "--models",
            positive_models,
            "--out",
            tmp_path / "r",
            "--keep-identifiers",
            "--no-explain",
        ],
        capsys,
    )
    assert status == 0, err
    assert not (tmp_path / "r" / "explain").exists()
    series = json.loads((tmp_path / "r" / "report.json").read_text())["series"]
    assert series["patient_name"] == PLANTED["PatientName"]
    assert series["patient_id"] == PLANTED["PatientID"]
    assert series["patient_birth_date"] == PLANTED["PatientBirthDate"]
    assert series["source"] == str(left_patient["series"])


def _mr_copy(series: Path, dest: Path) -> Path:
    shutil.copytree(series, dest)
    for path in dest.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path, enforce_file_format=True)
    return dest


def _foreign_atlas_models(models: Path, dest: Path) -> Path:
    from monai_stroke.contract import load_checkpoint, save_checkpoint

    shutil.copytree(models, dest)
    path = dest / "early_vs_intact" / "model.pt"
    state, contract = load_checkpoint(path)
    save_checkpoint(path, state, contract.replace(atlas_identity="f" * 64))
    return dest


def _swapped_models(models: Path, dest: Path) -> Path:
    shutil.copytree(models, dest)
    shutil.copy(dest / "old_vs_intact" / "model.pt", dest / "early_vs_intact" / "model.pt")
    return dest


def _missing_model(models: Path, dest: Path) -> Path:
    shutil.copytree(models, dest)
    (dest / "old_vs_intact" / "model.pt").unlink()
    return dest


@pytest.mark.parametrize(
    "case,expected",
    [
        ("no_series", "does not exist"),
        ("mr_series", "no CT series"),
        ("missing_model", "old_vs_intact/model.pt"),
        ("no_models_dir", "monai-stroke demo"),
        ("foreign_atlas", "another atlas"),
        ("swapped_task", "early_vs_intact"),
        ("not_a_checkpoint", "not a"),
        ("out_holds_files", "holds other files"),
    ],
)
def test_bad_input_is_one_error_line_and_no_output(
    case: str, expected: str, left_patient, negative_models, tmp_path, capsys
) -> None:
    series, models, out = left_patient["series"], negative_models, tmp_path / "out"
    if case == "no_series":
        series = tmp_path / "nowhere"
    elif case == "mr_series":
        series = _mr_copy(series, tmp_path / "mr")
    elif case == "missing_model":
        models = _missing_model(models, tmp_path / "models")
    elif case == "no_models_dir":
        models = tmp_path / "no_models"
    elif case == "foreign_atlas":
        models = _foreign_atlas_models(models, tmp_path / "models")
    elif case == "swapped_task":
        models = _swapped_models(models, tmp_path / "models")
    elif case == "not_a_checkpoint":
        models = tmp_path / "models"
        shutil.copytree(negative_models, models)
        (models / "hemorrhage" / "model.pt").write_bytes(b"not a torch file")
    elif case == "out_holds_files":
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    status, _, err = _run(["predict", series, "--models", models, "--out", out], capsys)
    assert status == 2
    line = _one_error_line(err)
    assert expected in line, line
    if case == "out_holds_files":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind


def test_failure_mid_run_leaves_no_partial_output(left_patient, positive_models, tmp_path, capsys, monkeypatch) -> None:
    import monai_stroke.inference.cascade as cascade_module

    def broken(*args, **kwargs):
        raise RuntimeError("figure writer crashed")

    monkeypatch.setattr(cascade_module, "hemorrhage_report_figure", broken)
    out = tmp_path / "out"
    status, _, err = _run(["predict", left_patient["series"], "--models", positive_models, "--out", out], capsys)
    assert status == 1 and "figure writer crashed" in err
    assert list(tmp_path.iterdir()) == []  # neither OUT nor its temporary sibling


def test_bundle_runs_the_same_cascade(left_patient, positive_models, tmp_path) -> None:
    from monai.bundle import run

    out = tmp_path / "bundle_out"
    run(
        config_file=str(BUNDLE),
        series=str(left_patient["series"]),
        models_dir=str(positive_models),
        output_dir=str(out),
        device="cpu",
        explain=False,
    )
    report = json.loads((out / "report.json").read_text())
    assert check_report(report) == [] and report["hemorrhage"]["positive"] is True
    assert not (out / "explain").exists() or not any((out / "explain").iterdir())


def test_bundle_checks_inputs_before_running(left_patient, tmp_path) -> None:
    from monai.bundle import run

    from monai_stroke.errors import UserInputError

    with pytest.raises(Exception) as info:
        run(
            config_file=str(BUNDLE),
            series=str(left_patient["series"]),
            models_dir=str(tmp_path / "none"),
            output_dir=str(tmp_path / "out"),
        )
    from monai_stroke.errors import find_user_error

    assert isinstance(find_user_error(info.value), UserInputError)
    assert not (tmp_path / "out").exists()
