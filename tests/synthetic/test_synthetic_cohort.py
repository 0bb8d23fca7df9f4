"""The synthetic cohort as the issue's checks read it: DICOM read back, lesion masks, manifests, labels.

All tests share the session fixture ``synthetic_small_cohort`` (12 patients, seed 2024, see tests/conftest.py).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage
from scipy import ndimage

from monai_stroke.anatomy import side_of_x
from monai_stroke.io import load_ct_series
from monai_stroke.manifests import check_manifest, load_dataset
from monai_stroke.synthetic import (
    EARLY_ISCHEMIC_KINDS,
    HEMORRHAGE_KINDS,
    ISCHEMIC_KINDS,
    LESION_KINDS,
    PatientSpec,
    default_head,
    render_patient,
    write_ct_series,
)
from monai_stroke.vocabulary import CATEGORIES, HEMORRHAGE_LABELS, REGIONS, SIDES

_FILE_NAME = re.compile(r"^ID_[0-9a-f]{10}\.dcm$")


@functools.cache
def _tables(root: Path) -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_csv(root / f"{name}.csv", keep_default_na=False)
        for name in ("cohort", "regions", "lesion_codes", "rsna_labels")
    }


@functools.cache
def _ingest(series_dir: Path):
    return load_ct_series(series_dir)


def _patients(root: Path) -> list[str]:
    return list(_tables(root)["cohort"]["patient_id"])


def _spec(root: Path, pid: str) -> PatientSpec:
    return PatientSpec.from_json(root / pid / "spec.json")


def _mask(root: Path, pid: str) -> nib.Nifti1Image:
    return nib.load(root / pid / "lesions.nii.gz")


def _codes(root: Path, pid: str) -> pd.DataFrame:
    codes = _tables(root)["lesion_codes"]
    return codes[codes["patient_id"] == pid]


# --- layout and manifests ----------------------------------------------------------------------------------


def test_dataset_folder_has_the_documented_files(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    for name in ("cohort.csv", "regions.csv", "lesion_codes.csv", "rsna_labels.csv", "synth.json"):
        assert (root / name).is_file(), name
    cohort = _tables(root)["cohort"]
    assert len(cohort) == 12 and cohort["patient_id"].is_unique
    for row in cohort.itertuples():
        assert (root / row.series_dir).is_dir() and (root / row.lesion_mask).is_file()
        assert row.series_dir == f"{row.patient_id}/dicom" and row.lesion_mask == f"{row.patient_id}/lesions.nii.gz"
    # nothing but the dataset: the temporary build folder was renamed, not left beside it
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["cohort.csv", "regions.csv", "rsna_labels.csv"])
def test_manifests_pass_the_manifest_checker(synthetic_small_cohort: Path, name: str) -> None:
    assert check_manifest(synthetic_small_cohort / name) == []


def test_dataset_loads_and_labels_regions_for_the_paper_tasks(synthetic_small_cohort: Path) -> None:
    dataset = load_dataset(synthetic_small_cohort)
    for task in ("early_vs_intact", "old_vs_intact"):
        for split in ("train", "val", "test"):
            labelled = dataset.labelled_regions(task, split=split)
            # every split can train or measure each task: both classes present
            assert set(labelled["label"]) == {0, 1}, (task, split)


def test_lesion_codes_are_unique_and_named_with_the_vocabulary(synthetic_small_cohort: Path) -> None:
    codes = _tables(synthetic_small_cohort)["lesion_codes"]
    assert codes["code"].is_unique and (codes["code"] > 0).all()
    assert set(codes["kind"]) <= set(LESION_KINDS)
    assert set(codes["patient_id"]) <= set(_patients(synthetic_small_cohort))
    ischemic = codes[codes["kind"].isin(ISCHEMIC_KINDS)]
    assert set(ischemic["side"]) <= set(SIDES) and set(ischemic["region"]) <= set(REGIONS)
    # the mix: early ischemic kinds, old infarcts and several hemorrhage subtypes all occur
    assert set(EARLY_ISCHEMIC_KINDS) & set(codes["kind"]) and "old_infarction" in set(codes["kind"])
    assert len(set(HEMORRHAGE_KINDS) & set(codes["kind"])) >= 3


def test_splits_are_by_patient_and_each_holds_every_patient_group(synthetic_small_cohort: Path) -> None:
    cohort = _tables(synthetic_small_cohort)["cohort"]
    assert cohort.groupby("split").size().to_dict() == {"train": 6, "val": 3, "test": 3}
    for split, part in cohort.groupby("split"):
        lesion_free = (part[["hemorrhage", "early_ischemic", "old_infarction"]].sum(axis=1) == 0).any()
        assert lesion_free, f"{split} has no intact patient"
        for column in ("early_ischemic", "old_infarction", "hemorrhage"):
            assert part[column].any(), f"{split} has no {column} patient"
    # splits are interleaved, not blocks of patient ids
    assert cohort["split"].tolist() != sorted(cohort["split"].tolist())


def test_cohort_columns_agree_with_the_lesions(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    for row in _tables(root)["cohort"].itertuples():
        kinds = set(_codes(root, row.patient_id).query("n_voxels > 0")["kind"])
        assert row.hemorrhage == int(bool(kinds & set(HEMORRHAGE_KINDS)))
        assert row.early_ischemic == int(bool(kinds & set(EARLY_ISCHEMIC_KINDS)))
        assert row.old_infarction == int("old_infarction" in kinds)
        assert row.n_lesions == len(_codes(root, row.patient_id).query("n_voxels > 0"))


# --- the DICOM series ---------------------------------------------------------------------------------------


def test_dicom_reads_back_with_plain_pydicom(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    sop_uids, series_uids = set(), set()
    for pid in _patients(root):
        files = sorted((root / pid / "dicom").iterdir())
        spec = _spec(root, pid)
        assert len(files) == spec.scanner.n_slices
        for path in files:
            assert _FILE_NAME.match(path.name), path.name
            ds = pydicom.dcmread(path)
            assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
            assert ds.Modality == "CT" and list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
            for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
                assert UID(uid).is_valid, uid
            assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
            assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1
            assert float(ds.SliceThickness) == 5.0
            assert [float(v) for v in ds.PixelSpacing] == [spec.scanner.pixel_spacing_mm] * 2
            assert (ds.Rows, ds.Columns) == (128, 128)
            assert len(ds.ImagePositionPatient) == 3 and len(ds.ImageOrientationPatient) == 6
            assert float(ds.GantryDetectorTilt) == pytest.approx(spec.scanner.tilt_deg)
            assert str(ds.PatientName) == f"Synthetic^{pid}" and not ds.get("PatientBirthDate")
            hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert ds.pixel_array.dtype == np.uint16 and hu.min() >= -1024 and hu.max() <= 3071
            sop_uids.add(ds.SOPInstanceUID)
            series_uids.add(ds.SeriesInstanceUID)
    n_files = sum(_spec(root, pid).scanner.n_slices for pid in _patients(root))
    assert len(sop_uids) == n_files and len(series_uids) == 12


def test_pydicom_and_ingest_read_the_same_hu(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    tilted = [pid for pid in _patients(root) if _spec(root, pid).scanner.tilt_deg != 0]
    upright = [pid for pid in _patients(root) if _spec(root, pid).scanner.tilt_deg == 0]
    for pid in (tilted[0], upright[0]):
        spec = _spec(root, pid)
        files = {
            pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in (root / pid / "dicom").iterdir()
        }
        native = np.stack(
            [pydicom.dcmread(files[uid]).pixel_array.astype(np.float32) - 1024.0 for uid in spec.sop_uids]
        )
        volume = _ingest(root / pid / "dicom")
        # ingest orders slices along the normal exactly as they were acquired, whatever the file names
        assert volume.slice_uids == spec.sop_uids
        # (ingest works from the 6-decimal geometry in the files, hence hundredths of HU at bone edges)
        np.testing.assert_allclose(volume.array, spec.scanner.unshear(native, cval=-1024.0), atol=0.05)


def test_head_ct_densities_are_realistic(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    pid = _tables(root)["cohort"].query("n_lesions == 0")["patient_id"].iloc[0]
    volume = _ingest(root / pid / "dicom").array
    mid = volume[:, :, volume.shape[2] // 2]
    assert np.percentile(mid, 1) < -900  # air (and the padding outside the field of view)
    assert (mid > 1000).sum() > 100  # cortical bone of the skull
    brain = mid[(mid > 15) & (mid < 60)]
    assert brain.size > 1500 and 25.0 < float(np.median(brain)) < 45.0  # parenchyma


# --- masks ----------------------------------------------------------------------------------------------------


def test_lesion_mask_is_on_the_grid_ingest_returns(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    tilts = []
    for pid in _patients(root):
        volume, mask = _ingest(root / pid / "dicom"), _mask(root, pid)
        assert mask.shape == volume.array.shape
        np.testing.assert_allclose(mask.affine, volume.affine, atol=1e-3)
        assert np.issubdtype(mask.get_data_dtype(), np.integer)
        tilt = _spec(root, pid).scanner.tilt_deg
        tilts.append(tilt)
        assert volume.spacing[2] == pytest.approx(5.0 * np.cos(np.radians(tilt)), abs=1e-3)
        codes = set(np.unique(np.asarray(mask.dataobj))) - {0}
        assert codes == set(_codes(root, pid).query("n_voxels > 0")["code"])
    assert any(10 <= abs(t) <= 20 for t in tilts) and any(t == 0 for t in tilts)


def _delta_by_lesion(root: Path, pid: str, tmp_path: Path) -> dict[int, tuple[float, np.ndarray]]:
    """Mean of (with lesions - without lesions) HU over each lesion's mask, both read back by ingest."""
    spec = _spec(root, pid)
    clean = render_patient(spec, lesions=False)
    write_ct_series(clean.hu, spec, tmp_path / pid)
    with_lesions = _ingest(root / pid / "dicom").array
    without = load_ct_series(tmp_path / pid).array
    labels = np.asarray(_mask(root, pid).dataobj)
    return {int(c): (float((with_lesions - without)[labels == c].mean()), labels == c) for c in np.unique(labels) if c}


