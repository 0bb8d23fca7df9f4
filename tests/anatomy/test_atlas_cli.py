"""``monai-stroke atlas export/import/figure``: the files written, the round trip, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from atlas_files import FOREIGN_MAP

from monai_stroke.anatomy import Atlas, image_identity, template_identity
from monai_stroke.cli import main


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "Traceback" not in err[0]
    return err[0]


def test_export_writes_the_three_files(exported_atlas_dir: Path, default_atlas: Atlas, template_hu: np.ndarray) -> None:
    assert sorted(p.name for p in exported_atlas_dir.iterdir()) == ["atlas.nii.gz", "regions.csv", "template.nii.gz"]
    table = pd.read_csv(exported_atlas_dir / "regions.csv")
    assert list(table.columns) == ["label", "side", "region"] and len(table) == 20
    labels = nib.load(exported_atlas_dir / "atlas.nii.gz")
    assert labels.get_data_dtype() == np.int16
    assert np.array_equal(np.asarray(labels.dataobj), default_atlas.labels)
    template = nib.load(exported_atlas_dir / "template.nii.gz")
    assert np.array_equal(np.asarray(template.dataobj), template_hu)
    assert image_identity(template) == template_identity()


def test_export_from_dir_round_trip(exported_atlas_dir: Path, default_atlas: Atlas, tmp_path: Path) -> None:
    loaded = Atlas.from_dir(exported_atlas_dir)
    assert loaded.identity == default_atlas.identity
    pd.testing.assert_frame_equal(loaded.table, default_atlas.table)
    np.testing.assert_allclose(loaded.affine, default_atlas.affine)
    # re-export an atlas folder: same content, same identity
    assert main(["atlas", "export", "--atlas", str(exported_atlas_dir), "--out", str(tmp_path / "again")]) == 0
    assert Atlas.from_dir(tmp_path / "again").identity == default_atlas.identity


def test_import_cli_mask_folder(
    default_atlas: Atlas, masks_2mm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    masks = masks_2mm
    out = tmp_path / "imported"
    argv = ["atlas", "import", str(masks), "--out", str(out), "--map", FOREIGN_MAP]
    assert main([*argv, "--pattern", "MNI152_{region}_{side}.nii.gz"]) == 0
    assert "20 regions" in capsys.readouterr().out
    imported = Atlas.from_dir(out)
    assert imported.regions == default_atlas.regions
    report = json.loads((out / "import_report.json").read_text())
    assert report["layout"] == "masks" and report["missing"] == []
    assert {s["name"]: s["region"] for s in report["sources"]}["IC"] == "I"


def test_figure(exported_atlas_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    assert main(["atlas", "figure", "--atlas", str(exported_atlas_dir), "--out", str(out), "--z", "4"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


@pytest.fixture(scope="module")
def label_map(default_atlas: Atlas, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labelmap")
    nib.save(nib.Nifti1Image(np.asarray(default_atlas.labels), default_atlas.affine), folder / "labels.nii.gz")
    default_atlas.table.to_csv(folder / "table.csv", index=False)
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["atlas", "import", "{d}/nowhere.nii.gz", "--out", "{d}/out"], "does not exist"),
        (["atlas", "import", "{d}/labels.nii.gz", "--out", "{d}/out"], "give its table with --table"),
        (
            ["atlas", "import", "{d}/labels.nii.gz", "--table", "{d}/table.csv", "--map", "IC=XYZ", "--out", "{d}/o"],
            "unknown region name 'XYZ'",
        ),
        (
            ["atlas", "import", "{d}/labels.nii.gz", "--table", "{d}/table.csv", "--map", "Insla=I", "--out", "{d}/o"],
            "the mapping names 'Insla'",
        ),
        (["atlas", "import", "{d}/labels.nii.gz", "--table", "{d}/missing.csv", "--out", "{d}/o"], "does not exist"),
        (["atlas", "export", "--atlas", "{d}/no_atlas", "--out", "{d}/o"], "atlas folder .* does not exist"),
        (["atlas", "export", "--atlas", "{d}", "--out", "{d}/o"], "lacks template.nii.gz, atlas.nii.gz, regions.csv"),
        (["atlas", "export", "--out", "{d}"], "holds other files"),
    ],
)
def test_cli_errors(label_map: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{d}", str(label_map)) for a in args]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert re.search(message, line), line
    assert (label_map / "labels.nii.gz").is_file()  # an existing folder with other files is never replaced
