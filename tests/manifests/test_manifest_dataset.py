"""Dataset folders (the layout `monai-stroke synth` writes) read into validated tables."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from manifest_helpers import label_rows, new_uid, tilted_orientation, write_ct, write_labels

from monai_stroke.errors import UserInputError
from monai_stroke.manifests import load_dataset, load_tasks
from monai_stroke.vocabulary import REGIONS, SIDES

CATEGORY = {
    ("P1", "L", "M2"): "frank_hypodensity",
    ("P1", "L", "M3"): "territorial_infarction",
    ("P1", "R", "C"): "old_infarction",
    ("P2", "R", "M5"): "scattered_infarction",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(3)
    order, rows = {}, []
    for pid, n, prefix in (("P1", 4, "ID_"), ("P2", 3, "")):
        study, series = new_uid(), new_uid()
        names = [f"{prefix}{rng.integers(16**8):08x}" for _ in range(n)]
        order[pid] = names
        for k in rng.permutation(n):
            # file names (the RSNA image ids) are random, so only the geometry gives the order
            write_ct(
                root / pid / "dicom" / f"{names[k]}.dcm",
                new_uid(),
                study,
                series,
                (0, 0, 4.0 * k),
                tilted_orientation(12),
            )
            rows += label_rows(names[k], ["subdural"] if (pid, k) == ("P1", 2) else [])
    write_labels(root / "rsna_labels.csv", rows)
    (root / "P3").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), root / "P3" / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), root / "P1" / "lesions.nii.gz")
    (root / "cohort.csv").write_text(
        "patient_id,series_dir,split,lesion_mask\nP1,P1/dicom,train,P1/lesions.nii.gz\nP2,P2/dicom,val,\nP3,P3/ct.nii.gz,train,\n"
    )
    region_rows = [
        f"{pid},{s},{r},{CATEGORY.get((pid, s, r), 'intact')}"
        for pid in ("P2", "P1", "P3")
        for s in SIDES[::-1]
        for r in REGIONS
    ]
    (root / "regions.csv").write_text("patient_id,side,region,category\n" + "\n".join(region_rows) + "\n")
    return {"root": root, "order": order}


def test_splits_paths_and_tables(dataset: dict) -> None:
    ds = load_dataset(dataset["root"])
    assert ds.patients == ["P1", "P2", "P3"]
    assert (ds.split("train"), ds.split("val"), ds.split("test")) == (["P1", "P3"], ["P2"], [])
    assert ds.series_path("P1") == dataset["root"] / "P1" / "dicom" and ds.series_path("P1").is_dir()
    assert ds.series_path("P3").is_file()
    assert ds.lesion_mask_path("P1") == dataset["root"] / "P1" / "lesions.nii.gz"
    assert ds.lesion_mask_path("P2") is None
    assert len(ds.regions) == 60 and len(ds.rsna_labels) == 7


def test_region_labels_follow_the_task(dataset: dict) -> None:
    ds = load_dataset(dataset["root"])
    early = ds.region_labels("P1", "early_vs_intact")
    # L side first, regions in ASPECTS order; old_infarction (R C) is not part of the task
    assert list(early.columns) == ["side", "region", "category", "label"]
    assert len(early) == 19 and ("R", "C") not in set(zip(early["side"], early["region"], strict=True))
    assert list(early["side"][:10]) == ["L"] * 10 and list(early["region"][:10]) == list(REGIONS)
    positives = early.loc[early["label"] == 1, ["side", "region"]].values.tolist()
    assert positives == [["L", "M2"], ["L", "M3"]]
    old = ds.region_labels("P1", load_tasks()["old_vs_intact"])
    assert len(old) == 18 and old.loc[old["label"] == 1, "region"].tolist() == ["C"]
    val = ds.labelled_regions("early_vs_intact", split="val")
    assert set(val["patient_id"]) == {"P2"} and set(val["split"]) == {"val"}
    assert len(val) == 19 and val["label"].sum() == 0  # scattered infarction is left out of early_vs_intact
    everyone = ds.labelled_regions("old_vs_intact")
    assert list(dict.fromkeys(everyone["patient_id"])) == ["P1", "P2", "P3"]  # cohort order, not file order


def test_slice_labels_in_order_with_patients(dataset: dict) -> None:
    table = load_dataset(dataset["root"]).slice_labels()
    for pid, names in dataset["order"].items():
        rows = table.loc[table["patient_id"] == pid].sort_values("slice_index")
        assert list(rows["image_id"]) == names
        assert set(rows["split"]) == {"train" if pid == "P1" else "val"}
    assert table.set_index("image_id").loc[dataset["order"]["P1"][2], "subdural"] == 1
    assert table["subdural"].sum() == 1


def test_unknown_names_are_user_errors(dataset: dict) -> None:
    ds = load_dataset(dataset["root"])
    with pytest.raises(UserInputError, match="patient 'P9' is not in"):
        ds.series_path("P9")
    with pytest.raises(UserInputError, match="unknown split 'training'"):
        ds.split("training")
    with pytest.raises(UserInputError, match="unknown task"):
        ds.region_labels("P1", "early")


def test_bad_dataset_folders(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(UserInputError, match="has no cohort.csv"):
        load_dataset(tmp_path)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.dcm").write_bytes(b"x")
    (tmp_path / "cohort.csv").write_text("patient_id,series_dir,split\nP1,s,train\n")
    (tmp_path / "regions.csv").write_text("patient_id,side,region,category\nP2,L,C,intact\n")
    with pytest.raises(UserInputError, match=r"regions.csv row 2, column patient_id: patient 'P2' is not in"):
        load_dataset(tmp_path)
    (tmp_path / "regions.csv").unlink()
    ds = load_dataset(tmp_path)
    assert ds.regions.empty and ds.rsna_labels is None
    with pytest.raises(UserInputError, match="no rsna_labels.csv"):
        ds.slice_labels()