def test_each_lesion_changes_hu_by_its_requested_contrast(synthetic_small_cohort: Path, tmp_path: Path) -> None:
    root = synthetic_small_cohort
    checked = {"early": 0, "old": 0, "bleed": 0}
    for pid in _patients(root):
        codes = _codes(root, pid).query("n_voxels > 0").set_index("code")
        if codes.empty:
            continue
        deltas = _delta_by_lesion(root, pid, tmp_path)
        assert set(deltas) == set(codes.index)
        for code, (delta, _) in deltas.items():
            row = codes.loc[code]
            # what was recorded is what the written images show, for every kind
            assert delta == pytest.approx(row["contrast_hu"], abs=0.5), (pid, code, row["kind"])
            if row["kind"] in EARLY_ISCHEMIC_KINDS:
                assert delta == pytest.approx(float(row["requested_contrast_hu"]), abs=0.5), (pid, code)
                assert -6.5 <= delta <= -1.5
                checked["early"] += 1
            elif row["kind"] == "old_infarction":
                assert delta < -5.0  # towards CSF density
                checked["old"] += 1
            else:
                assert delta > 15.0  # fresh blood is hyperdense
                checked["bleed"] += 1
    assert min(checked.values()) >= 2, checked


def test_lesions_lie_on_their_side_of_the_patient(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    n_literal = 0
    for pid in _patients(root):
        spec, mask = _spec(root, pid), _mask(root, pid)
        labels = np.asarray(mask.dataobj)
        midline_x = spec.pose.head_center_world_mm[0]  # RAS x of the patient's mid-sagittal plane at the head centre
        for row in _codes(root, pid).query("n_voxels > 0 and side != ''").itertuples():
            voxels = np.argwhere(labels == row.code)
            world = mask.affine[:3, :3] @ voxels.T + mask.affine[:3, 3:4]
            x = float(world[0].mean())
            # the patient's left is RAS x < 0 relative to the patient's own midline (the head is shifted and
            # rotated in the scanner, so a lesion next to the midline may sit at world x > 0)
            assert side_of_x(x - midline_x) == row.side, (pid, row.code, row.kind)
            if abs(x - midline_x) > 30.0:
                assert side_of_x(x) == row.side, (pid, row.code)  # far from the midline: RAS x itself
                n_literal += 1
    assert n_literal >= 5


def test_region_categories_match_the_masks(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    head = default_head()
    table = head.atlas_table.set_index("label")
    regions = _tables(root)["regions"]
    assert regions.groupby("patient_id").size().eq(20).all()
    assert set(regions["category"]) <= set(CATEGORIES)
    for pid in _patients(root):
        spec, mask = _spec(root, pid), _mask(root, pid)
        labels = np.asarray(mask.dataobj)
        expected = {(s, r): "intact" for s in SIDES for r in REGIONS}
        for row in _codes(root, pid).query("n_voxels > 0").itertuples():
            if row.kind not in ISCHEMIC_KINDS:
                continue
            voxels = np.argwhere(labels == row.code)
            world = mask.affine[:3, :3] @ voxels.T + mask.affine[:3, 3:4]
            index = np.rint(head.mm_to_index(spec.pose.world_to_template(world))).astype(int)
            atlas = head.atlas_labels[tuple(index)]
            names = [tuple(table.loc[a, ["side", "region"]]) if a else None for a in atlas]
            inside = np.mean([n == (row.side, row.region) for n in names])
            elsewhere = np.mean([n is not None and n != (row.side, row.region) for n in names])
            # the labelled voxels sit in the region the lesion was drawn in and barely in any other region (the
            # rest, next to a thin cortical ribbon, maps to unlabelled tissue beside it)
            assert inside >= 0.5 and elsewhere <= 0.1 * inside, (pid, row.code, inside, elsewhere)
            expected[(row.side, row.region)] = row.kind
        got = regions[regions["patient_id"] == pid].set_index(["side", "region"])["category"].to_dict()
        assert got == expected, pid


def test_early_lesions_span_one_to_a_few_slices(synthetic_small_cohort: Path) -> None:
    codes = _tables(synthetic_small_cohort)["lesion_codes"]
    early = codes[codes["kind"].isin(EARLY_ISCHEMIC_KINDS) & (codes["kind"] != "territorial_infarction")]
    assert (early["n_slices"] == 1).any()  # visible on one slice only
    assert (early["n_slices"] >= 2).any()
    assert early["n_slices"].max() <= 5


def test_rsna_labels_follow_what_each_slice_shows(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    labels = _tables(root)["rsna_labels"]
    parsed = labels["ID"].str.extract(r"^(ID_[0-9a-f]{10})_(\w+)$")
    assert parsed.notna().all().all() and set(parsed[1]) == set(HEMORRHAGE_LABELS)
    table = pd.DataFrame({"stem": parsed[0], "label": parsed[1], "value": labels["Label"]})
    table = table.pivot(index="stem", columns="label", values="value")
    n_positive = n_negative_in_bleeders = 0
    for pid in _patients(root):
        volume = _ingest(root / pid / "dicom")
        mask = np.asarray(_mask(root, pid).dataobj)
        kind_of = _codes(root, pid).set_index("code")["kind"].to_dict()
        bleeder = bool(set(kind_of.values()) & set(HEMORRHAGE_KINDS))
        assert len(volume.slice_files) == mask.shape[2]
        for z, file in enumerate(volume.slice_files):
            shown = {kind_of[c] for c in np.unique(mask[:, :, z]) if c}
            row = table.loc[Path(file).stem]
            for subtype in HEMORRHAGE_KINDS:
                assert row[subtype] == int(subtype in shown), (pid, z, subtype)
            assert row["any"] == int(bool(shown & set(HEMORRHAGE_KINDS)))
            n_positive += row["any"]
            n_negative_in_bleeders += bleeder and not row["any"]
    assert len(table) == sum(_spec(root, pid).scanner.n_slices for pid in _patients(root))
    assert n_positive > 10 and n_negative_in_bleeders > 10


def test_noise_matches_the_spec_and_lesion_free_areas_are_identical(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    pid = _tables(root)["cohort"].query("n_lesions > 0")["patient_id"].iloc[0]
    spec = _spec(root, pid)
    noisy = render_patient(spec, lesions=False)
    quiet = render_patient(spec, lesions=False, noise=False)
    inside = quiet.hu > -1020  # within the circular field of view (outside it: -1024, no noise)
    assert float((noisy.hu - quiet.hu)[inside].std()) == pytest.approx(spec.noise_sd_hu, rel=0.1)
    assert 3.0 <= spec.noise_sd_hu <= 6.0
    # with and without lesions differ only around the lesions: same anatomy, same noise draw
    with_lesions = render_patient(spec)
    change = np.abs(spec.scanner.unshear(with_lesions.hu - noisy.hu))
    labelled = with_lesions.labels > 0
    assert labelled.any() and change[labelled].mean() > 1.5
    distance = ndimage.distance_transform_edt(~labelled, sampling=np.linalg.norm(with_lesions.affine[:3, :3], axis=0))
    # partial-volume tails of a lesion reach a little beyond its label (a neighbouring slice, a thin sulcus)...
    assert change[distance > 10.0].max() < 5.0
    # ...but far from every lesion the two renderings agree: same anatomy, same noise draw
    assert change[distance > 20.0].max() < 0.1


def test_brains_differ_between_patients_but_hemispheres_stay_balanced(synthetic_small_cohort: Path) -> None:
    root = synthetic_small_cohort
    head = default_head()
    intact = _tables(root)["cohort"].query("n_lesions == 0")["patient_id"].tolist()
    assert len(intact) >= 2
    means = []
    for pid in intact:
        spec, volume = _spec(root, pid), _ingest(root / pid / "dicom")
        index = np.argwhere(np.ones(volume.array.shape, bool))[::7]
        world = volume.affine[:3, :3] @ index.T + volume.affine[:3, 3:4]
        template_index = np.rint(head.mm_to_index(spec.pose.world_to_template(world))).astype(int)
        ok = np.all((template_index >= 0) & (template_index < np.reshape(head.shape, (3, 1))), axis=0)
        tissue = np.zeros(len(index), bool)
        tissue[ok] = head.tissue[tuple(template_index[:, ok])] > 0.95
        values = volume.array[tuple(index.T)]
        x = head.index_to_mm(template_index)[0]
        left, right = values[tissue & (x < -5)].mean(), values[tissue & (x > 5)].mean()
        # mild asymmetry, well below the smallest early ischemic contrast (2 HU)
        assert abs(left - right) < 1.0, pid
        means.append(values[tissue].mean())
    assert np.ptp(means) > 0.05  # no two brains identical
