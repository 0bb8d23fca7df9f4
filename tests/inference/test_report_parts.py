"""Units of the report: ASPECTS arithmetic, the radiological view, and the report checker."""

from __future__ import annotations

import numpy as np
import pytest

from monai_stroke.inference import aspects_scores, check_report
from monai_stroke.inference.figures import pixel_aspect, radiological_view
from monai_stroke.vocabulary import REGIONS


def _regions(early: dict[str, set[str]] | None = None, old: dict[str, set[str]] | None = None) -> list[dict]:
    early, old = early or {}, old or {}
    return [
        {
            "side": side,
            "region": region,
            "early_ischemic_probability": 0.9 if region in early.get(side, set()) else 0.1,
            "old_infarction_probability": 0.9 if region in old.get(side, set()) else 0.1,
            "early_ischemic": region in early.get(side, set()),
            "old_infarction": region in old.get(side, set()),
        }
        for side in ("L", "R")
        for region in REGIONS
    ]


@pytest.mark.parametrize(
    "early,old,expected",
    [
        ({}, {}, {"L": 10, "R": 10}),
        ({"L": {"I", "M2", "M5"}}, {}, {"L": 7, "R": 10}),
        ({"R": set(REGIONS)}, {}, {"L": 10, "R": 0}),
        ({}, {"L": {"C", "M1"}, "R": {"M6"}}, {"L": 10, "R": 10}),  # old infarcts are listed, not counted
        ({"L": {"M1"}}, {"L": {"M1", "M3"}}, {"L": 9, "R": 10}),  # a region with both counts once
        ({"L": {"C"}, "R": {"IC", "L"}}, {}, {"L": 9, "R": 8}),
    ],
)
def test_aspects_is_ten_minus_early_ischemic_regions(early, old, expected) -> None:
    assert aspects_scores(_regions(early, old)) == expected


def test_aspects_is_not_scored_without_all_ten_regions() -> None:
    regions = [r for r in _regions({"L": {"M1"}}) if not (r["side"] == "R" and r["region"] == "M6")]
    assert aspects_scores(regions) == {"L": 9, "R": None}


def _lps_axial_affine(spacing=(0.5, 0.5, 5.0)) -> np.ndarray:
    # what ingest returns for a standard axial DICOM: row direction +x LPS (patient left), columns +y LPS (posterior)
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    return a


@pytest.mark.parametrize(
    "transform",
    ["standard", "flip_x", "flip_y", "transpose", "transpose_flip_both"],
)
def test_radiological_view_puts_patient_left_on_image_right_and_anterior_up(transform: str) -> None:
    affine = _lps_axial_affine()
    volume = np.zeros((40, 60))
    # a marker in the patient's left-anterior quarter: RAS x < 0 (left), y > 0 (anterior)
    ras = lambda i, j: affine[:2, :2] @ np.array([i, j]) + affine[:2, 3]  # noqa: E731
    for i in range(40):
        for j in range(60):
            x, y = ras(i, j)
            volume[i, j] = x < -10 * 0.5 and y > -30 * 0.5 + 5
    a = affine.copy()
    if transform in ("flip_x", "transpose_flip_both"):
        volume = volume[::-1]
        a[:, 3] = a @ np.array([39, 0, 0, 1.0])
        a[:, 0] *= -1
    if transform in ("flip_y", "transpose_flip_both"):
        volume = volume[:, ::-1]
        a[:, 3] = a @ np.array([0, 59, 0, 1.0])
        a[:, 1] *= -1
    if transform.startswith("transpose"):
        volume = volume.T
        a[:, [0, 1]] = a[:, [1, 0]]
    img = radiological_view(volume, a)
    rows, cols = np.nonzero(img)
    assert img.shape == (60, 40)  # rows run antero-posterior, columns left-right
    assert cols.mean() > img.shape[1] / 2, "patient's left must be on the image's right"
    assert rows.mean() < img.shape[0] / 2, "anterior must be at the top"


def test_pixel_aspect_follows_displayed_axes() -> None:
    affine = np.diag([-0.5, -1.0, 5.0, 1.0])
    assert pixel_aspect(affine) == pytest.approx(2.0)  # rows (y) 1.0 mm over columns (x) 0.5 mm


def _valid_report() -> dict:
    regions = _regions({"L": {"M2"}})
    subtypes = {
        s: {"probability": 0.01, "positive": False, "threshold": 0.5}
        for s in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
    }
    return {
        "format": "monai-stroke-report/1",
        "monai_stroke_version": "0",
        "created_utc": "",
        "series": {},
        "hemorrhage": {
            "probability": 0.02,
            "positive": False,
            "decision_threshold": 0.4,
            "subtypes": subtypes,
            "top_slices": [{"slice_index": 3, "probability": 0.02}],
        },
        "ischemic": {"scored": True, "reason": None, "regions": regions},
        "aspects": {"L": 9, "R": 10},
        "registration": None,
        "models": {"hemorrhage": {"sha256": "0" * 64}},
        "timings_s": {"total": 1.0},
        "warnings": [],
        "files": {},
    }


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda r: r["hemorrhage"].update(positive=True), "must not score ASPECTS"),
        (lambda r: r["aspects"].update(L=None), "aspects.L"),
        (lambda r: r["ischemic"].update(scored=False), "aspects must be null"),
        (lambda r: r["ischemic"]["regions"].pop(), "19 entries"),
        (lambda r: r["ischemic"]["regions"][0].update(early_ischemic_probability=1.5), "not in [0, 1]"),
        (lambda r: r["hemorrhage"]["subtypes"].pop("subdural"), "subtypes"),
        (lambda r: r.pop("warnings"), "missing top-level keys"),
    ],
)
def test_check_report_names_what_is_wrong(breakage, message) -> None:
    report = _valid_report()
    assert check_report(report) == []
    breakage(report)
    problems = check_report(report)
    assert any(message in p for p in problems), problems


def test_nifti_series_reads_like_its_dicom_folder(left_patient, tmp_path) -> None:
    """SERIES may be a NIfTI file: the hemorrhage step sees the same slices, in the same order, as from DICOM."""
    import torch

    from monai_stroke.inference.hemorrhage import predict_hemorrhage
    from monai_stroke.inference.models import CascadeModel
    from monai_stroke.inference.preprocess import ChainRunner
    from monai_stroke.inference.untrained import hemorrhage_contract
    from monai_stroke.io import load_ct_series, save_nifti
    from monai_stroke.networks import create_network

    nifti = save_nifti(load_ct_series(left_patient["series"]), tmp_path / "ct.nii.gz")
    torch.manual_seed(0)
    contract = hemorrhage_contract()
    model = CascadeModel("hemorrhage", create_network(**contract.network).eval(), contract)
    results = [
        predict_hemorrhage(ChainRunner(), model, s, torch.device("cpu")) for s in (left_patient["series"], nifti)
    ]
    dicom, from_nifti = results
    assert dicom.slice_probabilities.std(axis=0).max() > 1e-4  # a random network: probabilities vary per slice
    np.testing.assert_allclose(from_nifti.slice_probabilities, dicom.slice_probabilities, atol=1e-5)
    assert from_nifti.top_slices == dicom.top_slices
