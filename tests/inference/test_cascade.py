"""The cascade on a patient with a known left-hemisphere infarct: laterality end to end, ASPECTS, report, privacy.

The ischemic network is the stand-in :class:`AsymmetryNet` (flags a region darker than its mirror image), run
through the real pipeline: ingest -> hemorrhage network -> registration -> per-hemisphere crops with the right
side mirrored -> windows -> lesion concatenation -> network -> ASPECTS -> Grad-CAM mapped back -> report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cascade_patients import PLANTED

from monai_stroke.inference import REPORT_FILE, check_report
from monai_stroke.vocabulary import REGIONS


def _flagged(report: dict, key: str = "early_ischemic") -> set[tuple[str, str]]:
    return {(r["side"], r["region"]) for r in report["ischemic"]["regions"] if r[key]}


def test_left_infarct_is_flagged_on_the_left_not_the_right(negative_run: dict) -> None:
    report, truth = negative_run["report"], negative_run["truth"]
    flagged = _flagged(report)
    assert set(truth["regions"]) <= flagged, f"lesion regions {truth['regions']} not all flagged: {flagged}"
    assert {side for side, _ in flagged} == {"L"}
    right = [r for r in report["ischemic"]["regions"] if r["side"] == "R"]
    assert max(r["early_ischemic_probability"] for r in right) < report["ischemic"]["thresholds"]["early_vs_intact"]
    # the lesion regions are the most probable ones: the signal is where the lesion is, not a side-wide offset
    ranked = sorted(report["ischemic"]["regions"], key=lambda r: -r["early_ischemic_probability"])
    assert {(r["side"], r["region"]) for r in ranked[: len(truth["regions"])]} == set(truth["regions"])


def test_aspects_counts_the_flagged_regions_per_side(negative_run: dict) -> None:
    report = negative_run["report"]
    flagged = _flagged(report)
    assert report["ischemic"]["scored"] is True
    assert report["aspects"] == {"L": 10 - len(flagged), "R": 10}
    assert report["aspects"]["L"] <= 10 - len(negative_run["truth"]["regions"])


def test_report_follows_the_schema(negative_run: dict) -> None:
    on_disk = json.loads((negative_run["out"] / REPORT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(negative_run["report"]))
    assert check_report(on_disk) == []
    assert [(r["side"], r["region"]) for r in on_disk["ischemic"]["regions"]] == [
        (side, region) for side in ("L", "R") for region in REGIONS
    ]
    registration = on_disk["registration"]
    assert registration["passed"] is True and registration["brain_dice"] >= registration["threshold"]
    assert set(on_disk["models"]) == {"hemorrhage", "early_vs_intact", "old_vs_intact"}
    assert all(len(m["sha256"]) == 64 for m in on_disk["models"].values())
    stages = {"ingest", "hemorrhage", "registration", "region_crops", "ischemic", "explanations", "report", "total"}
    assert stages <= set(on_disk["timings_s"])
    assert on_disk["timings_s"]["total"] >= sum(v for k, v in on_disk["timings_s"].items() if k != "total") * 0.95


def test_costly_steps_run_once_for_three_models(negative_run: dict) -> None:
    executed = negative_run["cascade"].last["runner"].executed
    # three contracts begin with the same ingest; two share registration and crops
    assert executed["LoadCTSeriesd"] == 1
    assert executed["RegisterToTemplated"] == 1
    assert executed["RegionCropd"] == 1


def test_explanations_exist_for_flagged_regions_and_top_slices(negative_run: dict) -> None:
    report, out = negative_run["report"], negative_run["out"]
    records = report["files"]["explanations"]
    regions = {(e["side"], e["region"]) for e in records if e["what"] == "early_vs_intact"}
    assert regions == _flagged(report)
    assert len([e for e in records if e["what"] == "hemorrhage"]) == len(report["hemorrhage"]["top_slices"])
    for record in records:
        assert (out / record["file"]).stat().st_size > 10_000, record
    assert (out / "report.png").stat().st_size > 50_000


@pytest.mark.parametrize("side,region", [("L", "M2"), ("R", "M2"), ("L", "C"), ("R", "M5")])
def test_crop_maps_land_on_their_own_side_of_the_patient(negative_run: dict, side: str, region: str) -> None:
    """A crop-shaped map sent back through the crop affine (mirrored for R) and the inverse registration lands in
    the patient's hemisphere of that side and inside the region's mapped outline."""
    from monai_stroke.inference.explain import crop_heat_volume, patient_slice_of, template_map_on_slice

    cascade = negative_run["cascade"]
    ischemic, ingested = cascade.last["ischemic"], cascade.last["ingested"]
    meta = ischemic.registration_meta
    crop_meta = ischemic.predictions["early_vs_intact"].crop_meta[(side, region)]
    ones = np.ones(tuple(int(s) for s in crop_meta["spatial_shape"][:2]), dtype=np.float32)
    heat, affine = crop_heat_volume(ones, crop_meta)
    z = patient_slice_of([cascade.models.atlas.centroid_mm(side, region)], meta)
    mapped = template_map_on_slice(heat, affine, meta, z, "bilinear")
    assert mapped.sum() > 0
    x, y = np.nonzero(mapped > 0.5)
    world = np.asarray(ingested.affine) @ np.stack([x, y, np.full_like(x, z), np.ones_like(x)])
    centre_x = float(np.average(world[0], weights=mapped[x, y]))
    assert (centre_x < 0) == (side == "L"), f"{side} {region} crop mapped to RAS x = {centre_x:.1f} mm"
    labels = cascade._labels_on(z, meta)
    inside = labels == cascade.models.atlas.label_of(side, region)
    assert (mapped[inside] > 0.5).mean() > 0.9  # the crop covers its region


def test_no_identifier_in_any_output_file(negative_run: dict) -> None:
    planted = [v.encode() for v in PLANTED.values()] + [b"Plantedname", b"Secretia", b"1923-04-05"]
    files = [p for p in negative_run["out"].rglob("*") if p.is_file()]
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        for value in planted:
            assert value not in data, f"{value!r} found in {path}"
    report = negative_run["report"]
    assert "patient_name" not in report["series"] and "source" not in report["series"]


def test_failed_registration_is_reported_and_not_scored(negative_run: dict, tmp_path, monkeypatch) -> None:
    """A registration failing its quality check: ASPECTS not scored, a warning, never silent numbers."""
    import monai_stroke.inference.ischemic as ischemic_module
    from monai_stroke.inference import StrokeCascade

    cascade = negative_run["cascade"]
    shared = cascade.last["runner"]  # reuse this series' ingest and registration: only the decision changes

    def failing(meta, threshold=0.85):
        return {
            "passed": False,
            "reasons": ["brain overlap Dice 0.410 < 0.85"],
            "brain_dice": 0.41,
            "threshold": 0.85,
            "brain_coverage": 1.0,
            "coverage_complete": True,
            "scales": [1.0, 1.0, 1.0],
            "scales_plausible": True,
            "rotation_deg": 0.0,
            "metric": -0.1,
            "warnings": [],
        }

    monkeypatch.setattr(ischemic_module, "registration_quality", failing)
    again = StrokeCascade(cascade.models, explain=False)
    monkeypatch.setattr(again, "new_runner", lambda: shared)
    report = again.predict(negative_run["truth"]["series"], tmp_path / "out")
    assert report["ischemic"]["scored"] is False and report["ischemic"]["regions"] == []
    assert report["aspects"] == {"L": None, "R": None}
    assert "Dice 0.410 < 0.85" in report["ischemic"]["reason"]
    assert any("not scored" in w and "registration" in w for w in report["warnings"])
    assert check_report(report) == []
    assert (tmp_path / "out" / "report.png").is_file()


def test_regions_above_a_short_scan_are_not_scored(negative_run: dict) -> None:
    """A scan that stops below the supraganglionic level: M4-M6 lie outside it, so ASPECTS cannot be scored."""
    from monai_stroke.inference.ischemic import regions_outside_scan
    from monai_stroke.transforms.registration import map_points_to_patient

    cascade = negative_run["cascade"]
    meta = dict(cascade.last["ischemic"].registration_meta)
    assert regions_outside_scan(cascade.models.atlas, meta) == []  # the whole head was scanned
    centroids = [cascade.models.atlas.centroid_mm(s, r) for s in ("L", "R") for r in ("M4", "M5", "M6")]
    supraganglionic_z = int(np.rint(map_points_to_patient(np.stack(centroids), meta, as_voxel=True)[:, 2].min()))
    shape = np.asarray(meta["patient_spatial_shape"]).copy()
    shape[2] = supraganglionic_z - 1  # the same patient grid, cut below the supraganglionic centroids
    meta["patient_spatial_shape"] = shape
    outside = set(regions_outside_scan(cascade.models.atlas, meta))
    assert outside >= {(s, r) for s in ("L", "R") for r in ("M4", "M5", "M6")}
    assert not outside & {(s, r) for s in ("L", "R") for r in ("C", "L", "IC")}
